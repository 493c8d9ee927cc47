/**
 * One WebSocket connection to the relay: its state machine, its inbound frames, its deliveries.
 *
 *   awaiting-auth ──auth frame──▶ authenticating ──valid token──▶ open ──▶ closed
 *
 * Before `ready`, the only frame accepted is one `auth`; anything else (or nothing within the auth
 * timeout) gets an error frame and the socket is closed with 1008. Once open, every frame is
 * size-checked, parsed from unknown and validated by shared/codec/frames.ts `decodeClientFrame`; a
 * bad one gets an error frame with a stable code, and after MAX_BAD_FRAMES_PER_CONNECTION of them
 * the connection is closed with 1008. Frames are handled strictly in arrival order: one that needs
 * a lookup holds the ones behind it.
 *
 * Delivery: the connection keeps the highest sequence number it has passed (`position`) and the
 * ones it sent that are not yet acknowledged (at most `deliveryWindow`). It is either caught up (new
 * messages are pushed as their batch commits) or draining (it reads the queue after `position` in
 * batches as the window and its socket's buffer allow). It is only marked caught up after a read
 * that found the queue's end with no commit for this user in the meantime, so a message committed
 * during a read is never skipped; and the first read waits until commits for this user are
 * signalled to this process (`ConnectionUser.subscribed`), so none is committed unseen before it.
 * A commit signal that comes without the message, or whose message is not the next position after
 * `position`, makes a caught-up connection read the queue; so does a `recheck` that finds the
 * queue longer than the connection has seen (signals lost on a network bus).
 */
