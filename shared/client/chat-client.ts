import { directConversation } from '../address.js'
import { deriveStorageKey, newStorageKeyParameters, STORAGE_KEY_MIN_ITERATIONS } from '../at-rest.js'
import { toBase64Url } from '../bytes.js'
import { ChangePasswordResponse, RegisterResponse } from '../codec/api.js'
import type { ServerFrame } from '../codec/frames.js'
import { decode } from '../codec/schema.js'
import type { Identity, PublicIdentity } from '../identity.js'
import { defaultKeyGeneration } from '../key-generation.js'
import { newMessageId } from '../message-id.js'
import type { SafetyNumber } from '../safety-number.js'
import { ACCOUNT_KEY, ownDeviceId, readAccountHeader, unlockAccount } from './account.js'
import { AccountSession } from './account-session.js'
import { Contacts } from './contacts.js'
import { CONTENT_SCHEMAS, CONTENT_VERSION, type ExtraContent, MAX_MESSAGE_TEXT_LENGTH } from './content.js'
import { builtInHandlers } from './content-handlers.js'
import { type ClientContext, problemOf } from './context.js'
import { Devices, type DeviceView } from './devices.js'
import { ClientError, ClientErrorCode, isClientError } from './errors.js'
import { Emitter } from './events.js'
import { planHistory } from './history-transfer.js'
import { type ContentHandler, type DeliverFrame, Inbox } from './inbox.js'
import {
  canonicalUsername,
  createLocalAccount,
  type LocalAccount,
  type LocalAccountOptions,
  loginSecretOf,
  openLocalAccount,
} from './lifecycle.js'
import { approveLink, completeLink, type LinkApproval, type PendingLink } from './link.js'
import { Outbox } from './outbox.js'
import { OwnDeviceInbox } from './own-devices.js'
import { checkPasswordPolicy } from './password-policy.js'
import { PeerQueues } from './peer-queues.js'
import { type PreKeyStatus, PreKeyUpkeep } from './prekey-upkeep.js'
import { type Connection, type ReceivedFrame, RelayLink } from './relay-link.js'
import { Retries } from './retries.js'
import type { SealedStore } from './sealed-store.js'
import { SessionManager } from './session-manager.js'
import type { ClientStore } from './store.js'
import type { HttpClient, WebSocketFactory } from './transport.js'
import {
  type ClientEvents,
  type ConnectionState,
  type ContactView,
  type ConversationPreview,
  type ConversationView,
  type MessageKind,
  type MessageView,
  messageTime,
  noticeText,
} from './views.js'

export type { DeviceView } from './devices.js'
export type { ContentHandler, Delivery } from './inbox.js'
export type { LinkApproval, PendingLink, ProvisionedAccount } from './link.js'
export { startLink } from './link.js'
export { SEND_RETRY_DELAY_MS } from './outbox.js'
export { PREKEY_UPKEEP_INTERVAL_MS, SIGNED_PREKEYS_KEPT } from './prekey-upkeep.js'
export { RECONNECT_INITIAL_DELAY_MS, RECONNECT_MAX_DELAY_MS } from './relay-link.js'
export type {
  ClientEvents,
  ConnectionState,
  ContactView,
  ConversationPreview,
  ConversationView,
  DeliveryState,
  MessageKind,
  MessageView,
} from './views.js'
export { accountDeletedText, messageTime, noticeText } from './views.js'

/** The types the core itself sends (sendContent is for the others). */
const BUILT_IN_TYPES: ReadonlySet<string> = new Set(Object.keys(CONTENT_SCHEMAS))

export interface ChatClientOptions extends LocalAccountOptions {
  readonly http: HttpClient
  readonly webSocket: WebSocketFactory
  /** Content types beyond the built-in ones (a later version's, or a test's). */
  readonly contentHandlers?: readonly ContentHandler[]
}

export class ChatClient {
  readonly events = new Emitter<ClientEvents>()
  readonly username: string
  private readonly store: ClientStore
  private readonly records: SealedStore
  /** The key derivation costs (tests lower them): a password change derives with the same ones. */
  private readonly keyDerivation: Pick<
    LocalAccountOptions,
    'storageKeyIterations' | 'minimumStorageKeyIterations' | 'loginSecretIterations'
  >
  private readonly identity: Identity
  private readonly session: AccountSession
  private readonly now: () => number
  private readonly link: RelayLink
  private readonly contactsPart: Contacts
  private readonly outbox: Outbox
  private readonly inbox: Inbox
  private readonly retries: Retries
  private readonly upkeep: PreKeyUpkeep
  private readonly devicesPart: Devices
  private readonly http: HttpClient
  private readonly peerQueues = new PeerQueues()
  /** The own device list's refresh after connecting: what is sent to our other devices waits for it. */
  private ownDevicesKnown: Promise<void> = Promise.resolve()
  /** The check of every contact's identity that runs after connecting; sends and caught-up wait for it. */
  private identityChecks: Promise<void> = Promise.resolve()
  /** Messages the server had queued when this connection became ready, and how many are stored. */
  private backlog = 0
  private backlogStored = 0
  /** Set when storing a received message failed: nothing more is acknowledged on this connection. */
  private receivingHalted = false
  private lastOrder = 0

