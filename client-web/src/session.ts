/**
 * Opening an account in this browser: the ChatClient with the browser's fetch and WebSocket, the
 * account's IndexedDB database, and a Web Lock so only one tab at a time drives an account (two
 * tabs would race on the same ratchet sessions and both hold a relay connection).
 *
 * The keys leave the device only for another device of the account that the user links, sealed
 * for it (docs/protocol.md §13.6): a browser without the account's database can be linked, register
 * a new account, or start over as an existing one whose keys were lost (new keys replace the old
 * ones on the server, on proof of the password; contacts are warned that the safety number changed).
 * Everything the core stores is sealed under a key derived from the password
 * (PBKDF2, 600,000 iterations); at runtime every private key is a non-extractable CryptoKey.
 */
import {
  ChatClient,
  type ChatClientOptions,
  type PendingLink,
  startLink,
} from '../../shared/client/chat-client.js'
import { ClientError, ClientErrorCode, isClientError } from '../../shared/client/errors.js'
import { fetchHttpClient, type WebSocketLike } from '../../shared/client/transport.js'
import { normalizeUsername } from '../../shared/username.js'
import { deleteLocalAccount, hasLocalAccount, IdbStore } from './store/idb-store.js'

export interface OpenAccount {
  readonly client: ChatClient
  readonly store: IdbStore
  /** True when the server could not be reached: history is readable, sending waits. */
  readonly offline: boolean
  /** Disconnects, closes the database and releases the tab lock. */
  close(): Promise<void>
}

/** A problem the sign-in screens show as it is (already in the user's words). */
export class SignInError extends Error {
  override readonly name = 'SignInError'
}

/** A device removed from its account on another of its devices: it cannot sign in any more. */
export class DeviceRemovedError extends SignInError {
  constructor(readonly username: string) {
    super(`This device was removed from ${username} on another of its devices.`)
  }
}

/** True for the server's word that this device was removed (on REST, at log-in, on the relay). */
export function isDeviceRemoved(error: unknown): boolean {
  return (
    error instanceof DeviceRemovedError ||
    (isClientError(error) && error.serverCode === 'E2E_ERR_DEVICE_REMOVED')
  )
}

function httpClient() {
  return fetchHttpClient(location.origin, (input, init) => fetch(input, { ...init, credentials: 'omit' }))
}

function clientOptions(store: IdbStore): ChatClientOptions {
  return {
    serverUrl: location.origin,
    http: httpClient(),
    webSocket: (url) => new WebSocket(url) as unknown as WebSocketLike,
    store,
    // PBKDF2 at the core's default (600,000 iterations): about a tenth of a second in Chromium.
  }
}

/** Holds the account's Web Lock until `release` is called; undefined if another tab holds it. */
async function lockAccount(username: string): Promise<(() => void) | undefined> {
  if (!('locks' in navigator)) return () => {}
  return new Promise((resolve) => {
    void navigator.locks.request(`secure-chat:${username}`, { ifAvailable: true }, (lock) => {
      if (!lock) {
        resolve(undefined)
        return
      }
      return new Promise<void>((release) => resolve(release))
    })
  })
}

/** The normalised username, or a SignInError saying what a username may be. */
export function normalizeForForm(username: string): string {
  try {
    return normalizeUsername(username)
  } catch (cause) {
    throw new SignInError(
      'Usernames are 3–32 characters: letters a–z, digits, and . _ - (starting and ending with a letter or digit).',
      { cause },
    )
  }
}

async function withLock<T>(username: string, work: (release: () => void) => Promise<T>): Promise<T> {
  const release = await lockAccount(username)
  if (!release) {
    throw new SignInError(
      `${username} is already open in another tab or window of this browser. Use that one.`,
    )
  }
  try {
    return await work(release)
  } catch (error) {
    release()
    throw error
  }
}

function opened(client: ChatClient, store: IdbStore, offline: boolean, release: () => void): OpenAccount {
  let closing: Promise<void> | undefined
  return {
    client,
    store,
    offline,
    close() {
      closing ??= client.close().finally(release)
      return closing
    },
  }
}

/** Creates keys on this device, registers them with the server, and logs in. */
export function registerAccount(
  username: string,
  password: string,
  onLost: () => void,
): Promise<OpenAccount> {
  return createAccount(username, password, onLost, 'register')
}

/**
 * Starts over in this browser as an existing account whose keys were lost (the device that held
 * them is gone): new keys made here replace the old ones on the server, the password proving the
 * account, then logs in. Every contact is told the safety number changed, and messages sent to the
 * old keys cannot be read (the core reports them as undecryptable).
 */
