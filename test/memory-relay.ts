/**
 * An in-memory relay for fast unit tests of the client core: the server's REST routes and WebSocket
 * relay as the core uses them, behind the core's own transport interfaces (shared/client/transport.ts
 * `HttpClient`, `WebSocketFactory`), without TLS, HTTP, sockets, bcrypt or a database. It stands
 * beside the tests against the real server (test/client-*.test.ts), never in place of them.
 *
 * It follows server/routes/*.ts and server/ws/*.ts: requests and frames are decoded with the shared
 * schemas (shared/codec/api.ts, frames.ts) and refused with the server's codes; keys and signatures
 * are verified by the shared code as the server does; answers are checked against the response
 * schemas and frames built by the server's own builders (server/ws/frames.ts); the login token is
 * RSA-OAEP-encrypted to the login key through WebCrypto; one-time prekeys are handed out once, the
 * lowest id first; sends are idempotent per (sender, id); each recipient has one queue, sequence
 * numbers only grow, acknowledgements are cumulative and clamped to what that connection was sent,
 * and a new connection gets the queue in order within the delivery window; presence, prekeys.low and
 * identity.changed go where the server sends them.
 *
 * Where it differs from the real server, and why:
 *  - Delivery is deterministic: frames travel through one FIFO "wire" shared by every socket, pumped
 *    by microtasks, so there are no timers, no latency, and each socket keeps its order in both
 *    directions as TCP does (the order between different sockets is one of the many real ones).
 *    `pause()` and `step()` hand the pump to the test.
 *  - Nothing depends on time passing: no auth timeout, no heartbeat (a session that expires while
 *    its socket is open stays open; HTTP requests and new sockets do check expiry), no purge.
 *  - No rate limits (nor the per-target one-time prekey limit and re-fetch window), login limiter,
 *    backpressure or group commit: a test of the core has no use for
 *    them, and each is tested against the real server. Each send is stored and answered on its own.
 *  - Login secrets are kept in memory and compared directly instead of through bcrypt; every account
 *    is on its login secret (no accounts from before them); tokens are kept as their text instead
 *    of hashed.
 *  - A lost network (`link.goOffline()`, a frame dropped with the socket closed) is noticed by the
 *    relay at once; the real server notices a silent peer only through its heartbeat.
 *  - `restart()` closes every socket as a shutdown does and keeps all state, as the database would.
 *
 * `settle()` waits for what the relay can see: the wire empty, no HTTP request in progress, and every
 * delivery handed to an open socket acknowledged by its client. Work a client does on its own after
 * that (a delivery receipt written after a timer, a prekey upload after key generation) is outside
 * it: wait for those by frame (`waitFor`) or client event.
 */

import type { ServerLimits } from '../server/context.js'
import { ServerError, ServerErrorCode, serverErrors } from '../server/errors.js'
import {
  DELIVERY_WINDOW,
  MAX_BAD_FRAMES_PER_CONNECTION,
  MAX_CONNECTIONS_PER_USER,
  MAX_FRAME_BYTES,
  MAX_ONE_TIME_PREKEYS_PER_USER,
  MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION,
  MAX_QUEUED_BYTES_PER_RECIPIENT,
  MAX_QUEUED_BYTES_PER_SENDER,
  MAX_QUEUED_MESSAGES_PER_RECIPIENT,
  MAX_QUEUED_MESSAGES_PER_SENDER,
  MAX_TOKENS_PER_DEVICE,
  MESSAGE_TTL_MS,
  SIGNED_PREKEYS_KEPT,
  TOKEN_BYTES,
  TOKEN_LIFETIME_MS,
  USER_SEARCH_LIMIT,
} from '../server/limits.js'
import { toServerError } from '../server/plugins/errors.js'
import { assertDistinctKeyIds, parseUsername } from '../server/routes/common.js'
import { CloseCode, isCanonicalBase64Url } from '../server/ws/connection.js'
import {
  acceptedFrame,
  deliverFrame,
  errorFrame,
  identityChangedFrame,
  preKeysLowFrame,
  presenceFrame,
  readyFrame,
} from '../server/ws/frames.js'
import { DEFAULT_DEVICE_ID } from '../shared/address.js'
import { fromBase64Url, toBase64Url } from '../shared/bytes.js'
import { ClientError, ClientErrorCode } from '../shared/client/errors.js'
import {
  type ClientStore,
  MemoryStore,
  type StoreOperation,
  type StoreTable,
} from '../shared/client/store.js'
import type {
  HttpClient,
  HttpMethod,
  HttpResponse,
  WebSocketFactory,
  WebSocketLike,
} from '../shared/client/transport.js'
import {
  ChangePasswordRequest,
  ChangePasswordResponse,
  IdentityResponse,
  LoginRequest,
  LoginResponse,
  OneTimePreKeyIdsResponse,
  PreKeyBundleResponse,
  type PreKeyJson,
  PreKeyStatusResponse,
  type PublicIdentityJson,
  RegisterRequest,
  RegisterResponse,
  RotateSignedPreKeyRequest,
  UploadOneTimePreKeysRequest,
  UsernameParams,
  UserSearchQuery,
  UserSearchResponse,
} from '../shared/codec/api.js'
import {
  type ClientFrame,
  decodeClientFrame,
  decodeServerFrame,
  FRAME_VERSION,
} from '../shared/codec/frames.js'
import { preKeyFromJson, publicIdentityFromJson } from '../shared/codec/keys.js'
import { decode, matches, type Static, type TSchema } from '../shared/codec/schema.js'
import { importRsaOaepPublicKey, randomBytes, rsaOaepEncrypt } from '../shared/crypto/primitives.js'
import { isProtocolError } from '../shared/errors.js'
import { verifyOneTimePreKey, verifyPublicIdentity, verifySignedPreKey } from '../shared/identity.js'
import { ONE_TIME_PREKEY_REFILL_THRESHOLD, USER_SEARCH_MIN_LENGTH } from '../shared/limits.js'
import { normalizeUsername } from '../shared/username.js'

/** The server limits the relay enforces (the others are time- or load-based; see above). */
export type MemoryRelayLimits = Pick<
  ServerLimits,
  | 'maxOneTimePreKeysPerUser'
  | 'signedPreKeysKept'
  | 'maxTokensPerDevice'
  | 'tokenLifetimeMs'
  | 'maxQueuedMessagesPerRecipient'
  | 'maxQueuedBytesPerRecipient'
  | 'maxQueuedMessagesPerSender'
  | 'maxQueuedBytesPerSender'
  | 'messageTtlMs'
  | 'maxConnectionsPerUser'
  | 'deliveryWindow'
  | 'maxBadFramesPerConnection'
>

