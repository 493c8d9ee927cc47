/**
 * /health and /ready (plugins/health.ts): alive whenever the process answers; ready only while the
 * database (SQLite and PostgreSQL) and the relay bus answer, and a 503 names what failed without
 * saying why. The existing GET /api/v1/health keeps answering.
 */
import type { FastifyInstance } from 'fastify'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { build } from './app.js'
import type { Database } from './db/schema.js'
import { Readiness, type ReadinessCheck } from './plugins/health.js'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from './test/databases.js'
import { startServer, TEST_BCRYPT_COST } from './test/harness.js'
import { InProcessRelayBus } from './ws/in-process-bus.js'

const pgSkip = await postgresUnavailable()

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`health and readiness (${dialect})`, () => {
    const cleanups: (() => Promise<void>)[] = []
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
    })

    it('answers /health, /api/v1/health and /ready over TLS while the database answers', async () => {
      const server = await startServer({ dialect })
      cleanups.push(() => server.close())
      const health = await server.request('/health')
      expect(health.status).toBe(200)
      expect(health.body).toEqual({ status: 'ok' })
      expect(health.headers['cache-control']).toBe('no-store')
      const legacy = await server.request('/api/v1/health')
      expect(legacy.status).toBe(200)
      expect(legacy.body).toEqual({ status: 'ok' })
      const ready = await server.request('/ready')
      expect(ready.status).toBe(200)
      expect(ready.body).toEqual({ status: 'ready', checks: { database: 'ok', bus: 'ok' } })
      expect(ready.headers['cache-control']).toBe('no-store')
    })

    it('answers /ready 503 naming the database once it is closed; /health stays 200', async () => {
      const database: TestDatabase = await createTestDatabase(dialect)
      const server = await startServer({ database })
      cleanups.push(async () => {
        await server.close()
        await database.dispose()
      })
      expect((await server.request('/ready')).status).toBe(200)
      await database.close()
      const ready = await server.request('/ready')
      expect(ready.status).toBe(503)
      expect(ready.body).toEqual({ status: 'unavailable', checks: { database: 'failed', bus: 'ok' } })
      expect((await server.request('/health')).status).toBe(200)
    })
  })
}

describe('readiness', () => {
  const apps: FastifyInstance[] = []
  afterAll(async () => {
    for (const app of apps) await app.close()
  })

  it('answers 503 when PostgreSQL is unreachable, without naming its address or the error', async () => {
    const db = new Kysely<Database>({
      dialect: new PostgresDialect({
        pool: new pg.Pool({ connectionString: 'postgres://chat:pw-secret-77@127.0.0.1:1/chat', max: 1 }),
      }),
    })
    const lines: string[] = []
    const app = await build({
      db,
      log: { level: 'info', stream: { write: (line: string) => lines.push(line) } },
      bcryptCost: TEST_BCRYPT_COST,
    })
    apps.push(app)
    app.addHook('onClose', async () => {
      await db.destroy()
    })
    const ready = await app.inject({ method: 'GET', url: '/ready' })
    expect(ready.statusCode).toBe(503)
    expect(ready.json()).toEqual({ status: 'unavailable', checks: { database: 'failed', bus: 'ok' } })
    expect(ready.body).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|pw-secret-77|chat/)
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200)
    // The reason is in the log, for the operator; the password is not.
    expect(
      lines.some((line) => line.includes('readiness check failed') && line.includes('ECONNREFUSED')),
    ).toBe(true)
    expect(lines.join('')).not.toContain('pw-secret-77')
  })

  it('asks the relay bus and any further check, and names the one that fails', async () => {
    const database = await createTestDatabase('sqlite')
    let busUp = true
    class FlakyBus extends InProcessRelayBus {
      override ready(): Promise<boolean> {
        return Promise.resolve(busUp)
      }
    }
    const bus = new FlakyBus({ error: () => {} })
    const cache: ReadinessCheck = { name: 'cache', check: () => Promise.reject(new Error('secret detail')) }
    const app = await build({
      db: database.db,
      log: false,
      bcryptCost: TEST_BCRYPT_COST,
      relayBus: bus,
      readinessChecks: [cache],
    })
    apps.push(app)
    try {
      const first = await app.inject({ method: 'GET', url: '/ready' })
      expect(first.statusCode).toBe(503)
      expect(first.json()).toEqual({
        status: 'unavailable',
        checks: { database: 'ok', bus: 'ok', cache: 'failed' },
      })
      expect(first.body).not.toContain('secret detail')
      busUp = false
      const second = await app.inject({ method: 'GET', url: '/ready' })
      expect(second.json().checks).toEqual({ database: 'ok', bus: 'failed', cache: 'failed' })
    } finally {
      await app.close()
      await bus.close()
      await database.dispose()
    }
  })

  it('gives up on a check that does not answer, and runs one check at a time for concurrent probes', async () => {
    let calls = 0
    let answer: ((ok: boolean) => void) | undefined
    const failures: string[] = []
    const readiness = new Readiness({
      checks: [
        {
          name: 'slow',
          check: () => {
            calls += 1
            return new Promise<boolean>((resolve) => {
              answer = resolve
            })
          },
        },
      ],
      timeoutMs: 1,
      failed: (name) => failures.push(name),
    })
    const [first, second] = await Promise.all([readiness.run(), readiness.run()])
    expect(first).toEqual({ ready: false, checks: { slow: 'failed' } })
    expect(second).toEqual(first)
    expect(calls).toBe(1)
    expect(failures).toContain('slow')
    answer!(true)
    await new Promise((resolve) => setImmediate(resolve))
    // Once the hanging call has answered, the next probe calls the check again.
    await readiness.run()
    expect(calls).toBe(2)
  })

  it('refuses checks with a bad or repeated name', () => {
    const check = async () => true
    expect(() => new Readiness({ checks: [{ name: 'Bad Name', check }] })).toThrow(RangeError)
    expect(
      () =>
        new Readiness({
          checks: [
            { name: 'db', check },
            { name: 'db', check },
          ],
        }),
    ).toThrow(/expected a new lowercase name, got "db"/)
  })
})
