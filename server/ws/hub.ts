/**
 * The relay's shared state: who is online (each user with their connections), who watches whose
 * presence, the group commit that stores sends and acknowledgements, the heartbeat, and shutdown.
 *
 * Several connections per user (up to maxConnectionsPerUser; a new one beyond it closes the
 * oldest). There is one queue per user, not per connection, until the protocol has devices:
 *   - every connection of the recipient that is caught up gets each new message pushed;
 *   - every connection drains the queue on its own after connecting;
 *   - an acknowledgement from any connection removes the acknowledged messages for all of them
 *     (a connection that had not yet been sent some of them skips them).
 * So each connection receives every message that is still queued when it gets to it, and a message
 * is delivered to at least one connection before it leaves the queue.
 *
 * Presence: a user is online from the moment their first connection authenticates until their last
 * one closes; watchers get a `presence` frame on each change.
 */
import type { FastifyBaseLogger } from 'fastify'
import { ONE_TIME_PREKEY_REFILL_THRESHOLD } from '../../shared/limits.js'
import type { RelayEvents, ServerLimits } from '../context.js'
import { countOneTimePreKeys } from '../db/prekeys.js'
import type { QueueRepository, SendOutcome } from '../db/queue.js'
import type { Db } from '../db/schema.js'
import { findSession, type Session } from '../db/tokens.js'
import { ServerErrorCode } from '../errors.js'
import { DIRECTORY_CACHE_ENTRIES, MESSAGE_PURGE_BATCH, WS_CLOSE_GRACE_MS } from '../limits.js'
import { CloseCode, type ConnectionHost, RelayConnection } from './connection.js'
import { UserDirectory } from './directory.js'
import {
  acceptedFrame,
  deliverFrame,
  errorFrame,
  identityChangedFrame,
  preKeysLowFrame,
  presenceFrame,
} from './frames.js'
import { GroupCommit, type PendingSend } from './group-commit.js'
import { LocalConnections, type LocalUser } from './local-connections.js'
import type { SendRequest } from './parse.js'
import { TokenBucket } from './token-bucket.js'

/** What the group commit needs to answer a send once its batch is committed. */
interface SendOrigin {
  readonly connection: RelayConnection
  readonly senderName: string
  /** The message id and body as the client sent them (canonical base64url), reused for delivery. */
  readonly id: string
  readonly body: Buffer
}

export interface RelayHubOptions {
  readonly db: Db
  readonly queue: QueueRepository
  readonly limits: ServerLimits
  readonly now: () => number
  readonly log: FastifyBaseLogger
}

export class RelayHub implements RelayEvents, ConnectionHost {
  readonly db: Db
  readonly queue: QueueRepository
  readonly limits: ServerLimits
  readonly now: () => number
  readonly log: FastifyBaseLogger
  readonly directory: UserDirectory
  private readonly local: LocalConnections
  private readonly writer: GroupCommit<SendOrigin>
  private unflushed: RelayConnection[] = []
  private heartbeat: NodeJS.Timeout | undefined
  closing = false

  constructor(options: RelayHubOptions) {
    this.db = options.db
    this.queue = options.queue
    this.limits = options.limits
    this.now = options.now
    this.log = options.log
    this.directory = new UserDirectory(options.db, DIRECTORY_CACHE_ENTRIES)
    this.local = new LocalConnections(options.limits.maxConnectionsPerUser)
    this.writer = new GroupCommit<SendOrigin>(
      options.queue,
      {
        committed: (sends, outcomes) => this.committed(sends, outcomes),
        failed: (sends, error) => this.failed(sends, error),
      },
      options.now,
    )
  }

  start(): void {
    this.heartbeat = setInterval(() => this.beat(), this.limits.heartbeatIntervalMs)
    this.heartbeat.unref()
  }

  /** Every connection this process holds (tests and the benchmark look at them). */
  get connections(): ReadonlySet<RelayConnection> {
    return this.local.all
  }