export function reinstallAccount(
  username: string,
  password: string,
  onLost: () => void,
): Promise<OpenAccount> {
  return createAccount(username, password, onLost, 'reinstall')
}

async function createAccount(
  username: string,
  password: string,
  onLost: () => void,
  how: 'register' | 'reinstall',
): Promise<OpenAccount> {
  const name = normalizeForForm(username)
  return withLock(name, async (release) => {
    if (await hasLocalAccount(name)) {
      const store = await IdbStore.open(name, { onLost })
      const existing = await ChatClient.accountIn(store).catch(() => undefined)
      if (existing) {
        await store.close()
        throw new SignInError(
          `This browser already holds the account ${name}. Log in with its password instead.`,
        )
      }
      // A database without an account (a registration cut short): clear it and start afresh.
      await store.wipe()
      await store.close()
    }
    const store = await IdbStore.open(name, { onLost })
    try {
      const options = clientOptions(store)
      const client = await (how === 'register'
        ? ChatClient.register(options, name, password)
        : ChatClient.reinstall(options, name, password))
      client.connect()
      return opened(client, store, false, release)
    } catch (error) {
      // A refused registration (or reinstall) wipes what it stored; closing deletes the empty database.
      await store.wipe().catch(() => undefined)
      await store.close().catch(() => undefined)
      throw error
    }
  })
}

/**
 * Unlocks the account's local database with the password, then gets a fresh session token when
 * the stored one has expired. Without a network the account still opens, read-only until the
 * server is back (the client reconnects by itself when its token is still valid).
 */
export async function unlockAccount(
  username: string,
  password: string,
  onLost: () => void,
): Promise<OpenAccount> {
  const name = normalizeForForm(username)
  if (!(await hasLocalAccount(name))) {
    throw new SignInError(
      `This browser holds no account named ${name}. Signed in on another device? Choose “Use an existing device” to link this browser to it. If every device of ${name} is lost, you can start over on this one.`,
    )
  }
  return withLock(name, async (release) => {
    const store = await IdbStore.open(name, { onLost })
    let client: ChatClient
    try {
      client = await ChatClient.open(clientOptions(store), password, name)
    } catch (error) {
      // An empty database (a registration cut short) goes away rather than being listed again.
      if (isClientError(error, ClientErrorCode.NoAccount)) await store.wipe().catch(() => undefined)
      await store.close()
      if (isClientError(error, ClientErrorCode.WrongPassword)) {
        throw new SignInError('Wrong password for this account. Nothing was unlocked.')
      }
      if (isClientError(error, ClientErrorCode.NoAccount)) {
        throw new SignInError(
          `This browser holds no account named ${name}. In this browser you can register a new account, or start over as ${name} if its keys were lost.`,
        )
      }
      throw error
    }
    let offline = false
    if (!client.loggedIn) {
      try {
        await client.login(password)
      } catch (error) {
        if (!isClientError(error, ClientErrorCode.Network)) {
          await client.close()
          throw isDeviceRemoved(error) ? new DeviceRemovedError(name) : error
        }
        offline = true
      }
    }
    if (client.loggedIn) client.connect()
    return opened(client, store, offline, release)
  })
}

/**
 * The new device's side of a link (docs/protocol.md §13.6–§13.8): opens the provisioning channel
 * and gives the code to show. `name` is what the other device shows, and this device's name in
 * the account's list of devices.
 */
export function startDeviceLink(name: string): Promise<PendingLink> {
  const trimmed = name.trim()
  return startLink(httpClient(), trimmed === '' ? {} : { name: trimmed })
}

/**
 * Once the other device approved (`waitForProvisioning` answered `username`): stores the account
 * in this browser sealed under `password`, as registering does, adds this device on the server and
 * connects. The password must be the account's (later log-ins derive the server's login secret
 * from it) and the core cannot tell a mistyped one at link time, so a fresh log-in proves it
 * right away: refused, this device removes itself and erases what it stored, and the user starts
 * again, instead of holding a store that no log-in will ever open.
 */
