/**
 * The login limiter of a cluster: the same rules as login-limiter.ts (read its comment), with the
 * counters in Redis, so that an attacker gets each allowance once for the whole cluster rather
 * than once per node. Each decision is one Lua script, atomic in Redis: reading the counters,
 * refusing or counting the attempt in advance happen together, as they do in one process.
 *
 * The clock is the caller's (`now`, passed to the script), as in memory: every node's clock counts
 * windows, and Redis only expires a counter (PEXPIRE) a window after its last change, so that
 * nothing outlives its use. Keys share one hash tag (`{login}`), which a Redis Cluster keeps on one
 * node, as a script touching several keys needs; log-ins are few next to messages.
 *
 * When Redis cannot answer, the node decides alone with its own counters (a LoginLimiter in
 * memory) and says so once in its log: log-ins go on, with the allowance per node as before.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import { withTimeout } from '../ws/redis-bus.js'
import {
  type LimitDecision,
  type LimitScope,
  type LoginAttempt,
  LoginLimiter,
  type LoginLimiting,
  type LoginLimits,
} from './login-limiter.js'

/** How long a decision may wait for Redis before the node decides alone. */
export const REDIS_LOGIN_LIMITER_TIMEOUT_MS = 500

const SCOPES: readonly LimitScope[] = ['address', 'account-address', 'account', 'device']

// KEYS: address, pair, account, device. ARGV: operation, now, window, then the limits.
// Counters are hashes {count, ends, next}; `live` forgets one whose window has ended.
const SCRIPT = `
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local perAddress, perPair, perAccount = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local delayAfter, delayBase, delayMax = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local perDevice = tonumber(ARGV[10])
local kind, knownDevice = ARGV[11], ARGV[12] == '1'

local function live(key)
  local values = redis.call('HMGET', key, 'count', 'ends', 'next')
  if not values[1] then return nil end
  local counter = { count = tonumber(values[1]), ends = tonumber(values[2]), next = tonumber(values[3] or '0') }
  if counter.ends <= now then
    redis.call('DEL', key)
    return nil
  end
  return counter
end
local function save(key, counter)
  redis.call('HSET', key, 'count', counter.count, 'ends', counter.ends, 'next', counter.next)
  redis.call('PEXPIRE', key, window)
end
local function bump(key, sliding)
  local counter = live(key)
  if counter then
    counter.count = counter.count + 1
    if sliding then counter.ends = now + window end
  else
    counter = { count = 1, ends = now + window, next = 0 }
  end
  save(key, counter)
  return counter
end
local function lower(key)
  local counter = live(key)
  if counter then
    counter.count = math.max(0, counter.count - 1)
    save(key, counter)
  end
  return counter
end

local operation = ARGV[1]
if operation == 'attempt' then
  if knownDevice then
    local device = live(KEYS[4])
    if device and device.count >= perDevice then return { 0, device.ends - now, 4 } end
    bump(KEYS[4], false)
    return { 1, 0, 0 }
  end
  local address = live(KEYS[1])
  if address and address.count >= perAddress then return { 0, address.ends - now, 1 } end
  local pair = live(KEYS[2])
  if pair and pair.count >= perPair then return { 0, pair.ends - now, 2 } end
  local account = live(KEYS[3])
  if account then
    if kind ~= 'login' and account.count >= perAccount then return { 0, account.ends - now, 3 } end
    if account.next > now then return { 0, account.next - now, 3 } end
  end
  bump(KEYS[1], false)
  bump(KEYS[2], false)
  account = bump(KEYS[3], true)
  local delay = 0
  if account.count >= delayAfter then
    delay = math.min(delayBase * 2 ^ math.min(account.count - delayAfter, 30), delayMax)
  end
  account.next = now + delay
  save(KEYS[3], account)
  return { 1, 0, 0 }
elseif operation == 'succeeded' then
  if knownDevice then
    redis.call('DEL', KEYS[4])
    return { 1, 0, 0 }
  end
  redis.call('DEL', KEYS[2])
  lower(KEYS[1])
  local account = lower(KEYS[3])
  if account and account.count < delayAfter then
    account.next = 0
    save(KEYS[3], account)
  end
  return { 1, 0, 0 }
else
  if knownDevice then
    lower(KEYS[4])
  else
    lower(KEYS[1])
    lower(KEYS[2])
    lower(KEYS[3])
  end
  return { 1, 0, 0 }
end
`

type Operation = 'attempt' | 'succeeded' | 'released'

export class RedisLoginLimiter implements LoginLimiting {
  private readonly local: LoginLimiter
  private warned = false

  constructor(
    private readonly redis: Redis,
    private readonly limits: LoginLimits,
    private readonly now: () => number,
    private readonly log: FastifyBaseLogger,
    /** Key prefix, shared by the cluster's nodes (the relay's channel prefix). */
    private readonly prefix: string,
  ) {
    this.local = new LoginLimiter(limits, now)
    redis.defineCommand('secureChatLoginLimit', { numberOfKeys: 4, lua: SCRIPT })
  }

  async attempt(attempt: LoginAttempt): Promise<LimitDecision> {
    const answer = await this.run('attempt', attempt)
    if (answer === undefined) return this.local.attempt(attempt)
    const [allowed, retryAfterMs, scope] = answer
    if (allowed === 1) return { allowed: true }
    return { allowed: false, retryAfterMs: Math.max(0, retryAfterMs), scope: SCOPES[scope - 1] ?? 'address' }
  }

  async succeeded(attempt: LoginAttempt): Promise<void> {
    if ((await this.run('succeeded', attempt)) === undefined) this.local.succeeded(attempt)
  }

  async released(attempt: LoginAttempt): Promise<void> {
    if ((await this.run('released', attempt)) === undefined) this.local.released(attempt)
  }

  private async run(
    operation: Operation,
    attempt: LoginAttempt,
  ): Promise<[number, number, number] | undefined> {
    const tag = `${this.prefix}{login}`
    // The same keys as in memory; a NUL never occurs in an address key.
    const keys = [
      `${tag}:ip:${attempt.address}`,
      `${tag}:pair:${attempt.address}\u0000${attempt.account}`,
      `${tag}:user:${attempt.account}`,
      `${tag}:device:${attempt.account}`,
    ]
    const { limits } = this
    const args = [
      operation,
      this.now(),
      limits.windowMs,
      limits.failuresPerAddress,
      limits.failuresPerAccountAddress,
      limits.failuresPerAccount,
      limits.accountDelayAfter,
      limits.accountDelayBaseMs,
      limits.accountDelayMaxMs,
      limits.failuresPerDevice,
      attempt.kind,
      attempt.knownDevice ? '1' : '0',
    ]
    try {
      const command = (this.redis as unknown as Record<string, (...values: unknown[]) => Promise<unknown>>)
        .secureChatLoginLimit!
      const answer = (await withTimeout(
        command.call(this.redis, ...keys, ...args),
        REDIS_LOGIN_LIMITER_TIMEOUT_MS,
        'an answer from the login limiter in Redis',
      )) as [number, number, number] | undefined
      this.warned = false
      return answer
    } catch (error) {
      if (!this.warned) {
        this.warned = true
        this.log.warn(
          { event: 'login-limiter-alone', err: error },
          'Redis did not answer: this node counts failed log-ins on its own until it does',
        )
      }
      return undefined
    }
  }
}
