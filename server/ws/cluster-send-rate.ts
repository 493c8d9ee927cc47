/**
 * The per-user send rate of a cluster: one token bucket per user in Redis, shared by every node,
 * so that a user with sockets on three nodes gets the rate once, not three times.
 *
 * A message's path stays synchronous: a node takes tokens from the bucket in Redis a lease at a
 * time (sendRateLeaseSize), spends them locally, and asks for the next lease only when it has run
 * out. Sends that come while a lease is being asked for wait for that one request and are answered
 * in the order they came; when Redis has none left, it says how long until the next token, and
 * the node refuses locally until then instead of asking on every refused send. Each node may hold
 * one lease unspent, so the cluster allows at most burst + rate·t + nodes × lease.
 *
 * When Redis does not answer (within REDIS_SEND_RATE_TIMEOUT_MS), the node decides alone for
 * SEND_RATE_ALONE_MS, each user with a TokenBucket of their own on this node (the allowance per
 * node, as before this existed), and says so once in its log: sends never stall or fail because
 * Redis is down.
 *
 * What Redis holds: per user who sent lately, `<prefix>send-rate:{<userId>}`, a hash of the tokens
 * left and when they were counted; it expires once it would be full again, as a missing bucket is.
 */
import type { Redis } from 'ioredis'
import { SEND_RATE_LEASE_FRACTION } from '../limits.js'
import { withTimeout } from './redis-bus.js'
import type { SendAllowance } from './send-allowance.js'
import { type Rate, TokenBucket } from './token-bucket.js'

/**
 * How long a lease request may wait for Redis before the node decides alone. The script is a few
 * field reads and writes; an answer slower than this means Redis is in trouble, and the sends
 * waiting behind the request should not wait longer than a person notices.
 */
export const REDIS_SEND_RATE_TIMEOUT_MS = 250

/**
 * After a lease request failed, how long the node decides alone before asking Redis again: while
 * Redis hangs, a send then waits for a timeout at most once in this long, not once per lease.
 */
export const SEND_RATE_ALONE_MS = 5_000

/** Sends a node takes from a user's bucket in Redis at a time (limits.ts SEND_RATE_LEASE_FRACTION). */
export function sendRateLeaseSize(rate: Rate): number {
  return Math.max(1, Math.floor(rate.burst * SEND_RATE_LEASE_FRACTION))
}

/** Tokens granted from the user's bucket; when none, how long until the next one refills. */
export interface SendLease {
  readonly granted: number
  readonly retryAfterMs: number
}

/** Where leases come from: the bucket in Redis (RedisSendLeases), or a stand-in in tests. */
export interface SendLeases {
  /** Up to `count` tokens of the user's bucket, refilled up to `now` first. */
  lease(userId: number, count: number, now: number): Promise<SendLease>
}

// KEYS: the user's bucket, a hash {tokens, at}. ARGV: perSecond, burst, count, now (ms).
//
// The clock is the caller's (`now`), not Redis's TIME: it is the one the node's own buckets and the
// login limiter count by, so a node deciding alone and one asking Redis agree, and tests move it
// by hand. Nodes' clocks differ by what NTP leaves; a clock behind the bucket's `at` refills
// nothing (`at` never goes back), so a skew lets a user at most rate × skew more, once.
const SCRIPT = `
local perSecond, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local count, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(bucket[1]), tonumber(bucket[2])
if not tokens then tokens, at = burst, now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * perSecond / 1000)
  at = now
end
local granted = math.min(count, math.floor(tokens))
tokens = tokens - granted
local retryAfter = 0
if granted == 0 then retryAfter = math.ceil((1 - tokens) * 1000 / perSecond) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', string.format('%d', at))
-- A missing bucket is a full one: keep it only until it would have refilled.
local untilFull = math.min(math.ceil((burst - tokens) * 1000 / perSecond), 2 ^ 53)
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, untilFull)))
return { granted, retryAfter }
`

const COMMAND = 'secureChatSendLease'

/** Leases from one token bucket per user in Redis, each taken by one atomic script. */
export class RedisSendLeases implements SendLeases {
  constructor(
    private readonly redis: Redis,
    /** Key prefix, shared by the cluster's nodes (the relay's channel prefix). */
    private readonly prefix: string,
    private readonly rate: Rate,
  ) {
    if (!(rate.perSecond > 0)) {
      throw new Error(`send rate: expected more than 0 sends a second, got ${rate.perSecond}`)
    }
    redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: SCRIPT })
  }

  async lease(userId: number, count: number, now: number): Promise<SendLease> {
    const command = (this.redis as unknown as Record<string, (...values: unknown[]) => Promise<unknown>>)[
      COMMAND
    ]!
    const [granted, retryAfterMs] = (await command.call(
      this.redis,
      `${this.prefix}send-rate:{${userId}}`,
      this.rate.perSecond,
      this.rate.burst,
      count,
      now,
    )) as [number, number]
    return { granted, retryAfterMs }
  }
}

