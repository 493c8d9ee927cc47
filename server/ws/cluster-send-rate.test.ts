/**
 * The send allowance of a cluster member (cluster-send-rate.ts) against the real Redis: leases
 * taken from the user's bucket there and spent locally, refill by the caller's clock, concurrent
 * sends sharing one request, and a node that decides alone while Redis does not answer. Each test
 * has a prefix of its own; the clock is a number the test moves.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SEND_RATE_PER_USER } from '../limits.js'
import { freePort } from '../test/processes.js'
import { REDIS_TEST_URL, redisUnavailable, testChannelPrefix } from '../test/redis.js'
import {
  ClusterSendRate,
  RedisSendLeases,
  SEND_RATE_ALONE_MS,
  type SendLease,
  type SendLeases,
  sendRateLeaseSize,
} from './cluster-send-rate.js'
import type { Rate } from './token-bucket.js'

const skip = await redisUnavailable()

const USER = 42
const START = 1_000_000

/** Counts the lease requests that reach the source. */
function counting(source: SendLeases): SendLeases & { readonly requests: number } {
  let requests = 0
  return {
    get requests() {
      return requests
    },
    lease(userId, count, now) {
      requests += 1
      return source.lease(userId, count, now)
    },
  }
}

function recordingLog() {
  const warnings: string[] = []
  const infos: string[] = []
  return {
    warnings,
    infos,
    warn: (_: unknown, message: string) => void warnings.push(message),
    info: (_: unknown, message: string) => void infos.push(message),
  }
}

describe('the lease size', () => {
  it('is a twentieth of the burst, at least one send', () => {
    expect(sendRateLeaseSize(SEND_RATE_PER_USER)).toBe(50)
    expect(sendRateLeaseSize({ perSecond: 1, burst: 20 })).toBe(1)
    expect(sendRateLeaseSize({ perSecond: 1, burst: 3 })).toBe(1)
  })
})

describe.skipIf(skip !== undefined)('leases from the bucket in Redis', () => {
  let redis: Redis

  beforeAll(async () => {
    redis = new Redis(REDIS_TEST_URL, { lazyConnect: true, maxRetriesPerRequest: 0 })
    await redis.connect()
  })

  afterAll(() => redis?.disconnect())

  const node = (rate: Rate, leaseSize: number, prefix: string) => {
    const leases = counting(new RedisSendLeases(redis, prefix, rate))
    return { leases, rate: new ClusterSendRate({ leases, rate, leaseSize, log: recordingLog() }) }
  }

  it('asks once per lease and spends it without Redis; refuses without asking once the bucket is empty', async () => {
    const { leases, rate } = node({ perSecond: 0.001, burst: 10 }, 4, testChannelPrefix())
    const allowance = rate.allowanceFor(USER, START)
    const answers: (boolean | 'asked')[] = []
    for (let i = 0; i < 12; i++) {
      const answer = allowance.take(START)
      answers.push(typeof answer === 'boolean' ? answer : (await answer) ? 'asked' : false)
    }
    // Leases of 4, 4 and the 2 left; then Redis says none are left, for 1,000 s.
    expect(answers).toEqual([
      'asked',
      true,
      true,
      true,
      'asked',
      true,
      true,
      true,
      'asked',
      true,
      false,
      false,
    ])
    expect(leases.requests).toBe(4)
  })

  it('is one bucket for every node: two nodes together get the burst once', async () => {
    const prefix = testChannelPrefix()
    const rate = { perSecond: 0.001, burst: 10 }
    const allowances = [node(rate, 4, prefix), node(rate, 4, prefix)].map((each) =>
      each.rate.allowanceFor(USER, START),
    )
    let allowed = 0
    for (let i = 0; i < 20; i++) if (await allowances[i % 2]!.take(START)) allowed += 1
    expect(allowed).toBe(10)
  })

  it('refills by the elapsed time of the caller’s clock, and a clock behind adds nothing', async () => {
    const prefix = testChannelPrefix()
    const rate = { perSecond: 2, burst: 4 }
    const allowances = [node(rate, 2, prefix), node(rate, 2, prefix)].map((each) =>
      each.rate.allowanceFor(USER, START),
    )
    const allowedOf = async (index: number, count: number, now: number) => {
      let allowed = 0
      for (let i = 0; i < count; i++) if (await allowances[index]!.take(now)) allowed += 1
      return allowed
    }
    expect(await allowedOf(0, 6, START)).toBe(4)
    // One second later: two more, the first asked for after the refusal's wait has passed.
    expect(await allowedOf(0, 3, START + 1_000)).toBe(2)
    // Another node whose clock is behind: nothing is refilled for the time it has not yet seen.
    expect(await allowedOf(1, 3, START + 500)).toBe(0)
    expect(await allowedOf(1, 3, START + 1_500)).toBe(1)
  })

  it('makes sends that come while a lease is asked for wait for that request, and answers them in order', async () => {
    const { leases, rate } = node({ perSecond: 0.001, burst: 10 }, 4, testChannelPrefix())
    const allowance = rate.allowanceFor(USER, START)
    const order: number[] = []
    const answers = Array.from({ length: 12 }, (_, index) =>
      Promise.resolve(allowance.take(START)).then((allowed) => {
        order.push(index)
        return allowed
      }),
    )
    expect(await Promise.all(answers)).toEqual([...Array(10).fill(true), false, false])
    expect(order).toEqual([...Array(12).keys()])
    // 4, 4, 2, then none left: one request per lease, not one per send.
    expect(leases.requests).toBe(4)
  })

  it('keeps the bucket under the prefix, in the user’s hash tag, only until it would be full again', async () => {
    const prefix = testChannelPrefix()
    const { rate } = node({ perSecond: 10, burst: 20 }, 5, prefix)
    await rate.allowanceFor(USER, START).take(START)
    const key = `${prefix}send-rate:{${USER}}`
    expect(await redis.hget(key, 'tokens')).toBe('15')
    // Five tokens at ten a second: full again after 500 ms.
    const ttl = await redis.pttl(key)
    expect(ttl).toBeGreaterThan(0)
    expect(ttl).toBeLessThanOrEqual(500)
  })
})

