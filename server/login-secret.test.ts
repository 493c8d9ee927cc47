/**
 * Login secrets on the server (docs/protocol.md §4.1), over real TLS: accounts made before them
 * keep working for clients of the previous version and switch over, once, when today's client
 * sends the password beside the secret; after that the password itself is refused with a clear
 * "update" answer. And POST /account/password: the current secret and a session token, the new
 * secret taking effect at once, other sessions (and their sockets) ended on request.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashPassword, verifyPassword } from './auth/password.js'
import type { UserRow } from './db/schema.js'
import {
  login,
  loginSecretFor,
  signUp,
  startServer,
  TEST_BCRYPT_COST,
  type TestClient,
  type TestServer,
} from './test/harness.js'
import { connect } from './test/ws-client.js'

const LOGIN = '/api/v1/login'
const CHANGE = '/api/v1/account/password'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server?.close()
})

function row(client: TestClient): Promise<UserRow> {
  return server.database.db
    .selectFrom('users')
    .selectAll()
    .where('username', '=', client.username)
    .executeTakeFirstOrThrow()
}

/** The account as the previous version stored it: a bcrypt hash of the password itself. */
async function onItsPassword(client: TestClient): Promise<void> {
  await server.database.db
    .updateTable('users')
    .set({ credential: 'password', password_hash: await hashPassword(client.password, TEST_BCRYPT_COST) })
    .where('username', '=', client.username)
    .execute()
}

describe('accounts made before login secrets', () => {
  it('keep logging in with the password (a client of the previous version) until upgraded', async () => {
    const { client } = await signUp(server)
    await onItsPassword(client)
    const response = await server.request(LOGIN, {
      body: { username: client.username, password: client.password },
    })
    expect(response.status).toBe(200)
    expect((await row(client)).credential).toBe('password')
  })

  it('ask today’s client for the password once, then switch to the secret for good', async () => {
    const { client } = await signUp(server)
    await onItsPassword(client)

    const secretOnly = await server.request(LOGIN, {
      body: { username: client.username, loginSecret: client.loginSecret },
    })
    expect(secretOnly.status).toBe(409)
    expect(secretOnly.body.error.code).toBe('E2E_ERR_CREDENTIAL_UPGRADE')

    // A wrong password beside the secret switches nothing.
    const wrong = await server.request(LOGIN, {
      body: { username: client.username, loginSecret: client.loginSecret, password: `${client.password}!` },
    })
    expect(wrong.status).toBe(401)
    expect((await row(client)).credential).toBe('password')

    const upgrade = await server.request(LOGIN, {
      body: { username: client.username, loginSecret: client.loginSecret, password: client.password },
    })
    expect(upgrade.status).toBe(200)
    const upgraded = await row(client)
    expect(upgraded.credential).toBe('login-secret-v1')
    expect(await verifyPassword(client.loginSecret, upgraded.password_hash)).toBe(true)
    expect(await verifyPassword(client.password, upgraded.password_hash)).toBe(false)

    // From now on the secret alone, and the password is refused as coming from an old client.
    expect(await login(server, client)).toHaveLength(32)
    const passwordOnly = await server.request(LOGIN, {
      body: { username: client.username, password: client.password },
    })
    expect(passwordOnly.status).toBe(400)
    expect(passwordOnly.body.error.code).toBe('E2E_ERR_CLIENT_OUTDATED')
  })

  it('count an upgrade request as no failure, so it cannot lock anyone out', async () => {
    const { client } = await signUp(server)
    await onItsPassword(client)
    for (let i = 0; i < 15; i++) {
      const response = await server.request(LOGIN, {
        localAddress: '127.0.9.1',
        body: { username: client.username, loginSecret: client.loginSecret },
      })
      expect(response.status).toBe(409)
    }
    const upgrade = await server.request(LOGIN, {
      localAddress: '127.0.9.1',
      body: { username: client.username, loginSecret: client.loginSecret, password: client.password },
    })
    expect(upgrade.status).toBe(200)
  })

  it('refuse a request with neither a secret nor a password: 400', async () => {
    const { client } = await signUp(server)
    const response = await server.request(LOGIN, { body: { username: client.username } })
    expect(response.status).toBe(400)
    expect(response.body.error.code).toBe('E2E_ERR_BAD_REQUEST')
  })
})

describe('POST /account/password', () => {
  it('needs a session token and the current secret', async () => {
    const { client, token } = await signUp(server)
    const body = { loginSecret: client.loginSecret, newLoginSecret: loginSecretFor('another one entirely') }
    const noToken = await server.request(CHANGE, { body })
    expect(noToken.status).toBe(401)
    expect(noToken.body.error.code).toBe('E2E_ERR_UNAUTHENTICATED')
    const wrong = await server.request(CHANGE, {
      token,
      body: { ...body, loginSecret: loginSecretFor('not the password') },
    })
    expect(wrong.status).toBe(401)
    expect(wrong.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')
    // Nothing changed.
    expect(await login(server, client)).toHaveLength(32)
  })

  it('replaces the secret at once and, when asked, ends every other session and its sockets', async () => {
    const { client, token } = await signUp(server)
    const other = await login(server, client)
    const otherSocket = await connect(server, other, 'other device session')
    const thisSocket = await connect(server, token, 'this session')
    const next = 'a new passphrase, long and odd'

    const response = await server.request(CHANGE, {
      token,
      body: { loginSecret: client.loginSecret, newLoginSecret: loginSecretFor(next), endOtherSessions: true },
    })
    expect(response.status).toBe(200)
    expect(response.body).toEqual({ endedSessions: 1 })

    await otherSocket.closed
    expect((await server.request('/api/v1/keys/status', { token: other })).status).toBe(401)
    expect((await server.request('/api/v1/keys/status', { token })).status).toBe(200)
    thisSocket.close()

    const old = await server.request(LOGIN, {
      body: { username: client.username, loginSecret: client.loginSecret },
    })
    expect(old.status).toBe(401)
    expect(await login(server, client, next)).toHaveLength(32)
  })

  it('keeps other sessions unless asked to end them', async () => {
    const { client, token } = await signUp(server)
    const other = await login(server, client)
    const response = await server.request(CHANGE, {
      token,
      body: { loginSecret: client.loginSecret, newLoginSecret: loginSecretFor('yet another passphrase') },
    })
    expect(response.body).toEqual({ endedSessions: 0 })
    expect((await server.request('/api/v1/keys/status', { token: other })).status).toBe(200)
  })

  it('moves an account still on its password straight to the new secret', async () => {
    const { client, token } = await signUp(server)
    await onItsPassword(client)
    const next = 'the passphrase after the old one'
    const response = await server.request(CHANGE, {
      token,
      body: {
        loginSecret: client.loginSecret,
        password: client.password,
        newLoginSecret: loginSecretFor(next),
      },
    })
    expect(response.status).toBe(200)
    const changed = await row(client)
    expect(changed.credential).toBe('login-secret-v1')
    expect(await verifyPassword(loginSecretFor(next), changed.password_hash)).toBe(true)
  })
})