import type { Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import { type RawData, WebSocket } from 'ws'
import { isProtocolError } from '../../shared/errors.js'
import { normalizeUsername } from '../../shared/username.js'
import { hashSessionToken } from '../auth/tokens.js'
import type { ServerLimits } from '../context.js'
import type { DeviceAddress } from '../db/devices.js'
import type { QueueRepository } from '../db/queue.js'
import type { TokenEnding } from '../db/schema.js'
import type { Session } from '../db/tokens.js'
import { ServerErrorCode, serverErrors } from '../errors.js'
import {
  DRAIN_BATCH,
  MAX_DEVICE_SEND_FRAME_BYTES,
  MAX_FRAME_BYTES,
  MAX_PENDING_FRAMES_PER_CONNECTION,
  MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION,
  MAX_RELATIONS_PER_USER,
  SOCKET_HIGH_WATER_BYTES,
  SOCKET_MAX_BUFFERED_BYTES,
} from '../limits.js'
import type { UserDirectory } from './directory.js'
import { deliverFrame, errorFrame, type OutgoingFrame, presenceFrame, readyFrame } from './frames.js'
import { type DeviceSendRequest, parseClientFrame, type RelayClientFrame, type SendRequest } from './parse.js'
import type { RelayMetrics } from './relay-metrics.js'
import type { SendAllowance } from './send-allowance.js'
import { TokenBucket } from './token-bucket.js'
import { encodeTextFrames } from './wire.js'

/**
 * A user's state shared by all of their connections in this process, as a connection reads it
 * (the host keeps it and changes it).
 */
export interface ConnectionUser {
  readonly id: number
  readonly username: string
  /** Sends allowed, shared by all of the user's connections here (in a cluster, with the other nodes). */
  readonly sends: SendAllowance
  /**
   * Resolves once news of this user's events (presence, revocations) reaches this process (see
   * relay-bus.ts).
   */
  readonly subscribed: Promise<void>
}

/**
 * One device's queue as its connections in this process share it (every device has its own queue;
 * the host keeps it and changes it).
 */
export interface DeviceQueue {
  /** Highest sequence number acknowledged while online (the rows below are gone from the queue). */
  readonly ackedUpTo: number
  /** Bumped whenever a commit adds messages for this device (see RelayConnection.pump). */
  readonly commitEpoch: number
  /**
   * Resolves once news of this device's commits reaches this process (see relay-bus.ts): a read of
   * the queue that starts after it cannot miss a message committed meanwhile.
   */
  readonly subscribed: Promise<void>
}

/**
 * What a connection needs from the relay around it (ws/hub.ts is the one). A connection knows its
 * socket, the frames on it and its place in its user's queue; who else is connected, how a send is
 * stored and how news reaches other connections are the host's.
 */
export interface ConnectionHost {
  readonly limits: ServerLimits
  readonly log: FastifyBaseLogger
  readonly now: () => number
  /** The durable queue: the count in `ready`, and the reads that drain it. */
  readonly queue: Pick<QueueRepository, 'countQueued' | 'fetch'>
  /** Resolves send recipients and presence subscriptions. */
  readonly directory: Pick<UserDirectory, 'cached' | 'lookup' | 'isDeleted'>
  /** The server is shutting down: a connection that finishes authenticating now is closed. */
  readonly closing: boolean
  /** Counts deliveries and drain times. */
  readonly metrics: Pick<RelayMetrics, 'messagesDelivered' | 'drainStarted'>
  /** The live session with this token hash, if there is one. */
  findSession(tokenHash: Uint8Array): Promise<Session | undefined>
  /** Why a token that is no session ended, if its holder should be told (db/tokens.ts). */
  tokenEnding(tokenHash: Uint8Array): Promise<TokenEnding | undefined>
  /** Calls `flush` on this connection once the turn's synchronous work is done. */
  flushLater(connection: RelayConnection): void
  /** The connection authenticated: it joins its user, who comes online if it is their first. */
  register(connection: RelayConnection, session: Session): ConnectionUser
  /** The connection closed: it leaves its user and its presence subscriptions. */
  unregister(connection: RelayConnection): void
  /** Stores a send for the recipient; the answer (`accepted` or an error) comes back through `write`. */
  enqueue(connection: RelayConnection, recipientId: number, frame: SendRequest): void
  /** Stores a `send.devices` (all rows or none), or answers how its device lists differ. */
  enqueueDevices(connection: RelayConnection, recipientId: number, frame: DeviceSendRequest): void
  /** This connection's client acknowledged everything up to `upTo` (already clamped to what it was sent). */
  acknowledge(connection: RelayConnection, upTo: number): void
  /** The connection watches this user's presence (and hears of their identity changes). */
  watch(userId: number, connection: RelayConnection): void
  /** The owners among `ownerIds` who let `viewerId` see their presence (granted, not blocked). */
  presenceVisible(ownerIds: readonly number[], viewerId: number): Promise<Set<number>>
  /**
   * The connection's user lets these users see their presence; resolves to how many were left out
   * at the per-user cap. Viewers with a subscription waiting for the grant are answered by the host.
   */
  sharePresence(connection: RelayConnection, viewerIds: readonly number[]): Promise<number>
  /** At once on a single node; in a cluster asked of Redis (a promise, which may reject). */
  isOnline(userId: number): boolean | Promise<boolean>
  /** Writes `prekeys.low` to the connection if the user's one-time prekeys run low. */
  checkPreKeys(device: DeviceAddress, connection: RelayConnection): void
}

type State = 'awaiting-auth' | 'authenticating' | 'open' | 'closed'

/** WebSocket close codes the relay uses (RFC 6455 §7.4.1). */
export const CloseCode = {
  /** The server is shutting down. */
  GoingAway: 1001,
  /** Protocol misuse: no or bad authentication, too many bad frames, replaced by a newer connection. */
  PolicyViolation: 1008,
  /** The server failed (e.g. the database did not answer during authentication). */
  InternalError: 1011,
} as const

const B64URL_VALUE = new Int8Array(128).fill(-1)
for (const [index, char] of [
  ...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
].entries()) {
  B64URL_VALUE[char.charCodeAt(0)] = index
}

/**
 * True when unpadded base64url text (already known to use only the alphabet) is the one encoding of
 * its bytes: no impossible length and no stray bits in the last character. Without this, two ids
 * that differ in those bits would name the same stored message.
 */
export function isCanonicalBase64Url(text: string | Uint8Array): boolean {
  const rest = text.length % 4
  if (rest === 0) return true
  if (rest === 1) return false
  const lastChar = typeof text === 'string' ? text.charCodeAt(text.length - 1) : text[text.length - 1]!
  const last = B64URL_VALUE[lastChar] ?? -1
  return rest === 2 ? (last & 0x0f) === 0 : (last & 0x03) === 0
}

export function toBase64UrlText(bytes: Uint8Array): string {
  return (
    Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  ).toString('base64url')
}

export class RelayConnection {
  state: State = 'awaiting-auth'
  /** Set once an error frame was sent and a close is under way: later frames are ignored. */
  private closing = false
  user: ConnectionUser | undefined
  /** The device this socket is of, once authenticated: whose queue it reads and what it sends as. */
  device: DeviceAddress | undefined
  /** That device's queue here, once authenticated (set by the host's `register`). */
  deviceQueue: DeviceQueue | undefined
  tokenHash: Uint8Array | undefined
  expiresAt = 0
  /** Answered the last ping or sent something since. */
  alive = true
  private badFrames = 0
  private authTimer: NodeJS.Timeout | undefined
  private readonly frames: TokenBucket

  /** Highest sequence number sent on this connection (acknowledgements are clamped to it). */
  private sentUpTo = 0
  /** Nothing at or below this sequence number is still needed here (sent, or acknowledged anywhere). */
  private position = 0
  /** Sent and not yet acknowledged, in order; `inflightHead` is the first live index. */
  private inflight: number[] = []
  private inflightHead = 0
  private caughtUp = false
  /** The highest queue position a `recheck` already read up to. */
  private recheckedUpTo = 0
  /** Ends the drain timer (RelayMetrics.drainStarted) when first caught up after authenticating. */
  private drained: (() => void) | undefined
  private reading = false
  private waitingForDrain = false

  /** Frames that arrived while an earlier one waited for a lookup, in order. */
  private readonly backlog: [RawData, boolean][] = []
  private busy = false
  private pausedReading = false

  /** Users whose presence this connection watches (they let its user see it). */
  readonly subscriptions = new Set<number>()
  /**
   * Users this connection asked to watch who have not let its user see their presence: nothing is
   * sent about them, unless they grant it while the connection lasts (see `presenceGranted`).
   */
  readonly withheld = new Set<number>()
  /** Frames written in this turn, sent together at its end (see `write`). */
  private pending: OutgoingFrame[] = []
  private pendingBytes = 0

  constructor(
    private readonly host: ConnectionHost,
    readonly ws: WebSocket,
    /** The TLS socket under the WebSocket: written to directly (see `flush`), watched for 'drain'. */
    readonly socket: Socket,
  ) {
    this.frames = new TokenBucket(host.limits.frameRatePerConnection, host.now())
    this.authTimer = setTimeout(() => {
      this.authTimer = undefined
      if (this.state !== 'open')
        this.refuse(
          ServerErrorCode.Unauthenticated,
          `expected an auth frame within ${host.limits.authTimeoutMs} ms, got none`,
        )
    }, host.limits.authTimeoutMs)
    ws.on('message', (data, isBinary) => this.received(data, isBinary))
    ws.on('pong', () => {
      this.alive = true
    })
    ws.once('close', () => this.closed())
  }

  /** Closed, or closing after an error: nothing more is read from or written for this client. */
  private get gone(): boolean {
    return this.closing || this.state === 'closed'
  }

  get username(): string {
    return this.user?.username ?? ''
  }

  // --- Output ---------------------------------------------------------------------------------

  /**
   * Queues one frame. The first write in a turn asks the host to flush this connection once the
   * turn's synchronous work is done, so every frame written in one turn (a batch's accepted and
   * deliver frames, a drain's deliveries) leaves in one socket write and one TLS record run.
   */
  write(frame: OutgoingFrame): void {
    if (this.state === 'closed') return
    if (this.pending.length === 0) this.host.flushLater(this)
    this.pending.push(frame)
    this.pendingBytes += frame.length
  }

  /**
   * Sends the queued frames as WebSocket text frames built here (wire.ts) in one buffer, written to
   * the socket under ws. ws itself writes only control frames (ping, close) to that socket, and
   * without compression it queues nothing, so the two never interleave inside a frame; before ws
   * writes a close frame, `flush` runs first (see `refuse` and `close`).
   */
  flush(): void {
    const frames = this.pending
    if (frames.length === 0) return
    this.pending = []
    this.pendingBytes = 0
    if (this.state === 'closed' || this.ws.readyState !== WebSocket.OPEN || this.socket.destroyed) return
    this.socket.write(encodeTextFrames(frames))
  }

  /** Bytes written and not yet handed to the kernel, queued frames included. */
  private get bufferedAmount(): number {
    return this.ws.bufferedAmount + this.pendingBytes
  }

  /** Sends an error frame; it counts as a bad frame when `bad`, and too many close the connection. */
  private fail(code: string, message: string, options: { id?: string; bad?: boolean } = {}): void {
    if (this.state !== 'open') {
      // No slack before authentication: whoever sent it has not shown a token.
      this.refuse(code, message)
      return
    }
    this.write(errorFrame(code, message, options.id))
    if (options.bad) {
      this.badFrames += 1
      this.host.log.debug({ event: 'bad-frame', code, userId: this.user?.id }, 'bad relay frame')
      if (this.badFrames >= this.host.limits.maxBadFramesPerConnection) {
        this.refuse(
          ServerErrorCode.BadFrame,
          `expected valid frames, got ${this.badFrames} bad ones: closing this connection`,
        )
      }
    }
  }

  /** Sends an error frame and closes the connection (1008 unless said otherwise). */
  refuse(code: string, message: string, closeCode: number = CloseCode.PolicyViolation): void {
    if (this.closing || this.state === 'closed') return
    this.quiesce()
    this.write(errorFrame(code, message))
    this.flush()
    this.ws.close(closeCode, code)
  }

  /**
   * Shutdown, first step: frames that arrive from now on are ignored (their senders were not told
   * "accepted" and will retry), while answers to frames already taken are still written.
   */
  quiesce(): void {
    this.closing = true
    // Keep reading (and ignoring) frames, or the client's answer to our close frame never arrives.
    this.backlog.length = 0
    if (this.pausedReading) {
      this.pausedReading = false
      this.ws.resume()
    }
  }

  /** Closes without an error frame (shutdown: 1001). */
  close(code: number, reason: string): void {
    if (this.state === 'closed') return
    this.quiesce()
    this.flush()
    this.ws.close(code, reason)
  }

  // --- Input ----------------------------------------------------------------------------------

  private received(data: RawData, isBinary: boolean): void {
    this.alive = true
    if (this.closing || this.state === 'closed') return
    if (this.busy) {
      this.backlog.push([data, isBinary])
      if (this.backlog.length >= MAX_PENDING_FRAMES_PER_CONNECTION) this.pauseReading()
      return
    }
    this.process(data, isBinary)
  }

  private process(data: RawData, isBinary: boolean): void {
    let pending: Promise<void> | undefined
    try {
      pending = this.handle(data, isBinary)
    } catch (error) {
      this.internalError(error)
    }
    if (pending) {
      this.busy = true
      pending
        .catch((error: unknown) => this.internalError(error))
        .finally(() => {
          this.busy = false
          this.drainBacklog()
        })
    }
    this.checkOutput()
  }

  private drainBacklog(): void {
    while (!this.busy && this.backlog.length > 0 && !this.closing && this.state !== 'closed') {
      const [data, isBinary] = this.backlog.shift()!
      this.process(data, isBinary)
    }
    if (!this.busy && this.pausedReading && !this.waitingForDrain) this.resumeReading()
  }

  private internalError(error: unknown): void {
    this.host.log.error({ err: error, userId: this.user?.id }, 'relay frame handling failed')
    this.refuse(
      ServerErrorCode.Internal,
      'expected to handle the frame, got an internal error',
      CloseCode.InternalError,
    )
  }

  private handle(data: RawData, isBinary: boolean): Promise<void> | undefined {
    if (isBinary) {
      this.fail(ServerErrorCode.BadFrame, 'expected a text frame of JSON, got a binary frame', { bad: true })
      return
    }
    const size = Array.isArray(data) ? data.reduce((sum, chunk) => sum + chunk.length, 0) : data.byteLength
    if (size > MAX_DEVICE_SEND_FRAME_BYTES) {
      this.tooLarge(MAX_DEVICE_SEND_FRAME_BYTES, size, 'a send.devices frame')
      return
    }
    // Before `ready` no frame may be a send, so nothing larger than one envelope's frame is parsed.
    if (size > MAX_FRAME_BYTES && this.state !== 'open') {
      this.tooLarge(MAX_FRAME_BYTES, size, 'a frame')
      return
    }
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
    let frame: RelayClientFrame
    try {
      frame = parseClientFrame(bytes)
    } catch (error) {
      // Text too large for any frame but a send.devices, which it failed to be, is answered as too large.
      if (size > MAX_FRAME_BYTES) {
        this.tooLarge(MAX_FRAME_BYTES, size, 'a frame')
        return
      }
      const detail = isProtocolError(error)
        ? error.message
        : 'expected a JSON frame, got text that does not parse'
      this.fail(ServerErrorCode.BadFrame, detail, { bad: true })
      return
    }
    // Only a send to several devices may be larger than one envelope's frame.
    if (size > MAX_FRAME_BYTES && frame.type !== 'send.devices') {
      this.tooLarge(MAX_FRAME_BYTES, size, 'a frame')
      return
    }

    if (this.state === 'awaiting-auth') {
      if (frame.type !== 'auth') {
        this.refuse(ServerErrorCode.Unauthenticated, `expected an auth frame first, got ${frame.type}`)
        return
      }
      return this.authenticate(frame.token)
    }
    if (this.state !== 'open') {
      this.refuse(ServerErrorCode.Unauthenticated, `expected to wait for ready after auth, got ${frame.type}`)
      return
    }

    const cost =
      frame.type === 'presence.subscribe' || frame.type === 'presence.share' ? 1 + frame.users.length : 1
    if (!this.frames.take(this.host.now(), cost)) {
      this.fail(
        ServerErrorCode.RateLimited,
        `expected at most ${this.host.limits.frameRatePerConnection.perSecond} frames a second, got more; retry later`,
        frame.type === 'send' || frame.type === 'send.devices' ? { id: frame.id } : {},
      )
      return
    }
    switch (frame.type) {
      case 'send':
      case 'send.devices':
        return this.send(frame)
      case 'ack':
        this.acknowledge(frame.upTo)
        return
      case 'presence.subscribe':
        return this.subscribe(frame.users)
      case 'presence.share':
        return this.share(frame.users)
      case 'auth':
        this.fail(ServerErrorCode.BadFrame, 'expected one auth frame per connection, got a second', {
          bad: true,
        })
        return
    }
  }

  private tooLarge(limit: number, size: number, what: string): void {
    this.fail(ServerErrorCode.TooLarge, `expected ${what} of at most ${limit} bytes, got ${size}`, {
      bad: true,
    })
  }

  // --- Authentication -------------------------------------------------------------------------

  private async authenticate(tokenText: string): Promise<void> {
    this.state = 'authenticating'
    const token = Buffer.from(tokenText, 'base64url')
    const tokenHash = hashSessionToken(token)
    token.fill(0)
    const session = await this.host.findSession(tokenHash)
    if (this.gone) return
    if (!session) {
      // The account was deleted (on this device, whose answer was lost, or another): say so.
      const ending = await this.host.tokenEnding(tokenHash)
      if (this.gone) return
      if (ending === 'account-deleted') {
        this.refuse(ServerErrorCode.AccountDeleted, serverErrors.sessionOfDeletedAccount().message)
        return
      }
      if (ending === 'device-removed') {
        this.refuse(ServerErrorCode.DeviceRemoved, serverErrors.sessionOfRemovedDevice().message)
        return
      }
      this.refuse(
        ServerErrorCode.Unauthenticated,
        'expected a valid session token, got an unknown, revoked or expired one',
      )
      return
    }
    const device = { userId: session.userId, deviceId: session.deviceId }
    const queued = await this.host.queue.countQueued(device, this.host.now())
    if (this.gone) return
    if (this.host.closing) {
      this.close(CloseCode.GoingAway, 'server shutting down')
      return
    }
    clearTimeout(this.authTimer)
    this.authTimer = undefined
    this.tokenHash = tokenHash
    this.device = device
    this.expiresAt = session.expiresAt
    this.state = 'open'
    this.user = this.host.register(this, session)
    const queue = this.deviceQueue!
    this.position = queue.ackedUpTo
    const user = this.user
    this.write(readyFrame(user.username, queued))
    this.drained = this.host.metrics.drainStarted()
    // Reading the queue before commits are signalled here could end "caught up" and miss one.
    await Promise.all([user.subscribed, queue.subscribed])
    this.pump()
    this.host.checkPreKeys(this.device!, this)
  }

  // --- Sending --------------------------------------------------------------------------------

  private send(frame: SendRequest | DeviceSendRequest): Promise<void> | undefined {
    const user = this.user!
    const { id } = frame
    const canonicalBodies =
      frame.type === 'send'
        ? isCanonicalBase64Url(frame.body)
        : frame.messages.every((envelope) => isCanonicalBase64Url(envelope.body)) &&
          frame.own.every((envelope) => isCanonicalBase64Url(envelope.body))
    if (!isCanonicalBase64Url(id) || !canonicalBodies) {
      this.fail(
        ServerErrorCode.BadFrame,
        `${frame.type} frame: expected canonical base64url in id and body, got stray bits`,
        {
          id: isCanonicalBase64Url(id) ? id : undefined,
          bad: true,
        },
      )
      return
    }
    if (frame.type === 'send.devices') {
      const problem = this.deviceListProblem(frame)
      if (problem) {
        this.fail(ServerErrorCode.BadFrame, `send.devices frame: ${problem}`, { id, bad: true })
        return
      }
    }
    const allowed = user.sends.take(this.host.now())
    if (allowed === true) return this.route(frame)
    if (allowed === false) {
      this.rateLimited(id)
      return
    }
    // In a cluster, when this node's lease of the user's sends has run out: Redis is asked for more.
    return allowed.then((granted) => {
      if (this.gone) return
      if (!granted) {
        this.rateLimited(id)
        return
      }
      return this.route(frame)
    })
  }

  private rateLimited(id: string): void {
    this.fail(
      ServerErrorCode.RateLimited,
      `expected at most ${this.host.limits.sendRatePerUser.perSecond} sends a second, got more; retry later`,
      { id },
    )
  }

  /** What makes a send.devices frame's lists impossible whatever the accounts' devices are. */
  private deviceListProblem(frame: DeviceSendRequest): string | undefined {
    const own = this.device!.deviceId
    const toSelf = frame.to === this.username
    for (const [name, list] of [
      ['messages', frame.messages],
      ['own', frame.own],
    ] as const) {
      const devices = new Set(list.map((envelope) => envelope.device))
      if (devices.size !== list.length) return `expected each device once in ${name}, got one twice`
      // The sending device is among the recipients' only on a send to oneself, and never among its own copies.
      const holdsSender = name === 'own' || toSelf
      if (holdsSender && devices.has(own)) {
        return `expected no envelope for the sending device (${own}) in ${name}, got one`
      }
    }
    if (toSelf && frame.own.length > 0) {
      return 'expected a send to oneself to carry its copies in messages, got own copies besides'
    }
    return undefined
  }

  /** Hands an allowed send to the host for its recipient, once the name is resolved. */
  private route(frame: SendRequest | DeviceSendRequest): Promise<void> | undefined {
    const { id } = frame
    // Clients send the normalised name they were given, so the cache usually answers directly.
    const cached = this.host.directory.cached(frame.to)
    if (cached) {
      this.enqueue(cached.id, frame)
      return
    }
    let username: string
    try {
      username = normalizeUsername(frame.to)
    } catch {
      this.userNotFound(id)
      return
    }
    return this.host.directory.lookup([username]).then(async (found) => {
      const recipient = found.get(username)
      if (recipient) {
        if (!this.closing && this.state === 'open') this.enqueue(recipient.id, frame)
        return
      }
      const deleted = await this.host.directory.isDeleted(username)
      if (this.gone) return
      if (deleted) {
        this.fail(
          ServerErrorCode.AccountDeleted,
          'expected a registered recipient, got the name of an account its owner deleted',
          { id },
        )
      } else this.userNotFound(id)
    })
  }

  // A method, not a closure per send: this is the relay's hottest path.
  private enqueue(recipientId: number, frame: SendRequest | DeviceSendRequest): void {
    if (frame.type === 'send') this.host.enqueue(this, recipientId, frame)
    else this.host.enqueueDevices(this, recipientId, frame)
  }

  private userNotFound(id: string): void {
    this.fail(ServerErrorCode.UserNotFound, 'expected a registered recipient, got an unknown username', {
      id,
    })
  }

  // --- Delivery -------------------------------------------------------------------------------

  private get inflightCount(): number {
    return this.inflight.length - this.inflightHead
  }

  private sent(seq: number): void {
    this.inflight.push(seq)
    this.sentUpTo = seq
    this.position = seq
  }

  /**
   * A message just committed for this connection's user: push it if caught up and there is room.
   * Without its frame (the commit signal came without a copy of the message) it is read from the
   * queue.
   */
  offer(seq: number, frame: OutgoingFrame | undefined): void {
    if (this.state !== 'open' || this.closing || !this.caughtUp || seq <= this.position) return
    // The copy is pushed only when it is the very next row. Positions are consecutive per
    // recipient and committed in order (db/queue.ts), but with several processes their signals may
    // arrive out of order or not at all: pushing seq 11 before 10 arrives would move `position`
    // past 10, and 10 would never be sent here. Anything else (a gap, no copy) reads the queue.
    if (frame === undefined || seq !== this.position + 1) {
      this.caughtUp = false
      this.pump()
      return
    }
    if (
      this.inflightCount >= this.host.limits.deliveryWindow ||
      this.bufferedAmount > SOCKET_HIGH_WATER_BYTES
    ) {
      // Leave it in the queue; `pump` reads it once acknowledgements or the socket make room.
      this.caughtUp = false
      if (this.bufferedAmount > SOCKET_HIGH_WATER_BYTES) this.waitForDrain()
      return
    }
    this.write(frame)
    this.sent(seq)
    this.host.metrics.messagesDelivered(1)
  }

  /**
   * Reads queued messages after `position` while the window and the socket buffer have room; a read
   * is written only up to the buffer's high-water mark (SOCKET_HIGH_WATER_BYTES).
   */
  pump(): void {
    if (this.state !== 'open' || this.closing || this.reading || this.caughtUp || this.waitingForDrain) return
    const room = this.host.limits.deliveryWindow - this.inflightCount
    if (room <= 0) return
    if (this.bufferedAmount > SOCKET_HIGH_WATER_BYTES) {
      this.waitForDrain()
      return
    }
    const queue = this.deviceQueue!
    const epoch = queue.commitEpoch
    const limit = Math.min(room, DRAIN_BATCH)
    this.reading = true
    this.host.queue.fetch(this.device!, this.position, limit, this.host.now()).then(
      (messages) => {
        this.reading = false
        if (this.state !== 'open' || this.closing) return
        let delivered = 0
        for (const message of messages) {
          if (message.seq <= this.position) continue
          if (this.bufferedAmount > SOCKET_HIGH_WATER_BYTES) {
            // A batch of large envelopes can be many megabytes: write up to the mark and leave the
            // rest queued (after `position`) for the next read once the socket drains.
            this.host.metrics.messagesDelivered(delivered)
            this.waitForDrain()
            return
          }
          this.write(
            deliverFrame(
              message.seq,
              toBase64UrlText(message.clientId),
              message.sender,
              toBase64UrlText(message.body),
              message.createdAt,
              message.senderDevice,
            ),
          )
          this.sent(message.seq)
          delivered += 1
        }
        this.host.metrics.messagesDelivered(delivered)
        if (messages.length < limit && queue.commitEpoch === epoch) {
          this.caughtUp = true
          this.drained?.()
          this.drained = undefined
        } else this.pump()
      },
      (error: unknown) => {
        this.reading = false
        this.internalError(error)
      },
    )
  }

  /** Caught up: waiting for commit signals rather than reading the queue. */
  get waitingForCommits(): boolean {
    return this.caughtUp && this.state === 'open' && !this.closing
  }

  /**
   * The recipient's queue has given out positions up to `lastSeq` (read from the database): a
   * caught-up connection behind it missed a commit signal (a lost or late publish) and reads the
   * queue, once per `lastSeq` (rows acknowledged elsewhere or expired stay "behind" for good).
   */
  recheck(lastSeq: number): void {
    if (!this.waitingForCommits || lastSeq <= this.position || lastSeq <= this.recheckedUpTo) return
    this.recheckedUpTo = lastSeq
    this.caughtUp = false
    this.pump()
  }

  /** A cumulative acknowledgement from this connection's client. */
  private acknowledge(requested: number): void {
    // A client acknowledges what it received here; more would delete messages it never saw.
    const upTo = Math.min(requested, this.sentUpTo)
    this.host.acknowledge(this, upTo)
  }

  /** Some connection of this user acknowledged everything up to `upTo`. */
  acknowledged(upTo: number): void {
    while (this.inflightHead < this.inflight.length && this.inflight[this.inflightHead]! <= upTo) {
      this.inflightHead += 1
    }
    if (this.inflightHead > 1024 && this.inflightHead * 2 > this.inflight.length) {
      this.inflight = this.inflight.slice(this.inflightHead)
      this.inflightHead = 0
    }
    if (upTo > this.position) this.position = upTo
    if (!this.caughtUp) this.pump()
  }

  // --- Flow control ---------------------------------------------------------------------------

  /** After handling frames: stop reading from a client that does not read what it is sent. */
  private checkOutput(): void {
    const buffered = this.bufferedAmount
    if (buffered <= SOCKET_HIGH_WATER_BYTES) return
    if (buffered > SOCKET_MAX_BUFFERED_BYTES) {
      this.host.log.info(
        { event: 'slow-consumer', userId: this.user?.id },
        'dropping a client that does not read',
      )
      this.ws.terminate()
      return
    }
    this.pauseReading()
    this.waitForDrain()
  }

  private waitForDrain(): void {
    if (this.waitingForDrain || this.state === 'closed') return
    this.waitingForDrain = true
    this.socket.once('drain', () => {
      this.waitingForDrain = false
      if (this.pausedReading && !this.busy) this.resumeReading()
      this.pump()
    })
  }

  private pauseReading(): void {
    if (this.pausedReading) return
    this.pausedReading = true
    this.ws.pause()
  }

  private resumeReading(): void {
    if (!this.pausedReading || this.backlog.length >= MAX_PENDING_FRAMES_PER_CONNECTION) return
    this.pausedReading = false
    this.ws.resume()
  }

  // --- Presence -------------------------------------------------------------------------------

  /** The existing users among these names (unnormalised names are normalised; impossible ones dropped). */
  private async resolve(requested: readonly string[]): Promise<{ id: number; username: string }[]> {
    const names: string[] = []
    for (const name of requested) {
      try {
        names.push(normalizeUsername(name))
      } catch {
        // A name that cannot exist has no presence.
      }
    }
    const found = await this.host.directory.lookup([...new Set(names)])
    return names.flatMap((name) => {
      const entry = found.get(name)
      return entry ? [entry] : []
    })
  }

  /**
   * Each named user's presence is sent now and on every change only if they let this connection's
   * user see it; the others get nothing at all (not even "offline"), and are remembered in
   * `withheld` in case they grant it while this connection lasts.
   */
  private async subscribe(requested: readonly string[]): Promise<void> {
    const entries = await this.resolve(requested)
    if (this.state !== 'open' || this.closing) return
    const unwatched = [...new Set(entries.map((entry) => entry.id))].filter(
      (id) => !this.subscriptions.has(id),
    )
    const visible =
      unwatched.length > 0 ? await this.host.presenceVisible(unwatched, this.user!.id) : new Set<number>()
    if (this.state !== 'open' || this.closing) return
    let ignored = 0
    for (const entry of entries) {
      if (!this.subscriptions.has(entry.id)) {
        const counted = this.withheld.has(entry.id)
        if (
          !counted &&
          this.subscriptions.size + this.withheld.size >= MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION
        ) {
          ignored += 1
          continue
        }
        if (!visible.has(entry.id)) {
          this.withheld.add(entry.id)
          continue
        }
        this.withheld.delete(entry.id)
        this.subscriptions.add(entry.id)
        this.host.watch(entry.id, this)
      }
      this.writePresence(entry.id, entry.username)
    }
    if (ignored > 0) {
      this.fail(
        ServerErrorCode.TooManySubscriptions,
        `expected at most ${MAX_PRESENCE_SUBSCRIPTIONS_PER_CONNECTION} watched users, got ${ignored} more (ignored)`,
      )
    }
  }

  /** This connection's user lets the named users see their presence (stored: it outlives the connection). */
  private async share(requested: readonly string[]): Promise<void> {
    const entries = await this.resolve(requested)
    if (this.state !== 'open' || this.closing) return
    const ignored = await this.host.sharePresence(
      this,
      entries.map((entry) => entry.id),
    )
    if (ignored > 0 && this.state === 'open') {
      this.fail(
        ServerErrorCode.TooManyRelations,
        `expected at most ${MAX_RELATIONS_PER_USER} users to share presence with or block, got ${ignored} more (ignored)`,
      )
    }
  }

  /** `ownerId` now lets this connection's user see their presence: answered if it was asked for. */
  presenceGranted(ownerId: number, username: string): void {
    if (this.state !== 'open' || this.closing || !this.withheld.delete(ownerId)) return
    this.subscriptions.add(ownerId)
    this.host.watch(ownerId, this)
    this.writePresence(ownerId, username)
  }

  /** The watched user's presence as it is now (at once unless it has to be asked of the cluster). */
  private writePresence(userId: number, username: string): void {
    const online = this.host.isOnline(userId)
    if (typeof online === 'boolean') {
      this.write(presenceFrame(username, online))
      return
    }
    online.then(
      (answer) => {
        // Unless the watch ended meanwhile (a block, or the socket closed).
        if (this.state === 'open' && this.subscriptions.has(userId))
          this.write(presenceFrame(username, answer))
      },
      (error: unknown) => this.host.log.error({ err: error }, 'reading presence from the cluster failed'),
    )
  }

  /**
   * `ownerId` no longer lets this connection's user see their presence (a block): the watch ends
   * (the host has removed it) and the last word is "offline", as when they leave, so the client
   * shows nothing stale and learns nothing more.
   */
  presenceRevoked(ownerId: number, username: string): void {
    if (!this.subscriptions.delete(ownerId)) return
    this.withheld.add(ownerId)
    this.write(presenceFrame(username, false))
  }

  // --- Closing --------------------------------------------------------------------------------

  private closed(): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.pending = []
    this.pendingBytes = 0
    clearTimeout(this.authTimer)
    this.authTimer = undefined
    this.backlog.length = 0
    this.host.unregister(this)
  }
}