export interface ClusterSendRateOptions {
  readonly leases: SendLeases
  readonly rate: Rate
  /** Tokens asked for at a time: sendRateLeaseSize(rate) in the server. */
  readonly leaseSize: number
  /** Told once when Redis stops answering, and once when it answers again (a FastifyBaseLogger). */
  readonly log: {
    warn(details: object, message: string): void
    info(details: object, message: string): void
  }
}

/** A node's side of the cluster's send rate: makes each user's allowance, knows whether Redis answers. */
export class ClusterSendRate {
  private readonly leases: SendLeases
  private readonly log: ClusterSendRateOptions['log']
  private readonly rate: Rate
  private readonly leaseSize: number
  /** Until then (the callers' clock) every allowance decides alone, without asking Redis. */
  private aloneUntil = Number.NEGATIVE_INFINITY
  private warned = false

  constructor(options: ClusterSendRateOptions) {
    if (!Number.isInteger(options.leaseSize) || options.leaseSize < 1) {
      throw new Error(`send rate: expected a lease of at least 1 send, got ${options.leaseSize}`)
    }
    this.leases = options.leases
    this.log = options.log
    this.rate = options.rate
    this.leaseSize = options.leaseSize
  }

  /** The allowance of a user whose first connection on this node just authenticated. */
  allowanceFor(userId: number, now: number): SendAllowance {
    return new LeasedSendAllowance(this, userId, new TokenBucket(this.rate, now))
  }

  alone(now: number): boolean {
    return now < this.aloneUntil
  }

  /** The next lease for this user, or undefined when Redis did not answer (decide alone, then). */
  async lease(userId: number, now: number): Promise<SendLease | undefined> {
    try {
      const lease = await withTimeout(
        this.leases.lease(userId, this.leaseSize, now),
        REDIS_SEND_RATE_TIMEOUT_MS,
        'a send-rate lease from Redis',
      )
      if (this.warned) {
        this.warned = false
        this.log.info({ event: 'send-rate-shared' }, 'Redis answers again: sends are counted for the cluster')
      }
      return lease
    } catch (error) {
      this.aloneUntil = now + SEND_RATE_ALONE_MS
      if (!this.warned) {
        this.warned = true
        this.log.warn(
          { event: 'send-rate-alone', err: error },
          'Redis did not answer: this node limits each user’s sends on its own until it does',
        )
      }
      return undefined
    }
  }
}

/** One user's allowance on this node: tokens leased from Redis, spent here. */
class LeasedSendAllowance implements SendAllowance {
  /** Granted by Redis and not spent yet. */
  private leased = 0
  /** Redis had no token left for this user: none before this time, and no need to ask. */
  private refusedUntil = Number.NEGATIVE_INFINITY
  /** The last take still waiting for a lease; every later one waits behind it, to keep the order. */
  private waiting: Promise<boolean> | undefined

  constructor(
    private readonly cluster: ClusterSendRate,
    private readonly userId: number,
    /** Decides while the node is alone; untouched while Redis answers. */
    private readonly local: TokenBucket,
  ) {}

  take(now: number): boolean | Promise<boolean> {
    if (this.waiting === undefined) {
      const decided = this.decide(now)
      if (decided !== undefined) return decided
    }
    const previous = this.waiting ?? Promise.resolve(true)
    const decideInTurn = async () => {
      const allowed = this.decide(now) ?? (await this.renew(now))
      if (this.waiting === answer) this.waiting = undefined
      return allowed
    }
    // Neither step rejects (a failed lease is `undefined`); if one ever did, the next still runs.
    const answer: Promise<boolean> = previous.then(decideInTurn, decideInTurn)
    this.waiting = answer
    return answer
  }

  /** The answer from what this node already knows, or undefined when only a new lease can tell. */
  private decide(now: number): boolean | undefined {
    if (this.leased > 0) {
      this.leased -= 1
      return true
    }
    if (this.cluster.alone(now)) return this.local.take(now)
    if (now < this.refusedUntil) return false
    return undefined
  }

  private async renew(now: number): Promise<boolean> {
    const lease = await this.cluster.lease(this.userId, now)
    if (lease === undefined) return this.local.take(now)
    this.leased = lease.granted
    this.refusedUntil = lease.granted === 0 ? now + lease.retryAfterMs : Number.NEGATIVE_INFINITY
    return this.decide(now) ?? false
  }
}
