/**
 * Opening and creating local accounts: the SQLite store at the account's path, the Node transports
 * and the client core, put together the same way for the interactive client and the scripts.
 */
import { existsSync, rmSync } from 'node:fs'
import type { SecureContext } from 'node:tls'
import {
  ChatClient,
  type ChatClientOptions,
  type PendingLink,
  startLink,
} from '../shared/client/chat-client.js'
import { ClientError, ClientErrorCode, isClientError } from '../shared/client/errors.js'
import { normalizeUsername } from '../shared/username.js'
import { UsageError } from './exit-codes.js'
import { accountFile, localAccounts } from './paths.js'
import { openSqliteStore } from './store.js'
import { httpsClient, type ServerCertificate, webSocketFactory } from './transport.js'

/**
 * FOR TESTS ONLY: PBKDF2 iterations for the storage key of new accounts, and the fewest accepted when
 * unlocking. Tests set it low so that registering and unlocking take milliseconds. It is honoured
 * only in a test run (TEST_RUN_ENV set, as the test runner does for its processes and the tests pass
 * to the clients they start); anywhere else it is refused, so a variable left in a shell or copied
 * from a test script can neither make a weakly protected account nor accept one when unlocking.
 * Unset, the core's default (600,000, OWASP 2023) applies.
 */
export const TEST_KDF_ITERATIONS_ENV = 'SECURE_CHAT_TEST_KDF_ITERATIONS'
/** Set by Vitest in its workers; the tests set it for the client processes they start. */
export const TEST_RUN_ENV = 'VITEST'

export type KeyDerivationOverride = Pick<
  ChatClientOptions,
  'storageKeyIterations' | 'minimumStorageKeyIterations' | 'loginSecretIterations'
>

export interface ClientSettings {
  /** The server's https:// origin (transport.ts parseServerUrl). */
  readonly serverUrl: string
  /** The certificate authorities to trust (trust.ts); unset, Node's built-in list. */
  readonly trust?: SecureContext | undefined
  readonly dataDir: string
  /** The test-only key derivation cost (kdfOverride), empty outside tests. */
  readonly keyDerivation: KeyDerivationOverride
  readonly onCertificate?: ((certificate: ServerCertificate) => void) | undefined
  /** A relay connection failed (the core retries; an untrusted certificate never gets better). */
  readonly onSocketError?: ((error: Error) => void) | undefined
}

/** The key derivation cost the environment asks for: nothing unless a test run sets it (see above). */
export function kdfOverride(env: NodeJS.ProcessEnv): KeyDerivationOverride {
  const raw = env[TEST_KDF_ITERATIONS_ENV]
  if (raw === undefined || raw === '') return {}
  if (!env[TEST_RUN_ENV]) {
    throw new UsageError(
      `${TEST_KDF_ITERATIONS_ENV}: expected it unset outside the test suite, got "${raw}" (it weakens the protection of the local database: unset it)`,
    )
  }
  const iterations = Number(raw)
  if (!Number.isSafeInteger(iterations) || iterations < 1) {
    throw new UsageError(`${TEST_KDF_ITERATIONS_ENV}: expected a positive integer, got "${raw}"`)
  }
  return {
    storageKeyIterations: iterations,
    minimumStorageKeyIterations: iterations,
    loginSecretIterations: iterations,
  }
}

function clientOptions(settings: ClientSettings, store: ChatClientOptions['store']): ChatClientOptions {
  const transport = { trust: settings.trust, onCertificate: settings.onCertificate }
  return {
    serverUrl: settings.serverUrl,
    http: httpsClient(settings.serverUrl, transport),
    webSocket: webSocketFactory({ ...transport, onSocketError: settings.onSocketError }),
    store,
    ...settings.keyDerivation,
  }
}

export function normalizedUsername(input: string): string {
  try {
    return normalizeUsername(input)
  } catch (cause) {
    throw new UsageError((cause as Error).message)
  }
}

/**
 * The account to use: the one asked for, else the only one this data directory holds for the
 * server. Throws (exit code 7) when there is none or more than one to choose from.
 */
export function chooseAccount(settings: ClientSettings, requested: string | undefined): string {
  if (requested !== undefined && requested !== '') return normalizedUsername(requested)
  const accounts = localAccounts(settings.dataDir, settings.serverUrl)
  if (accounts.length === 1) return accounts[0] as string
  if (accounts.length === 0) {
    throw new ClientError(
      ClientErrorCode.NoAccount,
      `expected an account for ${settings.serverUrl} in ${settings.dataDir}, got none (register one first)`,
    )
  }
  throw new ClientError(
    ClientErrorCode.AccountMismatch,
    `expected one account for ${settings.serverUrl}, got ${accounts.length} (${accounts.join(', ')}): choose one with --user`,
  )
}