/** The server's defaults (server/app.ts DEFAULT_LIMITS), from the same constants. */
export const MEMORY_RELAY_LIMITS: MemoryRelayLimits = {
  maxOneTimePreKeysPerUser: MAX_ONE_TIME_PREKEYS_PER_USER,
  signedPreKeysKept: SIGNED_PREKEYS_KEPT,
  maxTokensPerDevice: MAX_TOKENS_PER_DEVICE,
  tokenLifetimeMs: TOKEN_LIFETIME_MS,
  maxQueuedMessagesPerRecipient: MAX_QUEUED_MESSAGES_PER_RECIPIENT,
  maxQueuedBytesPerRecipient: MAX_QUEUED_BYTES_PER_RECIPIENT,
  maxQueuedMessagesPerSender: MAX_QUEUED_MESSAGES_PER_SENDER,
  maxQueuedBytesPerSender: MAX_QUEUED_BYTES_PER_SENDER,
  messageTtlMs: MESSAGE_TTL_MS,
  maxConnectionsPerUser: MAX_CONNECTIONS_PER_USER,
  deliveryWindow: DELIVERY_WINDOW,
  maxBadFramesPerConnection: MAX_BAD_FRAMES_PER_CONNECTION,
}

export interface MemoryRelayOptions {
  /** The relay's clock (token expiry, message times); default Date.now. */
  readonly now?: () => number
  readonly limits?: Partial<MemoryRelayLimits>
}

/** One frame as it got through, seen from the client: `sent` by it, or `received` by it. */
export interface RelayFrame {
  readonly direction: 'sent' | 'received'
  /** Which socket (numbered from 1 in the order they were made). */
  readonly socket: number
  /** The user the socket authenticated as, once it has. */
  readonly username: string | undefined
  // biome-ignore lint/suspicious/noExplicitAny: tests read frames loosely and assert on them
  readonly frame: any
}

/** What happens to a frame on the wire: it arrives, it is lost, or it is lost and its socket dies. */
export type FrameVerdict = 'pass' | 'drop' | 'drop-and-close'

/** A queued (unacknowledged) message, as `queued()` shows it. */
export interface QueuedView {
  readonly seq: number
  readonly id: string
  readonly from: string
  readonly ts: number
}

/** WebSocket readyState values (the browser's and ws's). */
const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3
/** What a client's onclose sees when the connection died without a close frame (RFC 6455 §7.1.5). */
const ABNORMAL_CLOSURE = 1006
/** What a client's onclose sees after it closed without a code. */
const NO_STATUS = 1005

const CLIENT_FRAME_TYPES = new Set([
  'auth',
  'send',
  'send.devices',
  'ack',
  'presence.subscribe',
  'presence.share',
])
const TOKEN_TEXT = /^[A-Za-z0-9_-]{43}$/
/** Characters a normalised username may contain (server/routes/users.ts). */
const USERNAME_PREFIX = /^[a-z0-9._-]+$/

interface StoredSignedPreKey extends PreKeyJson {
  readonly createdAt: number
}

interface QueuedMessage {
  readonly seq: number
  readonly id: string
  readonly from: string
  readonly body: string
  readonly bytes: number
  readonly createdAt: number
  readonly expiresAt: number
}

interface Account {
  readonly id: number
  readonly username: string
  /** The login secret (see the module comment). */
  loginSecret: string
  loginKey: CryptoKey
  identity: PublicIdentityJson
  signingKey: Uint8Array
  /** Oldest first; the last one is handed out. */
  signedPreKeys: StoredSignedPreKey[]
  readonly oneTimePreKeys: Map<number, PreKeyJson>
  /** Undelivered messages, by sequence number. */
  queue: QueuedMessage[]
  queuedBytes: number
  /** Highest sequence number acknowledged while online; starts at 0 each time the user comes online. */
  ackedUpTo: number
  /** Authenticated connections, oldest first. */
  readonly connections: ServerConnection[]
  /** Connections that subscribed to this user's presence. */
  readonly watchers: Set<ServerConnection>
}

interface Session {
  readonly token: string
  readonly account: Account
  readonly createdAt: number
  readonly expiresAt: number
}

/** The relay's side of one socket (server/ws/connection.ts RelayConnection, without flow control). */
class ServerConnection {
  state: 'awaiting-auth' | 'open' | 'closed' = 'awaiting-auth'
  /** An error or close is on its way to the client: later frames from it are ignored. */
  closing = false
  account: Account | undefined
  token: string | undefined
  badFrames = 0
  /** Highest sequence number sent here (acknowledgements are clamped to it). */
  sentUpTo = 0
  /** Nothing at or below this is still needed here. */
  position = 0
  /** Sent and not yet acknowledged. */
  inflight: number[] = []
  readonly subscriptions = new Set<Account>()
  /** Asked for, but their presence is not shared with this connection's user (server: `withheld`). */
  readonly withheld = new Set<Account>()

  constructor(readonly socket: MemorySocket) {}
}

type WireEvent =
  | { readonly kind: 'open'; readonly socket: MemorySocket }
  | { readonly kind: 'up' | 'down'; readonly socket: MemorySocket; readonly data: string }
  | {
      readonly kind: 'closed-by-client' | 'closed-by-server'
      readonly socket: MemorySocket
      readonly code: number
      readonly reason: string
    }
  | { readonly kind: 'lost'; readonly socket: MemorySocket }

/** The client's side of one socket: a WebSocketLike whose frames go through the relay's wire. */
class MemorySocket implements WebSocketLike {
  readyState: number = CONNECTING
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number; reason: string }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null
  server: ServerConnection | undefined
  /** Highest `deliver` seq handed to onmessage, and highest `ack` the client sent (lost or not). */
  handedUpTo = 0
  ackSentUpTo = 0

  constructor(
    private readonly relay: MemoryRelay,
    readonly link: NetworkLink,
    readonly number: number,
    /** Set when the URL is not the relay's: the socket fails to open, as an upgrade refused with 404. */
    readonly refused: boolean,
  ) {}

  send(data: string): void {
    if (this.readyState === CONNECTING) {
      // What ws and the browser do alike.
      throw new Error('WebSocket is not open: readyState 0 (CONNECTING)')
    }
    if (this.readyState !== OPEN) return
    const frame = parseLoosely(data)
    if (frame?.type === 'ack' && typeof frame.upTo === 'number') {
      this.ackSentUpTo = Math.max(this.ackSentUpTo, frame.upTo)
    }
    this.relay.transmit({ kind: 'up', socket: this, data })
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= CLOSING) return
    this.readyState = CLOSING
    this.relay.transmit({
      kind: 'closed-by-client',
      socket: this,
      code: code ?? NO_STATUS,
      reason: reason ?? '',
    })
  }
}

/** One device's network: its HttpClient and WebSocketFactory, and a switch to take it off the net. */
export class NetworkLink {
  readonly http: HttpClient
  readonly webSocket: WebSocketFactory
  private connected = true
  readonly sockets = new Set<MemorySocket>()

  constructor(private readonly relay: MemoryRelay) {
    this.http = {
      request: (method, path, options) => relay.request(this, method, path, options),
    }
    this.webSocket = (url) => relay.openSocket(this, url)
  }

  get online(): boolean {
    return this.connected
  }

  /** The network goes away: open sockets die (1006), new ones fail, requests fail with Network. */
  goOffline(): void {
    this.connected = false
    for (const socket of this.sockets) this.relay.lose(socket)
  }

