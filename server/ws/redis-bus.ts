/**
 * The relay bus over Redis 7 sharded pub/sub (or Valkey), for several server processes sharing one
 * PostgreSQL database. It keeps the contract in relay-bus.ts.
 *
 * What travels: every event is published with SPUBLISH on its address's channel,
 * `<prefix>relay:{<userId>.<deviceId>}` (addressKey() gives the braces, a hash tag, so a channel
 * maps to one cluster slot), as the JSON text of bus-codec.ts, which names the publishing process.
 * A process subscribes (SSUBSCRIBE) to the address of every user it holds (connected or watched
 * here) and unsubscribes when it holds them no more; two ioredis connections, since one in
 * subscriber mode cannot publish. The bus stores nothing in Redis: no key, no stream, no retained
 * event (who is connected where is kept beside it by cluster-presence.ts, under the same prefix).
 *
 * This process's own listeners hear its events straight away, before `publish` returns, as on the
 * in-process bus: deliveries between two sockets of one process never depend on Redis. The copy
 * that comes back through Redis is recognised by its origin and ignored.
 *
 * Pub/sub is best effort, and the durable queue is the truth (relay-bus.ts): while Redis is lost
 * this process keeps serving its own sockets, `status` says `down`, publishes for other processes
 * fail (the hub logs), and ioredis reconnects. Once it is back and every subscription is renewed,
 * `onResumed` callbacks run, and the hub re-reads the queue of every caught-up connection; the hub
 * also does so periodically (`lossy`), so a publish lost without anyone noticing only delays.
 *
 * What it does not do: Redis Cluster (one URL, one server or a proxy), or keep presence or the
 * connection limit (cluster-presence.ts does, beside it; the login and rate limiters stay per node).
 */
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import { decodeBusMessage, encodeBusMessage } from './bus-codec.js'
import { InProcessRelayBus } from './in-process-bus.js'
import {
  type Address,
  addressKey,
  type RelayBus,
  type RelayBusCounters,
  type RelayBusStatus,
  type RelayEvent,
  type RelayListener,
} from './relay-bus.js'
import { NO_BUS_METRICS, type RelayBusMetrics } from './relay-metrics.js'

/** Channels of one deployment start with it; several deployments (or test runs) may share a Redis. */
export const DEFAULT_REDIS_CHANNEL_PREFIX = 'secure-chat:'

/**
 * How long a node waits at start for Redis to answer, per attempt: a host that drops packets would
 * otherwise keep it silent. Beyond it the node says which service it cannot reach and exits.
 */
export const REDIS_CONNECT_TIMEOUT_MS = 5_000

/** Reconnection backs off by this much per attempt, up to REDIS_RETRY_MAX_DELAY_MS (ioredis's default shape). */
export const REDIS_RETRY_STEP_MS = 50
export const REDIS_RETRY_MAX_DELAY_MS = 2_000

/**
 * How long any command may wait for Redis's answer. A subscription that hangs would otherwise hold
 * a connecting client's first read of its queue (it waits for the subscription) for good; past it
 * the read goes ahead, the command still takes effect if Redis answers late (or is renewed on the
 * next reconnect), and the recheck covers the gap.
 */
export const REDIS_COMMAND_TIMEOUT_MS = 5_000

/** How long `ready()` waits for a PING: a health check must answer even when Redis hangs. */
export const REDIS_READY_TIMEOUT_MS = 1_000

/**
 * The Redis URL for messages: scheme, user, host, port and database, the password as `***` (as
 * config.ts `maskUrl` shows it) and no query.
 */
export function redisAddressForLog(url: string): string {
  try {
    const parsed = new URL(url)
    const user = parsed.username
    const credentials = parsed.password ? `${user}:***@` : user ? `${user}@` : ''
    return `${parsed.protocol}//${credentials}${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`
  } catch {
    return '(an unparsable Redis URL)'
  }
}

/** Redis did not answer at start; the message names the address without credentials. */
/**
 * How every Redis connection of a node is made (the bus's two, presence's, the limits'): connected
 * by the caller, retried with a growing delay, and never holding a command for a lost connection.
 * Nothing waits in ioredis for a connection to come back: an event held there would arrive late
 * and out of order with the queue, and while Redis is lost the queue covers for it; presence and
 * limits are put right by their next refresh, or decided by the node alone meanwhile.
 */
