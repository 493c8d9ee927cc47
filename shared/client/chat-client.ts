/**
 * The chat client core that both UIs drive: registration and login, the WebSocket connection with
 * reconnect and backoff, sessions with every contact, sending with retry, receiving with
 * deduplication and acknowledgement after storage, delivery receipts, contacts with trust on first
 * use and key-change warnings, safety numbers, and prekey upkeep.
 *
 * It talks to the server through `HttpClient` and `WebSocketFactory`, keeps state through
 * `ClientStore`, and seals everything it stores under a key derived from the password. Work on
 * one contact's session is serialised (one queue per contact); frames are handled in order.
 *
 * This class coordinates; the parts live beside it: the records it keeps (records.ts) and how they
 * are sealed and read back (sealed-store.ts), the per-contact queues (peer-queues.ts), the views and
 * events the UIs get (views.ts, re-exported here), the account record (account.ts) and the content
 * of envelopes (content.ts).
 */

import { type Address, address } from '../address.js'
import {
  deriveStorageKey,
  newStorageKeyParameters,
  STORAGE_KEY_MIN_ITERATIONS,
  type StorageKeyParameters,
} from '../at-rest.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import {
  IdentityResponse,
  LoginResponse,
  PreKeyBundleResponse,
  type PreKeyStatusResponse as PreKeyStatus,
  PreKeyStatusResponse,
  type PublicIdentityJson,
  RegisterResponse,
  UserSearchResponse,
} from '../codec/api.js'
import { decodeEnvelope } from '../codec/envelope.js'
import { type ClientFrame, decodeServerFrame, FRAME_VERSION, type ServerFrame } from '../codec/frames.js'
import {
  preKeyBundleFromJson,
  preKeyToJson,
  publicIdentityFromJson,
  publicIdentityToJson,
} from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import {
  exportRsaPrivateKeyPkcs8,
  generateRsaOaepKeyPair,
  importRsaPrivateKeyPkcs8,
  rsaOaepDecrypt,
} from '../crypto/primitives.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import {
  exportIdentity,
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  importIdentity,
  type PreKeyBundle,
  type PublicIdentity,
  publicPreKey,
} from '../identity.js'
import { defaultKeyGeneration, type KeyGeneration } from '../key-generation.js'
import {
  MAX_RESENDS_PER_MESSAGE,
  MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR,
  MAX_SENT_CONTENT_ENTRIES,
  ONE_TIME_PREKEY_BATCH,
  ONE_TIME_PREKEY_REFILL_THRESHOLD,
  RETRY_REQUEST_INTERVAL_MS,
  SENT_CONTENT_KEEP_MS,
  SIGNED_PREKEY_ROTATION_MS,
} from '../limits.js'
import { newMessageId } from '../message-id.js'
import { type SafetyNumber, safetyNumber } from '../safety-number.js'
import { normalizeUsername } from '../username.js'
import {
  ACCOUNT_KEY,
  type AccountSecrets,
  readAccountHeader,
  type UnlockedAccount,
  unlockAccount,
} from './account.js'
import {
  decodeKnownContent,
  encodeContent,
  isKnownContent,
  MAX_MESSAGE_TEXT_LENGTH,
  MAX_RECEIPT_IDS,
  MAX_RETRY_IDS,
  type MessageContent,
  type ParsedContent,
  parseContent,
  type ReceiptContent,
  resendOf,
  type TextContent,
} from './content.js'
import { ClientError, ClientErrorCode, isClientError } from './errors.js'
import { Emitter } from './events.js'
import { migrateRecords, RECORDS_VERSION } from './migrations.js'
import { PeerQueues } from './peer-queues.js'
import {
  type ContactRecord,
  contactView,
  identitiesEqual,
  type MessageRecord,
  messageKey,
  messageView,
} from './records.js'
import { SealedStore } from './sealed-store.js'
import { SessionManager } from './session-manager.js'
import type { ClientStore, StoreOperation } from './store.js'
import {
  errorFromResponse,
  type HttpClient,
  type WebSocketFactory,
  type WebSocketLike,
  webSocketUrl,
} from './transport.js'
import type { ClientEvents, ConnectionState, ContactView, MessageKind, MessageView } from './views.js'

export type {
  ClientEvents,
  ConnectionState,
  ContactView,
  DeliveryState,
  MessageKind,
  MessageView,
} from './views.js'
export { noticeText } from './views.js'

/** Signed prekeys kept after rotation, so prekey messages sent to an older bundle still open. */
export const SIGNED_PREKEYS_KEPT = 5
/** Reconnect backoff: doubles from the first delay up to the cap, with ±20 % jitter. */
export const RECONNECT_INITIAL_DELAY_MS = 500
export const RECONNECT_MAX_DELAY_MS = 30_000
/**
 * While connected, prekeys are checked this often too (besides on every connect and on the server's
 * prekeys.low), so a client that stays online for days still rotates its signed prekey on time.
 */
export const PREKEY_UPKEEP_INTERVAL_MS = 6 * 60 * 60 * 1000
/** After the server refuses a send for now (queue full, rate limit), the outbox is tried again after this. */
export const SEND_RETRY_DELAY_MS = 5_000

export interface ChatClientOptions {
  readonly serverUrl: string
  readonly http: HttpClient
  readonly webSocket: WebSocketFactory
  readonly store: ClientStore
  readonly now?: () => number
  readonly keyGeneration?: KeyGeneration
  /** PBKDF2 iterations for a new account's storage key (tests lower it; production keeps the default). */
  readonly storageKeyIterations?: number
  /** The fewest iterations accepted when unlocking (tests lower it). */
  readonly minimumStorageKeyIterations?: number
}

export class ChatClient {
  readonly events = new Emitter<ClientEvents>()
  readonly username: string

  private readonly options: ChatClientOptions
  private readonly store: ClientStore
  private readonly now: () => number
  private readonly keys: KeyGeneration
  /** Every record this client reads or writes, sealed under the account's storage key. */
  private readonly records: SealedStore
  /** Our session records with every peer device. */
  private readonly sessions: SessionManager
  private identity: Identity
  private loginKey: CryptoKey
  private readonly peerQueues = new PeerQueues()
  private frameQueue: Promise<void> = Promise.resolve()
  private socket: WebSocketLike | undefined
  private connectionState: ConnectionState = 'offline'
  private wantConnected = false
  private reconnectAttempts = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private upkeepTimer: ReturnType<typeof setInterval> | undefined
  /** The check of every contact's identity that runs after connecting; sends and caught-up wait for it. */
  private identityChecks: Promise<void> = Promise.resolve()
  /** Receipts taken from pendingReceipts but not yet in the outbox (flush waits for them too). */
  private receiptsBeingWritten = 0
  /** Messages the server had queued when this connection became ready, and how many are stored. */
  private backlog = 0
  private backlogStored = 0
  /** Set when storing a received message failed: nothing more is acknowledged on this connection. */
  private receivingHalted = false
  private readonly inFlight = new Set<string>()
  private readonly online = new Set<string>()
  private pendingAck = 0
  private readonly pendingReceipts = new Map<string, string[]>()
  private lastOrder = 0
  private upkeep: Promise<void> | undefined
  /** Another prekey check was asked for while one ran. */
  private upkeepAgain = false
  /** Retry requests waiting for their peer's interval to pass (one timer per peer). */
  private readonly retryTimers = new Map<string, ReturnType<typeof setTimeout>>()
  /** Retry requests due now and not yet written to the outbox (`flush` waits for them). */
  private retryRequestsDue = 0
  /** When we answered each peer's recent retry requests (at most MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR). */
  private readonly retryAnswers = new Map<string, number[]>()

  private constructor(
    options: ChatClientOptions,
    records: SealedStore,
    identity: Identity,
    loginKey: CryptoKey,
  ) {
    this.options = options
    this.store = options.store
    this.now = options.now ?? Date.now
    this.keys = options.keyGeneration ?? defaultKeyGeneration
    this.records = records
    this.username = records.account.username
    this.identity = identity
    this.loginKey = loginKey
    this.sessions = new SessionManager(options.store, records, () => this.identity, this.keys)
  }