  private constructor(options: ChatClientOptions, account: LocalAccount) {
    // Every part reads and commits through the sealed store's view, which keeps live records in step.
    this.store = account.records.store
    this.records = account.records
    this.identity = account.identity
    this.username = account.records.account.username
    this.now = options.now ?? Date.now
    this.keyDerivation = {
      ...(options.storageKeyIterations !== undefined
        ? { storageKeyIterations: options.storageKeyIterations }
        : {}),
      ...(options.minimumStorageKeyIterations !== undefined
        ? { minimumStorageKeyIterations: options.minimumStorageKeyIterations }
        : {}),
      ...(options.loginSecretIterations !== undefined
        ? { loginSecretIterations: options.loginSecretIterations }
        : {}),
    }
    this.session = new AccountSession(options.http, account.records, account.loginKey, this.now, (password) =>
      loginSecretOf(this.keyDerivation, password, this.username),
    )
    this.session.onRefused = (error) => {
      this.link.refuse()
      // As when the relay says it (handleFrame): a UI hears that this device was removed from
      // whichever request learned it first (the socket may be closed, or never opened).
      if (error.serverCode === 'E2E_ERR_DEVICE_REMOVED')
        this.events.emit('problem', { code: error.serverCode, message: error.serverMessage ?? error.message })
    }
    this.devicesPart = new Devices(this.session, this.records)
    this.http = options.http
    const keys = options.keyGeneration ?? defaultKeyGeneration
    this.link = new RelayLink({
      serverUrl: options.serverUrl,
      webSocket: options.webSocket,
      token: () => this.session.token(),
      onFrames: (frames) => this.handleFrames(frames),
      onState: (state) => this.events.emit('connection', { state }),
      onClosed: () => {
        this.contactsPart.forgetPresence()
        this.outbox.connectionClosed()
      },
      onProblem: (code, message) => this.events.emit('problem', { code, message }),
      onError: (error) => this.report(error),
    })
    const ctx: ClientContext = {
      username: this.username,
      deviceId: ownDeviceId(account.records.account.secrets),
      store: this.store,
      records: this.records,
      sessions: new SessionManager(this.store, this.records, () => this.identity, this.username, keys),
      peerQueues: this.peerQueues,
      events: this.events,
      keys,
      identity: () => this.identity,
      now: this.now,
      nextOrder: () => {
        this.lastOrder = Math.max(this.now(), this.lastOrder + 1)
        return this.lastOrder
      },
      lastOrder: () => this.lastOrder,
      connection: () => this.link.state,
      sendFrame: (frame) => this.link.send(frame),
      api: (method, path, body) => this.session.api(method, path, body),
      report: (error) => this.report(error),
    }
    this.contactsPart = new Contacts(ctx)
    this.outbox = new Outbox(ctx, this.contactsPart)
    this.retries = new Retries(ctx, this.contactsPart, this.outbox)
    this.upkeep = new PreKeyUpkeep(ctx)
    const handlers = builtInHandlers(ctx, {
      queueReceipt: (peer, id) => this.outbox.queueReceipt(peer, id),
      answerRetry: (peer, ids) => this.retries.answerLater(peer, ids),
    })
    this.inbox = new Inbox(
      ctx,
      [...handlers, ...(options.contentHandlers ?? [])],
      new OwnDeviceInbox(ctx, (device) => this.outbox.fanOut.learnOwnDevice(device)),
    )
    this.inbox.onUndecryptable = (peer, last) => this.retries.schedule(peer, last)
    this.contactsPart.onIdentityAccepted = (peer, ids) => this.retries.answer(peer, ids)
  }

  // --- Account lifecycle --------------------------------------------------------------------------

  /** A new account: keys made and stored here first, then registered, then a first login. */
  static register(options: ChatClientOptions, username: string, password: string): Promise<ChatClient> {
    return ChatClient.createAccount(options, username, password, '/register')
  }