export function nodeRedisOptions(connectTimeoutMs: number = REDIS_CONNECT_TIMEOUT_MS): RedisOptions {
  return {
    lazyConnect: true,
    connectTimeout: connectTimeoutMs,
    retryStrategy: (attempt) => Math.min(attempt * REDIS_RETRY_STEP_MS, REDIS_RETRY_MAX_DELAY_MS),
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
  }
}

export class RedisUnreachableError extends Error {
  override readonly name = 'RedisUnreachableError'
}

/** Redis answered, but it is one this server cannot work with (too old, or Redis Cluster). */
export class RedisUnsupportedError extends Error {
  override readonly name = 'RedisUnsupportedError'
}

/**
 * What in a Redis server's INFO text makes it unusable here, or undefined when nothing does: a
 * version before 7 (no sharded pub/sub) or Redis Cluster (the presence scripts,
 * cluster-presence.ts, touch keys of several hash slots in one call, which a cluster refuses with
 * CROSSSLOT at the first connection, long after start). Valkey reports a compatible redis_version.
 */
export function redisServerProblem(info: string): string | undefined {
  const field = (name: string) => info.match(new RegExp(`^${name}:(.*)$`, 'm'))?.[1]?.trim()
  const version = field('redis_version')
  if (version !== undefined && Number(version.split('.')[0]) < 7) {
    return `expected Redis 7 or later (sharded pub/sub: SPUBLISH, SSUBSCRIBE), got ${version}`
  }
  if (field('cluster_enabled') === '1') {
    return 'expected a single Redis (replicas behind Sentinel or a proxy are fine), got Redis Cluster, which this version does not support'
  }
  return undefined
}

export interface RedisRelayBusOptions {
  /** redis://[user:password@]host:port[/db] or rediss:// for TLS. */
  readonly url: string
  /** Default DEFAULT_REDIS_CHANNEL_PREFIX. */
  readonly channelPrefix?: string
  readonly log: Pick<FastifyBaseLogger, 'error' | 'warn' | 'info'>
  /** Per connection attempt at start; default REDIS_CONNECT_TIMEOUT_MS. */
  readonly connectTimeoutMs?: number
  /** Counted besides `counters` (server/metrics.ts); default none. */
  readonly metrics?: RelayBusMetrics
}

type Log = RedisRelayBusOptions['log']

