/**
 * Failed log-ins counted for the whole cluster (redis-login-limiter.ts): two nodes on one
 * PostgreSQL database and one Redis; guesses spread over both count together, as one node's
 * would, and a node whose Redis does not answer decides alone rather than refusing everyone.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RelationsKey } from '../db/relations.js'
import { LOGIN_FAILURES_PER_ACCOUNT_ADDRESS } from '../limits.js'
import { createTestDatabase, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { loginSecretFor, makeClient, register, startServer, type TestServer } from '../test/harness.js'
import { REDIS_TEST_URL, redisUnavailable, testChannelPrefix } from '../test/redis.js'
import { LoginLimiter, type LoginLimits } from './login-limiter.js'
import { RedisLoginLimiter } from './redis-login-limiter.js'

const skip = (await postgresUnavailable()) ?? (await redisUnavailable())

const LIMITS: LoginLimits = {
  failuresPerAddress: 100,
  failuresPerAccountAddress: 3,
  failuresPerAccount: 5,
  accountDelayAfter: 20,
  accountDelayBaseMs: 1_000,
  accountDelayMaxMs: 120_000,
  failuresPerDevice: 10,
  windowMs: 15 * 60_000,
  maxEntries: 1_000,
}

const attempt = (address: string) =>
  ({ account: 'alice', address, kind: 'login', knownDevice: false }) as const

describe.skipIf(skip !== undefined)('failed log-ins across nodes', () => {
  let database: TestDatabase
  let nodes: TestServer[] = []

  beforeAll(async () => {
    database = await createTestDatabase('postgres')
    const redis = { url: REDIS_TEST_URL, channelPrefix: testChannelPrefix() }
    const relationsKey = RelationsKey.random()
    nodes = [
      await startServer({ database, redis, relationsKey }),
      await startServer({ database, redis, relationsKey }),
    ]
  })

  afterAll(async () => {
    for (const node of nodes) await node.close()
    await database?.dispose()
  })

  it('guesses spread over two nodes count together: the allowance is the cluster’s, not each node’s', async () => {
    const client = await makeClient()
    await register(nodes[0]!, client)
    const guess = (node: TestServer, password: string) =>
      node.request('/api/v1/login', {
        localAddress: '127.0.8.1',
        body: { username: client.username, loginSecret: loginSecretFor(password) },
      })
    for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT_ADDRESS; i++) {
      expect((await guess(nodes[i % 2]!, `wrong-${i}`)).status).toBe(401)
    }
    // Each node saw about half of them; together they are the limit.
    for (const node of nodes) {
      const refused = await guess(node, client.password)
      expect(refused.status).toBe(429)
      expect(refused.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
    }
    // Another address is not held back.
    const elsewhere = await nodes[1]!.request('/api/v1/login', {
      localAddress: '127.0.8.2',
      body: { username: client.username, loginSecret: client.loginSecret },
    })
    expect(elsewhere.status).toBe(200)
  })

  it('follows the rules of the limiter in memory, step by step', async () => {
    const redis = new Redis(REDIS_TEST_URL, { lazyConnect: true, maxRetriesPerRequest: 0 })
    await redis.connect()
    try {
      let clock = 1_000_000
      const now = () => clock
      const shared = new RedisLoginLimiter(redis, LIMITS, now, silentLog(), testChannelPrefix())
      const memory = new LoginLimiter(LIMITS, now)
      const decisions: unknown[][] = [[], []]
      for (const [index, limiter] of [shared, memory].entries()) {
        clock = 1_000_000
        for (let i = 0; i < 4; i++) decisions[index]!.push(await limiter.attempt(attempt('10.0.0.1')))
        await limiter.succeeded(attempt('10.0.0.2'))
        decisions[index]!.push(await limiter.attempt(attempt('10.0.0.2')))
        await limiter.released(attempt('10.0.0.1'))
        decisions[index]!.push(await limiter.attempt(attempt('10.0.0.1')))
        clock += LIMITS.windowMs
        decisions[index]!.push(await limiter.attempt(attempt('10.0.0.1')))
        decisions[index]!.push(await limiter.attempt({ ...attempt('10.0.0.3'), knownDevice: true }))
      }
      expect(decisions[0]).toEqual(decisions[1])
      expect(
        decisions[0]!.filter((decision) => (decision as { allowed: boolean }).allowed === false),
      ).toHaveLength(1)
    } finally {
      redis.disconnect()
    }
  })
})

describe.skipIf(skip !== undefined)('requests per route across nodes', () => {
  it('are limited for the cluster: requests spread over two nodes count together', async () => {
    const database = await createTestDatabase('postgres')
    const cluster = {
      database,
      redis: { url: REDIS_TEST_URL, channelPrefix: testChannelPrefix() },
      limits: { registerRateLimit: { max: 4, timeWindowMs: 60_000 } },
    }
    const nodes = [await startServer(cluster), await startServer(cluster)]
    try {
      const statuses: number[] = []
      // Malformed registrations: each is counted before its body is even read.
      for (let i = 0; i < 6; i++) {
        const response = await nodes[i % 2]!.request('/api/v1/register', {
          localAddress: '127.0.8.3',
          body: {},
        })
        statuses.push(response.status)
      }
      expect(statuses).toEqual([400, 400, 400, 400, 429, 429])
    } finally {
      for (const node of nodes) await node.close()
      await database.dispose()
    }
  })
})

describe('a node whose Redis does not answer', () => {
  it('decides alone, from its own counters, and says so once', async () => {
    // Nothing listens on port 1: every command fails at once.
    const redis = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    redis.on('error', () => {})
    const warnings: string[] = []
    const log = { ...silentLog(), warn: (_: unknown, message: string) => void warnings.push(message) }
    const limiter = new RedisLoginLimiter(redis, LIMITS, () => 5_000, log, 'nowhere:')
    const decisions = []
    for (let i = 0; i < LIMITS.failuresPerAccountAddress + 1; i++)
      decisions.push(await limiter.attempt(attempt('10.0.0.9')))
    expect(decisions.map((decision) => decision.allowed)).toEqual([true, true, true, false])
    expect(warnings).toHaveLength(1)
    redis.disconnect()
  })
})

function silentLog() {
  const log = {
    level: 'silent',
    fatal: () => {},
    error: () => {},
    warn: (_object: unknown, _message: string) => {},
    info: () => {},
    debug: () => {},
    trace: () => {},
    silent: () => {},
    child: () => log,
  }
  // biome-ignore lint/suspicious/noExplicitAny: a logger that drops everything stands in for pino
  return log as any
}
