import { generateKeyPairSync } from 'node:crypto'
import bcrypt from 'bcrypt'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../shared/address.js'
import { toBase64Url } from '../shared/bytes.js'
import type { LoginResponse } from '../shared/codec/api.js'
import { preKeyToJson } from '../shared/codec/keys.js'
import { randomBytes } from '../shared/crypto/primitives.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  publicPreKey,
} from '../shared/identity.js'
import { BCRYPT_COST } from './limits.js'
import {
  decryptToken,
  login,
  loginSecretFor,
  makeClient,
  register,
  signUp,
  startServer,
  TEST_BCRYPT_COST,
  type TestServer,
} from './test/harness.js'

const REGISTER = '/api/v1/register'
const LOGIN = '/api/v1/login'
const LOGOUT = '/api/v1/logout'
const STATUS = '/api/v1/keys/status'

describe('accounts over TLS (SQLite)', () => {
  let server: TestServer
  let clock = Date.now()
  beforeAll(async () => {
    server = await startServer({ now: () => clock, limits: { loginFailuresPerAccountAddress: 5 } })
  })
  afterAll(async () => {
    await server?.close()
  })

  describe('register', () => {
    it('creates an account (201) with the normalised username', async () => {
      const client = await makeClient({ username: `Ｍixed${Date.now() % 100_000}` })
      const response = await server.request(REGISTER, { body: client.registerBody() })
      expect(response.status).toBe(201)
      expect(response.body).toEqual({ username: client.username.normalize('NFKC').toLowerCase() })
      expect(response.headers['cache-control']).toBe('no-store')
    })

    it('refuses a duplicate username case-insensitively with 409 E2E_ERR_USERNAME_TAKEN', async () => {
      const first = await makeClient({ username: `dup${process.pid}` })
      await register(server, first)
      const second = await makeClient({ username: `DUP${process.pid}` })
      const response = await server.request(REGISTER, { body: second.registerBody() })
      expect(response.status).toBe(409)
      expect(response.body.error.code).toBe('E2E_ERR_USERNAME_TAKEN')
    })

    it.each([
      ['too short', 'ab'],
      ['a space', 'has space'],
      ['a look-alike letter', 'аlice'],
      ['a leading dot', '.alice'],
    ])('refuses a username with %s: 400 E2E_ERR_INVALID_USERNAME', async (_, username) => {
      const client = await makeClient({ username })
      const response = await server.request(REGISTER, { body: client.registerBody() })
      expect(response.status).toBe(400)
      expect(response.body.error.code).toBe('E2E_ERR_INVALID_USERNAME')
    })

    it('refuses a password where a login secret belongs (a client of the previous version): 400 E2E_ERR_CLIENT_OUTDATED', async () => {
      const client = await makeClient()
      const { loginSecret: _secret, ...body } = client.registerBody()
      const response = await server.request(REGISTER, { body: { ...body, password: client.password } })
      expect(response.status).toBe(400)
      expect(response.body.error.code).toBe('E2E_ERR_CLIENT_OUTDATED')
      expect(response.body.error.message).toMatch(/update secure-chat/)
      // Nothing was stored: the same name registers with a login secret.
      expect((await server.request(REGISTER, { body: client.registerBody() })).status).toBe(201)
    })

    it.each([
      ['too short', 'AAAA'],
      ['too long', 'A'.repeat(44)],
      ['not base64url', `${'A'.repeat(42)}+`],
      ['a password', 'correct horse battery staple, long enough'],
    ])('refuses a login secret that is %s: 400 E2E_ERR_BAD_REQUEST', async (_, loginSecret) => {
      const client = await makeClient()
      const response = await server.request(REGISTER, { body: { ...client.registerBody(), loginSecret } })
      expect(response.status).toBe(400)
      expect(response.body.error.code).toBe('E2E_ERR_BAD_REQUEST')
    })

    it('refuses a bad identity signature, a bad signed prekey or one bad one-time prekey, storing nothing', async () => {
      const client = await makeClient()
      const other = await generateIdentity()
      const [foreignSigned] = [await generateSignedPreKey(other, DEFAULT_DEVICE_ID, 1)]
      const [foreignOneTime] = await generateOneTimePreKeys(other, DEFAULT_DEVICE_ID, 50, 1)
      const good = client.registerBody()
      const badIdentity = {
        ...good,
        identity: { ...good.identity, identitySignature: toBase64Url(randomBytes(64)) },
      }
      const badSigned = { ...good, signedPreKey: preKeyToJson(publicPreKey(foreignSigned)) }
      const badOneTime = {
        ...good,
        oneTimePreKeys: [...good.oneTimePreKeys, preKeyToJson(publicPreKey(foreignOneTime!))],
      }
      for (const body of [badIdentity, badSigned, badOneTime]) {
        const response = await server.request(REGISTER, { body })
        expect(response.status).toBe(400)
        expect(response.body.error.code).toBe('E2E_ERR_BAD_SIGNATURE')
      }
      // Nothing was stored: the good registration still succeeds.
      expect((await server.request(REGISTER, { body: good })).status).toBe(201)
    })

    it('refuses a login key that is not RSA-3072 with e = 65537: 400 E2E_ERR_INVALID_KEY', async () => {
      const client = await makeClient()
      const rsa = (modulusLength: number, publicExponent = 65_537) =>
        toBase64Url(
          generateKeyPairSync('rsa', { modulusLength, publicExponent }).publicKey.export({
            type: 'spki',
            format: 'der',
          }),
        )
      for (const loginKey of [toBase64Url(randomBytes(422)), rsa(2048), rsa(3072, 3)]) {
        const response = await server.request(REGISTER, { body: { ...client.registerBody(), loginKey } })
        expect(response.status).toBe(400)
        expect(response.body.error.code).toBe('E2E_ERR_INVALID_KEY')
      }
    })

    it('refuses two one-time prekeys with the same id: 409 E2E_ERR_PREKEY_ID_CONFLICT', async () => {
      const client = await makeClient()
      const body = client.registerBody()
      const response = await server.request(REGISTER, {
        body: { ...body, oneTimePreKeys: [body.oneTimePreKeys[0], body.oneTimePreKeys[0]] },
      })
      expect(response.status).toBe(409)
      expect(response.body.error.code).toBe('E2E_ERR_PREKEY_ID_CONFLICT')
    })

    it('refuses bodies that break the schema: 400 E2E_ERR_BAD_REQUEST', async () => {
      const client = await makeClient()
      const body = client.registerBody()
      const broken = [
        { ...body, extra: 1 },
        { ...body, loginKey: undefined },
        { ...body, identity: { ...body.identity, identityKey: 'AAAA' } },
        { ...body, oneTimePreKeys: [] },
        { ...body, signedPreKey: { ...body.signedPreKey, keyId: -1 } },
      ]
      for (const candidate of broken) {
        const response = await server.request(REGISTER, { body: candidate })
        expect(response.status).toBe(400)
        expect(response.body.error.code).toBe('E2E_ERR_BAD_REQUEST')
      }
    })
  })

  describe('login', () => {
    it('returns a token only the login key can decrypt, which then authenticates', async () => {
      const client = await makeClient()
      await register(server, client)
      const response = await server.request(LOGIN, {
        body: { username: client.username, loginSecret: client.loginSecret },
      })
      expect(response.status).toBe(200)
      const body = response.body as LoginResponse
      expect(body.username).toBe(client.username)
      expect(body.expiresAt).toBe(clock + 30 * 24 * 60 * 60 * 1000)
      const token = await decryptToken(client, body)
      expect(token).toHaveLength(32)
      const status = await server.request(STATUS, { token })
      expect(status.status).toBe(200)
      expect(status.body).toMatchObject({ oneTimePreKeys: 5, signedPreKeyId: 1 })
    })

    it('issues a new token on every login, both valid until logout or expiry', async () => {
      const { client, token: first } = await signUp(server)
      const second = await login(server, client)
      expect(toBase64Url(second)).not.toBe(toBase64Url(first))
      expect((await server.request(STATUS, { token: first })).status).toBe(200)
      expect((await server.request(STATUS, { token: second })).status).toBe(200)
    })

    it('answers a wrong password and an unknown user identically: 401 E2E_ERR_INVALID_CREDENTIALS', async () => {
      const client = await makeClient()
      await register(server, client)
      const wrong = await server.request(LOGIN, {
        body: { username: client.username, loginSecret: loginSecretFor('not-the-password-123') },
      })
      const unknown = await server.request(LOGIN, {
        body: { username: 'nobody-here-42', loginSecret: client.loginSecret },
      })
      const invalid = await server.request(LOGIN, {
        body: { username: '!!', loginSecret: client.loginSecret },
      })
      for (const response of [wrong, unknown, invalid]) {
        expect(response.status).toBe(401)
        expect(response.body).toEqual(wrong.body)
      }
      expect(wrong.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')
    })

    it('spends the same bcrypt comparison on an unknown or invalid name as on a wrong password', async () => {
      const client = await makeClient()
      await register(server, client)
      // password.ts calls bcrypt.compare on this same module object, so the spy sees every check.
      const compare = vi.spyOn(bcrypt, 'compare')
      try {
        for (const username of [client.username, `nobody${process.pid}x`, '!!']) {
          const response = await server.request(LOGIN, {
            body: { username, loginSecret: loginSecretFor('not-the-password-123') },
          })
          expect(response.status).toBe(401)
        }
        const hashes = compare.mock.calls.map(([, hash]) => hash)
        expect(hashes).toHaveLength(3)
        const [stored, unknown, invalid] = hashes as [string, string, string]
        expect(bcrypt.getRounds(stored)).toBe(TEST_BCRYPT_COST)
        expect(bcrypt.getRounds(unknown)).toBe(TEST_BCRYPT_COST)
        expect(bcrypt.getRounds(invalid)).toBe(TEST_BCRYPT_COST)
        // A real bcrypt hash of something else, not the account's own hash reused.
        expect(unknown).toMatch(/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/)
        expect(unknown).not.toBe(stored)
        expect(invalid).toBe(unknown)
        // Every comparison ran to its end (the spy awaited bcrypt's own answer, false each time).
        for (const result of compare.mock.results) await expect(result.value).resolves.toBe(false)
      } finally {
        compare.mockRestore()
      }
    })

    it('refuses an address after repeated failures for an account (429 with Retry-After), the right password too', async () => {
      const client = await makeClient()
      await register(server, client)
      for (let i = 0; i < 5; i++) {
        const response = await server.request(LOGIN, {
          body: { username: client.username, loginSecret: loginSecretFor(`wrong-${i}-password`) },
        })
        expect(response.status).toBe(401)
      }
      const locked = await server.request(LOGIN, {
        body: { username: client.username, loginSecret: client.loginSecret },
      })
      expect(locked.status).toBe(429)
      expect(locked.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
      expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0)
      // Unknown names lock the same way, so a lockout does not reveal whether a name exists.
      for (let i = 0; i < 5; i++) {
        await server.request(LOGIN, {
          body: { username: 'ghost-account', loginSecret: loginSecretFor(`wrong-${i}-password`) },
        })
      }
      expect(
        (
          await server.request(LOGIN, {
            body: { username: 'ghost-account', loginSecret: loginSecretFor('x') },
          })
        ).status,
      ).toBe(429)
      // The window ends: the right password works again.
      clock += 15 * 60 * 1000
      expect(await login(server, client)).toHaveLength(32)
    })

    it('holds the (account, address) limit against a parallel burst of guesses', async () => {
      const client = await makeClient()
      await register(server, client)
      const responses = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          server.request(LOGIN, {
            body: { username: client.username, loginSecret: loginSecretFor(`burst-guess-${i}`) },
          }),
        ),
      )
      const statuses = responses.map((response) => response.status)
      expect(statuses.filter((status) => status === 401)).toHaveLength(5)
      expect(statuses.filter((status) => status === 429)).toHaveLength(15)
      clock += 15 * 60 * 1000
    })

    it('logout revokes the token it was called with, and only that one', async () => {
      const { client, token } = await signUp(server)
      const other = await login(server, client)
      const response = await server.request(LOGOUT, { method: 'POST', token })
      expect(response.status).toBe(204)
      expect(response.text).toBe('')
      const after = await server.request(STATUS, { token })
      expect(after.status).toBe(401)
      expect(after.body.error.code).toBe('E2E_ERR_UNAUTHENTICATED')
      expect(after.headers['www-authenticate']).toBe('Bearer')
      expect((await server.request(LOGOUT, { method: 'POST', token })).status).toBe(401)
      expect((await server.request(STATUS, { token: other })).status).toBe(200)
    })

    it('refuses an expired token', async () => {
      const { token } = await signUp(server)
      expect((await server.request(STATUS, { token })).status).toBe(200)
      clock += 30 * 24 * 60 * 60 * 1000
      const response = await server.request(STATUS, { token })
      expect(response.status).toBe(401)
      expect(response.body.error.code).toBe('E2E_ERR_UNAUTHENTICATED')
    })

    it('accepts the token only in the Authorization header, never in the URL', async () => {
      const { token } = await signUp(server)
      const text = toBase64Url(token)
      for (const attempt of [
        server.request(`${STATUS}?token=${text}`),
        server.request(`${STATUS}?access_token=${text}`),
        server.request(STATUS, { headers: { authorization: `Basic ${text}` } }),
        server.request(STATUS, { headers: { authorization: `Bearer ${text}x` } }),
        server.request(STATUS, { headers: { authorization: `Bearer ${toBase64Url(randomBytes(32))}` } }),
      ]) {
        const response = await attempt
        expect(response.status).toBe(401)
        expect(response.body.error.code).toBe('E2E_ERR_UNAUTHENTICATED')
      }
    })

    it('limits failed logins per address across accounts', async () => {
      const limited = await startServer({
        limits: { loginFailuresPerAddress: 3, loginFailuresPerAccount: 100 },
      })
      try {
        for (let i = 0; i < 3; i++) {
          const response = await limited.request(LOGIN, {
            body: { username: `spray${i}`, loginSecret: loginSecretFor('Summer2024!!') },
          })
          expect(response.status).toBe(401)
        }
        const refused = await limited.request(LOGIN, {
          body: { username: 'spray9', loginSecret: loginSecretFor('Summer2024!!') },
        })
        expect(refused.status).toBe(429)
        expect(refused.body.error.message).toMatch(/from this address/)
      } finally {
        await limited.close()
      }
    })
  })
})

describe('account storage', () => {
  it('hashes with bcrypt cost 12 by default', async () => {
    const server = await startServer({ bcryptCost: undefined })
    try {
      const client = await makeClient()
      await register(server, client)
      const row = await server.database.db
        .selectFrom('users')
        .select('password_hash')
        .where('username', '=', client.username)
        .executeTakeFirstOrThrow()
      expect(BCRYPT_COST).toBe(12)
      expect(bcrypt.getRounds(row.password_hash)).toBe(12)
      expect(row.password_hash).not.toContain(client.password)
    } finally {
      await server.close()
    }
  })

  it('keeps users across a restart on the same SQLite file', async () => {
    const first = await startServer()
    const client = await makeClient()
    await register(first, client)
    await first.stop()
    await first.database.close()
    const reopened = await first.database.reopen()
    const second = await startServer({ database: { ...first.database, db: reopened.db } })
    try {
      const token = await login(second, client)
      expect((await second.request(STATUS, { token })).status).toBe(200)
    } finally {
      await second.stop()
      await first.database.dispose()
    }
  })
})
