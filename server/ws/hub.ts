/**
 * The relay in this process: it wires the connections (connection.ts) to the sockets this process
 * holds (local-connections.ts), the group commit that stores sends and acknowledgements
 * (group-commit.ts) and the relay bus (relay-bus.ts) that carries what other processes may need
 * to hear: committed messages, presence, revoked sessions, identity changes, served prekeys. It
 * also runs the heartbeat and shutdown.
 *
 * Everything that may concern a socket held elsewhere goes out on the bus, and this process acts
 * on what the bus brings in for the addresses it holds (a user connected or watched here), its
 * own events included; with the in-process bus that happens before `publish` returns, as if there
 * were no bus. Acknowledgements stay in this process: the rows they delete are gone from the queue
 * for every reader, and another process's connection that still holds them in flight is cleared
 * by its own client's acknowledgement.
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
 * one closes; watchers get a `presence` frame on each change. On a single node that is this
 * process's sockets. In a cluster (`presence`, cluster-presence.ts) it is every node's, as Redis
 * records them: a connection is added there when it authenticates and removed when it closes, and
 * only those that make the user's first or last live socket anywhere (or a dead node's sweep)
 * publish a change; the first `presence` frame a watcher gets is read from there too. The
 * connection limit likewise counts every node's sockets: the oldest beyond it is closed where it
 * is (`connection.displaced` on the bus when another node holds it). Only users the owner lets see it
 * become watchers (db/relations.ts): a subscription to anyone else is answered with nothing, and
 * kept aside on its connection in case the owner grants it later (`presence.granted`); a block
 * ends a watch (`presence.revoked`). Sends from a user the recipient blocked are screened out of
 * each batch before it is committed, and answered `accepted` like any other: the sender is not
 * told (docs/protocol.md §13.4).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import { ONE_TIME_PREKEY_REFILL_THRESHOLD } from '../../shared/limits.js'
import type { RelayEvents, ServerLimits } from '../context.js'
import { type DeviceAddress, deviceIdSets } from '../db/devices.js'
import { countOneTimePreKeys } from '../db/prekeys.js'
import { lastPositions, type NewMessage, type QueueRepository, queueKey } from '../db/queue.js'
import { blockedPairs, grantPresence, presenceVisibleTo, type RelationsKey } from '../db/relations.js'
import type { Db, TokenEnding } from '../db/schema.js'
import { findSession, liveTokenHashes, type Session, tokenEnding } from '../db/tokens.js'
import { ServerErrorCode, serverErrors } from '../errors.js'
import {
  DIRECTORY_CACHE_ENTRIES,
  DIRECTORY_CLUSTER_ENTRY_TTL_MS,
  MAX_RELATIONS_PER_USER,
  MESSAGE_PURGE_BATCH,
  WS_CLOSE_GRACE_MS,
} from '../limits.js'
import type { ClusterPresence, ClusterSocket } from './cluster-presence.js'
import { ClusterSendRate, RedisSendLeases, sendRateLeaseSize } from './cluster-send-rate.js'
import { CloseCode, type ConnectionHost, RelayConnection } from './connection.js'
import { UserDirectory } from './directory.js'
import {
  acceptedFrame,
  deliverFrame,
  devicesMismatchFrame,
  errorFrame,
  identityChangedFrame,
  preKeysLowFrame,
  presenceFrame,
} from './frames.js'
import {
  type DeviceListCheck,
  type DeviceListDifference,
  type DeviceMismatch,
  GroupCommit,
  type PendingSend,
  type RelayOutcome,
  type SendResult,
  sendFailure,
} from './group-commit.js'
import { LocalConnections, type LocalUser } from './local-connections.js'
import type { DeviceEnvelopeRequest, DeviceSendRequest, SendRequest } from './parse.js'
import {
  type CommittedMessage,
  type MessageCommitted,
  PRIMARY_DEVICE,
  primaryAddress,
  type RelayBus,
  type RelayEvent,
  type RelayListener,
} from './relay-bus.js'
import { NO_RELAY_METRICS, type RelayMetrics } from './relay-metrics.js'
import type { SendAllowance } from './send-allowance.js'
import { TokenBucket } from './token-bucket.js'

/** What the group commit needs to answer a send once its batch is committed. */
interface SendOrigin {
  readonly connection: RelayConnection
  readonly senderName: string
  /** The message id as the client sent it (canonical base64url). */
  readonly id: string
  /** Each row's body as the client sent it (canonical base64url), reused for delivery. */
  readonly bodies: readonly Buffer[]
}

/** How the ids a send names differ from an account's (`expected`: the ones it should name). */
function listDifference(
  named: readonly number[],
  expected: ReadonlySet<number>,
  removed: ReadonlySet<number>,
): DeviceListDifference {
  const given = new Set(named)
  return {
    missing: [...expected].filter((device) => !given.has(device)).sort((a, b) => a - b),
    extra: named.filter((device) => !expected.has(device) && !removed.has(device)).sort((a, b) => a - b),
    stale: named.filter((device) => removed.has(device)).sort((a, b) => a - b),
  }
}