  /** A WebSocket just upgraded on /ws. */
  accept(ws: RelayConnection['ws'], socket: RelayConnection['socket']): void {
    const connection = new RelayConnection(this, ws, socket)
    this.local.add(connection)
    if (this.closing) connection.close(CloseCode.GoingAway, 'server shutting down')
  }

  findSession(tokenHash: Uint8Array): Promise<Session | undefined> {
    return findSession(this.db, tokenHash, this.now())
  }

  // --- Output batching ------------------------------------------------------------------------

  /** Flushes every connection written to in this turn once the turn's synchronous work is done. */
  flushLater(connection: RelayConnection): void {
    this.unflushed.push(connection)
    if (this.unflushed.length === 1) process.nextTick(() => this.flushAll())
  }

  private flushAll(): void {
    const connections = this.unflushed
    this.unflushed = []
    for (const connection of connections) connection.flush()
  }

  // --- Users and presence ---------------------------------------------------------------------

  isOnline(userId: number): boolean {
    return this.local.user(userId) !== undefined
  }

  /** An authenticated connection joins its user (who comes online if it is their first). */
  register(connection: RelayConnection, session: Session): LocalUser {
    let user = this.local.user(session.userId)
    if (!user) {
      user = {
        id: session.userId,
        username: session.username,
        connections: [],
        ackedUpTo: 0,
        commitEpoch: 0,
        sends: new TokenBucket(this.limits.sendRatePerUser, this.now()),
      }
      this.local.addUser(user)
      this.directory.remember({ id: user.id, username: user.username })
      this.announce(user, true)
    }
    this.local.attach(user, connection)
    return user
  }

  /** A connection closed: it leaves its user (who goes offline with their last one) and its watches. */
  unregister(connection: RelayConnection): void {
    const { offline } = this.local.remove(connection)
    if (offline) this.announce(offline, false)
  }

  watch(userId: number, connection: RelayConnection): void {
    this.local.watch(userId, connection)
  }

  private announce(user: LocalUser, online: boolean): void {
    const watchers = this.local.watchersOf(user.id)
    if (!watchers) return
    const frame = presenceFrame(user.username, online)
    for (const watcher of watchers) watcher.write(frame)
  }

  // --- Sends, acknowledgements, deliveries ----------------------------------------------------

  enqueue(connection: RelayConnection, recipientId: number, frame: SendRequest): void {
    const now = this.now()
    this.writer.send({
      message: {
        recipientId,
        senderId: connection.user!.id,
        clientId: Buffer.from(frame.id, 'base64url'),
        body: Buffer.from(frame.body.toString('latin1'), 'base64url'),
        now,
        expiresAt: now + this.limits.messageTtlMs,
      },
      origin: { connection, senderName: connection.username, id: frame.id, body: frame.body },
    })
  }

  acknowledge(connection: RelayConnection, upTo: number): void {
    const user = this.local.userOf(connection)
    if (!user || upTo <= user.ackedUpTo) return
    user.ackedUpTo = upTo
    this.writer.ack(user.id, upTo)
    for (const connection of user.connections) connection.acknowledged(upTo)
  }

  private committed(sends: readonly PendingSend<SendOrigin>[], outcomes: readonly SendOutcome[]): void {
    for (let index = 0; index < sends.length; index++) {
      const { message, origin } = sends[index]!
      const outcome = outcomes[index]!
      switch (outcome.kind) {
        case 'stored': {
          origin.connection.write(acceptedFrame(origin.id, outcome.createdAt))
          const recipient = this.local.user(message.recipientId)
          if (recipient) {
            recipient.commitEpoch += 1
            const frame = deliverFrame(
              outcome.seq,
              origin.id,
              origin.senderName,
              origin.body,
              outcome.createdAt,
            )
            for (const connection of recipient.connections) connection.offer(outcome.seq, frame)
          }
          break
        }
        case 'duplicate':
          origin.connection.write(acceptedFrame(origin.id, outcome.createdAt))
          break
        case 'full':
          origin.connection.write(
            errorFrame(
              ServerErrorCode.QueueFull,
              "expected room in the recipient's queue, got a full queue; retry later",
              origin.id,
            ),
          )
          break
      }
    }
  }

