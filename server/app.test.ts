import type { FastifyInstance, InjectOptions } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../shared/bytes.js'
import { ErrorResponse } from '../shared/codec/api.js'
import { matches } from '../shared/codec/schema.js'
import { randomBytes } from '../shared/crypto/primitives.js'
import { build } from './app.js'
import { ServerErrorCode } from './errors.js'
import { createTestDatabase, type TestDatabase } from './test/databases.js'
import { decryptToken, makeClient, signUp, startServer, TEST_BCRYPT_COST } from './test/harness.js'

describe('HTTP plumbing (inject)', () => {
  let database: TestDatabase
  let app: FastifyInstance
  beforeAll(async () => {
    database = await createTestDatabase('sqlite')
    app = await build({
      db: database.db,
      log: false,
      bcryptCost: TEST_BCRYPT_COST,
      limits: { registerRateLimit: { max: 3, timeWindowMs: 60_000 } },
    })
  })
  afterAll(async () => {
    await app?.close()
    await database?.dispose()
  })

  it('sends strict security headers and no-store on API answers', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/health' })
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ status: 'ok' })
    const csp = String(response.headers['content-security-policy'])
    for (const directive of [
      "default-src 'self'",
      "script-src 'self'",
      "connect-src 'self'",
      "worker-src 'self'",
      "manifest-src 'self'",
      "object-src 'none'",
      "frame-ancestors 'none'",
      "base-uri 'none'",
    ]) {
      expect(csp).toContain(directive)
    }
    expect(csp).not.toContain('unsafe')
    expect(response.headers['strict-transport-security']).toBe('max-age=63072000')
    expect(response.headers['x-content-type-options']).toBe('nosniff')
    expect(response.headers['referrer-policy']).toBe('no-referrer')
    expect(response.headers['cross-origin-opener-policy']).toBe('same-origin')
    expect(response.headers['cache-control']).toBe('no-store')
    expect(response.headers['x-powered-by']).toBeUndefined()
  })

  type InjectCase = [string, InjectOptions, number, string]
  it.each<InjectCase>([
    ['an unknown route', { method: 'GET', url: '/api/v1/nothing' }, 404, ServerErrorCode.NotFound],
    [
      'malformed JSON',
      {
        method: 'POST',
        url: '/api/v1/login',
        payload: '{"username":',
        headers: { 'content-type': 'application/json' },
      },
      400,
      ServerErrorCode.MalformedBody,
    ],
    [
      'another media type',
      {
        method: 'POST',
        url: '/api/v1/login',
        payload: 'username=a',
        headers: { 'content-type': 'text/plain' },
      },
      415,
      ServerErrorCode.MalformedBody,
    ],
    [
      'a body over the limit',
      {
        method: 'POST',
        url: '/api/v1/login',
        payload: JSON.stringify({ username: 'a', password: 'x'.repeat(70_000) }),
        headers: { 'content-type': 'application/json' },
      },
      413,
      ServerErrorCode.TooLarge,
    ],
    [
      'a wrongly typed field',
      { method: 'POST', url: '/api/v1/login', payload: { username: 5, password: 'x' } },
      400,
      ServerErrorCode.BadRequest,
    ],
    ['a missing body', { method: 'POST', url: '/api/v1/login' }, 400, ServerErrorCode.BadRequest],
  ])('answers %s with { error: { code, message } }', async (_, request, status, code) => {
    const response = await app.inject(request)
    expect(response.statusCode).toBe(status)
    const body = response.json()
    expect(matches(ErrorResponse, body)).toBe(true)
    expect(body.error.code).toBe(code)
    expect(body.error.message).toMatch(/^expected /)
    expect(response.body).not.toMatch(/at .*\.(ts|js):\d+/)
  })

  it('rate-limits registration per address: 429 E2E_ERR_RATE_LIMITED', async () => {
    const statuses: number[] = []
    let last: { error: { code: string } } | undefined
    for (let i = 0; i < 4; i++) {
      const response = await app.inject({ method: 'POST', url: '/api/v1/register', payload: {} })
      statuses.push(response.statusCode)
      last = response.json()
    }
    expect(statuses).toEqual([400, 400, 400, 429])
    expect(last?.error.code).toBe(ServerErrorCode.RateLimited)
  })

  it('hides internal failures behind E2E_ERR_INTERNAL with a generic message', async () => {
    const broken = await createTestDatabase('sqlite')
    const brokenApp = await build({ db: broken.db, log: false })
    await broken.close()
    try {
      const response = await brokenApp.inject({
        method: 'GET',
        url: '/api/v1/keys/status',
        headers: { authorization: `Bearer ${toBase64Url(randomBytes(32))}` },
      })
      expect(response.statusCode).toBe(500)
      expect(response.json()).toEqual({
        error: {
          code: ServerErrorCode.Internal,
          message: 'expected to handle the request, got an internal error',
        },
      })
    } finally {
      await brokenApp.close()
      await broken.dispose()
    }
  })

  it('refuses a bcrypt cost outside 4–31', async () => {
    await expect(build({ db: database.db, log: false, bcryptCost: 3 })).rejects.toThrow(/bcryptCost/)
  })
})