const isEmpty = (difference: DeviceListDifference) =>
  difference.missing.length === 0 && difference.extra.length === 0 && difference.stale.length === 0

export interface RelayHubOptions {
  readonly db: Db
  readonly queue: QueueRepository
  readonly limits: ServerLimits
  readonly now: () => number
  readonly log: FastifyBaseLogger
  /** Carries events between the processes holding sockets (this one included); the caller closes it. */
  readonly bus: RelayBus
  /** Told when a socket authenticates (plugins/unauthenticated-sockets.ts counts those that have not). */
  readonly authenticated?: (socket: RelayConnection['socket']) => void
  /** The secret relation rows are hashed under (db/relations.ts). */
  readonly relationsKey: RelationsKey
  /** Counts accepted sends, deliveries and drains (server/metrics.ts); default none. */
  readonly metrics?: RelayMetrics
  /**
   * Who is connected on every node of a cluster (cluster-presence.ts); the caller closes it after
   * `shutdown`. Without it presence and the connection limit are this process's alone.
   */
  readonly presence?: ClusterPresence
  /**
   * In a cluster, the Redis connection the node keeps its limits on and the deployment's key
   * prefix: the per-user send rate is then counted there for every node (cluster-send-rate.ts).
   * Without it the send rate is this process's alone.
   */
  readonly limitsRedis?: { readonly redis: Redis; readonly prefix: string }
}

export class RelayHub implements RelayEvents, ConnectionHost {
  readonly db: Db
  readonly queue: QueueRepository
  readonly limits: ServerLimits
  readonly now: () => number
  readonly log: FastifyBaseLogger
  readonly directory: UserDirectory
  readonly metrics: RelayMetrics
  private readonly local: LocalConnections
  private readonly bus: RelayBus
  /** This process's listener on the bus, subscribed to every address held here. */
  private readonly listener: RelayListener = (event) => this.received(event)
  private readonly publishFailed = (error: unknown) => {
    // While the bus is down it has said so once; every event it cannot carry is not news.
    const level = this.bus.status === 'down' ? 'debug' : 'error'
    this.log[level]({ err: error }, 'relay bus publish failed; sockets on other processes may not hear of it')
  }
  private readonly subscriptionFailed = (error: unknown) =>
    this.log.error({ err: error }, 'relay bus subscription change failed')
  private readonly writer: GroupCommit<SendOrigin>
  private unflushed: RelayConnection[] = []
  private heartbeat: NodeJS.Timeout | undefined
  private rechecks: NodeJS.Timeout | undefined
  private sessionRechecks: NodeJS.Timeout | undefined
  private revalidating = false
  private rechecking = false
  private recheckAgain = false
  private readonly authenticated: RelayHubOptions['authenticated']
  private readonly relationsKey: RelationsKey
  private readonly presence: ClusterPresence | undefined
  /** A user's send allowance, made with their first connection here. */
  private readonly sendAllowanceFor: (userId: number, now: number) => SendAllowance
  /** In a cluster: this process's authenticated connections by their cluster id, and back. */
  private readonly clusterSockets = new Map<string, RelayConnection>()
  private readonly clusterIds = new Map<RelayConnection, ClusterSocket>()
  /** In a cluster: subscriptions to watched users still being made, which a presence read waits for. */
  private readonly subscribing = new Map<number, Promise<void>>()
  /** Presence updates sent to Redis and not yet answered (shutdown waits for them). */
  private readonly presenceUpdates = new Set<Promise<void>>()
  /** In a cluster: presence reads in flight per watched user (`confirmPresence`). */
  private readonly presenceReads = new Map<number, { again: boolean; claimed: boolean }>()
  private presenceTimer: NodeJS.Timeout | undefined
  private refreshing = false
  /** An update to Redis failed: at the next refresh every connection here is announced again. */
  private presenceStale = false
  private readonly presenceFailed = (error: unknown) => {
    this.presenceStale = true
    this.log.error({ err: error }, 'cluster presence update failed; other nodes may see stale presence')
  }
  closing = false

  constructor(options: RelayHubOptions) {
    this.db = options.db
    this.queue = options.queue
    this.limits = options.limits
    this.now = options.now
    this.log = options.log
    this.presence = options.presence
    this.sendAllowanceFor = sendAllowances(options)
    this.directory = new UserDirectory(
      options.db,
      DIRECTORY_CACHE_ENTRIES,
      options.now,
      options.presence ? DIRECTORY_CLUSTER_ENTRY_TTL_MS : undefined,
    )
    this.local = new LocalConnections(options.limits.maxConnectionsPerUser)
    this.bus = options.bus
    this.authenticated = options.authenticated
    this.relationsKey = options.relationsKey
    this.metrics = options.metrics ?? NO_RELAY_METRICS
    this.writer = new GroupCommit<SendOrigin>(
      options.queue,
      {
        committed: (sends, outcomes) => this.committed(sends, outcomes),
        failed: (sends, error) => this.failed(sends, error),
        checkDevices: (checks) => this.checkDevices(checks),
        // One lookup per batch: which of its senders the recipient blocked.
        screen: (messages) =>
          blockedPairs(
            this.db,
            this.relationsKey,
            messages.map((message) => ({ ownerId: message.recipientId, otherId: message.senderId })),
          ),
      },
      options.now,
    )
  }