  private failed(sends: readonly PendingSend<SendOrigin>[], error: unknown): void {
    this.log.error({ err: error, sends: sends.length }, 'relay batch failed; nothing of it was stored')
    for (const { origin } of sends) {
      origin.connection.write(
        errorFrame(
          ServerErrorCode.Internal,
          'expected to store the message, got an internal error; retry',
          origin.id,
        ),
      )
    }
  }

  // --- Keys and sessions (RelayEvents) --------------------------------------------------------

  sessionRevoked(tokenHash: Uint8Array): void {
    const revoked = Buffer.from(tokenHash)
    for (const connection of this.local.all) {
      if (connection.tokenHash && revoked.equals(connection.tokenHash)) {
        connection.refuse(
          ServerErrorCode.Unauthenticated,
          'expected a live session, got one that was logged out',
        )
      }
    }
  }

  identityChanged(userId: number, username: string): void {
    for (const connection of this.local.all) {
      if (connection.user?.id === userId) {
        connection.refuse(
          ServerErrorCode.Unauthenticated,
          'expected the current identity, got one that was replaced',
        )
      }
    }
    const frame = identityChangedFrame(username)
    for (const watcher of this.local.watchersOf(userId) ?? []) watcher.write(frame)
  }

  preKeyBundleServed(userId: number): void {
    const user = this.local.user(userId)
    if (user) this.checkPreKeys(userId, ...user.connections)
  }

  /** Tells these connections of a user when their one-time prekeys run low. */
  checkPreKeys(userId: number, ...connections: RelayConnection[]): void {
    countOneTimePreKeys(this.db, userId).then(
      (remaining) => {
        if (remaining >= ONE_TIME_PREKEY_REFILL_THRESHOLD) return
        const frame = preKeysLowFrame(remaining)
        for (const connection of connections) connection.write(frame)
      },
      (error: unknown) => this.log.error({ err: error }, 'counting one-time prekeys failed'),
    )
  }

  // --- Heartbeat, maintenance, shutdown -------------------------------------------------------

  /** Pings everyone; terminates who did not answer the previous ping; ends expired sessions. */
  private beat(): void {
    const now = this.now()
    for (const connection of this.local.all) {
      if (!connection.alive) {
        connection.ws.terminate()
        continue
      }
      if (connection.state === 'open' && now >= connection.expiresAt) {
        connection.refuse(ServerErrorCode.Unauthenticated, 'expected a live session, got one that expired')
        continue
      }
      connection.alive = false
      connection.ws.ping()
    }
  }

  /** Resolves once every send and acknowledgement taken so far is committed (tests, shutdown). */
  settled(): Promise<void> {
    return this.writer.idle()
  }

  purgeExpired(now: number): Promise<number> {
    return this.queue.purgeExpired(now, MESSAGE_PURGE_BATCH)
  }

  /**
   * Stops taking frames, lets the batches in flight commit (their senders get `accepted`), then
   * closes every connection with 1001 and waits briefly for the close handshakes.
   */
  async shutdown(): Promise<void> {
    this.closing = true
    clearInterval(this.heartbeat)
    for (const connection of this.local.all) connection.quiesce()
    await this.settled()
    const closed = [...this.local.all].map(
      (connection) =>
        new Promise<void>((resolve) => {
          if (connection.state === 'closed') resolve()
          else connection.ws.once('close', () => resolve())
        }),
    )
    for (const connection of this.local.all) connection.close(CloseCode.GoingAway, 'server shutting down')
    let timer: NodeJS.Timeout | undefined
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, WS_CLOSE_GRACE_MS)
    })
    await Promise.race([Promise.all(closed), grace])
    clearTimeout(timer)
    for (const connection of this.local.all) connection.ws.terminate()
  }
}