/** Creates the account on this device and on the server, then logs in. */
export function registerAccount(
  settings: ClientSettings,
  username: string,
  password: string,
): Promise<ChatClient> {
  return createAccount(settings, username, password, 'register')
}

/**
 * Refuses (exit code 7) when this data directory already holds `username` for the server: starting
 * over is for a device without the account's keys, and never overwrites a database.
 */
export function assertNoLocalAccount(settings: ClientSettings, username: string): void {
  const name = normalizedUsername(username)
  const file = accountFile(settings.dataDir, settings.serverUrl, name)
  if (existsSync(file)) {
    throw new ClientError(
      ClientErrorCode.AccountMismatch,
      `expected no local account ${name}, got one in ${file}: this device still holds ${name}'s keys, so there is nothing to start over (if that file is damaged, move it away first)`,
    )
  }
}

/**
 * Starts over on this device for an existing account whose keys were lost: the password proves the
 * account, new keys made here replace the old ones on the server (ChatClient.reinstall), then logs in.
 */
export function reinstallAccount(
  settings: ClientSettings,
  username: string,
  password: string,
): Promise<ChatClient> {
  assertNoLocalAccount(settings, username)
  return createAccount(settings, username, password, 'reinstall')
}

async function createAccount(
  settings: ClientSettings,
  username: string,
  password: string,
  how: 'register' | 'reinstall',
): Promise<ChatClient> {
  const name = normalizedUsername(username)
  const file = accountFile(settings.dataDir, settings.serverUrl, name)
  const existing = localAccounts(settings.dataDir, settings.serverUrl).includes(name)
  const store = await openSqliteStore(file, { create: true })
  try {
    const options = clientOptions(settings, store)
    return await (how === 'register'
      ? ChatClient.register(options, name, password)
      : ChatClient.reinstall(options, name, password))
  } catch (error) {
    await store.close()
    // A database made for this attempt goes again, so a refused name leaves nothing behind.
    if (!existing) removeDatabaseFiles(file)
    if (isClientError(error, ClientErrorCode.AccountMismatch)) {
      throw new ClientError(
        ClientErrorCode.AccountMismatch,
        `expected no local account ${name}, got one in ${file}`,
      )
    }
    throw error
  }
}

/**
 * The new device's side of a link: opens the provisioning channel on the settings' server (the
 * code does not carry it: both devices must use the same server). No local file yet: which
 * account this becomes is known only once the other device's message arrived.
 */
export function startDeviceLink(settings: ClientSettings, name: string | undefined): Promise<PendingLink> {
  const http = httpsClient(settings.serverUrl, {
    trust: settings.trust,
    onCertificate: settings.onCertificate,
  })
  return startLink(http, name === undefined ? {} : { name })
}

/**
 * Stores the linked account `username` here, in the file a log-in opens, sealed under
 * `password`, and adds this device on the server (ChatClient.completeLink). Refused before any
 * file is made when this data directory holds the account already; a refused link leaves no file.
 */
export async function completeDeviceLink(
  settings: ClientSettings,
  pending: PendingLink,
  username: string,
  password: string,
): Promise<ChatClient> {
  const name = normalizedUsername(username)
  assertNoLocalAccount(settings, name)
  const file = accountFile(settings.dataDir, settings.serverUrl, name)
  const store = await openSqliteStore(file, { create: true })
  try {
    return await ChatClient.completeLink(clientOptions(settings, store), pending, password)
  } catch (error) {
    // Closed already when the core wiped it (a password the server refused).
    await store.close().catch(() => undefined)
    removeDatabaseFiles(file)
    throw error
  }
}

/** The SQLite database at `file` and its companions (WAL, shared memory, rollback journal). */
function removeDatabaseFiles(file: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(`${file}${suffix}`, { force: true })
}

/**
 * Removes the files of an account whose store was wiped (ChatClient.deleteAccount) and closed:
 * an empty database left behind would still list the name as a local account.
 */
export function removeLocalAccount(settings: ClientSettings, username: string): void {
  removeDatabaseFiles(accountFile(settings.dataDir, settings.serverUrl, normalizedUsername(username)))
}

/** Opens an account's local database with its password; no network yet. */
export async function openAccount(
  settings: ClientSettings,
  username: string,
  password: string,
): Promise<ChatClient> {
  const name = normalizedUsername(username)
  const store = await openSqliteStore(accountFile(settings.dataDir, settings.serverUrl, name))
  try {
    return await ChatClient.open(clientOptions(settings, store), password, name)
  } catch (error) {
    await store.close()
    throw error
  }
}

/** Gets a session token when the stored one is missing or expired. */
export async function ensureLoggedIn(client: ChatClient, password: string): Promise<void> {
  if (!client.loggedIn) await client.login(password)
}