  start(): void {
    this.heartbeat = setInterval(() => this.beat(), this.limits.heartbeatIntervalMs)
    this.heartbeat.unref()
    this.bus.onResumed(() => this.recheck(true))
    if (this.bus.lossy) {
      this.rechecks = setInterval(() => this.recheck(false), this.limits.relayRecheckIntervalMs)
      this.rechecks.unref()
      this.sessionRechecks = setInterval(
        () => this.revalidateSessions(),
        this.limits.relaySessionRecheckIntervalMs,
      )
      this.sessionRechecks.unref()
    }
    if (this.presence) {
      this.presenceTimer = setInterval(() => this.refreshPresence(), this.presence.refreshIntervalMs)
      this.presenceTimer.unref()
    }
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

  tokenEnding(tokenHash: Uint8Array): Promise<TokenEnding | undefined> {
    return tokenEnding(this.db, tokenHash, this.now())
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

  /** Here, or in a cluster anywhere (asked of Redis: a promise then). */
  isOnline(userId: number): boolean | Promise<boolean> {
    if (!this.presence) return this.local.user(userId) !== undefined
    // Sockets here count even if Redis has not answered for them yet (or cannot).
    if (this.local.user(userId)) return true
    const presence = this.presence
    // Read once the watch's subscription is live, so that a change published meanwhile is heard.
    const live = this.subscribing.get(userId) ?? Promise.resolve()
    return live
      .then(() => presence.isOnline(userId))
      .catch((error: unknown) => {
        this.presenceFailed(error)
        // Redis cannot say: as far as this node knows. A change heard later corrects it.
        return false
      })
  }

  /** An authenticated connection joins its user (who comes online if it is their first). */
  register(connection: RelayConnection, session: Session): LocalUser {
    this.authenticated?.(connection.socket)
    let user = this.local.user(session.userId)
    if (!user) {
      const address = primaryAddress(session.userId)
      user = {
        id: session.userId,
        username: session.username,
        connections: [],
        devices: new Map(),
        sends: this.sendAllowanceFor(session.userId, this.now()),
        // Already live if someone here watches them: subscribing again is a no-op.
        subscribed: this.bus.subscribe(address, this.listener),
      }
      this.local.addUser(user)
      this.directory.remember({ id: user.id, username: user.username })
      if (!this.presence) {
        this.publish({ kind: 'presence.changed', address, username: user.username, online: true })
      }
    }
    let queue = user.devices.get(session.deviceId)
    if (!queue) {
      const address = { userId: session.userId, deviceId: session.deviceId }
      queue = {
        ackedUpTo: 0,
        commitEpoch: 0,
        connections: [],
        // Device 1's address is also the user's, subscribed above: a no-op then.
        subscribed: this.bus.subscribe(address, this.listener),
      }
      user.devices.set(session.deviceId, queue)
    }
    this.local.attach(user, connection)
    queue.connections.push(connection)
    connection.deviceQueue = queue
    if (this.presence) {
      const socket = {
        userId: user.id,
        username: user.username,
        socketId: this.presence.nextSocketId(),
      }
      this.clusterSockets.set(socket.socketId, connection)
      this.clusterIds.set(connection, socket)
      this.announce(socket)
    }
    return user
  }

  /** Adds a connection to the cluster's record; says so if its user came online. */
  private announce(socket: ClusterSocket): void {
    this.trackPresence(
      this.presence!.connected(socket, this.limits.maxConnectionsPerUser).then(({ first, displaced }) => {
        const address = primaryAddress(socket.userId)
        if (first)
          this.publish({ kind: 'presence.changed', address, username: socket.username, online: true })
        for (const socketId of displaced) {
          if (this.clusterSockets.has(socketId)) this.displace(socketId)
          else this.publish({ kind: 'connection.displaced', address, socketId })
        }
      }),
    )
  }

  private trackPresence(update: Promise<void>): void {
    const tracked = update.catch(this.presenceFailed).finally(() => this.presenceUpdates.delete(tracked))
    this.presenceUpdates.add(tracked)
  }

  /** This process's connection is one too many across the cluster: it closes as the local limit does. */
  private displace(socketId: string): void {
    this.clusterSockets
      .get(socketId)
      ?.refuse(
        ServerErrorCode.TooManyConnections,
        `expected at most ${this.limits.maxConnectionsPerUser} connections per user, got another: closing the oldest`,
      )
  }

  /**
   * Renews this node in Redis and sweeps dead nodes: their users left with no socket go offline.
   * If this node had counted as dead (or an update failed), its connections are announced again.
   */
  private refreshPresence(): void {
    if (!this.presence || this.closing || this.refreshing) return
    this.refreshing = true
    this.presence
      .refresh()
      .then(
        ({ revived, expired, displaced }) => {
          // Displaced by a connection elsewhere while the event that said so was lost (or is late).
          for (const socketId of displaced) if (this.clusterSockets.has(socketId)) this.displace(socketId)
          for (const { userId, username } of expired) {
            // Swept, but connected here meanwhile (its update not answered yet): still online.
            if (this.local.user(userId)) continue
            this.publish({
              kind: 'presence.changed',
              address: primaryAddress(userId),
              username,
              online: false,
            })
          }
          if (revived || this.presenceStale) {
            this.presenceStale = false
            for (const socket of this.clusterIds.values()) this.announce(socket)
          }
        },
        (error: unknown) => {
          // Said once per outage: every refresh until Redis is back fails the same way.
          const level = this.presenceStale ? 'debug' : 'error'
          this.presenceStale = true
          this.log[level]({ err: error }, 'cluster presence refresh failed; this node may count as gone')
        },
      )
      .finally(() => {
        this.refreshing = false
      })
  }

  /** A connection closed: it leaves its user (who goes offline with their last one) and its watches. */
  unregister(connection: RelayConnection): void {
    const { offline, released, releasedQueue } = this.local.remove(connection)
    const socket = this.clusterIds.get(connection)
    if (socket && this.presence) {
      this.clusterIds.delete(connection)
      this.clusterSockets.delete(socket.socketId)
      this.trackPresence(
        this.presence.disconnected(socket, offline !== undefined).then((last) => {
          // A new connection here since (its update queued after this one) keeps them online.
          if (!last || this.local.user(socket.userId)) return
          this.publish({
            kind: 'presence.changed',
            address: primaryAddress(socket.userId),
            username: socket.username,
            online: false,
          })
        }),
      )
    } else if (offline && !this.presence) {
      this.publish({
        kind: 'presence.changed',
        address: primaryAddress(offline.id),
        username: offline.username,
        online: false,
      })
    }
    for (const userId of released) {
      this.bus.unsubscribe(primaryAddress(userId), this.listener).catch(this.subscriptionFailed)
    }
    // Device 1's address is the user's, which `released` covers (watchers may still need it).
    if (releasedQueue !== undefined && releasedQueue !== PRIMARY_DEVICE) {
      this.bus
        .unsubscribe({ userId: connection.device!.userId, deviceId: releasedQueue }, this.listener)
        .catch(this.subscriptionFailed)
    }
  }

  /**
   * The connection's first `presence` frame for this user comes from `isOnline`: at once from this
   * process's sockets on a single node; in a cluster read from Redis once the subscription is
   * live, so that a change in between is heard (and read from Redis too: `confirmPresence`; both
   * reads go on the one presence connection, whose answers come in order).
   */
  watch(userId: number, connection: RelayConnection): void {
    if (this.local.watch(userId, connection)) {
      const subscribed = this.bus
        .subscribe(primaryAddress(userId), this.listener)
        .catch(this.subscriptionFailed)
      if (!this.presence) return
      // In a cluster the first frame is read from Redis once this is live (`isOnline`).
      this.subscribing.set(userId, subscribed)
      void subscribed.finally(() => {
        if (this.subscribing.get(userId) === subscribed) this.subscribing.delete(userId)
      })
    }
  }

  presenceVisible(ownerIds: readonly number[], viewerId: number): Promise<Set<number>> {
    return presenceVisibleTo(this.db, this.relationsKey, ownerIds, viewerId)
  }

  async sharePresence(connection: RelayConnection, viewerIds: readonly number[]): Promise<number> {
    const owner = connection.user!
    const { granted, ignored } = await grantPresence(
      this.db,
      this.relationsKey,
      owner.id,
      viewerIds,
      MAX_RELATIONS_PER_USER,
    )
    for (const viewerId of granted) {
      this.publish({
        kind: 'presence.granted',
        address: primaryAddress(viewerId),
        ownerId: owner.id,
        username: owner.username,
      })
    }
    return ignored
  }

  // --- Sends, acknowledgements, deliveries ----------------------------------------------------

  /** A `send`: to the recipient's device 1 alone (the frame of clients from before devices). */
  enqueue(connection: RelayConnection, recipientId: number, frame: SendRequest): void {
    const now = this.now()
    this.writer.send({
      messages: [
        {
          recipientId,
          recipientDevice: PRIMARY_DEVICE,
          senderId: connection.user!.id,
          senderDevice: connection.device!.deviceId,
          clientId: Buffer.from(frame.id, 'base64url'),
          body: Buffer.from(frame.body.toString('latin1'), 'base64url'),
          now,
          expiresAt: now + this.limits.messageTtlMs,
        },
      ],
      origin: { connection, senderName: connection.username, id: frame.id, bodies: [frame.body] },
    })
  }

  /**
   * A `send.devices`: one row per device of the recipient and per other device of the sender,
   * stored all or none once the lists match the accounts' devices (docs/protocol.md §13.2).
   */
  enqueueDevices(connection: RelayConnection, recipientId: number, frame: DeviceSendRequest): void {
    const now = this.now()
    const senderId = connection.user!.id
    const senderDevice = connection.device!.deviceId
    const clientId = Buffer.from(frame.id, 'base64url')
    const expiresAt = now + this.limits.messageTtlMs
    const row = (userId: number, envelope: DeviceEnvelopeRequest): NewMessage => ({
      recipientId: userId,
      recipientDevice: envelope.device,
      senderId,
      senderDevice,
      clientId,
      body: Buffer.from(envelope.body.toString('latin1'), 'base64url'),
      now,
      expiresAt,
    })
    this.writer.send({
      messages: [
        ...frame.messages.map((envelope) => row(recipientId, envelope)),
        ...frame.own.map((envelope) => row(senderId, envelope)),
      ],
      devices: {
        senderId,
        senderDevice,
        recipientId,
        recipientDevices: frame.messages.map((envelope) => envelope.device),
        ownDevices: frame.own.map((envelope) => envelope.device),
      },
      origin: {
        connection,
        senderName: connection.username,
        id: frame.id,
        bodies: [...frame.messages, ...frame.own].map((envelope) => envelope.body),
      },
    })
  }

  /** The device-list checks of one batch, against the devices table in one query. */
  private async checkDevices(checks: readonly DeviceListCheck[]): Promise<(DeviceMismatch | undefined)[]> {
    const sets = await deviceIdSets(
      this.db,
      checks.flatMap((check) => [check.senderId, check.recipientId]),
    )
    return checks.map((check) => {
      const sender = sets.get(check.senderId)!
      const recipient = sets.get(check.recipientId)!
      const others = new Set([...sender.live].filter((device) => device !== check.senderDevice))
      const toSelf = check.recipientId === check.senderId
      const differences = {
        // To oneself the other devices are the recipients, and there are no sent copies besides.
        recipient: listDifference(
          check.recipientDevices,
          toSelf ? others : recipient.live,
          recipient.removed,
        ),
        own: listDifference(check.ownDevices, toSelf ? new Set() : others, sender.removed),
      }
      if (isEmpty(differences.recipient) && isEmpty(differences.own)) return undefined
      return { kind: 'mismatch' as const, ...differences }
    })
  }

  acknowledge(connection: RelayConnection, upTo: number): void {
    const user = this.local.userOf(connection)
    const queue = connection.device && user?.devices.get(connection.device.deviceId)
    if (!user || !queue || upTo <= queue.ackedUpTo) return
    queue.ackedUpTo = upTo
    this.writer.ack(user.id, connection.device!.deviceId, upTo)
    for (const connection of queue.connections) connection.acknowledged(upTo)
  }

  private committed(sends: readonly PendingSend<SendOrigin>[], results: readonly SendResult[]): void {
    for (let index = 0; index < sends.length; index++) {
      const { messages, origin } = sends[index]!
      const result = results[index]!
      if (!Array.isArray(result)) {
        const mismatch = result as DeviceMismatch
        origin.connection.write(devicesMismatchFrame(origin.id, mismatch.recipient, mismatch.own))
        continue
      }
      const outcomes = result as readonly RelayOutcome[]
      if (outcomes.length === 1) {
        this.committedRow(messages[0]!, origin, outcomes[0]!)
        continue
      }
      // A refusal refuses every row of the send (the queue stores a send all or none).
      const refused = outcomes.find((outcome) => outcome.kind === 'full' || outcome.kind === 'share-full')
      if (refused?.kind === 'full') {
        origin.connection.write(
          errorFrame(
            ServerErrorCode.QueueFull,
            "expected room in the recipient's queue, got a full queue; retry later",
            origin.id,
          ),
        )
        continue
      }
      if (refused?.kind === 'share-full') {
        origin.connection.write(
          errorFrame(
            ServerErrorCode.QueueShareFull,
            `expected room in this sender's share of the recipient's queue (${this.limits.maxQueuedMessagesPerSender} messages, ${this.limits.maxQueuedBytesPerSender} bytes), got it full of messages they have not yet received; retry later`,
            origin.id,
          ),
        )
        continue
      }
      // A row dropped because the recipient blocked the sender is answered as if stored, so the
      // sender cannot tell; the time is the first stored (or earlier stored) row's.
      // The sender hears `accepted` before any recipient device hears `deliver`, as with one row.
      const kept = outcomes.find((outcome) => outcome.kind === 'stored' || outcome.kind === 'duplicate')
      origin.connection.write(acceptedFrame(origin.id, kept?.createdAt ?? messages[0]!.now))
      let stored = false
      for (let row = 0; row < outcomes.length; row++) {
        const outcome = outcomes[row]!
        if (outcome.kind !== 'stored') continue
        stored = true
        const message = messages[row]!
        this.publish({
          kind: 'message.committed',
          address: { userId: message.recipientId, deviceId: message.recipientDevice },
          seq: outcome.seq,
          copy: {
            id: origin.id,
            sender: origin.senderName,
            ...(message.senderDevice === PRIMARY_DEVICE ? {} : { senderDevice: message.senderDevice }),
            body: origin.bodies[row]!,
            createdAt: outcome.createdAt,
          },
        })
      }
      if (stored) this.metrics.messageAccepted()
    }
  }

  /** A send of one row (every `send` frame): answered and published as before devices. */
  private committedRow(message: NewMessage, origin: SendOrigin, outcome: RelayOutcome): void {
    switch (outcome.kind) {
      case 'stored': {
        origin.connection.write(acceptedFrame(origin.id, outcome.createdAt))
        this.metrics.messageAccepted()
        const copy: { -readonly [K in keyof CommittedMessage]: CommittedMessage[K] } = {
          id: origin.id,
          sender: origin.senderName,
          body: origin.bodies[0]!,
          createdAt: outcome.createdAt,
        }
        if (message.senderDevice !== PRIMARY_DEVICE) copy.senderDevice = message.senderDevice
        this.publish({
          kind: 'message.committed',
          address: { userId: message.recipientId, deviceId: message.recipientDevice },
          seq: outcome.seq,
          copy,
        })
        return
      }
      case 'duplicate':
        origin.connection.write(acceptedFrame(origin.id, outcome.createdAt))
        return
      case 'dropped':
        // The recipient blocked the sender: answered as if stored, so the sender cannot tell.
        origin.connection.write(acceptedFrame(origin.id, message.now))
        return
      case 'full':
        origin.connection.write(
          errorFrame(
            ServerErrorCode.QueueFull,
            "expected room in the recipient's queue, got a full queue; retry later",
            origin.id,
          ),
        )
        return
      case 'share-full':
        origin.connection.write(
          errorFrame(
            ServerErrorCode.QueueShareFull,
            `expected room in this sender's share of the recipient's queue (${this.limits.maxQueuedMessagesPerSender} messages, ${this.limits.maxQueuedBytesPerSender} bytes), got it full of messages they have not yet received; retry later`,
            origin.id,
          ),
        )
        return
    }
  }

  private failed(sends: readonly PendingSend<SendOrigin>[], error: unknown): void {
    const failure = sendFailure(error)
    if (failure.internal) {
      this.log.error({ err: error, sends: sends.length }, 'relay batch failed; nothing of it was stored')
    } else {
      this.log.info(
        { event: 'send-to-deleted-account', sends: sends.length },
        'a send named an account deleted meanwhile',
      )
    }
    if (failure.code === ServerErrorCode.AccountDeleted) {
      // The account.deleted that should have made this node forget them may have been lost.
      for (const { messages } of sends) this.directory.forgetId(messages[0]!.recipientId)
    }
    for (const { origin } of sends) {
      origin.connection.write(errorFrame(failure.code, failure.message, origin.id))
    }
  }

  // --- Keys and sessions (RelayEvents, from the HTTP routes) ----------------------------------

  sessionRevoked(userId: number, tokenHash: Uint8Array, reason?: 'device-removed'): void {
    this.publish({
      kind: 'session.revoked',
      address: primaryAddress(userId),
      tokenHash,
      ...(reason ? { reason } : {}),
    })
  }

  identityChanged(userId: number, username: string): void {
    this.publish({ kind: 'identity.changed', address: primaryAddress(userId), username })
  }

  accountDeleted(userId: number, username: string): void {
    // This process first, whether or not it holds the address: its cache must not route a send to
    // the deleted id. Other processes forget it when the event reaches them.
    this.directory.forget(username)
    this.publish({ kind: 'account.deleted', address: primaryAddress(userId), username })
  }

  presenceRevoked(ownerId: number, ownerName: string, viewerId: number): void {
    this.publish({
      kind: 'presence.revoked',
      address: primaryAddress(ownerId),
      viewerId,
      username: ownerName,
    })
  }

  preKeyBundleServed(userId: number, deviceId: number): void {
    this.publish({ kind: 'prekeys.served', address: { userId, deviceId } })
  }

  /** Tells these connections of a device when its one-time prekeys run low. */
  checkPreKeys(device: DeviceAddress, ...connections: RelayConnection[]): void {
    countOneTimePreKeys(this.db, device).then(
      (remaining) => {
        if (remaining >= ONE_TIME_PREKEY_REFILL_THRESHOLD) return
        const frame = preKeysLowFrame(remaining)
        for (const connection of connections) connection.write(frame)
      },
      (error: unknown) => this.log.error({ err: error }, 'counting one-time prekeys failed'),
    )
  }

  /** Writes the user's presence to every connection here that watches them. */
  private showPresence(userId: number, username: string, online: boolean): void {
    const watchers = this.local.watchersOf(userId)
    if (!watchers) return
    const frame = presenceFrame(username, online)
    for (const watcher of watchers) watcher.write(frame)
  }

  /**
   * In a cluster a `presence.changed` says "look again": transitions on two nodes travel on two
   * connections and may arrive crossed (an old "offline" after the new "online"), so the state is
   * read from Redis, one read per user at a time; an event that comes during a read asks for
   * another after it, and only the last read is shown. The last read thus follows the last
   * transition, and watchers end on the truth. Should Redis not answer, the event's word stands.
   */
  private confirmPresence(userId: number, username: string, claimed: boolean): void {
    const pending = this.presenceReads.get(userId)
    if (pending) {
      pending.again = true
      pending.claimed = claimed
      return
    }
    const read = { again: false, claimed }
    this.presenceReads.set(userId, read)
    const presence = this.presence!
    const readUntilSettled = async (): Promise<void> => {
      for (;;) {
        read.again = false
        let online: boolean
        try {
          online = await presence.isOnline(userId)
        } catch (error) {
          this.presenceFailed(error)
          online = read.claimed
        }
        if (read.again) continue
        this.presenceReads.delete(userId)
        // Sockets here count before Redis has answered for them (as in `isOnline`).
        this.showPresence(userId, username, online || this.local.user(userId) !== undefined)
        return
      }
    }
    this.trackPresence(readUntilSettled())
  }

  // --- The bus --------------------------------------------------------------------------------

  private publish(event: RelayEvent): void {
    this.bus.publish(event).catch(this.publishFailed)
  }

  /** An event for an address held here (a user connected or watched here), from any process. */
  private received(event: RelayEvent): void {
    const userId = event.address.userId
    switch (event.kind) {
      case 'message.committed':
        this.deliver(event)
        return
      case 'presence.changed': {
        if (!this.local.watchersOf(userId)) return
        if (this.presence) {
          this.confirmPresence(userId, event.username, event.online)
          return
        }
        // One process: events come in the order its own sockets opened and closed.
        this.showPresence(userId, event.username, event.online)
        return
      }
      case 'session.revoked': {
        const revoked = Buffer.from(event.tokenHash)
        for (const connection of [...(this.local.user(userId)?.connections ?? [])]) {
          if (connection.tokenHash && revoked.equals(connection.tokenHash)) {
            if (event.reason === 'device-removed') {
              connection.refuse(ServerErrorCode.DeviceRemoved, serverErrors.sessionOfRemovedDevice().message)
            } else {
              connection.refuse(
                ServerErrorCode.Unauthenticated,
                'expected a live session, got one that was logged out',
              )
            }
          }
        }
        return
      }
      case 'identity.changed': {
        for (const connection of [...(this.local.user(userId)?.connections ?? [])]) {
          connection.refuse(
            ServerErrorCode.Unauthenticated,
            'expected the current identity, got one that was replaced',
          )
        }
        const frame = identityChangedFrame(event.username)
        for (const watcher of this.local.watchersOf(userId) ?? []) watcher.write(frame)
        return
      }
      case 'account.deleted': {
        this.directory.forget(event.username)
        for (const connection of [...(this.local.user(userId)?.connections ?? [])]) {
          connection.refuse(
            ServerErrorCode.AccountDeleted,
            'expected a live account, got one that was deleted: this session has ended',
          )
        }
        const frame = identityChangedFrame(event.username)
        for (const watcher of this.local.watchersOf(userId) ?? []) watcher.write(frame)
        return
      }
      case 'presence.granted': {
        for (const connection of this.local.user(userId)?.connections ?? []) {
          connection.presenceGranted(event.ownerId, event.username)
        }
        return
      }
      case 'presence.revoked': {
        for (const watcher of [...(this.local.watchersOf(userId) ?? [])]) {
          if (watcher.user?.id !== event.viewerId) continue
          watcher.presenceRevoked(userId, event.username)
          if (this.local.unwatch(userId, watcher)) {
            this.bus.unsubscribe(primaryAddress(userId), this.listener).catch(this.subscriptionFailed)
          }
        }
        return
      }
      case 'connection.displaced':
        this.displace(event.socketId)
        return
      case 'prekeys.served': {
        const queue = this.local.user(userId)?.devices.get(event.address.deviceId)
        if (queue) this.checkPreKeys(event.address, ...queue.connections)
        return
      }
    }
  }

  /** Pushes a committed message to its recipient's connections here that are caught up. */
  private deliver(event: MessageCommitted): void {
    const queue = this.local.user(event.address.userId)?.devices.get(event.address.deviceId)
    if (!queue) return
    queue.commitEpoch += 1
    const { copy } = event
    const frame =
      copy && deliverFrame(event.seq, copy.id, copy.sender, copy.body, copy.createdAt, copy.senderDevice)
    for (const connection of queue.connections) connection.offer(event.seq, frame)
  }

  /**
   * Asks the database, in one query, how far the queues of this process's caught-up connections
   * reach, and has each connection that is behind read its queue (RelayConnection.recheck): a
   * commit signal the bus lost only delays a delivery. `resumed` (the bus came back after a loss)
   * also makes every read under way read again, since signals during it may have been lost.
   */
  private recheck(resumed: boolean): void {
    if (this.closing) return
    if (resumed) {
      // A read under way ends "caught up" only if no commit was signalled during it: this counts.
      for (const connection of this.local.all) {
        const user = this.local.userOf(connection)
        if (user) for (const queue of user.devices.values()) queue.commitEpoch += 1
      }
      this.revalidateSessions()
    }
    if (this.rechecking) {
      // The query under way may predate commits made while the bus was lost: ask again after it.
      this.recheckAgain ||= resumed
      return
    }
    const waiting = new Map<string, { device: DeviceAddress; connections: RelayConnection[] }>()
    for (const connection of this.local.all) {
      const device = connection.device
      if (!device || !this.local.userOf(connection) || !connection.waitingForCommits) continue
      const key = queueKey(device.userId, device.deviceId)
      const queue = waiting.get(key)
      if (queue) queue.connections.push(connection)
      else waiting.set(key, { device, connections: [connection] })
    }
    if (waiting.size === 0) return
    this.rechecking = true
    lastPositions(
      this.db,
      this.queue.dialect,
      [...waiting.values()].map((queue) => queue.device),
    )
      .then(
        (positions) => {
          for (const [key, { connections }] of waiting) {
            const last = positions.get(key)
            if (last !== undefined) for (const connection of connections) connection.recheck(last)
          }
        },
        (error: unknown) => this.log.error({ err: error }, 'relay recheck of queue positions failed'),
      )
      .finally(() => {
        this.rechecking = false
        if (this.recheckAgain) {
          this.recheckAgain = false
          this.recheck(false)
        }
      })
  }

  /**
   * After the bus was lost, and now and then with a lossy bus: a logout, a reinstall or a deleted
   * account on another process may have sent a `session.revoked`, `identity.changed` or
   * `account.deleted` this process never heard. Each of them deletes the session's token, so the
   * sockets here whose token is gone end now, as the event would have ended them (one query per
   * thousand sockets).
   */
  private revalidateSessions(): void {
    if (this.closing || this.revalidating) return
    const open = [...this.local.all].filter(
      (connection) => connection.state === 'open' && connection.tokenHash,
    )
    if (open.length === 0) return
    this.revalidating = true
    liveTokenHashes(
      this.db,
      open.map((connection) => connection.tokenHash!),
      this.now(),
    )
      .then(
        (live) => {
          for (const connection of open) {
            if (live.has(Buffer.from(connection.tokenHash!).toString('hex'))) continue
            connection.refuse(
              ServerErrorCode.Unauthenticated,
              'expected a live session, got one that was logged out, replaced or deleted',
            )
          }
        },
        (error: unknown) => this.log.error({ err: error }, 'relay recheck of sessions failed'),
      )
      .finally(() => {
        this.revalidating = false
      })
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

  /** Resolves once every presence update sent to Redis so far is answered and acted on (tests, shutdown). */
  async presenceSettled(): Promise<void> {
    while (this.presenceUpdates.size > 0) await Promise.allSettled([...this.presenceUpdates])
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
    clearInterval(this.rechecks)
    clearInterval(this.sessionRechecks)
    clearInterval(this.presenceTimer)
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
    if (this.presence) {
      // A terminated socket's 'close' comes in a later turn: its removal from Redis starts then.
      await Promise.race([
        Promise.all(closed),
        new Promise((resolve) => setTimeout(resolve, WS_CLOSE_GRACE_MS)),
      ])
    }
    // Their removal from the cluster's record, and the "offline" it may bring, before the bus closes.
    await this.presenceSettled()
  }
}

/**
 * How users' send allowances are made: alone, a token bucket per user in memory; in a cluster,
 * leases from one bucket per user in Redis, shared by every node.
 */
function sendAllowances(options: RelayHubOptions): (userId: number, now: number) => SendAllowance {
  const rate = options.limits.sendRatePerUser
  if (!options.limitsRedis) return (_userId, now) => new TokenBucket(rate, now)
  const cluster = new ClusterSendRate({
    leases: new RedisSendLeases(options.limitsRedis.redis, options.limitsRedis.prefix, rate),
    rate,
    leaseSize: sendRateLeaseSize(rate),
    log: options.log,
  })
  return (userId, now) => cluster.allowanceFor(userId, now)
}