  /**
   * Starts over on this device for an account whose keys were lost: the password proves the
   * account, new keys replace the old ones on the server, and every contact is warned that the
   * identity key changed. Messages sent to the old keys cannot be read here; they are asked for
   * again (docs/protocol.md §8.6), and arrive once each sender accepts the new key.
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
    const name = canonicalUsername(username)
    // A new password must meet the policy here: the server never sees it to check.
    if (path === '/register') await checkPasswordPolicy(password, [name, username])
    const { account, registration, loginSecret } = await createLocalAccount(options, name, password)
    const client = new ChatClient(options, account)
    const response = await client.session
      .withCredential(registration, path === '/reinstall' ? password : undefined, (body) =>
        client.session.request('POST', path, { body }),
      )
      .catch(async (error: unknown) => {
        // Nothing of a refused registration stays on this device.
        await options.store.wipe()
        throw error
      })
    decode(RegisterResponse, response, 'register response')
    await client.records.saveSecrets({ ...client.records.account.secrets, registered: true })
    await client.session.login(password, loginSecret)
    client.link.loggedIn()
    return client
  }

  /**
   * The new device of a link, once its provisioning message arrived (`startLink`,
   * `PendingLink.waitForProvisioning`): stores the account here as the device the link reserved,
   * sealed under `password` (the account's: later log-ins derive the login secret from it), adds
   * itself on the server and is logged in. See link.ts.
   *
   * The password is checked right away with a log-in: the provisioning message does not carry it,
   * and a mistyped one would only show at the next log-in, with no way left to mend it. One the
   * server refuses removes this device from the account again, wipes the store and closes the
   * client, and the error (E2E_ERR_INVALID_CREDENTIALS) says so. Any other failure of
   * that log-in (no network) leaves the link standing: the session the link gave is valid, and the
   * password is checked at the next log-in.
   */
  static async completeLink(
    options: ChatClientOptions,
    pending: PendingLink,
    password: string,
  ): Promise<ChatClient> {
    const client = new ChatClient(options, await completeLink(options, pending, password))
    client.link.loggedIn()
    try {
      await client.login(password)
    } catch (error) {
      if (!isClientError(error) || error.serverCode !== 'E2E_ERR_INVALID_CREDENTIALS') return client
      await client.removeDevice(client.deviceId).catch(() => undefined)
      // Nothing of a refused link stays on this device, as for a refused registration.
      await client.peerQueues.idle()
      await options.store.wipe().catch(() => undefined)
      await client.close().catch(() => undefined)
      throw new ClientError(
        error.code,
        `expected ${client.username}'s password (the one it logs in with on its other devices), got one the server refused: this device was removed from the account again`,
        {
          ...(error.status !== undefined ? { status: error.status } : {}),
          serverCode: error.serverCode,
          cause: error,
        },
      )
    }
    return client
  }

  /** Opens the local database with the password. `expectedUsername` guards against the wrong file. */
  static async open(
    options: ChatClientOptions,
    password: string,
    expectedUsername?: string,
  ): Promise<ChatClient> {
    const client = new ChatClient(options, await openLocalAccount(options, password, expectedUsername))
    await client.restoreOrder()
    return client
  }

  /**
   * Positions in the conversations only grow, even when the clock goes back (or a test freezes it):
   * a reopened client starts after the newest entry it stored (each contact keeps its newest).
   */
  private async restoreOrder(): Promise<void> {
    for (const contact of await this.records.listContacts()) {
      let newest = contact.preview?.order
      if (newest === undefined && contact.lastMessageAt !== undefined) {
        // Kept before previews were: read that conversation's newest entry once.
        newest = (await this.history(contact.username, { limit: 1 }))[0]?.order
      }
      this.lastOrder = Math.max(this.lastOrder, newest ?? 0, contact.readUpTo ?? 0)
    }
  }

  /** Who a local database belongs to, without the password (or undefined when it is empty). */
  static async accountIn(store: ClientStore): Promise<{ username: string; server: string } | undefined> {
    const record = await store.get('account', ACCOUNT_KEY)
    return record ? readAccountHeader(record.value) : undefined
  }

  /**
   * Gets a fresh session token: the server encrypts it to our RSA key, only we can read it. A
   * password change this device made and the server has not confirmed yet is finished first.
   */
  async login(password: string): Promise<void> {
    const pending = this.records.account.secrets.passwordChange
    if (pending) {
      try {
        // The server still has the secret from before the change (the usual case) ...
        await this.session.login(undefined, pending.from)
      } catch (error) {
        if (!isClientError(error) || error.serverCode !== 'E2E_ERR_INVALID_CREDENTIALS') throw error
        // ... or took the change and only its confirmation was lost.
        await this.session.login(undefined, pending.to)
      }
      this.link.loggedIn()
      await this.finishPasswordChange()
      return
    }
    await this.session.login(password)
    this.link.loggedIn()
  }