  goOnline(): void {
    this.connected = true
  }
}

export class MemoryRelay {
  /** The relay's address for ChatClientOptions.serverUrl (nothing resolves it). */
  readonly serverUrl = 'https://relay.invalid'
  /** Every frame that got through, in order. */
  readonly frames: RelayFrame[] = []
  /**
   * Decides about each frame on the wire after the one-shot rules of `dropNext`: without it every
   * frame passes. A `sent` frame is judged before the relay reads it, a `received` one before the
   * client does.
   */
  filter: ((frame: RelayFrame) => FrameVerdict) | undefined

  private readonly now: () => number
  private readonly limits: MemoryRelayLimits
  private readonly accounts = new Map<string, Account>()
  /**
   * Relations as "<owner id>><other id>" (server/db/relations.ts keeps keyed hashes of them): who
   * shares presence with whom, and who blocked whom.
   */
  private readonly presenceShared = new Set<string>()
  private readonly blocked = new Set<string>()
  private readonly sessions = new Map<string, Session>()
  /** (sender id, message id) → the stored message, for as long as the relay runs (no purge). */
  private readonly sent = new Map<string, { seq: number; createdAt: number }>()
  private readonly connections = new Set<ServerConnection>()
  private readonly sockets = new Set<MemorySocket>()
  private readonly dropRules: { type: string; username?: string; verdict: FrameVerdict }[] = []
  private readonly listeners = new Set<(frame: RelayFrame) => void>()
  private wire: WireEvent[] = []
  private pumpScheduled = false
  private paused = false
  private nextAccountId = 1
  private nextSocketNumber = 1
  private lastSeq = 0
  private httpInFlight = 0
  /** Counts everything that happens; `settle` waits until it stops changing. */
  private activity = 0
  /** `settle` calls waiting for the next thing to happen. */
  private readonly waiting = new Set<() => void>()

  constructor(options: MemoryRelayOptions = {}) {
    this.now = options.now ?? Date.now
    this.limits = { ...MEMORY_RELAY_LIMITS, ...options.limits }
  }

  /**
   * A second relay with a copy of everything durable (accounts, keys, tokens, queues, the record of
   * what was sent) and no connections, as this one would be after a restart. Registering costs the
   * core an RSA-3072 key pair; tests register once, then fork a relay (and copy the stores) per case.
   */
  fork(options: MemoryRelayOptions = {}): MemoryRelay {
    const copy = new MemoryRelay({
      now: options.now ?? this.now,
      limits: { ...this.limits, ...options.limits },
    })
    for (const account of this.accounts.values()) {
      copy.accounts.set(account.username, {
        ...account,
        signedPreKeys: [...account.signedPreKeys],
        oneTimePreKeys: new Map(account.oneTimePreKeys),
        queue: [...account.queue],
        ackedUpTo: 0,
        connections: [],
        watchers: new Set(),
      })
    }
    for (const session of this.sessions.values()) {
      copy.sessions.set(session.token, { ...session, account: copy.accounts.get(session.account.username)! })
    }
    for (const [key, stored] of this.sent) copy.sent.set(key, { ...stored })
    copy.nextAccountId = this.nextAccountId
    copy.lastSeq = this.lastSeq
    return copy
  }

  // --- Test hooks -----------------------------------------------------------------------------

  /** A new device's network link. */
  link(): NetworkLink {
    return new NetworkLink(this)
  }

  /**
   * Loses the next frame of this type (`deliver`, `accepted` and the other server frames on their
   * way to a client; `ack`, `send` and the other client frames on their way to the relay), of
   * `username`'s sockets if given; with `close`, the socket dies with it (1006 on both sides).
   */
  dropNext(type: string, options: { username?: string; close?: boolean } = {}): void {
    this.dropRules.push({
      type,
      ...(options.username !== undefined ? { username: options.username } : {}),
      verdict: options.close ? 'drop-and-close' : 'drop',
    })
  }

  /** Closes every connection of `username` from the relay's side, as a server may (default 1001). */
  disconnect(username: string, code: number = CloseCode.GoingAway): number {
    const account = this.accounts.get(username)
    const connections = [...(account?.connections ?? [])]
    for (const connection of connections) this.close(connection, code, 'test: closed by the relay')
    return connections.length
  }

  /** A restart: every socket closes with 1001; accounts, keys, tokens and queues stay. */
  restart(): void {
    for (const connection of [...this.connections]) {
      if (connection.state !== 'closed') this.close(connection, CloseCode.GoingAway, 'server shutting down')
    }
  }

  /** `username`'s undelivered messages, oldest first. */
  queued(username: string): QueuedView[] {
    return (this.accounts.get(username)?.queue ?? []).map(({ seq, id, from, createdAt }) => ({
      seq,
      id,
      from,
      ts: createdAt,
    }))
  }

  /** One-time prekeys the relay still holds for `username`. */
  oneTimePreKeyCount(username: string): number {
    return this.accounts.get(username)?.oneTimePreKeys.size ?? 0
  }

  /** Authenticated connections `username` has open. */
  connectionCount(username: string): number {
    return this.accounts.get(username)?.connections.filter((c) => !c.closing).length ?? 0
  }

  /** The frames of one type that went one way. */
  // biome-ignore lint/suspicious/noExplicitAny: tests read frames loosely and assert on them
  of(direction: RelayFrame['direction'], type: string, username?: string): any[] {
    return this.frames
      .filter(
        (f) =>
          f.direction === direction &&
          f.frame?.type === type &&
          (username === undefined || f.username === username),
      )
      .map((f) => f.frame)
  }