describe('bundle rate limit (per requesting account)', () => {
  it('refuses the caller beyond the limit with 429, while other callers continue', async () => {
    const server = await startServer({ limits: { bundleRateLimit: { max: 3, timeWindowMs: 60_000 } } })
    try {
      const bob = await signUp(server)
      const alice = await signUp(server)
      const carol = await signUp(server)
      const path = `/api/v1/users/${bob.client.username}/bundle`
      const statuses = []
      for (let i = 0; i < 4; i++) statuses.push((await server.request(path, { token: alice.token })).status)
      expect(statuses).toEqual([200, 200, 200, 429])
      expect((await server.request(path, { token: carol.token })).status).toBe(200)
    } finally {
      await server.close()
    }
  })
})

describe('maintenance', () => {
  it('deletes expired session tokens when the server starts', async () => {
    const database = await createTestDatabase('sqlite')
    try {
      const first = await build({ db: database.db, log: false, bcryptCost: TEST_BCRYPT_COST })
      const client = await makeClient()
      expect(
        (await first.inject({ method: 'POST', url: '/api/v1/register', payload: client.registerBody() }))
          .statusCode,
      ).toBe(201)
      const login = await first.inject({
        method: 'POST',
        url: '/api/v1/login',
        payload: { username: client.username, loginSecret: client.loginSecret },
      })
      expect(login.statusCode).toBe(200)
      await first.close()
      const count = () =>
        database.db
          .selectFrom('auth_tokens')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .executeTakeFirstOrThrow()
      expect(Number((await count()).n)).toBe(1)
      const later = await build({
        db: database.db,
        log: false,
        now: () => Date.now() + 31 * 24 * 60 * 60 * 1000,
      })
      await later.ready()
      expect(Number((await count()).n)).toBe(0)
      await later.close()
    } finally {
      await database.dispose()
    }
  })
})

describe('maintenance of link tokens', () => {
  it('deletes link tokens past their expiry when the server starts', async () => {
    const database = await createTestDatabase('sqlite')
    try {
      const first = await build({ db: database.db, log: false, bcryptCost: TEST_BCRYPT_COST })
      const client = await makeClient()
      await first.inject({ method: 'POST', url: '/api/v1/register', payload: client.registerBody() })
      const login = await first.inject({
        method: 'POST',
        url: '/api/v1/login',
        payload: { username: client.username, loginSecret: client.loginSecret },
      })
      const token = await decryptToken(client, login.json())
      const linked = await first.inject({
        method: 'POST',
        url: '/api/v1/devices/link-token',
        headers: { authorization: `Bearer ${toBase64Url(token)}` },
      })
      expect(linked.statusCode).toBe(201)
      await first.close()
      const count = async () =>
        Number(
          (
            await database.db
              .selectFrom('link_tokens')
              .select((eb) => eb.fn.countAll<number>().as('n'))
              .executeTakeFirstOrThrow()
          ).n,
        )
      expect(await count()).toBe(1)
      const later = await build({ db: database.db, log: false, now: () => Date.now() + 11 * 60 * 1000 })
      await later.ready()
      expect(await count()).toBe(0)
      await later.close()
    } finally {
      await database.dispose()
    }
  })
})

describe('a cluster member', () => {
  it('is refused on SQLite before any connection to Redis is made', async () => {
    const database = await createTestDatabase('sqlite')
    try {
      // Nothing listens on port 1: had build() tried Redis first, it would fail with that instead.
      await expect(
        build({ db: database.db, log: false, redis: { url: 'redis://127.0.0.1:1' } }),
      ).rejects.toThrow(/expected the database to be PostgreSQL, got SQLite/)
    } finally {
      await database.dispose()
    }
  })
})