  /**
   * Changes the password: the new one must meet the policy; the current one must open this store
   * and convince the server. The store is sealed again under the new password (progress through
   * `onProgress`, one step per record), then the server takes the new login secret; with
   * `endOtherSessions`, every other session of the account ends. Interrupted after the store
   * changed, it finishes on the next log-in or connection (the store opens with the new password
   * from then on). Returns how many other sessions ended.
   */
  async changePassword(
    current: string,
    next: string,
    options: { endOtherSessions?: boolean; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<{ endedSessions: number }> {
    if (next === current) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        'new password: expected a different one, got the current one',
      )
    }
    await checkPasswordPolicy(next, [this.username])
    await this.finishPasswordChange()
    const account = await this.store.get('account', ACCOUNT_KEY)
    if (!account)
      throw new ClientError(ClientErrorCode.NoAccount, 'expected an account in the local database, got none')
    const parameters = newStorageKeyParameters(
      this.keyDerivation.storageKeyIterations ?? STORAGE_KEY_MIN_ITERATIONS,
    )
    // The current password opens this store (WrongPassword otherwise); every key derives side by side.
    const [, from, to, storageKey] = await Promise.all([
      unlockAccount(account.value, current, this.keyDerivation.minimumStorageKeyIterations),
      loginSecretOf(this.keyDerivation, current, this.username),
      loginSecretOf(this.keyDerivation, next, this.username),
      deriveStorageKey(next, parameters, this.keyDerivation.minimumStorageKeyIterations),
    ])
    // A fresh log-in proves the current password to the server before anything changes, and moves an
    // account made before login secrets onto its secret (so `from` is what the server holds).
    await this.session.login(current, from)
    this.link.loggedIn()
    const secrets = { ...this.records.account.secrets, passwordChange: { from, to } }
    await this.records.reseal({ storageKey, parameters }, secrets, options.onProgress)
    return this.finishPasswordChange(options.endOtherSessions === true)
  }

  /** Sends the server a password change this store already made, and forgets it once confirmed. */
  private async finishPasswordChange(endOtherSessions = false): Promise<{ endedSessions: number }> {
    const pending = this.records.account.secrets.passwordChange
    if (!pending) return { endedSessions: 0 }
    let endedSessions = 0
    try {
      const response = decode(
        ChangePasswordResponse,
        await this.session.api('POST', '/account/password', {
          loginSecret: pending.from,
          newLoginSecret: pending.to,
          ...(endOtherSessions ? { endOtherSessions } : {}),
        }),
        'password change response',
      )
      endedSessions = response.endedSessions
    } catch (error) {
      // Refused as a wrong secret: the server took the change before (its answer was lost).
      if (!isClientError(error) || error.serverCode !== 'E2E_ERR_INVALID_CREDENTIALS') throw error
    }
    const { passwordChange: _done, ...secrets } = this.records.account.secrets
    await this.records.saveSecrets(secrets)
    return { endedSessions }
  }

  /**
   * The server told this client that its account was deleted (its session token is one of a
   * deleted account's): `deleteAccount` then erases this device's copy without asking the server.
   */
  private deletedOnServer = false

  get loggedIn(): boolean {
    return this.session.loggedIn
  }

  /** Ends the session on the server; with `wipe`, also deletes everything on this device. */
  async logout(options: { wipe?: boolean } = {}): Promise<void> {
    await this.disconnect()
    await this.session.logout()
    if (options.wipe) await this.store.wipe()
    this.link.refuse()
  }