  /** The account's secrets as they are now (the sealed store updates them with every put). */
  private get secrets(): AccountSecrets {
    return this.records.account.secrets
  }

  // --- Account lifecycle --------------------------------------------------------------------------

  /**
   * Makes a new account: keys on this device, stored (sealed) locally first, then registered with
   * the server, then a first login. If the server refuses, the local records are removed again.
   */
  static register(options: ChatClientOptions, username: string, password: string): Promise<ChatClient> {
    return ChatClient.createAccount(options, username, password, '/register')
  }

  /**
   * Starts over on this device for an existing account whose keys were lost (a new browser, a wiped
   * disk): the password proves the account, new keys replace the old ones on the server, and every
   * contact is warned that the identity key changed. Messages sent to the old keys cannot be read
   * here; they are asked for again (§8.6), and arrive once each sender accepts the new key.
   */
  static reinstall(options: ChatClientOptions, username: string, password: string): Promise<ChatClient> {
    return ChatClient.createAccount(options, username, password, '/reinstall')
  }

  private static async createAccount(
    options: ChatClientOptions,
    username: string,
    password: string,
    path: '/register' | '/reinstall',
  ): Promise<ChatClient> {
    const name = ChatClient.normalize(username)
    if (await options.store.get('account', ACCOUNT_KEY)) {
      throw new ClientError(
        ClientErrorCode.AccountMismatch,
        'expected an empty local database, got one that holds an account',
      )
    }
    const now = (options.now ?? Date.now)()
    const keys = options.keyGeneration ?? defaultKeyGeneration
    const [identity, loginKeyPair] = await Promise.all([
      generateIdentity({ extractable: true }),
      generateRsaOaepKeyPair({ extractable: true }),
    ])
    const signedPreKey = await generateSignedPreKey(identity, 1, { extractable: true }, keys)
    const oneTimePreKeys = await generateOneTimePreKeys(
      identity,
      2,
      ONE_TIME_PREKEY_BATCH,
      { extractable: true },
      keys,
    )
    const parameters: StorageKeyParameters = newStorageKeyParameters(
      options.storageKeyIterations ?? STORAGE_KEY_MIN_ITERATIONS,
    )
    const storageKey = await deriveStorageKey(password, parameters, options.minimumStorageKeyIterations)
    const account: UnlockedAccount = {
      username: name,
      server: options.serverUrl,
      storageKey,
      parameters,
      secrets: {
        identity: toBase64Url(await exportIdentity(identity)),
        loginKey: toBase64Url(await exportRsaPrivateKeyPkcs8(loginKeyPair.privateKey)),
        nextPreKeyId: 2 + ONE_TIME_PREKEY_BATCH,
        signedPreKeyId: signedPreKey.keyId,
        signedPreKeyCreatedAt: now,
        registered: false,
        recordsVersion: RECORDS_VERSION,
      },
    }
    const records = new SealedStore(options.store, account)
    const operations: StoreOperation[] = [
      await records.accountPut(account.secrets),
      ...(await Promise.all(
        [signedPreKey, ...oneTimePreKeys].map((preKey, i) => records.preKeyPut(preKey, i === 0)),
      )),
    ]
    await options.store.commit(operations)

    const client = new ChatClient(
      options,
      records,
      await importIdentity(fromBase64Url(account.secrets.identity)),
      await importRsaPrivateKeyPkcs8(fromBase64Url(account.secrets.loginKey)),
    )
    const response = await client
      .request('POST', path, {
        body: {
          username: name,
          password,
          loginKey: toBase64Url(loginKeyPair.publicKeySpki),
          identity: publicIdentityToJson(identity.public),
          signedPreKey: preKeyToJson(publicPreKey(signedPreKey)),
          oneTimePreKeys: oneTimePreKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))),
        },
      })
      .catch(async (error: unknown) => {
        await options.store.wipe()
        throw error
      })
    decode(RegisterResponse, response, 'register response')
    await records.saveSecrets({ ...records.account.secrets, registered: true })
    await client.login(password)
    return client
  }

  /** Opens the local database with the password. `expectedUsername` guards against the wrong file. */
  static async open(
    options: ChatClientOptions,
    password: string,
    expectedUsername?: string,
  ): Promise<ChatClient> {
    const record = await options.store.get('account', ACCOUNT_KEY)
    if (!record)
      throw new ClientError(ClientErrorCode.NoAccount, 'expected an account in the local database, got none')
    const header = readAccountHeader(record.value)
    if (expectedUsername !== undefined && header.username !== ChatClient.normalize(expectedUsername)) {
      throw new ClientError(
        ClientErrorCode.AccountMismatch,
        `expected the account ${expectedUsername}, got another one`,
      )
    }
    const account = await unlockAccount(record.value, password, options.minimumStorageKeyIterations)
    if (!account.secrets.registered) {
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        'expected a registered account, got one whose registration never finished',
      )
    }
    let identity: Identity
    let loginKey: CryptoKey
    try {
      identity = await importIdentity(fromBase64Url(account.secrets.identity))
      loginKey = await importRsaPrivateKeyPkcs8(fromBase64Url(account.secrets.loginKey))
    } catch (cause) {
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        'expected readable account keys, got damaged ones',
        { cause },
      )
    }
    const records = new SealedStore(options.store, account)
    await migrateRecords(options.store, records)
    return new ChatClient(options, records, identity, loginKey)
  }

  /** Who a local database belongs to, without the password (or undefined when it is empty). */
  static async accountIn(store: ClientStore): Promise<{ username: string; server: string } | undefined> {
    const record = await store.get('account', ACCOUNT_KEY)
    return record ? readAccountHeader(record.value) : undefined
  }

  private static normalize(username: string): string {
    try {
      return normalizeUsername(username)
    } catch (cause) {
      throw new ClientError(ClientErrorCode.InvalidInput, (cause as Error).message, { cause })
    }
  }

  /** Gets a fresh session token: the server encrypts it to our RSA key, only we can read it. */
  async login(password: string): Promise<void> {
    const response = decode(
      LoginResponse,
      await this.request('POST', '/login', { body: { username: this.username, password } }),
      'login response',
    )
    let token: Uint8Array
    try {
      token = await rsaOaepDecrypt(this.loginKey, fromBase64Url(response.encryptedToken))
    } catch (cause) {
      // The server encrypted the token to a login key this device does not hold: the account was
      // started over elsewhere (reinstall), and its keys here are no longer the account's.
      throw new ClientError(
        ClientErrorCode.AccountReplaced,
        `expected a token for this device's key, got one for another: ${this.username} started over on another device`,
        { cause },
      )
    }
    await this.records.saveSecrets({
      ...this.secrets,
      token: toBase64Url(token),
      tokenExpiresAt: response.expiresAt,
    })
    if (this.connectionState === 'logged-out') this.setConnectionState('offline')
  }

  get loggedIn(): boolean {
    const { token, tokenExpiresAt } = this.secrets
    return token !== undefined && (tokenExpiresAt === undefined || tokenExpiresAt > this.now())
  }

  /** Ends the session on the server; with `wipe`, also deletes everything on this device. */
  async logout(options: { wipe?: boolean } = {}): Promise<void> {
    await this.disconnect()
    if (this.secrets.token) {
      await this.request('POST', '/logout', { token: this.token() }).catch(() => undefined)
      const { token: _token, tokenExpiresAt: _expires, ...rest } = this.secrets
      await this.records.saveSecrets(rest)
    }
    if (options.wipe) await this.store.wipe()
    this.setConnectionState('logged-out')
  }

  async close(): Promise<void> {
    await this.disconnect()
    await this.store.close()
  }

  get publicIdentity(): PublicIdentity {
    return this.identity.public
  }

  // --- Connection ---------------------------------------------------------------------------------

  get connection(): ConnectionState {
    return this.connectionState
  }

  /** Connects (and keeps reconnecting with backoff) until `disconnect` or a logout. */
  connect(): void {
    if (!this.loggedIn)
      throw new ClientError(ClientErrorCode.NotLoggedIn, 'expected a login before connecting, got none')
    this.wantConnected = true
    if (!this.socket) this.openSocket()
  }

  /** Resolves once the connection is ready (or rejects after `timeoutMs`). */
  waitUntilOnline(timeoutMs = 30_000): Promise<void> {
    if (this.connectionState === 'online') return Promise.resolve()
    if (this.connectionState === 'logged-out') {
      return Promise.reject(
        new ClientError(ClientErrorCode.NotLoggedIn, 'expected a valid session, got a refusal'),
      )
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stop()
        reject(
          new ClientError(
            ClientErrorCode.Network,
            `expected to be online within ${timeoutMs} ms, got ${this.connectionState}`,
          ),
        )
      }, timeoutMs)
      const stop = this.events.on('connection', ({ state }) => {
        if (state === 'online' || state === 'logged-out') {
          clearTimeout(timer)
          stop()
          if (state === 'online') resolve()
          else reject(new ClientError(ClientErrorCode.NotLoggedIn, 'expected a valid session, got a refusal'))
        }
      })
    })
  }

  async disconnect(): Promise<void> {
    this.wantConnected = false
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    if (this.retryTimer) clearTimeout(this.retryTimer)
    if (this.upkeepTimer) clearInterval(this.upkeepTimer)
    this.reconnectTimer = undefined
    this.retryTimer = undefined
    this.upkeepTimer = undefined
    const socket = this.socket
    this.socket = undefined
    if (socket) {
      socket.onmessage = null
      socket.onclose = null
      socket.onerror = null
      socket.close(1000, 'client closing')
    }
    // Let frames already received finish storing.
    await this.frameQueue
    if (this.connectionState !== 'logged-out') this.setConnectionState('offline')
  }

  private setConnectionState(state: ConnectionState): void {
    if (this.connectionState === state) return
    this.connectionState = state
    this.events.emit('connection', { state })
  }

  private openSocket(): void {
    this.setConnectionState('connecting')
    let socket: WebSocketLike
    try {
      socket = this.options.webSocket(webSocketUrl(this.options.serverUrl))
    } catch {
      this.scheduleReconnect()
      return
    }
    this.socket = socket
    this.inFlight.clear()
    this.receivingHalted = false
    socket.onopen = () => this.sendFrame({ v: FRAME_VERSION, type: 'auth', token: this.token() })
    socket.onmessage = (event) => {
      let frame: ServerFrame
      try {
        frame = decodeServerFrame(JSON.parse(String(event.data)))
      } catch {
        this.events.emit('problem', {
          code: ProtocolErrorCode.MalformedMessage,
          message: 'the server sent a malformed frame',
        })
        return
      }
      // Frames are handled one after another, in the order they arrived.
      this.frameQueue = this.frameQueue
        .then(() => this.handleFrame(frame, socket))
        .catch((error: unknown) => this.report(error))
    }
    socket.onerror = () => {}
    socket.onclose = () => {
      if (this.socket !== socket) return
      this.socket = undefined
      this.online.clear()
      if (this.connectionState !== 'logged-out') this.setConnectionState('offline')
      if (this.wantConnected && this.connectionState !== 'logged-out') this.scheduleReconnect()
    }
  }

  private scheduleReconnect(): void {
    const base = Math.min(RECONNECT_MAX_DELAY_MS, RECONNECT_INITIAL_DELAY_MS * 2 ** this.reconnectAttempts)
    const delay = base * (0.8 + Math.random() * 0.4)
    this.reconnectAttempts++
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      if (this.wantConnected && !this.socket) this.openSocket()
    }, delay)
  }

  private sendFrame(frame: ClientFrame): boolean {
    const socket = this.socket
    // 1 = OPEN, in the browser's WebSocket and in ws alike.
    if (socket?.readyState !== 1) return false
    socket.send(JSON.stringify(frame))
    return true
  }

  private async handleFrame(frame: ServerFrame, socket: WebSocketLike): Promise<void> {
    switch (frame.type) {
      case 'ready':
        this.reconnectAttempts = 0
        this.backlog = frame.queued
        this.backlogStored = 0
        this.setConnectionState('online')
        await this.afterReady()
        if (frame.queued === 0) this.caughtUp(0)
        return
      case 'deliver':
        // A delivery from a connection that is gone is not acknowledged: the server sends it again.
        if (socket === this.socket) {
          const settled = await this.receive(frame)
          // The queued backlog is delivered first, in order; count off what is stored or settled.
          if (settled && this.backlog > 0 && ++this.backlogStored === this.backlog) {
            this.caughtUp(this.backlog)
            this.backlog = 0
          }
        }
        return
      case 'accepted':
        await this.accepted(frame.id, frame.ts)
        return
      case 'presence':
        if (frame.online) this.online.add(frame.username)
        else this.online.delete(frame.username)
        this.events.emit('presence', { username: frame.username, online: frame.online })
        return
      case 'prekeys.low':
        this.scheduleUpkeep()
        return
      case 'identity.changed':
        await this.checkIdentity(frame.username)
        return
      case 'error':
        await this.serverError(frame)
        return
    }
  }

  /** Announced once the backlog is stored and every contact's identity has been checked. */
  private caughtUp(messages: number): void {
    const socket = this.socket
    void this.identityChecks.then(() => {
      if (this.socket === socket) this.events.emit('caught-up', { messages })
    })
  }

  private async afterReady(): Promise<void> {
    const contacts = await this.contacts()
    if (contacts.length > 0) {
      this.sendFrame({
        v: FRAME_VERSION,
        type: 'presence.subscribe',
        users: contacts.map((contact) => contact.username),
      })
    }
    await this.flushOutbox()
    await this.pruneSentContent()
    // Retry requests that could not go out before (offline, or a client that stopped first).
    for (const contact of await this.records.listContacts()) {
      if (contact.retryPending?.length) this.scheduleRetryRequest(contact.username, contact.retryRequestedAt)
    }
    this.scheduleUpkeep()
    if (!this.upkeepTimer) {
      this.upkeepTimer = setInterval(() => {
        if (this.connectionState === 'online') this.scheduleUpkeep()
      }, PREKEY_UPKEEP_INTERVAL_MS)
      // In Node, this timer alone must not keep a script's process running.
      ;(this.upkeepTimer as { unref?: () => void }).unref?.()
    }
    this.identityChecks = this.checkContactIdentities()
  }

  /**
   * While we were offline a contact may have started over with new keys; the server tells only
   * those online at the time. Ask once per connection for every contact we have a session with.
   */
  private async checkContactIdentities(): Promise<void> {
    try {
      const users = new Set((await this.sessions.addresses()).map((peer: Address) => peer.user))
      for (const user of users) {
        if (this.connectionState !== 'online') return
        await this.checkIdentity(user)
      }
    } catch (error) {
      this.report(error)
    }
  }

  private async serverError(frame: Extract<ServerFrame, { type: 'error' }>): Promise<void> {
    if (frame.code === 'E2E_ERR_UNAUTHENTICATED') {
      await this.sessionRefused()
      return
    }
    if (frame.id !== undefined) {
      this.inFlight.delete(frame.id)
      if (frame.code === 'E2E_ERR_USER_NOT_FOUND') {
        // A recipient that does not exist will not appear on a retry: give up on that message.
        await this.failMessage(frame.id)
      } else if (!this.retryTimer) {
        // Refused for now (queue full, rate limit): the envelope stays in the outbox; try again later.
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined
          this.flushOutbox().catch((error: unknown) => this.report(error))
        }, SEND_RETRY_DELAY_MS)
      }
    }
    this.events.emit('problem', {
      code: frame.code,
      message: frame.message,
      ...(frame.id !== undefined ? { id: frame.id } : {}),
    })
  }

  /** The server refused our token: forget it, stop reconnecting, and let a new login start over. */
  private async sessionRefused(): Promise<void> {
    this.wantConnected = false
    const socket = this.socket
    this.socket = undefined
    socket?.close(1000, 'logged out')
    if (this.secrets.token !== undefined) {
      const { token: _token, tokenExpiresAt: _expires, ...rest } = this.secrets
      await this.records.saveSecrets(rest)
    }
    this.setConnectionState('logged-out')
  }

  private report(error: unknown): void {
    const code = isClientError(error) || isProtocolError(error) ? error.code : 'E2E_ERR_INTERNAL'
    this.events.emit('problem', {
      code,
      message: error instanceof Error ? error.message : 'unexpected failure',
    })
  }

  // --- Contacts and identities ----------------------------------------------------------------------

  async contacts(): Promise<ContactView[]> {
    const stored = await this.store.list('contacts')
    const contacts = await Promise.all(
      stored.map((record) => this.records.openContact(record.key, record.value)),
    )
    return contacts
      .map((contact) => this.contactView(contact))
      .sort((a, b) => (b.lastMessageAt ?? 0) - (a.lastMessageAt ?? 0) || a.username.localeCompare(b.username))
  }

  async contact(peer: string): Promise<ContactView | undefined> {
    const contact = await this.records.loadContact(ChatClient.normalize(peer))
    return contact && this.contactView(contact)
  }

  private contactView(contact: ContactRecord): ContactView {
    return contactView(contact, this.online.has(contact.username))
  }

  /** Users whose names start with `query` (the server's directory). */
  async searchUsers(query: string): Promise<string[]> {
    const response = decode(
      UserSearchResponse,
      await this.request('GET', `/users?query=${encodeURIComponent(query)}`, { token: this.token() }),
      'user search response',
    )
    return response.users.map((user) => user.username).filter((name) => name !== this.username)
  }

  /** Adds a contact by fetching their identity (trust on first use); an existing one is left as it is. */
  async addContact(peer: string): Promise<ContactView> {
    const name = ChatClient.normalize(peer)
    return this.peerQueues.run(name, async () => {
      const existing = await this.records.loadContact(name)
      if (existing) return this.contactView(existing)
      const identity = await this.fetchIdentity(name)
      const contact: ContactRecord = { username: name, identity, verified: false, unread: 0 }
      await this.store.commit([await this.records.contactPut(contact)])
      this.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [name] })
      return this.contactView(contact)
    })
  }

  /** The safety number to compare with `peer` (uses the identity we trust, or the new one if changed). */
  async safetyNumber(peer: string): Promise<SafetyNumber> {
    const name = ChatClient.normalize(peer)
    const contact = await this.records.loadContact(name)
    const identity = contact?.pendingIdentity ?? contact?.identity
    if (!identity)
      throw new ClientError(
        ClientErrorCode.InvalidState,
        `expected a known contact, got ${name} without keys`,
      )
    return safetyNumber(
      { username: this.username, identity: this.identity.public },
      { username: name, identity: publicIdentityFromJson(identity) },
    )
  }

  /**
   * Records that the user compared safety numbers with `peer` and they matched. Pass the number the
   * user compared: if the trusted key is no longer the one it was computed from, nothing changes.
   */
  async markVerified(peer: string, verified = true, shownSafetyNumber?: string): Promise<void> {
    await this.updateContact(ChatClient.normalize(peer), (contact) => {
      if (contact.pendingIdentity) {
        throw new ClientError(
          ClientErrorCode.IdentityChanged,
          `expected a settled identity for ${contact.username}, got a change to acknowledge first`,
        )
      }
      if (shownSafetyNumber !== undefined && contact.identity) {
        const current = safetyNumber(
          { username: this.username, identity: this.identity.public },
          { username: contact.username, identity: publicIdentityFromJson(contact.identity) },
        )
        if (current.digits !== shownSafetyNumber.replace(/\s+/g, '')) {
          throw new ClientError(
            ClientErrorCode.IdentityChanged,
            `expected the key that was shown for ${contact.username}, got another`,
          )
        }
      }
      return { ...contact, verified }
    })
  }

  private async updateContact(
    peer: string,
    change: (contact: ContactRecord) => ContactRecord,
  ): Promise<void> {
    await this.peerQueues.run(peer, async () => {
      const contact = await this.records.loadContact(peer)
      if (!contact)
        throw new ClientError(ClientErrorCode.InvalidState, `expected a contact named ${peer}, got none`)
      await this.store.commit([await this.records.contactPut(change(contact))])
    })
  }

  /**
   * The user has seen the warning that `peer`'s key changed: trust the new key from now on. The
   * old session is dropped unless it already runs on the new key. Pass the safety number the user
   * was shown: if the key changed again meanwhile, nothing is accepted and IdentityChanged is thrown.
   */
  async acceptIdentityChange(peer: string, shownSafetyNumber?: string): Promise<void> {
    const name = ChatClient.normalize(peer)
    await this.peerQueues.run(name, async () => {
      const contact = await this.records.loadContact(name)
      if (!contact?.pendingIdentity) return
      if (shownSafetyNumber !== undefined) {
        const current = safetyNumber(
          { username: this.username, identity: this.identity.public },
          { username: name, identity: publicIdentityFromJson(contact.pendingIdentity) },
        )
        if (current.digits !== shownSafetyNumber.replace(/\s+/g, '')) {
          throw new ClientError(
            ClientErrorCode.IdentityChanged,
            `expected the key that was shown for ${name}, got a newer one`,
          )
        }
      }
      const accepted = contact.pendingIdentity
      const { retryRequests, ...settled } = contact
      await this.store.commit([
        await this.records.contactPut({
          ...settled,
          identity: accepted,
          pendingIdentity: undefined,
          verified: false,
        }),
        // Sessions with the old key are of no use now; those already on the new key stay.
        await this.sessions.retain(address(name), (session) =>
          identitiesEqual(publicIdentityToJson(session.remoteIdentity), accepted),
        ),
      ])
      // Still in this contact's queue: answered (into the outbox) before this call returns.
      if (retryRequests && retryRequests.length > 0) await this.answerRetry(name, retryRequests)
    })
  }

  /**
   * Marks the conversation read up to the message at `upToOrder` (default: everything). Messages
   * that arrive meanwhile, after that position, stay unread.
   */
  async markRead(peer: string, upToOrder = Number.POSITIVE_INFINITY): Promise<void> {
    const name = ChatClient.normalize(peer)
    await this.peerQueues.run(name, async () => {
      const contact = await this.records.loadContact(name)
      if (!contact)
        throw new ClientError(ClientErrorCode.InvalidState, `expected a contact named ${name}, got none`)
      let unread = 0
      if (Number.isFinite(upToOrder) && contact.unread > 0) {
        // Only the newest `unread` incoming messages can still be unread; count those after the mark.
        const recent = await this.history(name, { limit: Math.max(contact.unread * 2, 50) })
        unread = Math.min(
          contact.unread,
          recent.filter((m) => m.direction === 'in' && m.order > upToOrder).length,
        )
      }
      const readUpTo = Number.isFinite(upToOrder) ? upToOrder : Math.max(this.now(), this.lastOrder)
      await this.store.commit([await this.records.contactPut({ ...contact, unread, readUpTo })])
    })
  }

  /** Asks the server for `peer`'s current identity and raises a warning if it is not the one we trust. */
  private async checkIdentity(peer: string): Promise<void> {
    const contact = await this.records.loadContact(peer)
    if (!contact) return
    const current = await this.fetchIdentity(peer)
    await this.notice(peer, current)
  }

  /** Compares an identity seen for `peer` with the trusted one; records and announces a change. */
  private async notice(peer: string, seen: PublicIdentityJson): Promise<void> {
    await this.peerQueues.run(peer, async () => {
      const contact = await this.records.loadContact(peer)
      if (!contact?.identity) return
      if (identitiesEqual(contact.identity, seen) || identitiesEqual(contact.pendingIdentity, seen)) return
      await this.store.commit([
        await this.records.contactPut({ ...contact, pendingIdentity: seen, verified: false }),
      ])
      this.events.emit('identity-changed', { peer })
    })
  }

  private async fetchIdentity(peer: string): Promise<PublicIdentityJson> {
    const response = decode(
      IdentityResponse,
      await this.request('GET', `/users/${encodeURIComponent(peer)}/identity`, { token: this.token() }),
      'identity response',
    )
    return response.identity
  }

  // --- Sending ------------------------------------------------------------------------------------

  /** Encrypts and stores a message, then sends it (now if online, else on reconnect). */
  async send(peer: string, text: string): Promise<MessageView> {
    const name = ChatClient.normalize(peer)
    if (name === this.username)
      throw new ClientError(ClientErrorCode.InvalidInput, 'expected another user, got yourself')
    if (text.trim().length === 0 || text.length > MAX_MESSAGE_TEXT_LENGTH) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        `expected 1–${MAX_MESSAGE_TEXT_LENGTH} characters, got ${text.length}`,
      )
    }
    // A contact may have started over while we were away: finish checking before encrypting to them.
    await this.identityChecks
    const message = await this.peerQueues.run(name, async () => {
      const sentAt = this.now()
      const id = toBase64Url(newMessageId(sentAt))
      const contact = await this.contactForSending(name)
      const current = await this.sessions.currentSession(address(name))
      const fresh = current && contact ? undefined : await this.fetchBundle(name, contact)
      const content: TextContent = { v: 1, type: 'text', id, text, sentAt }
      const encrypted = await this.sessions.encrypt(
        address(name),
        encodeContent(content),
        fresh ? { bundle: fresh.bundle } : {},
      )
      const record: MessageRecord = {
        id,
        peer: name,
        direction: 'out',
        text,
        sentAt,
        state: 'sending',
        order: this.nextOrder(),
      }
      await this.store.commit([
        encrypted.operation,
        await this.records.messagePut(record),
        await this.records.outboxPut(
          { id, peer: name, envelope: toBase64Url(encrypted.envelope), kind: 'text' },
          record.order,
        ),
        await this.records.sentPut({ id, peer: name, content, sentAt, resends: 0 }),
        await this.records.contactPut({ ...(fresh?.contact ?? contact!), lastMessageAt: sentAt }),
      ])
      if (fresh && !contact) this.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [name] })
      return record
    })
    this.events.emit('message', messageView(message))
    await this.flushOutbox()
    return messageView(message)
  }

  /** The contact to send to; refuses one whose identity key changed and is not yet accepted. */
  private async contactForSending(peer: string): Promise<ContactRecord | undefined> {
    const contact = await this.records.loadContact(peer)
    if (contact?.pendingIdentity) {
      throw new ClientError(
        ClientErrorCode.IdentityChanged,
        `expected a trusted identity for ${peer}, got a changed key to acknowledge first`,
      )
    }
    return contact
  }

  /**
   * A fresh prekey bundle of `peer`, with the contact that trusts its identity (on first use). A
   * bundle whose identity is not the one we trust is recorded as a change and refused.
   */
  private async fetchBundle(
    peer: string,
    contact: ContactRecord | undefined,
  ): Promise<{ bundle: PreKeyBundle; contact: ContactRecord }> {
    const bundleJson = decode(
      PreKeyBundleResponse,
      await this.request('GET', `/users/${encodeURIComponent(peer)}/bundle`, { token: this.token() }),
      'prekey bundle',
    )
    if (contact?.identity && !identitiesEqual(contact.identity, bundleJson.identity)) {
      if (!identitiesEqual(contact.pendingIdentity, bundleJson.identity)) {
        await this.store.commit([
          await this.records.contactPut({
            ...contact,
            pendingIdentity: bundleJson.identity,
            verified: false,
          }),
        ])
        this.events.emit('identity-changed', { peer })
      }
      throw new ClientError(
        ClientErrorCode.IdentityChanged,
        `expected ${peer}'s known identity key, got a new one`,
      )
    }
    return {
      bundle: preKeyBundleFromJson(bundleJson),
      contact: contact?.identity
        ? contact
        : { ...(contact ?? { username: peer, verified: false, unread: 0 }), identity: bundleJson.identity },
    }
  }

  /** Sends every envelope the server has not yet accepted, oldest first, each once per connection. */
  private async flushOutbox(): Promise<void> {
    if (this.connectionState !== 'online') return
    const entries = (await this.store.list('outbox')).sort((a, b) => (a.order ?? 0) - (b.order ?? 0))
    for (const entry of entries) {
      if (this.inFlight.has(entry.key)) continue
      // Claimed before the await below, so a concurrent flush cannot send it a second time.
      this.inFlight.add(entry.key)
      const outbox = await this.records.openOutbox(entry.key, entry.value)
      const sent = this.sendFrame({
        v: FRAME_VERSION,
        type: 'send',
        id: outbox.id,
        to: outbox.peer,
        body: outbox.envelope,
      })
      if (!sent) this.inFlight.delete(entry.key)
    }
  }

  /**
   * Resolves once the server has accepted everything in the outbox (messages and receipts), e.g.
   * before a script exits; rejects after `timeoutMs`.
   */
  async flush(timeoutMs = 30_000): Promise<void> {
    const deadline = this.now() + timeoutMs
    await this.flushOutbox()
    while (
      (await this.store.list('outbox')).length > 0 ||
      this.pendingReceipts.size > 0 ||
      this.receiptsBeingWritten > 0 ||
      this.retryRequestsDue > 0
    ) {
      if (this.connectionState !== 'online') {
        throw new ClientError(
          ClientErrorCode.Network,
          `expected to be online to flush the outbox, got ${this.connectionState}`,
        )
      }
      if (this.now() > deadline) {
        throw new ClientError(
          ClientErrorCode.Network,
          `expected the server to accept every message within ${timeoutMs} ms, got no answer`,
        )
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 50)
        const stop = this.events.on('delivery', done)
        function done() {
          clearTimeout(timer)
          stop()
          resolve()
        }
      })
    }
  }

  private async accepted(id: string, serverAt: number): Promise<void> {
    this.inFlight.delete(id)
    const outbox = await this.records.loadOutbox(id)
    if (!outbox) return
    const operations: StoreOperation[] = [{ op: 'delete', table: 'outbox', key: id }]
    let updated: MessageRecord | undefined
    if (outbox.kind === 'text') {
      const message = await this.records.loadMessage(outbox.peer, id)
      if (message && message.state === 'sending') {
        updated = { ...message, state: 'accepted', serverAt }
        operations.push(await this.records.messagePut(updated))
      }
    }
    await this.store.commit(operations)
    if (updated) this.events.emit('delivery', { peer: updated.peer, id, state: 'accepted' })
  }

  private async failMessage(id: string): Promise<void> {
    const outbox = await this.records.loadOutbox(id)
    if (!outbox) return
    const operations: StoreOperation[] = [{ op: 'delete', table: 'outbox', key: id }]
    const message = await this.records.loadMessage(outbox.peer, id)
    if (message) operations.push(await this.records.messagePut({ ...message, state: 'failed' }))
    await this.store.commit(operations)
    if (message) this.events.emit('delivery', { peer: outbox.peer, id, state: 'failed' })
  }

  // --- Receiving ----------------------------------------------------------------------------------

  /** Stores one delivered message; true once it is stored (or settled as unreadable) and acknowledged. */
  private async receive(frame: Extract<ServerFrame, { type: 'deliver' }>): Promise<boolean> {
    const peer = frame.from
    // After a local failure, later frames of the same connection wait for their redelivery too.
    if (this.receivingHalted) return false
    try {
      await this.peerQueues.run(peer, () => this.receiveFrom(peer, frame))
    } catch (error) {
      // A replay of a message a session already opened: acknowledged, and nothing else happens.
      if (!isProtocolError(error, ProtocolErrorCode.DuplicateMessage)) {
        // Not the message's fault (the local database failed): acknowledging would lose it, and
        // acknowledgements are cumulative, so stop here. The server sends it again after reconnecting.
        this.report(error)
        this.receivingHalted = true
        this.socket?.close(4000, 'local storage failed')
        return false
      }
    }
    this.acknowledge(frame.seq)
    return true
  }

  /**
   * Decrypts, reads and stores one delivery. A message no session opens leaves a notice in the
   * conversation and a retry request to its sender; content that decrypts but cannot be read leaves
   * a notice too, and content of a kind this version does not know is kept for a later one. Only a
   * failure of our own (the store) is thrown, so that the delivery is not acknowledged.
   */
  private async receiveFrom(peer: string, frame: Extract<ServerFrame, { type: 'deliver' }>): Promise<void> {
    // Stored already (our acknowledgement was lost): acknowledge again, change nothing.
    if (await this.store.get('messages', messageKey(peer, frame.id))) return
    let decrypted: Awaited<ReturnType<SessionManager['decrypt']>>
    try {
      decrypted = await this.sessions.decrypt(address(peer), decodeEnvelope(fromBase64Url(frame.body)))
    } catch (error) {
      if (!isUnreadable(error) || isProtocolError(error, ProtocolErrorCode.DuplicateMessage)) throw error
      const contact = await this.storeNotice(peer, frame, 'undecryptable')
      this.events.emit('undecryptable', { peer, id: frame.id, reason: error.code })
      this.scheduleRetryRequest(peer, contact.retryRequestedAt)
      return
    }
    const operations: StoreOperation[] = [...decrypted.operations]
    const seenIdentity = publicIdentityToJson(decrypted.remoteIdentity)
    let { contact, identityChanged, newContact } = this.contactSeen(
      await this.records.loadContact(peer),
      peer,
      seenIdentity,
    )
    const after: (() => void)[] = []
    let parsed: ParsedContent | undefined
    let content: MessageContent | undefined
    try {
      parsed = parseContent(decrypted.plaintext)
      if (isKnownContent(parsed)) content = decodeKnownContent(parsed)
    } catch (error) {
      if (!isProtocolError(error)) throw error
    }
    /** Whether this delivery added an entry to the conversation (a message or a notice). */
    let added = false
    if (!parsed) {
      operations.push(await this.records.messagePut(this.noticeRecord(peer, frame, 'unreadable')))
      added = true
    } else if (!content) {
      const notice: MessageRecord = {
        ...this.noticeRecord(peer, frame, 'unsupported'),
        raw: toBase64Url(decrypted.plaintext),
      }
      operations.push(await this.records.messagePut(notice))
      after.push(() => this.events.emit('message', messageView(notice)))
      added = true
    } else if (content.type === 'text') {
      added = await this.receiveText(peer, frame, content, parsed, contact, operations, after)
    } else if (content.type === 'receipt') {
      await this.receiveReceipt(peer, content, parsed, operations, after)
    } else if (content.type === 'retry') {
      const ids = content.ids
      if (contact.pendingIdentity) {
        // From keys the user has not accepted yet: answered when (and if) they accept them.
        const waiting = [...new Set([...(contact.retryRequests ?? []), ...ids])].slice(-MAX_RETRY_IDS)
        contact = { ...contact, retryRequests: waiting }
      } else {
        // Answered once this delivery is stored, in the peer's queue behind it.
        after.push(() => this.answerRetryLater(peer, ids))
      }
    } else {
      for (const id of content.ids) {
        const notice = await this.records.loadMessage(peer, id)
        if (notice?.direction === 'in' && notice.kind === 'undecryptable') {
          const lost: MessageRecord = { ...notice, kind: 'lost' }
          operations.push(await this.records.messagePut(lost))
          after.push(() => this.events.emit('message', messageView(lost)))
        }
      }
    }
    if (added) {
      contact = {
        ...contact,
        unread: contact.unread + 1,
        lastMessageAt: Math.max(contact.lastMessageAt ?? 0, frame.ts),
      }
    }
    operations.push(await this.records.contactPut(contact))
    await this.store.commit(operations)

    if (newContact) this.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [peer] })
    if (identityChanged) this.events.emit('identity-changed', { peer })
    for (const step of after) step()
  }

  /** The contact after a message from `peer` proved `seen` is their identity (trust on first use). */
  private contactSeen(
    contact: ContactRecord | undefined,
    peer: string,
    seen: PublicIdentityJson,
  ): { contact: ContactRecord; identityChanged: boolean; newContact: boolean } {
    if (!contact) {
      return {
        contact: { username: peer, identity: seen, verified: false, unread: 0 },
        identityChanged: false,
        newContact: true,
      }
    }
    if (!contact.identity)
      return { contact: { ...contact, identity: seen }, identityChanged: false, newContact: false }
    if (identitiesEqual(contact.identity, seen) || identitiesEqual(contact.pendingIdentity, seen)) {
      return { contact, identityChanged: false, newContact: false }
    }
    return {
      contact: { ...contact, pendingIdentity: seen, verified: false },
      identityChanged: true,
      newContact: false,
    }
  }

  /** A notice in place of the message a delivery carried. */
  private noticeRecord(
    peer: string,
    frame: Extract<ServerFrame, { type: 'deliver' }>,
    kind: Exclude<MessageKind, 'text'>,
  ): MessageRecord {
    return {
      id: frame.id,
      peer,
      direction: 'in',
      text: '',
      sentAt: frame.ts,
      serverAt: frame.ts,
      state: 'received',
      order: this.nextOrder(),
      kind,
    }
  }

  /**
   * Stores a notice for a delivery that no session opened, and its id among those to ask the peer
   * for again (with the contact, if it is a new one). Returns the contact as stored.
   */
  private async storeNotice(
    peer: string,
    frame: Extract<ServerFrame, { type: 'deliver' }>,
    kind: 'undecryptable',
  ): Promise<ContactRecord> {
    const notice = this.noticeRecord(peer, frame, kind)
    const contact = await this.records.loadContact(peer)
    const updated: ContactRecord = {
      ...(contact ?? { username: peer, verified: false, unread: 0 }),
      unread: (contact?.unread ?? 0) + 1,
      lastMessageAt: Math.max(contact?.lastMessageAt ?? 0, frame.ts),
      retryPending: [...(contact?.retryPending ?? []), frame.id].slice(-MAX_RETRY_IDS),
    }
    await this.store.commit([await this.records.messagePut(notice), await this.records.contactPut(updated)])
    if (!contact) this.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [peer] })
    this.events.emit('message', messageView(notice))
    return updated
  }

  /**
   * A text message: stored, or, when it is a message sent again on our request, stored in place of
   * the notice it answers (ignored if that message is stored already). In place means at the
   * notice's position while the notice is unread; a notice already read gives way to the message
   * at the end of the conversation, unread, so that nobody (and no script reading unread messages)
   * misses it. True when it counts as a new unread entry.
   */
  private async receiveText(
    peer: string,
    frame: Extract<ServerFrame, { type: 'deliver' }>,
    content: TextContent,
    parsed: ParsedContent,
    contact: ContactRecord,
    operations: StoreOperation[],
    after: (() => void)[],
  ): Promise<boolean> {
    // The id inside the encryption must match the frame's, or the server rewrote it.
    if (content.id !== frame.id) {
      const notice = this.noticeRecord(peer, frame, 'unreadable')
      operations.push(await this.records.messagePut(notice))
      after.push(() => this.events.emit('message', messageView(notice)))
      return true
    }
    const original = resendOf(parsed)
    const replaced = original === undefined ? undefined : await this.records.loadMessage(peer, original)
    if (replaced && (replaced.direction !== 'in' || (replaced.kind ?? 'text') === 'text')) return false
    const inPlace = replaced !== undefined && replaced.order > (contact.readUpTo ?? Number.NEGATIVE_INFINITY)
    const received: MessageRecord = {
      id: original ?? content.id,
      peer,
      direction: 'in',
      text: content.text,
      sentAt: content.sentAt,
      serverAt: replaced?.serverAt ?? frame.ts,
      state: 'received',
      order: inPlace ? replaced.order : this.nextOrder(),
    }
    operations.push(await this.records.messagePut(received))
    if (replaced && !inPlace) after.push(() => this.events.emit('removed', { peer, id: received.id }))
    after.push(() => {
      this.events.emit('message', messageView(received))
      this.queueReceipt(peer, received.id)
    })
    return !inPlace
  }

  private async receiveReceipt(
    peer: string,
    content: ReceiptContent,
    parsed: ParsedContent,
    operations: StoreOperation[],
    after: (() => void)[],
  ): Promise<void> {
    for (const id of content.ids) {
      const message = await this.records.loadMessage(peer, id)
      if (message && message.direction === 'out' && message.state !== 'delivered') {
        const updated: MessageRecord = { ...message, state: 'delivered' }
        operations.push(await this.records.messagePut(updated))
        after.push(() => this.events.emit('delivery', { peer, id, state: 'delivered' }))
      }
    }
    // A receipt sent again on our request: the notice for it has nothing to show and goes.
    const original = resendOf(parsed)
    const notice = original === undefined ? undefined : await this.records.loadMessage(peer, original)
    if (original !== undefined && notice?.direction === 'in' && (notice.kind ?? 'text') !== 'text') {
      operations.push({ op: 'delete', table: 'messages', key: messageKey(peer, original) })
      after.push(() => this.events.emit('removed', { peer, id: original }))
    }
  }

  // --- Recovering what could not be decrypted ----------------------------------------------------

  /**
   * Asks `peer` to send again the messages listed in their contact record (`retryPending`), in a
   * fresh session: at once if we have not asked them within RETRY_REQUEST_INTERVAL_MS, else when
   * that interval is over, with whatever else failed meanwhile. The list and the time of the last
   * request are stored, so a client that stops first (a script) asks on its next connection.
   */
  private scheduleRetryRequest(peer: string, lastRequestedAt: number | undefined): void {
    if (this.retryTimers.has(peer)) return
    const delay =
      lastRequestedAt === undefined
        ? 0
        : Math.max(0, lastRequestedAt + RETRY_REQUEST_INTERVAL_MS - this.now())
    // A request due now is work `flush` waits for; one due later is not (it is stored).
    const due = delay === 0
    if (due) this.retryRequestsDue++
    const timer = setTimeout(() => {
      this.retryTimers.delete(peer)
      this.peerQueues
        .run(peer, () => this.sendRetryRequest(peer))
        .catch((error: unknown) => this.report(error))
        .finally(() => {
          if (due) this.retryRequestsDue--
        })
    }, delay)
    ;(timer as { unref?: () => void }).unref?.()
    this.retryTimers.set(peer, timer)
  }

  private async sendRetryRequest(peer: string): Promise<void> {
    const contact = await this.records.loadContact(peer)
    const pending = contact?.retryPending ?? []
    // Never to keys the user has not accepted: the ids wait until they are.
    if (!contact || pending.length === 0 || contact.pendingIdentity) return
    const last = contact.retryRequestedAt
    if (last !== undefined && last + RETRY_REQUEST_INTERVAL_MS > this.now()) {
      this.scheduleRetryRequest(peer, last)
      return
    }
    if (this.connectionState !== 'online') return
    let bundle: Awaited<ReturnType<ChatClient['fetchBundle']>>
    try {
      bundle = await this.fetchBundle(peer, contact)
    } catch (error) {
      // Offline, or the peer's key changed: the ids stay stored for the next connection.
      this.report(error)
      return
    }
    const ids = pending.slice(0, MAX_RETRY_IDS)
    const encrypted = await this.sessions.encrypt(
      address(peer),
      encodeContent({ v: 1, type: 'retry', ids }),
      { bundle: bundle.bundle, fresh: true },
    )
    const now = this.now()
    const outboxId = toBase64Url(newMessageId(now))
    const rest = pending.slice(ids.length)
    const { retryPending: _sent, ...updated } = bundle.contact
    await this.store.commit([
      encrypted.operation,
      await this.records.outboxPut(
        { id: outboxId, peer, envelope: toBase64Url(encrypted.envelope), kind: 'retry' },
        this.nextOrder(),
      ),
      await this.records.contactPut({
        ...updated,
        retryRequestedAt: now,
        ...(rest.length > 0 ? { retryPending: rest } : {}),
      }),
    ])
    if (rest.length > 0) this.scheduleRetryRequest(peer, now)
    await this.flushOutbox()
  }

  private answerRetryLater(peer: string, ids: readonly string[]): void {
    this.peerQueues.run(peer, () => this.answerRetry(peer, ids)).catch((error: unknown) => this.report(error))
  }

  /**
   * `peer` could not decrypt these messages of ours: send each again on the current session (the
   * fresh one their request started), or tell them it is gone. A message already sent again
   * MAX_RESENDS_PER_MESSAGE times, or requests beyond the hourly limit, are ignored.
   */
  private async answerRetry(peer: string, ids: readonly string[]): Promise<void> {
    const now = this.now()
    const recent = (this.retryAnswers.get(peer) ?? []).filter((at) => at > now - 60 * 60 * 1000)
    if (recent.length >= MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR) return
    this.retryAnswers.set(peer, [...recent, now])
    const contact = await this.records.loadContact(peer)
    if (!contact || contact.pendingIdentity) return
    const unavailable: string[] = []
    const failed: MessageRecord[] = []
    for (const id of ids) {
      const sent = await this.records.loadSent(peer, id)
      if (sent && sent.resends >= MAX_RESENDS_PER_MESSAGE) continue
      if (!sent || sent.sentAt < now - SENT_CONTENT_KEEP_MS) {
        unavailable.push(id)
        const message = await this.records.loadMessage(peer, id)
        if (message?.direction === 'out' && message.state !== 'failed')
          failed.push({ ...message, state: 'failed' })
        continue
      }
      const frameId = toBase64Url(newMessageId(now))
      const content: MessageContent =
        sent.content.type === 'text'
          ? { ...sent.content, id: frameId, resendOf: id }
          : { ...sent.content, resendOf: id }
      // Each encryption advances the record, so each is committed (with its envelope) before the next.
      const encrypted = await this.sessions.encrypt(address(peer), encodeContent(content))
      await this.store.commit([
        encrypted.operation,
        await this.records.sentPut({ ...sent, resends: sent.resends + 1 }),
        await this.records.outboxPut(
          { id: frameId, peer, envelope: toBase64Url(encrypted.envelope), kind: 'resend' },
          this.nextOrder(),
        ),
      ])
    }
    if (unavailable.length > 0) {
      const encrypted = await this.sessions.encrypt(
        address(peer),
        encodeContent({ v: 1, type: 'unavailable', ids: unavailable }),
      )
      await this.store.commit([
        encrypted.operation,
        await this.records.outboxPut(
          {
            id: toBase64Url(newMessageId(now)),
            peer,
            envelope: toBase64Url(encrypted.envelope),
            kind: 'unavailable',
          },
          this.nextOrder(),
        ),
        ...(await Promise.all(failed.map((message) => this.records.messagePut(message)))),
      ])
    }
    for (const message of failed) this.events.emit('delivery', { peer, id: message.id, state: 'failed' })
    await this.flushOutbox()
  }

  /** Deletes sent content older than SENT_CONTENT_KEEP_MS, and the oldest beyond MAX_SENT_CONTENT_ENTRIES. */
  private async pruneSentContent(): Promise<void> {
    const entries = (await this.store.list('sent')).sort((a, b) => (b.order ?? 0) - (a.order ?? 0))
    const cutoff = this.now() - SENT_CONTENT_KEEP_MS
    const stale = entries.filter((entry, i) => i >= MAX_SENT_CONTENT_ENTRIES || (entry.order ?? 0) < cutoff)
    if (stale.length === 0) return
    await this.store.commit(
      stale.map((entry): StoreOperation => ({ op: 'delete', table: 'sent', key: entry.key })),
    )
  }

  private acknowledge(seq: number): void {
    this.pendingAck = Math.max(this.pendingAck, seq)
    // One cumulative acknowledgement once the frames that arrived together are all stored.
    queueMicrotask(() => {
      if (this.pendingAck === 0) return
      if (this.sendFrame({ v: FRAME_VERSION, type: 'ack', upTo: this.pendingAck })) this.pendingAck = 0
    })
  }

  private queueReceipt(peer: string, id: string): void {
    const ids = this.pendingReceipts.get(peer) ?? []
    ids.push(id)
    this.pendingReceipts.set(peer, ids)
    if (ids.length === 1) {
      // Gather the receipts for a burst of messages into one.
      setTimeout(() => {
        this.sendReceipts(peer).catch((error: unknown) => this.report(error))
      }, 0)
    }
  }

  private async sendReceipts(peer: string): Promise<void> {
    const ids = this.pendingReceipts.get(peer) ?? []
    this.pendingReceipts.delete(peer)
    this.receiptsBeingWritten++
    try {
      await this.writeReceipts(peer, ids)
    } finally {
      this.receiptsBeingWritten--
    }
    await this.flushOutbox()
  }

  private async writeReceipts(peer: string, ids: string[]): Promise<void> {
    for (let start = 0; start < ids.length; start += MAX_RECEIPT_IDS) {
      const chunk = ids.slice(start, start + MAX_RECEIPT_IDS)
      await this.peerQueues.run(peer, async () => {
        const contact = await this.records.loadContact(peer)
        // No receipts to a contact whose key changed until the user has seen the warning.
        if (!contact || contact.pendingIdentity || !(await this.sessions.currentSession(address(peer))))
          return
        const sentAt = this.now()
        const id = toBase64Url(newMessageId(sentAt))
        const content: ReceiptContent = { v: 1, type: 'receipt', ids: chunk }
        const encrypted = await this.sessions.encrypt(address(peer), encodeContent(content))
        await this.store.commit([
          encrypted.operation,
          await this.records.outboxPut(
            { id, peer, envelope: toBase64Url(encrypted.envelope), kind: 'receipt' },
            this.nextOrder(),
          ),
          await this.records.sentPut({ id, peer, content, sentAt, resends: 0 }),
        ])
      })
    }
  }

  // --- History ------------------------------------------------------------------------------------

  /** The newest `limit` messages with `peer` before `beforeOrder`, oldest first. */
  async history(
    peer: string,
    options: { limit?: number; beforeOrder?: number } = {},
  ): Promise<MessageView[]> {
    const name = ChatClient.normalize(peer)
    const stored = await this.store.listMessages(name, {
      limit: options.limit ?? 50,
      ...(options.beforeOrder !== undefined ? { beforeOrder: options.beforeOrder } : {}),
    })
    const messages = await Promise.all(
      stored.map((record) => this.records.openMessage(record.key, record.value)),
    )
    return messages.map(messageView)
  }

  // --- Prekey upkeep ------------------------------------------------------------------------------

  private scheduleUpkeep(): void {
    if (this.upkeep) {
      // The check under way may have read the server's count before whatever asks now (a
      // prekeys.low after a peer took our last keys): run another once it is done, not none.
      this.upkeepAgain = true
      return
    }
    this.upkeep = this.maintainPreKeys()
      .catch((error: unknown) => this.report(error))
      .finally(() => {
        this.upkeep = undefined
        const again = this.upkeepAgain
        this.upkeepAgain = false
        if (again && this.connectionState === 'online') this.scheduleUpkeep()
      })
  }

  /** How many one-time prekeys the server still holds for us, and which signed prekey it hands out. */
  async preKeyStatus(): Promise<PreKeyStatus> {
    return decode(
      PreKeyStatusResponse,
      await this.request('GET', '/keys/status', { token: this.token() }),
      'prekey status',
    )
  }

  /** Refills one-time prekeys when the server runs low, and rotates the signed prekey when it is old. */
  async maintainPreKeys(): Promise<void> {
    const status = await this.preKeyStatus()
    if (status.oneTimePreKeys < ONE_TIME_PREKEY_REFILL_THRESHOLD) {
      const first = this.secrets.nextPreKeyId
      const preKeys = await generateOneTimePreKeys(
        this.identity,
        first,
        ONE_TIME_PREKEY_BATCH,
        { extractable: true },
        this.keys,
      )
      // Stored before they are published, so a message to one of them can always be opened.
      await this.store.commit([
        ...(await Promise.all(preKeys.map((preKey) => this.records.preKeyPut(preKey, false)))),
        await this.records.accountPut({ ...this.secrets, nextPreKeyId: first + ONE_TIME_PREKEY_BATCH }),
      ])
      await this.request('POST', '/keys/one-time', {
        token: this.token(),
        body: { oneTimePreKeys: preKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
      })
    }
    if (this.now() - status.signedPreKeyCreatedAt >= SIGNED_PREKEY_ROTATION_MS)
      await this.rotateSignedPreKey()
  }

  async rotateSignedPreKey(): Promise<void> {
    const keyId = this.secrets.nextPreKeyId
    const preKey = await generateSignedPreKey(this.identity, keyId, { extractable: true }, this.keys)
    const stale = (await this.store.list('prekeys'))
      .map((record) => record.key)
      .filter((key) => key.startsWith('signed:'))
      .map((key) => Number(key.slice('signed:'.length)))
      .sort((a, b) => b - a)
      .slice(SIGNED_PREKEYS_KEPT - 1)
    await this.store.commit([
      await this.records.preKeyPut(preKey, true),
      ...stale.map((id): StoreOperation => ({ op: 'delete', table: 'prekeys', key: `signed:${id}` })),
      await this.records.accountPut({
        ...this.secrets,
        nextPreKeyId: keyId + 1,
        signedPreKeyId: keyId,
        signedPreKeyCreatedAt: this.now(),
      }),
    ])
    await this.request('PUT', '/keys/signed', {
      token: this.token(),
      body: { signedPreKey: preKeyToJson(publicPreKey(preKey)) },
    })
  }

  // --- Shared by the sections above -------------------------------------------------------------

  private nextOrder(): number {
    this.lastOrder = Math.max(this.now(), this.lastOrder + 1)
    return this.lastOrder
  }

  private token(): string {
    const token = this.secrets.token
    if (!token || !this.loggedIn)
      throw new ClientError(ClientErrorCode.NotLoggedIn, 'expected a valid login, got none')
    return token
  }

  private async request(
    method: 'GET' | 'POST' | 'PUT',
    path: string,
    options: { body?: unknown; token?: string } = {},
  ) {
    const response = await this.options.http.request(method, path, options)
    if (response.status >= 200 && response.status < 300) return response.body
    const error = errorFromResponse(response, `${method} ${path.split('?')[0]}`)
    if (error.code === ClientErrorCode.NotLoggedIn && options.token) await this.sessionRefused()
    throw error
  }
}

/**
 * Errors that mean the message itself can never be read (malformed, not for a session we hold,
 * tampered, replayed): such a message is acknowledged and dropped. Anything else is a local failure.
 */
function isUnreadable(error: unknown): error is { code: string } {
  if (isProtocolError(error)) return true
  return isClientError(error) && error.code === ClientErrorCode.InvalidState
}