  /** Resolves with the first frame, already through or still to come, that `predicate` accepts. */
  waitFor(predicate: (frame: RelayFrame) => boolean): Promise<RelayFrame> {
    const seen = this.frames.find(predicate)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve) => {
      const listener = (frame: RelayFrame) => {
        if (!predicate(frame)) return
        this.listeners.delete(listener)
        resolve(frame)
      }
      this.listeners.add(listener)
    })
  }

  /** Stops the wire: frames wait until `step` or `resume`. */
  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    this.schedulePump()
  }

  /** Moves the oldest event on the wire (a frame, an open, a close); false when there is none. */
  step(): boolean {
    const event = this.wire.shift()
    if (!event) return false
    this.process(event)
    this.touch()
    return true
  }

  /** Events waiting on the wire. */
  get inTransit(): number {
    return this.wire.length
  }

  /**
   * Resolves once nothing the relay can see is under way: the wire is empty (or paused), no HTTP
   * request is being answered, and every delivery handed to an open socket has been acknowledged by
   * its client (sent, even if the ack was then lost) — so every delivered message is stored.
   */
  async settle(): Promise<void> {
    for (;;) {
      if (this.isSettled()) {
        // One turn of the event loop more, for whatever the last event set off without waiting.
        const mark = this.activity
        await new Promise<void>((resolve) => setImmediate(resolve))
        if (mark === this.activity && this.isSettled()) return
        continue
      }
      await new Promise<void>((resolve) => this.waiting.add(resolve))
    }
  }

  private isSettled(): boolean {
    if (this.httpInFlight > 0 || (!this.paused && this.wire.length > 0)) return false
    for (const socket of this.sockets) {
      if (socket.readyState === OPEN && socket.handedUpTo > socket.ackSentUpTo) return false
    }
    return true
  }

  private touch(): void {
    this.activity++
    const waiting = [...this.waiting]
    this.waiting.clear()
    for (const wake of waiting) wake()
  }

  // --- The wire -------------------------------------------------------------------------------

  transmit(event: WireEvent): void {
    this.wire.push(event)
    this.touch()
    this.schedulePump()
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.paused || this.wire.length === 0) return
    this.pumpScheduled = true
    queueMicrotask(() => {
      this.pumpScheduled = false
      while (!this.paused) {
        const event = this.wire.shift()
        if (!event) break
        this.process(event)
      }
      this.touch()
    })
  }

  openSocket(link: NetworkLink, url: string): WebSocketLike {
    const refused = !/^wss?:\/\/[^/]+\/ws$/.test(url)
    const socket = new MemorySocket(this, link, this.nextSocketNumber++, refused)
    link.sockets.add(socket)
    this.sockets.add(socket)
    this.transmit({ kind: 'open', socket })
    return socket
  }

  /** The socket dies without a close handshake: both sides see it at once, frames on the way are lost. */
  lose(socket: MemorySocket): void {
    if (socket.readyState === CLOSED) return
    if (socket.server) this.unregister(socket.server)
    this.wire = this.wire.filter((event) => event.socket !== socket)
    this.transmit({ kind: 'lost', socket })
  }

  private process(event: WireEvent): void {
    const { socket } = event
    switch (event.kind) {
      case 'open':
        if (socket.readyState !== CONNECTING) return
        if (socket.refused || !socket.link.online) {
          this.ended(socket, ABNORMAL_CLOSURE, '', true)
          return
        }
        socket.readyState = OPEN
        socket.server = new ServerConnection(socket)
        this.connections.add(socket.server)
        socket.onopen?.({})
        return
      case 'up':
        this.fromClient(socket, event.data)
        return
      case 'down':
        this.toClient(socket, event.data)
        return
      case 'closed-by-client':
        if (socket.server) this.unregister(socket.server)
        this.ended(socket, event.code, event.reason, false)
        return
      case 'closed-by-server':
        if (socket.server) this.unregister(socket.server)
        if (socket.readyState === OPEN || socket.readyState === CLOSING) {
          this.ended(socket, event.code, event.reason, false)
        }
        return
      case 'lost':
        this.ended(socket, ABNORMAL_CLOSURE, '', true)
        return
    }
  }

  private ended(socket: MemorySocket, code: number, reason: string, withError: boolean): void {
    if (socket.readyState === CLOSED) return
    socket.readyState = CLOSED
    socket.link.sockets.delete(socket)
    this.sockets.delete(socket)
    if (withError) socket.onerror?.({})
    socket.onclose?.({ code, reason })
  }

  /** The verdict of the one-shot rules, then of the filter. */
  private judge(frame: RelayFrame): FrameVerdict {
    const index = this.dropRules.findIndex(
      (rule) =>
        rule.type === frame.frame?.type &&
        (rule.username === undefined || rule.username === frame.username) &&
        (CLIENT_FRAME_TYPES.has(rule.type) ? frame.direction === 'sent' : frame.direction === 'received'),
    )
    if (index >= 0) return this.dropRules.splice(index, 1)[0]!.verdict
    return this.filter?.(frame) ?? 'pass'
  }

  private passed(frame: RelayFrame): void {
    this.frames.push(frame)
    for (const listener of [...this.listeners]) listener(frame)
  }

  private toClient(socket: MemorySocket, data: string): void {
    if (socket.readyState !== OPEN) return
    const seen: RelayFrame = {
      direction: 'received',
      socket: socket.number,
      username: socket.server?.account?.username,
      // The relay's own output must be what a client accepts.
      frame: decodeServerFrame(JSON.parse(data)),
    }
    const verdict = this.judge(seen)
    if (verdict === 'drop-and-close') this.lose(socket)
    if (verdict !== 'pass') return
    if (!socket.onmessage) return
    if (seen.frame.type === 'deliver') socket.handedUpTo = Math.max(socket.handedUpTo, seen.frame.seq)
    socket.onmessage({ data })
    this.passed(seen)
  }

  private fromClient(socket: MemorySocket, data: string): void {
    const connection = socket.server
    if (!connection || connection.state === 'closed' || connection.closing) return
    const seen: RelayFrame = {
      direction: 'sent',
      socket: socket.number,
      username: connection.account?.username,
      frame: parseLoosely(data) ?? { raw: data },
    }
    const verdict = this.judge(seen)
    if (verdict === 'drop-and-close') this.lose(socket)
    if (verdict !== 'pass') return
    this.passed(seen)
    this.handle(connection, data)
  }

  // --- The relay: one connection's frames (server/ws/connection.ts) ----------------------------

  private write(connection: ServerConnection, frame: string): void {
    if (connection.state === 'closed' || connection.closing) return
    this.transmit({ kind: 'down', socket: connection.socket, data: frame })
  }

  /** An error frame; a bad frame counts, and too many end the connection. Before auth, any error ends it. */
  private fail(
    connection: ServerConnection,
    code: string,
    message: string,
    options: { id?: string | undefined; bad?: boolean } = {},
  ): void {
    if (connection.state !== 'open') {
      this.refuse(connection, code, message)
      return
    }
    this.write(connection, errorFrame(code, message, options.id))
    if (options.bad && ++connection.badFrames >= this.limits.maxBadFramesPerConnection) {
      this.refuse(
        connection,
        ServerErrorCode.BadFrame,
        `expected valid frames, got ${connection.badFrames} bad ones: closing this connection`,
      )
    }
  }

  /** An error frame, then the close (1008 unless said otherwise). */
  private refuse(
    connection: ServerConnection,
    code: string,
    message: string,
    closeCode: number = CloseCode.PolicyViolation,
  ): void {
    if (connection.closing || connection.state === 'closed') return
    this.write(connection, errorFrame(code, message))
    this.close(connection, closeCode, code)
  }

  /**
   * Closes from the relay's side. The connection stays registered (its user online) until the close
   * reaches the client, as the real one stays until the close handshake ends.
   */
  private close(connection: ServerConnection, code: number, reason: string): void {
    if (connection.closing || connection.state === 'closed') return
    connection.closing = true
    this.transmit({ kind: 'closed-by-server', socket: connection.socket, code, reason })
  }

  private unregister(connection: ServerConnection): void {
    if (connection.state === 'closed') return
    connection.state = 'closed'
    this.connections.delete(connection)
    for (const watched of connection.subscriptions) watched.watchers.delete(connection)
    connection.subscriptions.clear()
    const account = connection.account
    if (!account) return
    const index = account.connections.indexOf(connection)
    if (index < 0) return
    account.connections.splice(index, 1)
    if (account.connections.length === 0) this.announce(account, false)
  }

  private handle(connection: ServerConnection, data: string): void {
    const size = Buffer.byteLength(data, 'utf8')
    if (size > MAX_FRAME_BYTES) {
      this.fail(
        connection,
        ServerErrorCode.TooLarge,
        `expected a frame of at most ${MAX_FRAME_BYTES} bytes, got ${size}`,
        {
          bad: true,
        },
      )
      return
    }
    let frame: ClientFrame
    try {
      frame = decodeClientFrame(JSON.parse(data))
    } catch (error) {
      const detail = isProtocolError(error)
        ? error.message
        : 'expected a JSON frame, got text that does not parse'
      this.fail(connection, ServerErrorCode.BadFrame, detail, { bad: true })
      return
    }
    if (connection.state === 'awaiting-auth') {
      if (frame.type !== 'auth') {
        this.refuse(
          connection,
          ServerErrorCode.Unauthenticated,
          `expected an auth frame first, got ${frame.type}`,
        )
        return
      }
      this.authenticate(connection, frame.token)
      return
    }
    switch (frame.type) {
      case 'send':
        this.send(connection, frame)
        return
      case 'send.devices':
        this.sendToDevices(connection, frame)
        return
      case 'ack':
        this.acknowledge(connection, frame.upTo)
        return
      case 'presence.subscribe':
        this.subscribe(connection, frame.users)
        return
      case 'presence.share':
        this.share(connection, frame.users)
        return
      case 'auth':
        this.fail(
          connection,
          ServerErrorCode.BadFrame,
          'expected one auth frame per connection, got a second',
          {
            bad: true,
          },
        )
        return
    }
  }

  private authenticate(connection: ServerConnection, token: string): void {
    const session = this.liveSession(token)
    if (!session) {
      this.refuse(
        connection,
        ServerErrorCode.Unauthenticated,
        'expected a valid session token, got an unknown, revoked or expired one',
      )
      return
    }
    const account = session.account
    const queued = this.deliverable(account).length
    connection.state = 'open'
    connection.account = account
    connection.token = token
    if (account.connections.length === 0) {
      account.ackedUpTo = 0
      this.announce(account, true)
    }
    account.connections.push(connection)
    while (account.connections.length > this.limits.maxConnectionsPerUser) {
      const oldest = account.connections.shift()!
      this.refuse(
        oldest,
        ServerErrorCode.TooManyConnections,
        `expected at most ${this.limits.maxConnectionsPerUser} connections per user, got another: closing the oldest`,
      )
    }
    connection.position = account.ackedUpTo
    this.write(connection, readyFrame(account.username, queued))
    this.pump(connection)
    this.checkPreKeys(account, [connection])
  }

  /**
   * Accounts here have one device each (device 1): a `send.devices` whose lists say so is a `send`
   * of its one envelope, any other list gets the server's `devices.mismatch` answer.
   */
  /** Answers `send.devices` as a server from before devices did: a frame of a type it does not know. */
  beforeDevices = false

  private sendToDevices(
    connection: ServerConnection,
    frame: Extract<ClientFrame, { type: 'send.devices' }>,
  ): void {
    if (this.beforeDevices) {
      this.fail(
        connection,
        ServerErrorCode.BadFrame,
        'client frame: expected one of the client frames, got another',
        {
          bad: true,
        },
      )
      return
    }
    const named = frame.messages.map((envelope) => envelope.device)
    const recipient = {
      missing: named.includes(DEFAULT_DEVICE_ID) ? [] : [DEFAULT_DEVICE_ID],
      extra: named.filter((device) => device !== DEFAULT_DEVICE_ID).sort((a, b) => a - b),
      stale: [],
    }
    const own = {
      missing: [],
      extra: frame.own.map((envelope) => envelope.device).sort((a, b) => a - b),
      stale: [],
    }
    if (recipient.missing.length + recipient.extra.length + own.extra.length > 0) {
      this.write(
        connection,
        JSON.stringify({ v: FRAME_VERSION, type: 'devices.mismatch', id: frame.id, recipient, own }),
      )
      return
    }
    this.send(connection, {
      v: frame.v,
      type: 'send',
      id: frame.id,
      to: frame.to,
      body: frame.messages[0]!.body,
    })
  }

  private send(connection: ServerConnection, frame: Extract<ClientFrame, { type: 'send' }>): void {
    const sender = connection.account!
    const { id } = frame
    if (!isCanonicalBase64Url(id) || !isCanonicalBase64Url(frame.body)) {
      this.fail(
        connection,
        ServerErrorCode.BadFrame,
        'send frame: expected canonical base64url in id and body, got stray bits',
        {
          id: isCanonicalBase64Url(id) ? id : undefined,
          bad: true,
        },
      )
      return
    }
    let recipient: Account | undefined
    try {
      recipient = this.accounts.get(normalizeUsername(frame.to))
    } catch {
      recipient = undefined
    }
    if (!recipient) {
      this.fail(
        connection,
        ServerErrorCode.UserNotFound,
        'expected a registered recipient, got an unknown username',
        {
          id,
        },
      )
      return
    }
    const key = `${sender.id}/${id}`
    if (this.blocked.has(`${recipient.id}>${sender.id}`)) {
      // Dropped, and answered as if stored (server/ws/hub.ts).
      this.write(connection, acceptedFrame(id, this.now()))
      return
    }
    const stored = this.sent.get(key)
    if (stored) {
      this.write(connection, acceptedFrame(id, stored.createdAt))
      return
    }
    const bytes = fromBase64Url(frame.body).length
    const fromSender = recipient.queue.filter((queued) => queued.from === sender.username)
    if (
      fromSender.length >= this.limits.maxQueuedMessagesPerSender ||
      fromSender.reduce((sum, queued) => sum + queued.bytes, 0) + bytes > this.limits.maxQueuedBytesPerSender
    ) {
      this.fail(
        connection,
        ServerErrorCode.QueueShareFull,
        "expected room in this sender's share of the recipient's queue, got it full; retry later",
        { id },
      )
      return
    }
    if (
      recipient.queue.length >= this.limits.maxQueuedMessagesPerRecipient ||
      recipient.queuedBytes + bytes > this.limits.maxQueuedBytesPerRecipient
    ) {
      this.fail(
        connection,
        ServerErrorCode.QueueFull,
        "expected room in the recipient's queue, got a full queue; retry later",
        { id },
      )
      return
    }
    const now = this.now()
    const message: QueuedMessage = {
      seq: ++this.lastSeq,
      id,
      from: sender.username,
      body: frame.body,
      bytes,
      createdAt: now,
      expiresAt: now + this.limits.messageTtlMs,
    }
    recipient.queue.push(message)
    recipient.queuedBytes += bytes
    this.sent.set(key, { seq: message.seq, createdAt: now })
    this.write(connection, acceptedFrame(id, now))
    for (const receiving of recipient.connections) this.pump(receiving)
  }

  /** Queued messages this account can still be sent (unexpired), in order. */
  private deliverable(account: Account): QueuedMessage[] {
    const now = this.now()
    return account.queue.filter((message) => message.expiresAt > now)
  }

  /** Sends what is queued after the connection's position, while the delivery window has room. */
  private pump(connection: ServerConnection): void {
    if (connection.state !== 'open' || connection.closing) return
    for (const message of this.deliverable(connection.account!)) {
      if (connection.inflight.length >= this.limits.deliveryWindow) return
      if (message.seq <= connection.position) continue
      this.write(
        connection,
        deliverFrame(message.seq, message.id, message.from, message.body, message.createdAt),
      )
      connection.inflight.push(message.seq)
      connection.sentUpTo = message.seq
      connection.position = message.seq
    }
  }

  private acknowledge(connection: ServerConnection, requested: number): void {
    const account = connection.account!
    // A client acknowledges what it received here; more would delete messages it never saw.
    const upTo = Math.min(requested, connection.sentUpTo)
    if (upTo <= account.ackedUpTo) return
    account.ackedUpTo = upTo
    const left = account.queue.filter((message) => message.seq > upTo)
    for (const message of account.queue) if (message.seq <= upTo) account.queuedBytes -= message.bytes
    account.queue = left
    for (const other of account.connections) {
      other.inflight = other.inflight.filter((seq) => seq > upTo)
      if (upTo > other.position) other.position = upTo
      this.pump(other)
    }
  }

  private subscribe(connection: ServerConnection, requested: readonly string[]): void {
    let ignored = 0
    for (const name of requested) {
      let account: Account | undefined
      try {
        account = this.accounts.get(normalizeUsername(name))
      } catch {
        // A name that cannot exist has no presence.
      }
      if (!account) continue
      if (!connection.subscriptions.has(account)) {
        if (
          !connection.withheld.has(account) &&
          connection.subscriptions.size + connection.withheld.size >=
            MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION
        ) {
          ignored++
          continue
        }
        if (!this.presenceVisible(account, connection.account!)) {
          connection.withheld.add(account)
          continue
        }
        connection.withheld.delete(account)
        connection.subscriptions.add(account)
        account.watchers.add(connection)
      }
      this.write(connection, presenceFrame(account.username, this.isOnline(account)))
    }
    if (ignored > 0) {
      this.fail(
        connection,
        ServerErrorCode.TooManySubscriptions,
        `expected at most ${MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION} watched users, got ${ignored} more (ignored)`,
      )
    }
  }

  private presenceVisible(owner: Account, viewer: Account): boolean {
    if (owner === viewer) return true
    const pair = `${owner.id}>${viewer.id}`
    return this.presenceShared.has(pair) && !this.blocked.has(pair)
  }

  private share(connection: ServerConnection, requested: readonly string[]): void {
    const owner = connection.account!
    for (const name of requested) {
      let viewer: Account | undefined
      try {
        viewer = this.accounts.get(normalizeUsername(name))
      } catch {
        // Nobody can have that name.
      }
      const pair = viewer && `${owner.id}>${viewer.id}`
      if (!viewer || viewer === owner || this.presenceShared.has(pair!)) continue
      this.presenceShared.add(pair!)
      if (!this.presenceVisible(owner, viewer)) continue
      for (const waiting of viewer.connections) {
        if (!waiting.withheld.delete(owner)) continue
        waiting.subscriptions.add(owner)
        owner.watchers.add(waiting)
        this.write(waiting, presenceFrame(owner.username, this.isOnline(owner)))
      }
    }
  }

  /** PUT or DELETE /blocks/{username} (server/routes/blocks.ts). */
  private setBlocked(owner: Account, name: string, blocked: boolean): void {
    const params = validRequest(UsernameParams, { username: decodeURIComponent(name) }, 'params')
    const other = this.accounts.get(parseUsername(params.username))
    if (!other) throw serverErrors.userNotFound()
    if (other === owner) throw serverErrors.badRequest('username: expected another user, got yourself')
    const pair = `${owner.id}>${other.id}`
    if (!blocked) {
      this.blocked.delete(pair)
      return
    }
    this.blocked.add(pair)
    this.presenceShared.delete(pair)
    for (const watcher of [...owner.watchers]) {
      if (watcher.account !== other) continue
      owner.watchers.delete(watcher)
      watcher.subscriptions.delete(owner)
      watcher.withheld.add(owner)
      this.write(watcher, presenceFrame(owner.username, false))
    }
  }

  private isOnline(account: Account): boolean {
    return account.connections.length > 0
  }

  private announce(account: Account, online: boolean): void {
    for (const watcher of account.watchers) this.write(watcher, presenceFrame(account.username, online))
  }

  private checkPreKeys(account: Account, connections: readonly ServerConnection[]): void {
    const remaining = account.oneTimePreKeys.size
    if (remaining >= ONE_TIME_PREKEY_REFILL_THRESHOLD) return
    for (const connection of connections) this.write(connection, preKeysLowFrame(remaining))
  }

  private sessionRevoked(token: string): void {
    for (const connection of [...this.connections]) {
      if (connection.token === token) {
        this.refuse(
          connection,
          ServerErrorCode.Unauthenticated,
          'expected a live session, got one that was logged out',
        )
      }
    }
  }

  private identityChanged(account: Account): void {
    for (const connection of [...account.connections]) {
      this.refuse(
        connection,
        ServerErrorCode.Unauthenticated,
        'expected the current identity, got one that was replaced',
      )
    }
    for (const watcher of account.watchers) this.write(watcher, identityChangedFrame(account.username))
  }

  // --- REST (server/routes/*.ts) --------------------------------------------------------------

  async request(
    link: NetworkLink,
    method: HttpMethod,
    path: string,
    options: { body?: unknown; token?: string } = {},
  ): Promise<HttpResponse> {
    if (!link.online) {
      throw new ClientError(
        ClientErrorCode.Network,
        `expected a reply from ${this.serverUrl}, got a network error`,
      )
    }
    this.httpInFlight++
    this.touch()
    try {
      // The body crosses as JSON, as over HTTP.
      const body = options.body === undefined ? undefined : JSON.parse(JSON.stringify(options.body))
      const { status, response } = await this.route(method, path, body, options.token)
      return { status, body: response === undefined ? undefined : JSON.parse(JSON.stringify(response)) }
    } catch (error) {
      const refusal = toServerError(error)
      return { status: refusal.statusCode, body: { error: { code: refusal.code, message: refusal.message } } }
    } finally {
      this.httpInFlight--
      this.touch()
    }
  }

  private async route(
    method: HttpMethod,
    path: string,
    body: unknown,
    token: string | undefined,
  ): Promise<{ status: number; response: unknown }> {
    const queryStart = path.indexOf('?')
    const pathname = queryStart < 0 ? path : path.slice(0, queryStart)
    const query = new URLSearchParams(queryStart < 0 ? '' : path.slice(queryStart + 1))
    const route = `${method} ${pathname}`
    const userPath = /^\/users\/([^/]+)\/(identity|bundle)$/.exec(pathname)

    if (route === 'POST /register') return { status: 201, response: await this.register(body) }
    if (route === 'POST /reinstall') return ok(RegisterResponse, await this.reinstall(body))
    if (route === 'POST /login') return ok(LoginResponse, await this.login(body))
    if (route === 'POST /logout') {
      this.sessions.delete(this.requireSession(token).token)
      this.sessionRevoked(token!)
      return { status: 204, response: undefined }
    }
    if (route === 'POST /account/password') {
      const session = this.requireSession(token)
      const request = validRequest(ChangePasswordRequest, body, 'body')
      const account = this.proveLoginSecret(session.account.username, request.loginSecret)
      account.loginSecret = request.newLoginSecret
      let endedSessions = 0
      if (request.endOtherSessions) {
        for (const [other, s] of this.sessions) {
          if (s.account !== account || other === session.token) continue
          this.sessions.delete(other)
          this.sessionRevoked(other)
          endedSessions++
        }
      }
      return ok(ChangePasswordResponse, { endedSessions })
    }
    if (route === 'GET /users') {
      this.requireSession(token)
      return ok(
        UserSearchResponse,
        this.search(validRequest(UserSearchQuery, Object.fromEntries(query), 'querystring')),
      )
    }
    if (method === 'GET' && userPath) {
      this.requireSession(token)
      const params = validRequest(UsernameParams, { username: decodeURIComponent(userPath[1]!) }, 'params')
      const account = this.accounts.get(parseUsername(params.username))
      if (!account) throw serverErrors.userNotFound()
      if (userPath[2] === 'identity') {
        return ok(IdentityResponse, { username: account.username, identity: account.identity })
      }
      const requester = this.requireSession(token).account
      return ok(
        PreKeyBundleResponse,
        this.claimBundle(account, this.blocked.has(`${account.id}>${requester.id}`)),
      )
    }
    const blockPath = /^\/blocks\/([^/]+)$/.exec(pathname)
    if (blockPath && (method === 'PUT' || method === 'DELETE')) {
      this.setBlocked(this.requireSession(token).account, blockPath[1]!, method === 'PUT')
      return { status: 204, response: undefined }
    }
    if (route === 'GET /keys/status')
      return ok(PreKeyStatusResponse, this.preKeyStatus(this.requireSession(token).account))
    if (route === 'GET /keys/one-time') {
      const { account } = this.requireSession(token)
      return ok(OneTimePreKeyIdsResponse, {
        keyIds: [...account.oneTimePreKeys.keys()].sort((a, b) => a - b),
      })
    }
    if (route === 'POST /keys/one-time') {
      const account = this.requireSession(token).account
      return ok(PreKeyStatusResponse, await this.uploadOneTimePreKeys(account, body))
    }
    if (route === 'PUT /keys/signed') {
      const account = this.requireSession(token).account
      return ok(PreKeyStatusResponse, await this.rotateSignedPreKey(account, body))
    }
    throw new ServerError(ServerErrorCode.NotFound, 404, `expected a known route, got ${method} ${pathname}`)
  }

  /** The session a token opens now (server/plugins/auth.ts), or ServerError(Unauthenticated). */
  private requireSession(token: string | undefined): Session {
    if (token === undefined || !TOKEN_TEXT.test(token)) {
      throw serverErrors.unauthenticated(
        'expected an Authorization: Bearer <session token> header, got none or a malformed one',
      )
    }
    const session = this.liveSession(token)
    if (!session) {
      throw serverErrors.unauthenticated(
        'expected a valid session token, got an unknown, revoked or expired one',
      )
    }
    return session
  }

  private liveSession(token: string): Session | undefined {
    const session = this.sessions.get(token)
    return session && session.expiresAt > this.now() ? session : undefined
  }

  /** Every key a registration or reinstall carries, checked as the server checks them. */
  private async verifiedKeys(body: RegisterRequest) {
    const identity = publicIdentityFromJson(body.identity)
    const signedPreKey = preKeyFromJson(body.signedPreKey)
    const oneTimePreKeys = body.oneTimePreKeys.map(preKeyFromJson)
    assertDistinctKeyIds(oneTimePreKeys, 'one-time prekeys')
    const loginKey = await importRsaOaepPublicKey(fromBase64Url(body.loginKey))
    await verifyPublicIdentity(identity)
    // A registration makes the account's first device.
    await verifySignedPreKey(identity.signingKey, DEFAULT_DEVICE_ID, signedPreKey)
    await Promise.all(
      oneTimePreKeys.map((preKey) => verifyOneTimePreKey(identity.signingKey, DEFAULT_DEVICE_ID, preKey)),
    )
    return { loginKey, signingKey: identity.signingKey }
  }

  private installKeys(
    account: Account,
    body: RegisterRequest,
    keys: { loginKey: CryptoKey; signingKey: Uint8Array },
  ): void {
    account.loginKey = keys.loginKey
    account.identity = body.identity
    account.signingKey = keys.signingKey
    account.signedPreKeys = [{ ...body.signedPreKey, createdAt: this.now() }]
    account.oneTimePreKeys.clear()
    for (const preKey of body.oneTimePreKeys) account.oneTimePreKeys.set(preKey.keyId, preKey)
  }

  private async register(input: unknown): Promise<RegisterResponse> {
    const body = validRequest(RegisterRequest, input, 'body')
    const username = parseUsername(body.username)
    if (body.loginSecret === undefined) throw serverErrors.clientOutdated()
    if (this.accounts.has(username)) throw serverErrors.usernameTaken()
    const keys = await this.verifiedKeys(body)
    // Checked again: another registration may have taken the name while this one was verified.
    if (this.accounts.has(username)) throw serverErrors.usernameTaken()
    const account: Account = {
      id: this.nextAccountId++,
      username,
      loginSecret: body.loginSecret,
      loginKey: keys.loginKey,
      identity: body.identity,
      signingKey: keys.signingKey,
      signedPreKeys: [],
      oneTimePreKeys: new Map(),
      queue: [],
      queuedBytes: 0,
      ackedUpTo: 0,
      connections: [],
      watchers: new Set(),
    }
    this.installKeys(account, body, keys)
    this.accounts.set(username, account)
    return decode(RegisterResponse, { username }, 'register response')
  }

  /** Proves a login secret (unknown users and wrong secrets get the same answer). */
  private proveLoginSecret(input: string, loginSecret: string | undefined): Account {
    if (loginSecret === undefined) throw serverErrors.clientOutdated()
    let account: Account | undefined
    try {
      account = this.accounts.get(parseUsername(input))
    } catch {
      account = undefined
    }
    if (!account || account.loginSecret !== loginSecret) throw serverErrors.invalidCredentials()
    return account
  }

  private async reinstall(input: unknown): Promise<RegisterResponse> {
    const body = validRequest(RegisterRequest, input, 'body')
    const account = this.proveLoginSecret(body.username, body.loginSecret)
    const keys = await this.verifiedKeys(body)
    this.installKeys(account, body, keys)
    // Every token ends: they were encrypted to the old login key's holder.
    for (const [token, session] of this.sessions) if (session.account === account) this.sessions.delete(token)
    this.identityChanged(account)
    return { username: account.username }
  }

  private async login(input: unknown): Promise<LoginResponse> {
    const body = validRequest(LoginRequest, input, 'body')
    const account = this.proveLoginSecret(body.username, body.loginSecret)
    const token = randomBytes(TOKEN_BYTES)
    const encryptedToken = await rsaOaepEncrypt(account.loginKey, token)
    const now = this.now()
    const session: Session = {
      token: toBase64Url(token),
      account,
      createdAt: now,
      expiresAt: now + this.limits.tokenLifetimeMs,
    }
    token.fill(0)
    const revoked: string[] = []
    const live: Session[] = []
    for (const other of this.sessions.values()) {
      if (other.account !== account) continue
      if (other.expiresAt <= now) revoked.push(other.token)
      else live.push(other)
    }
    live.push(session)
    // Beyond the cap, the oldest go (insertion order is creation order).
    revoked.push(
      ...live.slice(0, Math.max(0, live.length - this.limits.maxTokensPerDevice)).map((s) => s.token),
    )
    this.sessions.set(session.token, session)
    for (const token of revoked) {
      this.sessions.delete(token)
      this.sessionRevoked(token)
    }
    return {
      username: account.username,
      encryptedToken: toBase64Url(encryptedToken),
      expiresAt: session.expiresAt,
    }
  }

  private search(query: UserSearchQuery): UserSearchResponse {
    const prefix = query.query.normalize('NFKC').toLowerCase().trim()
    if (prefix.length < USER_SEARCH_MIN_LENGTH) {
      throw serverErrors.badRequest(
        `query: expected at least ${USER_SEARCH_MIN_LENGTH} characters of a username, got ${prefix.length}`,
      )
    }
    if (!USERNAME_PREFIX.test(prefix)) return { users: [] }
    const names = [...this.accounts.keys()].filter((name) => name.startsWith(prefix)).sort()
    return { users: names.slice(0, USER_SEARCH_LIMIT).map((username) => ({ username })) }
  }

  private claimBundle(account: Account, blocked: boolean): PreKeyBundleResponse {
    const signedPreKey = account.signedPreKeys.at(-1)
    if (!signedPreKey) throw serverErrors.userNotFound()
    if (blocked) {
      // Someone the owner blocked claims nothing (server/routes/users.ts).
      const { createdAt: _createdAt, ...signed } = signedPreKey
      return { username: account.username, identity: account.identity, signedPreKey: signed }
    }
    let lowest: number | undefined
    for (const keyId of account.oneTimePreKeys.keys())
      if (lowest === undefined || keyId < lowest) lowest = keyId
    const oneTimePreKey = lowest === undefined ? undefined : account.oneTimePreKeys.get(lowest)
    if (lowest !== undefined) account.oneTimePreKeys.delete(lowest)
    // The owner, if online, hears when their supply runs low.
    if (this.isOnline(account)) this.checkPreKeys(account, account.connections)
    const { createdAt: _createdAt, ...signed } = signedPreKey
    return {
      username: account.username,
      identity: account.identity,
      signedPreKey: signed,
      ...(oneTimePreKey ? { oneTimePreKey } : {}),
    }
  }

  private preKeyStatus(account: Account): PreKeyStatusResponse {
    const signed = account.signedPreKeys.at(-1)
    if (!signed) throw serverErrors.userNotFound()
    return {
      oneTimePreKeys: account.oneTimePreKeys.size,
      signedPreKeyId: signed.keyId,
      signedPreKeyCreatedAt: signed.createdAt,
    }
  }

  private async uploadOneTimePreKeys(account: Account, input: unknown): Promise<PreKeyStatusResponse> {
    const body = validRequest(UploadOneTimePreKeysRequest, input, 'body')
    const preKeys = body.oneTimePreKeys.map(preKeyFromJson)
    assertDistinctKeyIds(preKeys, 'one-time prekeys')
    await Promise.all(
      preKeys.map((preKey) => verifyOneTimePreKey(account.signingKey, DEFAULT_DEVICE_ID, preKey)),
    )
    const stored = account.oneTimePreKeys.size
    if (stored + preKeys.length > this.limits.maxOneTimePreKeysPerUser) {
      throw new ServerError(
        ServerErrorCode.TooManyPreKeys,
        409,
        `one-time prekeys: expected at most ${this.limits.maxOneTimePreKeysPerUser} stored, got ${stored} stored plus ${preKeys.length} uploaded`,
      )
    }
    if (body.oneTimePreKeys.some((preKey) => account.oneTimePreKeys.has(preKey.keyId))) {
      throw serverErrors.preKeyIdConflict('one-time prekeys: expected new key ids, got an id already stored')
    }
    for (const preKey of body.oneTimePreKeys) account.oneTimePreKeys.set(preKey.keyId, preKey)
    return this.preKeyStatus(account)
  }

  private async rotateSignedPreKey(account: Account, input: unknown): Promise<PreKeyStatusResponse> {
    const body = validRequest(RotateSignedPreKeyRequest, input, 'body')
    await verifySignedPreKey(account.signingKey, DEFAULT_DEVICE_ID, preKeyFromJson(body.signedPreKey))
    if (account.signedPreKeys.some((kept) => kept.keyId === body.signedPreKey.keyId)) {
      throw serverErrors.preKeyIdConflict('signed prekey: expected a new key id, got one already used')
    }
    account.signedPreKeys = [...account.signedPreKeys, { ...body.signedPreKey, createdAt: this.now() }].slice(
      -this.limits.signedPreKeysKept,
    )
    return this.preKeyStatus(account)
  }
}