export async function completeDeviceLink(
  pending: PendingLink,
  username: string,
  password: string,
  onLost: () => void,
): Promise<OpenAccount> {
  const name = normalizeForForm(username)
  return withLock(name, async (release) => {
    if (await hasLocalAccount(name)) {
      const store = await IdbStore.open(name, { onLost })
      const existing = await ChatClient.accountIn(store).catch(() => undefined)
      await store.close()
      if (existing) {
        throw new SignInError(
          `This browser already holds the account ${name}. Log in with its password instead, or erase it first (Settings › Log out › Also erase).`,
        )
      }
      // A database without an account (a link or registration cut short): start afresh.
      await deleteLocalAccount(name)
    }
    const store = await IdbStore.open(name, { onLost })
    let client: ChatClient
    try {
      // The core logs in at once with the password, and removes this device again if it is not the
      // account's (E2E_ERR_INVALID_CREDENTIALS).
      client = await ChatClient.completeLink(clientOptions(store), pending, password)
    } catch (error) {
      // A refused link wipes what it stored; closing deletes the empty database.
      await store.wipe().catch(() => undefined)
      await store.close().catch(() => undefined)
      if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_CREDENTIALS') {
        throw new SignInError(
          `That is not ${name}'s password, so this browser was not linked: the password must be the one you log in with on your other device. Start again with a new code.`,
        )
      }
      throw error
    }
    client.connect()
    return opened(client, store, false, release)
  })
}

/** Deletes this browser's copy of `username` (its IndexedDB database), e.g. after the device was removed. */
export function eraseLocalAccount(username: string): Promise<void> {
  return deleteLocalAccount(username)
}

/** A user-facing sentence for an error from the core or the server. */
export function describeError(error: unknown): string {
  if (error instanceof SignInError) return error.message
  if (error instanceof ClientError) {
    switch (error.serverCode) {
      case 'E2E_ERR_USERNAME_TAKEN':
        return 'That username is taken. Choose another one.'
      case 'E2E_ERR_WEAK_PASSWORD':
      case 'E2E_ERR_INVALID_USERNAME':
      case 'E2E_ERR_INVALID_CREDENTIALS':
      case 'E2E_ERR_TOO_MANY_ATTEMPTS':
      case 'E2E_ERR_RATE_LIMITED':
        return serverMessage(error)
      case 'E2E_ERR_DEVICE_REMOVED':
        return 'This device was removed from the account on another of its devices.'
      case 'E2E_ERR_LINK_UNKNOWN':
        return 'No link has this code. Check that it was copied whole, or start again on the new device.'
      case 'E2E_ERR_LINK_EXPIRED':
        return 'This link code expired (codes last 10 minutes). Start again on the new device for a fresh one.'
      case 'E2E_ERR_LINK_REFUSED':
        return 'Your other device refused this link. Nothing was linked. Start again on the new device for a fresh code.'
      case 'E2E_ERR_LINK_USED':
        return 'This link code was already used, refused or cancelled. Start again on the new device for a fresh one.'
      case 'E2E_ERR_LINK_CLAIMED':
        return 'This link code was taken by a device of another account. Start again on the new device, and do not share its code.'
      case 'E2E_ERR_TOO_MANY_DEVICES':
        return 'This account has as many devices as it may have. Remove one in Settings › Devices first.'
      case 'E2E_ERR_TOO_MANY_LINKS':
        return 'Too many link codes are open from this network. Wait a few minutes, or cancel the others.'
      case 'E2E_ERR_LINK_TOKEN_INVALID':
        return 'The approval expired before this device could use it. Start again with a new code.'
    }
    switch (error.code) {
      case ClientErrorCode.WeakPassword:
      case ClientErrorCode.VersionMismatch:
        return serverMessage(error)
      case ClientErrorCode.Network:
        return 'The server cannot be reached. Check your connection and try again.'
      case ClientErrorCode.WrongPassword:
        return 'Wrong password for this account. Nothing was unlocked.'
      case ClientErrorCode.CorruptStore:
        return `This browser's copy of the account cannot be read: ${error.message}`
      case ClientErrorCode.UnknownUser:
        return 'There is no such user on this server.'
      case ClientErrorCode.IdentityChanged:
        return 'Their safety number changed. Review it before sending more messages.'
      case ClientErrorCode.AccountReplaced:
        return 'This account started over on another device, so the keys in this browser no longer belong to it. Its history here can still be read.'
      case ClientErrorCode.NotLoggedIn:
        return 'Your session has ended. Log out and log in again.'
      case ClientErrorCode.LinkFailed:
        return 'The link was stopped: a message between the two devices did not check (altered on the way, or from another version of the app). Start again with a new code.'
      case ClientErrorCode.Cancelled:
        return 'The link was cancelled.'
    }
    return serverMessage(error)
  }
  return 'Something went wrong. Please try again.'
}

/** The server's own words (falling back to the whole message), with the first letter capitalised. */
export function serverMessage(error: ClientError): string {
  const text = error.serverMessage ?? error.message
  return text.charAt(0).toUpperCase() + text.slice(1)
}