/** Rejects with "expected <what> within <ms> ms" if `promise` has not settled by then. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`expected ${what} within ${ms} ms, got no answer`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export class RedisRelayBus implements RelayBus {
  readonly lossy = true
  /** While a message from Redis is handed to local listeners: its lag in seconds, if it says when it was sent. */
  private handingOverLag: number | undefined
  readonly counters: RelayBusCounters = {
    published: 0,
    publishFailed: 0,
    received: 0,
    dropped: 0,
    resumed: 0,
  }
  /** Names this process in what it publishes, so that it ignores its own events coming back. */
  readonly nodeId = randomBytes(12).toString('base64url')
  /** This process's listeners, by address. */
  private readonly local: InProcessRelayBus
  /** Addresses with a listener here, by channel: what the subscriber connection should be subscribed to. */
  private readonly channels = new Map<string, Address>()
  private readonly publisher: Redis
  private readonly subscriber: Redis
  private readonly prefix: string
  private readonly address: string
  private readonly log: Log
  private readonly metrics: RelayBusMetrics
  private readonly resumedCallbacks: (() => void)[] = []
  /** `start` waiting for the first time both connections are up. */
  private readonly firstUp: (() => void)[] = []
  /** The subscriber connection is up and every channel in `channels` was subscribed on it. */
  private subscriberLive = false
  private current: RelayBusStatus = 'down'
  /** Set once the bus was up: from then on, coming back up means events may have been missed. */
  private started = false
  private closed = false

  /** Connects both connections, or throws RedisUnreachableError (nothing is left running then). */
  static async connect(options: RedisRelayBusOptions): Promise<RedisRelayBus> {
    const bus = new RedisRelayBus(options)
    try {
      await bus.start(options.connectTimeoutMs ?? REDIS_CONNECT_TIMEOUT_MS)
    } catch (error) {
      await bus.close()
      if (error instanceof RedisUnsupportedError) throw error
      // ioredis rejects with "Connection is closed."; the error it reported before says why.
      const reason = bus.lastError ?? (error as Error).message
      throw new RedisUnreachableError(`cannot reach Redis at ${bus.address}: ${reason}`, { cause: error })
    }
    return bus
  }

  private constructor(options: RedisRelayBusOptions) {
    this.log = options.log
    this.prefix = options.channelPrefix ?? DEFAULT_REDIS_CHANNEL_PREFIX
    this.address = redisAddressForLog(options.url)
    this.metrics = options.metrics ?? NO_BUS_METRICS
    // Hand-overs to listeners here are counted by it; publishes are counted here, once Redis took them.
    this.local = new InProcessRelayBus(options.log, {
      published: () => {},
      publishFailed: () => {},
      // The lag of the message being handed over (`received` below), from its publisher's clock.
      received: (kind, lagSeconds) => this.metrics.received(kind, lagSeconds ?? this.handingOverLag),
    })
    const common = nodeRedisOptions(options.connectTimeoutMs)
    this.publisher = new Redis(options.url, {
      ...common,
      connectionName: `secure-chat-relay-pub-${this.nodeId}`,
    })
    // Subscriptions are renewed here, not by ioredis, so that `onResumed` runs once they are live.
    this.subscriber = new Redis(options.url, {
      ...common,
      connectionName: `secure-chat-relay-sub-${this.nodeId}`,
      autoResubscribe: false,
    })
    for (const connection of [this.publisher, this.subscriber]) {
      // Without a listener ioredis prints every connection error itself.
      connection.on('error', (error: Error) => this.connectionError(error))
      connection.on('close', () => this.connectionLost(connection))
    }
    this.publisher.on('ready', () => this.updateStatus())
    this.subscriber.on('ready', () => this.resubscribe())
    this.subscriber.on('smessage', (channel: string, text: string) => this.received(channel, text))
  }

  get status(): RelayBusStatus {
    return this.current
  }

  private async start(timeoutMs: number): Promise<void> {
    // Both attempts run at once; the bound covers the ready check after the TCP connection too.
    await withTimeout(
      Promise.all([this.publisher.connect(), this.subscriber.connect()]),
      timeoutMs,
      'Redis to accept both connections',
    )
    await withTimeout(this.publisher.ping(), timeoutMs, 'an answer to PING')
    // A Redis whose ACL forbids INFO is taken as it is: the commands themselves will tell.
    const info = await withTimeout(this.publisher.info(), timeoutMs, 'an answer to INFO').catch(() => '')
    const problem = redisServerProblem(info)
    if (problem !== undefined) throw new RedisUnsupportedError(`Redis at ${this.address}: ${problem}`)
    // The subscriber's 'ready' handler sets the status; wait for it (at most the same bound).
    if (this.current !== 'up') {
      await withTimeout(
        new Promise<void>((resolve) => this.firstUp.push(resolve)),
        timeoutMs,
        'the subscriber connection to be ready',
      )
    }
  }

  async ready(): Promise<boolean> {
    if (this.current !== 'up') return false
    try {
      await withTimeout(this.publisher.ping(), REDIS_READY_TIMEOUT_MS, 'an answer to PING')
      return true
    } catch {
      return false
    }
  }

  onResumed(callback: () => void): void {
    this.resumedCallbacks.push(callback)
  }

  channelOf(address: Address): string {
    return `${this.prefix}relay:${addressKey(address)}`
  }

  publish(event: RelayEvent): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.counters.published += 1
    // Listeners here first, at once: a delivery within this process never waits for Redis.
    this.local.publish(event)
    return this.publisher.spublish(this.channelOf(event.address), encodeBusMessage(this.nodeId, event)).then(
      () => {
        this.metrics.published(event.kind)
      },
      (error: unknown) => {
        this.counters.publishFailed += 1
        this.metrics.publishFailed(event.kind)
        throw new Error(`relay bus: expected Redis to take the event, got: ${(error as Error).message}`, {
          cause: error,
        })
      },
    )
  }

  async subscribe(address: Address, listener: RelayListener): Promise<void> {
    if (this.closed) return
    // Synchronously, as every change to `channels` below: calls for one address keep their order.
    void this.local.subscribe(address, listener)
    const channel = this.channelOf(address)
    if (this.channels.has(channel)) return
    this.channels.set(channel, address)
    // While the connection is down, the subscription is made when it comes back (`resubscribe`),
    // and the hub re-reads the queue then: resolving now lets this process serve its own sockets.
    if (this.subscriber.status !== 'ready') return
    try {
      await this.subscriber.ssubscribe(channel)
    } catch (error) {
      // The connection dropped meanwhile: `resubscribe` renews it with the others.
      this.log.warn({ err: error }, 'relay bus: subscribing failed; renewed when Redis is back')
    }
  }

  async unsubscribe(address: Address, listener: RelayListener): Promise<void> {
    void this.local.unsubscribe(address, listener)
    if (this.local.listening(address)) return
    const channel = this.channelOf(address)
    if (!this.channels.delete(channel) || this.subscriber.status !== 'ready') return
    try {
      await this.subscriber.sunsubscribe(channel)
    } catch {
      // A new connection starts with no subscription: nothing to undo.
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.current = 'closed'
    this.channels.clear()
    await this.local.close()
    await Promise.all(
      [this.publisher, this.subscriber].map(async (connection) => {
        if (connection.status === 'ready') await connection.quit().catch(() => connection.disconnect())
        else connection.disconnect()
      }),
    )
  }

  // --- Connection state -----------------------------------------------------------------------

  private lastError: string | undefined

  private connectionError(error: Error): void {
    // Logged once per outage (ioredis reports each failed attempt while it reconnects).
    if (this.lastError === undefined && this.started && !this.closed) {
      this.log.warn({ err: error }, `relay bus: Redis at ${this.address} failed`)
    }
    this.lastError = error.message
  }

  private connectionLost(connection: Redis): void {
    if (connection === this.subscriber) this.subscriberLive = false
    if (this.closed || this.current !== 'up') return
    this.current = 'down'
    this.log.warn(
      `relay bus: lost Redis at ${this.address}; reconnecting (sockets on this process are still served)`,
    )
  }

  /** The subscriber connection is (re)connected: it subscribes to every address held here. */
  private async resubscribe(): Promise<void> {
    const channels = [...this.channels.keys()]
    try {
      // One channel per command: in a cluster, channels of several slots may not share one.
      await Promise.all(channels.map((channel) => this.subscriber.ssubscribe(channel)))
    } catch (error) {
      // The connection dropped again; its next 'ready' starts over.
      this.log.warn({ err: error }, 'relay bus: renewing subscriptions failed; retrying on reconnect')
      return
    }
    if (this.subscriber.status !== 'ready') return
    this.subscriberLive = true
    this.updateStatus()
  }

  private updateStatus(): void {
    if (this.closed || this.current === 'up') return
    if (!this.subscriberLive || this.publisher.status !== 'ready') return
    this.current = 'up'
    this.lastError = undefined
    const resumed = this.started
    this.started = true
    if (!resumed) {
      for (const resolve of this.firstUp.splice(0)) resolve()
      return
    }
    this.counters.resumed += 1
    this.log.info(`relay bus: Redis at ${this.address} is back; re-reading queues`)
    for (const callback of this.resumedCallbacks) {
      try {
        callback()
      } catch (error) {
        this.log.error({ err: error }, 'relay bus: a resumed callback failed')
      }
    }
  }

  // --- Incoming -------------------------------------------------------------------------------

  private received(channel: string, text: string): void {
    const address = this.channels.get(channel)
    // Unsubscribed meanwhile (SUNSUBSCRIBE in flight), or a channel that is not ours.
    if (!address) return
    let decoded: ReturnType<typeof decodeBusMessage>
    try {
      decoded = decodeBusMessage(text)
    } catch (error) {
      this.counters.dropped += 1
      // The reason only (it never echoes the value), not the channel: that names a user.
      this.log.warn({ err: error }, 'relay bus: dropped a malformed message from Redis')
      return
    }
    if (decoded.from === this.nodeId) return
    if (addressKey(decoded.event.address) !== addressKey(address)) {
      this.counters.dropped += 1
      this.log.warn('relay bus: dropped a message for another address than its channel')
      return
    }
    this.counters.received += 1
    // Clocks of two nodes differ a little: a negative lag counts as none.
    this.handingOverLag = decoded.at === undefined ? undefined : Math.max(0, Date.now() - decoded.at) / 1000
    this.local.publish(decoded.event)
    this.handingOverLag = undefined
  }
}