/** A request part checked against its schema, or 400 E2E_ERR_BAD_REQUEST as Fastify's validation gives. */
function validRequest<S extends TSchema>(schema: S, value: unknown, part: string): Static<S> {
  if (matches(schema, value)) return value
  try {
    decode(schema, value, part)
  } catch (error) {
    throw serverErrors.badRequest(`expected a valid request, got one where ${(error as Error).message}`)
  }
  throw serverErrors.badRequest(`expected a valid request, got an invalid ${part}`)
}

/** A 200 answer, checked against the route's response schema as Fastify serialises it. */
function ok<S extends TSchema>(schema: S, response: unknown): { status: number; response: Static<S> } {
  return { status: 200, response: decode(schema, response, 'memory relay response') }
}

const STORE_TABLES: readonly StoreTable[] = [
  'account',
  'prekeys',
  'sessions',
  'contacts',
  'messages',
  'outbox',
]

/** A MemoryStore holding a copy of every record of `store`: one device's state, to start a case from. */
export async function copyStore(store: ClientStore): Promise<MemoryStore> {
  const copy = new MemoryStore()
  const operations: StoreOperation[] = []
  for (const table of STORE_TABLES) {
    for (const record of await store.list(table)) operations.push({ op: 'put', table, record })
  }
  await copy.commit(operations)
  return copy
}

function parseLoosely(data: unknown): { type?: unknown; [field: string]: unknown } | undefined {
  if (typeof data !== 'string') return undefined
  try {
    const value: unknown = JSON.parse(data)
    return typeof value === 'object' && value !== null ? (value as { type?: unknown }) : undefined
  } catch {
    return undefined
  }
}