  /**
   * Deletes this account, on the server and on this device. `typedUsername` is what the user typed
   * to confirm (both UIs ask for the account's name and its password): anything but this account's
   * name is refused before anything is sent. The server then checks the password (as at log-in)
   * and deletes everything it holds of the account; only after it said so is the local store
   * wiped. A refusal (wrong password, too many attempts, no network) leaves everything as it was.
   * When the server has already said the account is gone (a session token of a deleted account:
   * an earlier attempt whose answer was lost, or another device's deletion), the local store is
   * wiped without asking it again.
   * The caller closes the client afterwards.
   */
  async deleteAccount(password: string, typedUsername: string): Promise<void> {
    let typed: string | undefined
    try {
      typed = canonicalUsername(typedUsername)
    } catch {
      typed = undefined
    }
    if (typed !== this.username) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        `expected this account's name (${this.username}) typed to confirm the deletion, got another`,
      )
    }
    // Offline first, so nothing arrives (or is acknowledged) for a store about to be wiped.
    const wasConnected = this.connection === 'online' || this.connection === 'connecting'
    await this.disconnect()
    // The server already said the account is gone (the answer to an earlier attempt was lost, or
    // another device deleted it): only this device's copy is left to erase.
    if (!this.deletedOnServer) {
      try {
        if (!this.loggedIn) await this.login(password)
        await this.session.deleteAccount(password)
      } catch (error) {
        // 401 with this code: our token was one of the deleted account's (an earlier attempt got through).
        if (
          !isClientError(error, ClientErrorCode.NotLoggedIn) ||
          error.serverCode !== 'E2E_ERR_ACCOUNT_DELETED'
        ) {
          if (wasConnected && this.loggedIn) this.connect()
          throw error
        }
        await this.session.forgetToken()
      }
    }
    await this.peerQueues.idle()
    await this.store.wipe()
    this.link.refuse()
  }

  /**
   * Disconnects, finishes the work already started (receipts still gathering are written to the
   * outbox, retry answers and deliveries being stored finish), then closes the store: what was due
   * is sent on the next connection, never lost to a store closed under it.
   */
  async close(): Promise<void> {
    await this.disconnect()
    await this.outbox.writePendingReceipts()
    await this.peerQueues.idle()
    await this.store.close()
  }

  get publicIdentity(): PublicIdentity {
    return this.identity.public
  }

  /** Which of the account's devices this is: 1 for the one that registered it. */
  get deviceId(): number {
    return ownDeviceId(this.records.account.secrets)
  }

  // --- Devices (devices.ts, link.ts) ---------------------------------------------------------------

  /** The account's devices, with their names and which one this is. */
  devices(): Promise<DeviceView[]> {
    return this.devicesPart.list()
  }

  /** Names this device (sealed: only the account's devices read it); undefined removes the name. */
  renameDevice(name: string | undefined): Promise<void> {
    return this.devicesPart.rename(name)
  }

  /** Removes one of the account's devices (this one too: then this client is logged out). */
  async removeDevice(deviceId: number): Promise<void> {
    await this.devicesPart.remove(deviceId)
    if (!this.loggedIn) await this.disconnect()
  }

  /**
   * The existing device's part of a link: reads `code`, answers the new device and waits for its
   * name; returns the check to show beside the new device's, and approve/refuse. See link.ts.
   */
  approveLink(code: string, options: { signal?: AbortSignal } = {}): Promise<LinkApproval> {
    return approveLink(
      { http: this.http, session: this.session, records: this.records },
      code,
      options.signal,
    )
  }

  // --- Connection ---------------------------------------------------------------------------------

  get connection(): ConnectionState {
    return this.link.state
  }

  /** Connects (and keeps reconnecting with backoff) until `disconnect` or a logout. */
  connect(): void {
    if (!this.loggedIn)
      throw new ClientError(ClientErrorCode.NotLoggedIn, 'expected a login before connecting, got none')
    this.link.connect()
    // A password change interrupted after this store changed: the server learns of it now.
    if (this.records.account.secrets.passwordChange) {
      this.finishPasswordChange().catch((error: unknown) => this.report(error))
    }
  }

  /** Resolves once the connection is ready (or rejects after `timeoutMs`). */
  waitUntilOnline(timeoutMs = 30_000): Promise<void> {
    return this.link.waitUntilOnline(
      (listener) => this.events.on('connection', ({ state }) => listener(state)),
      timeoutMs,
    )
  }

  async disconnect(): Promise<void> {
    this.outbox.stop()
    this.retries.stop()
    this.upkeep.stop()
    await this.link.disconnect()
  }

  /**
   * Frames in order; consecutive deliveries are stored together (inbox.ts), then acknowledged, and
   * consecutive `accepted` frames are settled in one commit.
   */
  private async handleFrames(frames: readonly ReceivedFrame[]): Promise<void> {
    let start = 0
    while (start < frames.length) {
      const { frame, connection } = frames[start]!
      if (frame.type === 'accepted') {
        let end = start + 1
        while (end < frames.length && frames[end]!.frame.type === 'accepted') end++
        await this.outbox.acceptedMany(
          frames.slice(start, end).map(({ frame }) => frame as Extract<ServerFrame, { type: 'accepted' }>),
        )
        start = end
        continue
      }
      if (frame.type !== 'deliver') {
        await this.handleFrame(frame, connection)
        start++
        continue
      }
      let end = start + 1
      while (
        end < frames.length &&
        frames[end]!.frame.type === 'deliver' &&
        frames[end]!.connection === connection
      )
        end++
      await this.receive(
        frames.slice(start, end).map(({ frame }) => frame as DeliverFrame),
        connection,
      )
      start = end
    }
  }

  private async handleFrame(frame: ServerFrame, connection: Connection): Promise<void> {
    switch (frame.type) {
      case 'ready':
        this.receivingHalted = false
        this.backlog = frame.queued
        this.backlogStored = 0
        this.link.ready()
        await this.afterReady()
        if (frame.queued === 0) this.caughtUp(0, connection)
        return
      case 'deliver':
        await this.receive([frame], connection)
        return
      case 'accepted':
        await this.outbox.accepted(frame.id, frame.ts)
        return
      case 'devices.mismatch':
        // Beside the drain, like the identity checks: it fetches bundles over HTTP.
        this.outbox.devicesMismatch(frame).catch((error: unknown) => this.report(error))
        return
      case 'presence':
        this.contactsPart.presenceChanged(frame.username, frame.online)
        return
      case 'prekeys.low':
        this.upkeep.schedule()
        return
      case 'identity.changed':
        // Beside the frame drain, as the checks after `ready` are: it fetches the peer's keys over
        // HTTP, and a request that is slow (or never answered, until its timeout) must not hold up
        // the deliveries behind it. Sends wait for it (`identityChecks`), so nothing goes to a
        // replaced key meanwhile.
        this.identityChecks = Promise.all([
          this.identityChecks,
          this.contactsPart.checkIdentity(frame.username).catch((error: unknown) => this.report(error)),
        ]).then(() => undefined)
        return
      case 'error':
        // Without an id, a deleted account is this one (deleted from another device): the session
        // has ended like a refused one. So has that of a device removed from the account (by
        // another of its devices): the UI hears why.
        if (
          frame.code === 'E2E_ERR_UNAUTHENTICATED' ||
          (frame.code === 'E2E_ERR_ACCOUNT_DELETED' && frame.id === undefined) ||
          (frame.code === 'E2E_ERR_DEVICE_REMOVED' && frame.id === undefined)
        ) {
          if (frame.code === 'E2E_ERR_ACCOUNT_DELETED') this.deletedOnServer = true
          if (frame.code !== 'E2E_ERR_UNAUTHENTICATED') {
            this.events.emit('problem', { code: frame.code, message: frame.message })
          }
          await this.sessionRefused()
          return
        }
        if (frame.id !== undefined) await this.outbox.refused({ ...frame, id: frame.id })
        // A server from before devices knows no `send.devices`: it answers a frame of a type it
        // does not know, without an id. Say which side must be updated rather than only that.
        if (
          frame.code === 'E2E_ERR_BAD_FRAME' &&
          frame.id === undefined &&
          frame.message.startsWith('client frame:')
        ) {
          this.events.emit('problem', {
            code: ClientErrorCode.VersionMismatch,
            message: `expected a server that takes one message per device (send.devices), got one that does not know it: the server must be updated (it said: ${frame.message})`,
          })
          return
        }
        this.events.emit('problem', {
          code: frame.code,
          message: frame.message,
          ...(frame.id !== undefined ? { id: frame.id } : {}),
        })
        return
    }
  }

  /** Stores deliveries (or settles them as notices), then acknowledges them all at once. */
  private async receive(frames: readonly DeliverFrame[], connection: Connection): Promise<void> {
    // A delivery from a connection that is gone is not acknowledged: the server sends it again.
    // After a local failure, later frames of the same connection wait for their redelivery too.
    if (!this.link.isCurrent(connection) || this.receivingHalted) return
    try {
      await this.inbox.receive(frames)
    } catch (error) {
      // Not the messages' fault (the local database failed): acknowledging would lose them, and
      // acknowledgements are cumulative, so stop here. The server sends them again after reconnecting.
      this.report(error)
      this.receivingHalted = true
      this.link.close(4000, 'local storage failed')
      return
    }
    this.link.acknowledge(Math.max(...frames.map((frame) => frame.seq)), connection)
    // The queued backlog is delivered first, in order; count off what is stored or settled.
    if (this.backlog > 0) {
      this.backlogStored += frames.length
      if (this.backlogStored >= this.backlog) {
        this.caughtUp(this.backlog, connection)
        this.backlog = 0
      }
    }
  }

  /** Announced once the backlog is stored and every contact's identity has been checked. */
  private caughtUp(messages: number, connection: Connection): void {
    void this.identityChecks.then(() => {
      if (this.link.isCurrent(connection)) this.events.emit('caught-up', { messages })
    })
  }

  private async afterReady(): Promise<void> {
    // Which other devices the account has now (one linked or removed meanwhile): read positions
    // and verifications reach them before any send has had a mismatch answer to learn it from.
    // A server that cannot answer now leaves the list as it was: the next send's answer corrects it.
    // Started before anything is awaited, so whatever the UI does once online waits for it; beside
    // the frame drain, not in it (a request must not hold up the deliveries behind `ready`).
    this.ownDevicesKnown = this.refreshOwnDevices().catch((error: unknown) => {
      if (!isClientError(error)) this.report(error)
    })
    await this.contactsPart.connected()
    await this.outbox.flush()
    await this.outbox.pruneSentContent()
    // Retry requests that could not go out before (offline, or a client that stopped first).
    await this.retries.resume()
    this.upkeep.start()
    this.identityChecks = this.contactsPart.checkAll()
  }

  private async refreshOwnDevices(): Promise<void> {
    const listed = await this.devicesPart.list()
    await this.outbox.fanOut.setOwnDevices(
      listed.filter((device) => !device.current).map((device) => device.id),
    )
  }

  /** The server refused our token: forget it, stop reconnecting, and let a new login start over. */
  private async sessionRefused(): Promise<void> {
    this.link.refuse()
    await this.session.forgetToken()
  }

  private report(error: unknown): void {
    this.events.emit('problem', problemOf(error))
  }

  // --- Contacts and trust (contacts.ts) -----------------------------------------------------------

  contacts(): Promise<ContactView[]> {
    return this.contactsPart.list()
  }

  /**
   * The conversation list both UIs show: every contact, newest conversation first, with unread
   * count, presence, verification, a pending key change, and the newest entry (from the contact's
   * record; computed from the history only for conversations from before previews were kept).
   */
  async conversations(): Promise<ConversationView[]> {
    const views = await Promise.all(
      (await this.records.listContacts()).map(async (contact): Promise<ConversationView> => {
        let stored = contact.preview
        if (!stored && contact.lastMessageAt !== undefined) {
          const [last] = await this.history(contact.username, { limit: 1 })
          if (last) stored = { ...last, text: last.text, kind: last.kind, time: messageTime(last) }
        }
        const preview =
          stored &&
          ({
            id: stored.id,
            text: noticeText({ kind: stored.kind as MessageKind, peer: contact.username }) ?? stored.text,
            direction: stored.direction,
            kind: stored.kind as MessageKind,
            time: stored.time,
          } satisfies ConversationPreview)
        return { ...this.contactsPart.view(contact), preview }
      }),
    )
    return views.sort(
      (a, b) => (b.lastMessageAt ?? 0) - (a.lastMessageAt ?? 0) || a.username.localeCompare(b.username),
    )
  }

  contact(peer: string): Promise<ContactView | undefined> {
    return this.contactsPart.get(canonicalUsername(peer))
  }

  /** Users whose names start with `query` (the server's directory). */
  searchUsers(query: string): Promise<string[]> {
    return this.contactsPart.search(query)
  }

  /** Adds a contact by fetching their identity (trust on first use); an existing one is left as it is. */
  addContact(peer: string): Promise<ContactView> {
    return this.contactsPart.add(canonicalUsername(peer))
  }

  /**
   * Blocks `peer` on the server and here: their messages are dropped (they are not told), our
   * presence is hidden from them, and we cannot send to them until `unblock`. The conversation
   * stays in the history, marked blocked.
   */
  blockContact(peer: string): Promise<ContactView> {
    return this.contactsPart.block(canonicalUsername(peer))
  }

  /** Unblocks `peer`: messages flow both ways again. Undefined when `peer` is not a contact. */
  unblockContact(peer: string): Promise<ContactView | undefined> {
    return this.contactsPart.unblock(canonicalUsername(peer))
  }

  /** The safety number to compare with `peer` (the identity we trust, or the new one if it changed). */
  safetyNumber(peer: string): Promise<SafetyNumber> {
    return this.contactsPart.safetyNumber(canonicalUsername(peer))
  }

  /** The user compared `shown` with `peer`'s screen and they matched (see Contacts.confirmSafetyNumber). */
  async confirmSafetyNumber(peer: string, shown: string): Promise<void> {
    const name = canonicalUsername(peer)
    await this.contactsPart.confirmSafetyNumber(name, shown)
    await this.syncVerification(name)
  }

  /** Records whether safety numbers were compared and matched (refused while a key change is pending). */
  async markVerified(peer: string, verified = true, shownSafetyNumber?: string): Promise<void> {
    const name = canonicalUsername(peer)
    await this.contactsPart.markVerified(name, verified, shownSafetyNumber)
    await this.syncVerification(name)
  }

  /** The user has seen that `peer`'s key changed: trust the new key from now on (not verified). */
  async acceptIdentityChange(peer: string, shownSafetyNumber?: string): Promise<void> {
    const name = canonicalUsername(peer)
    await this.contactsPart.acceptIdentityChange(name, shownSafetyNumber)
    await this.syncVerification(name)
  }

  /** Tells our other devices which key of `peer` we trust now, and whether it is verified. */
  private async syncVerification(peer: string): Promise<void> {
    const contact = await this.records.loadContact(peer)
    if (!contact?.identity || contact.pendingIdentity) return
    await this.ownDevicesKnown
    await this.outbox.sendToOwnDevices({
      v: 1,
      type: 'sync.verified',
      peer,
      identity: contact.identity,
      verified: contact.verified,
    })
  }

  /**
   * Marks the conversation read up to the entry at `upToOrder` (default: everything), here and,
   * when anything was unread, on our other devices (up to that entry's time, which they share).
   */
  async markRead(peer: string, upToOrder = Number.POSITIVE_INFINITY): Promise<void> {
    const name = canonicalUsername(peer)
    const before = await this.records.loadContact(name)
    await this.markReadHere(name, upToOrder)
    if (!before || before.unread === 0) return
    const recent = await this.history(name, { limit: Math.max(before.unread * 2, 50) })
    const read = recent.filter((message) => message.direction === 'in' && message.order <= upToOrder)
    if (read.length === 0) return
    await this.ownDevicesKnown
    await this.outbox.sendToOwnDevices({
      v: 1,
      type: 'sync.read',
      peer: name,
      upTo: Math.max(...read.map((message) => messageTime(message))),
    })
  }

  private async markReadHere(name: string, upToOrder: number): Promise<void> {
    await this.contactsPart.markRead(name, upToOrder, async (contact) => {
      // Only the newest `unread` entries can still be unread; count those after the mark.
      const recent = await this.history(name, { limit: Math.max(contact.unread * 2, 50) })
      return Math.min(
        contact.unread,
        recent.filter((m) => m.direction === 'in' && m.order > upToOrder).length,
      )
    })
  }

  // --- Messages (outbox.ts, inbox.ts) -------------------------------------------------------------

  /** Encrypts and stores a message, then sends it (now if online, else on reconnect). */
  async send(peer: string, text: string): Promise<MessageView> {
    const name = canonicalUsername(peer)
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
    return this.outbox.sendText(name, text)
  }

  /**
   * Sends content of a type one of `contentHandlers` defines (the seam new kinds of message plug
   * into); refused unless this client knows the type and the content matches its schema.
   */
  async sendContent(peer: string, content: ExtraContent): Promise<string> {
    const name = canonicalUsername(peer)
    const handler = this.inbox.handlerFor(content.type)
    if (!handler || content.v !== CONTENT_VERSION || BUILT_IN_TYPES.has(content.type)) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        'expected content of a type a handler was added for, got another',
      )
    }
    decode(handler.schema, content, `${content.type} content`)
    await this.identityChecks
    return this.outbox.sendContent(name, content)
  }

  /**
   * Waits until the account lists device `deviceId` (a device just approved registers itself once
   * its user has typed the password there), asking every `intervalMs`; false after `timeoutMs`.
   */
  async waitForDevice(
    deviceId: number,
    options: { timeoutMs: number; intervalMs?: number; signal?: AbortSignal },
  ): Promise<boolean> {
    const deadline = this.now() + options.timeoutMs
    for (;;) {
      if ((await this.devicesPart.list()).some((device) => device.id === deviceId)) {
        await this.refreshOwnDevices()
        return true
      }
      if (this.now() >= deadline || options.signal?.aborted) return false
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 1_000))
    }
  }

  /**
   * Sends this device's conversation history to the account's other devices (a device just
   * linked: docs/protocol.md §13.10): the newest messages of every conversation, up to
   * MAX_HISTORY_TRANSFER_BYTES, in parts of HISTORY_PART_BYTES, each through the outbox (so a
   * dropped connection resumes where it was). Resolves once the server has taken every part;
   * `onProgress` hears how many it has.
   */
  async sendHistory(
    options: { onProgress?: (sent: number, parts: number) => void; timeoutMs?: number } = {},
  ): Promise<{ parts: number; messages: number; leftOut: number }> {
    await this.ownDevicesKnown
    const plan = await planHistory(this.records, this.store)
    const transfer = toBase64Url(newMessageId(this.now()))
    const ids: string[] = []
    for (const [index, entries] of plan.parts.entries()) {
      const id = await this.outbox.sendToOwnDevices(
        { v: 1, type: 'sync.history', transfer, part: index + 1, parts: plan.parts.length, entries },
        { flush: false },
      )
      if (id === undefined) {
        throw new ClientError(
          ClientErrorCode.InvalidState,
          'expected another device of this account to send the history to, got none',
        )
      }
      ids.push(id)
    }
    await this.outbox.flush()
    const deadline = this.now() + (options.timeoutMs ?? 10 * 60_000)
    let sent = -1
    for (;;) {
      const waiting = (await this.store.getMany('outbox', ids)).filter(
        (record) => record !== undefined,
      ).length
      if (ids.length - waiting !== sent) {
        sent = ids.length - waiting
        options.onProgress?.(sent, ids.length)
      }
      if (waiting === 0) break
      if (this.now() > deadline) {
        throw new ClientError(
          ClientErrorCode.Network,
          `expected the server to take every part of the history within ${options.timeoutMs ?? 600_000} ms, got ${sent} of ${ids.length}; the rest goes when this device is next online`,
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    return { parts: ids.length, messages: plan.messages, leftOut: plan.leftOut }
  }

  /** True while the outbox holds anything the server has not accepted yet. */
  hasUnsent(): Promise<boolean> {
    return this.outbox.pending()
  }

  /**
   * Resolves once the server has accepted everything in the outbox (messages, receipts, retry
   * requests and answers), e.g. before a script exits; rejects after `timeoutMs`.
   */
  flush(timeoutMs = 30_000): Promise<void> {
    return this.outbox.drain(timeoutMs, () => this.retries.busy)
  }

  /** The newest `limit` entries of the conversation with `peer` before `beforeOrder`, oldest first. */
  async history(
    peer: string,
    options: { limit?: number; beforeOrder?: number } = {},
  ): Promise<MessageView[]> {
    const stored = await this.store.listMessages(directConversation(canonicalUsername(peer)), {
      limit: options.limit ?? 50,
      ...(options.beforeOrder !== undefined ? { beforeOrder: options.beforeOrder } : {}),
    })
    const messages = await Promise.all(
      stored.map((record) => this.records.openMessage(record.key, record.value)),
    )
    return messages.map((message) => this.inbox.view(message))
  }

  // --- Prekeys (prekey-upkeep.ts) -----------------------------------------------------------------

  /** How many one-time prekeys the server still holds for us, and which signed prekey it hands out. */
  preKeyStatus(): Promise<PreKeyStatus> {
    return this.upkeep.status()
  }

  /** Refills one-time prekeys when the server runs low, and rotates the signed prekey when it is old. */
  maintainPreKeys(): Promise<void> {
    return this.upkeep.maintain()
  }

  rotateSignedPreKey(): Promise<void> {
    return this.upkeep.rotateSignedPreKey()
  }
}
