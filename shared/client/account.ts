/**
 * The local account record: a plaintext header that says what the file is, and the sealed secrets
 * (identity keys, RSA login key, session token, prekey counters) that only the password opens.
 *
 *   header  = JSON { format: "secure-chat-account", version: 1, username, server,
 *                    storageKey: base64url(storage key parameters), secrets: base64url(sealed) }
 *   secrets = seal(storage key, JSON AccountSecrets, context "account:<username>")
 */
import {
  decodeStorageKeyParameters,
  deriveStorageKey,
  encodeStorageKeyParameters,
  open,
  STORAGE_KEY_MIN_ITERATIONS,
  type StorageKeyParameters,
  seal,
} from '../at-rest.js'
import { fromBase64Url, toBase64Url, utf8Decode, utf8Encode } from '../bytes.js'
import { decode, matches, type Static, Type } from '../codec/schema.js'
import { isProtocolError } from '../errors.js'
import { ClientError, ClientErrorCode } from './errors.js'

export const ACCOUNT_FORMAT = 'secure-chat-account'
export const ACCOUNT_VERSION = 1
export const ACCOUNT_KEY = 'account'

const AccountHeader = Type.Object({
  format: Type.Literal(ACCOUNT_FORMAT),
  version: Type.Integer({ minimum: 1 }),
  username: Type.String({ minLength: 1, maxLength: 64 }),
  server: Type.String({ maxLength: 2048 }),
  storageKey: Type.String({ maxLength: 64 }),
  secrets: Type.String({ maxLength: 65_536 }),
})
type AccountHeader = Static<typeof AccountHeader>

export const AccountSecrets = Type.Object({
  identity: Type.String(),
  loginKey: Type.String(),
  /** The next unused prekey id (signed and one-time prekeys share one counter). */
  nextPreKeyId: Type.Integer({ minimum: 1 }),
  signedPreKeyId: Type.Integer({ minimum: 0 }),
  signedPreKeyCreatedAt: Type.Integer({ minimum: 0 }),
  token: Type.Optional(Type.String()),
  tokenExpiresAt: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Set while registration with the server is not yet confirmed. */
  registered: Type.Boolean(),
  /**
   * Which of the account's devices this store is (docs/protocol.md §13.8): 1 for the one that
   * registered, the id the server reserved for a linked one. Absent only in stores of records
   * layouts 1 and 2, which are device 1 and get it written by their migration (migrations.ts).
   */
  deviceId: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffff_ffff })),
  /**
   * The layout of the core's records in the store (shared/client/migrations.ts); absent in stores
   * written before it was recorded, which are layout 1.
   */
  recordsVersion: Type.Optional(Type.Integer({ minimum: 1 })),
  /**
   * A password change that this device made (the store is sealed under the new password) but the
   * server has not confirmed yet: the login secrets from and to, so it can be finished without the
   * passwords (ChatClient.changePassword).
   */
  passwordChange: Type.Optional(Type.Object({ from: Type.String(), to: Type.String() })),
})
export type AccountSecrets = Static<typeof AccountSecrets>

export interface UnlockedAccount {
  readonly username: string
  readonly server: string
  readonly storageKey: CryptoKey
  readonly parameters: StorageKeyParameters
  readonly secrets: AccountSecrets
}

/** This store's device id; a store opened through openLocalAccount always records it. */
export function ownDeviceId(secrets: AccountSecrets): number {
  if (secrets.deviceId === undefined) {
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      'expected account secrets that record their device id, got some without (records not migrated)',
    )
  }
  return secrets.deviceId
}

function secretsContext(username: string): string {
  return `account:${username}`
}

export async function sealAccount(
  account: Omit<UnlockedAccount, 'secrets'>,
  secrets: AccountSecrets,
): Promise<Uint8Array> {
  const sealed = await seal(
    account.storageKey,
    utf8Encode(JSON.stringify(secrets)),
    secretsContext(account.username),
  )
  const header: AccountHeader = {
    format: ACCOUNT_FORMAT,
    version: ACCOUNT_VERSION,
    username: account.username,
    server: account.server,
    storageKey: toBase64Url(encodeStorageKeyParameters(account.parameters)),
    secrets: toBase64Url(sealed),
  }
  return utf8Encode(JSON.stringify(header))
}

/** Reads the plaintext header without the password (to show which account a file holds). */
export function readAccountHeader(bytes: Uint8Array): { username: string; server: string } {
  let parsed: unknown
  try {
    parsed = JSON.parse(utf8Decode(bytes))
  } catch {
    parsed = undefined
  }
  if (!matches(AccountHeader, parsed)) {
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      'expected a secure-chat account record, got something else',
    )
  }
  if (parsed.version !== ACCOUNT_VERSION) {
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      `expected account format version ${ACCOUNT_VERSION}, got ${parsed.version} (written by a newer version?)`,
    )
  }
  return { username: parsed.username, server: parsed.server }
}

export async function unlockAccount(
  bytes: Uint8Array,
  password: string,
  minimumIterations = STORAGE_KEY_MIN_ITERATIONS,
): Promise<UnlockedAccount> {
  const { username, server } = readAccountHeader(bytes)
  const header = JSON.parse(utf8Decode(bytes)) as AccountHeader
  let parameters: StorageKeyParameters
  let sealed: Uint8Array
  try {
    parameters = decodeStorageKeyParameters(fromBase64Url(header.storageKey))
    sealed = fromBase64Url(header.secrets)
  } catch (cause) {
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      'expected valid account key parameters, got damaged ones',
      { cause },
    )
  }
  const storageKey = await deriveStorageKey(password, parameters, minimumIterations)
  let opened: Uint8Array
  try {
    opened = await open(storageKey, sealed, secretsContext(username))
  } catch (cause) {
    if (isProtocolError(cause, 'E2E_ERR_DECRYPTION_FAILED')) {
      throw new ClientError(
        ClientErrorCode.WrongPassword,
        'expected the password of this account, got another',
      )
    }
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      'expected a readable account record, got a damaged one',
      { cause },
    )
  }
  const secrets = decode(AccountSecrets, JSON.parse(utf8Decode(opened)), 'account secrets')
  return { username, server, storageKey, parameters, secrets }
}