describe('a node whose Redis does not answer', () => {
  it('decides alone with a bucket of its own, without waiting, and says so once', async () => {
    // Nothing listens on a port just freed: every command fails at once.
    const redis = new Redis(`redis://127.0.0.1:${await freePort()}`, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    redis.on('error', () => {})
    const log = recordingLog()
    const sendRate = { perSecond: 0.001, burst: 3 }
    const rate = new ClusterSendRate({
      leases: new RedisSendLeases(redis, 'nowhere:', sendRate),
      rate: sendRate,
      leaseSize: 1,
      log,
    })
    const allowance = rate.allowanceFor(USER, START)
    // The first asks Redis and hears nothing; from then on the node does not wait for it.
    expect(await allowance.take(START)).toBe(true)
    const alone = [allowance.take(START), allowance.take(START), allowance.take(START)]
    expect(alone).toEqual([true, true, false])
    expect(rate.allowanceFor(USER + 1, START).take(START)).toBe(true)
    expect(log.warnings).toHaveLength(1)
    redis.disconnect()
  })

  it('gives up on a request after a short timeout, and asks again once the time alone is over', async () => {
    let answering = false
    const granted: SendLease = { granted: 5, retryAfterMs: 0 }
    const leases = counting({
      lease: () => (answering ? Promise.resolve(granted) : new Promise<SendLease>(() => {})),
    })
    const log = recordingLog()
    const rate = new ClusterSendRate({ leases, rate: { perSecond: 1, burst: 100 }, leaseSize: 5, log })
    const allowance = rate.allowanceFor(USER, START)
    const waiting = [allowance.take(START), allowance.take(START)]
    expect(await Promise.all(waiting)).toEqual([true, true])
    // The second send waited for the first's request rather than making one of its own.
    expect(leases.requests).toBe(1)
    expect(log.warnings).toHaveLength(1)
    answering = true
    expect(allowance.take(START + SEND_RATE_ALONE_MS - 1)).toBe(true)
    expect(leases.requests).toBe(1)
    expect(await allowance.take(START + SEND_RATE_ALONE_MS)).toBe(true)
    expect(leases.requests).toBe(2)
    expect(log.infos).toHaveLength(1)
  })
})
