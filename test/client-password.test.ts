/**
 * The password never leaves the device (issue 10 item 1, docs/protocol.md §12.2), shown with the
 * client core against the real server over TLS: every request body is read as a TLS-terminating
 * proxy would read it, and the server's tables are searched afterwards. Then password changes:
 * the store re-sealed under the new password, the server on the new secret, other sessions ended,
 * messages arriving meanwhile kept, and a change interrupted half-way finished on the next log-in.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashPassword } from '../server/auth/password.js'
import { startServer, strongPassword, TEST_BCRYPT_COST, type TestServer } from '../server/test/harness.js'
import { ChatClient } from '../shared/client/chat-client.js'
import { isClientError } from '../shared/client/errors.js'
import { MemoryStore } from '../shared/client/store.js'
import type { HttpClient } from '../shared/client/transport.js'
import { clientOptions, nodeHttpClient, registerClient } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server?.close()
})

/** What crossed the wire, request by request, as a proxy that ends TLS would see it. */
interface Seen {
  readonly method: string
  readonly path: string
  readonly body: string
}

function proxiedHttp(seen: Seen[], fail?: (path: string) => boolean): HttpClient {
  const inner = nodeHttpClient(server)
  return {
    async request(method, path, options = {}) {
      seen.push({ method, path, body: JSON.stringify(options.body ?? null) })
      if (fail?.(path)) throw new Error('connection reset (test)')
      return inner.request(method, path, options)
    },
  }
}

/** Every text and blob the server stores, as one string per row. */
async function serverRows(): Promise<string[]> {
  const rows: string[] = []
  for (const table of [
    'users',
    'auth_tokens',
    'signed_prekeys',
    'one_time_prekeys',
    'messages',
    'message_tombstones',
  ]) {
    const found = await server.database.db
      .selectFrom(table as 'users')
      .selectAll()
      .execute()
    for (const row of found) {
      rows.push(
        Object.values(row)
          .map((value) =>
            value instanceof Uint8Array ? Buffer.from(value).toString('latin1') : String(value),
          )
          .join(' '),
      )
    }
  }
  return rows
}

function leaks(seen: readonly Seen[], password: string): Seen[] {
  return seen.filter(
    (request) => request.body.includes(password) || request.body.includes(password.normalize('NFKC')),
  )
}

describe('the password never leaves the device', () => {
  it('register, log-in, reinstall and a password change send only login secrets', async () => {
    const seen: Seen[] = []
    const password = strongPassword()
    const next = strongPassword()
    const options = clientOptions(server, { http: proxiedHttp(seen) })
    const alice = await ChatClient.register(options, `pw${process.pid}a`, password)
    await alice.logout()
    await alice.login(password)
    await alice.changePassword(password, next)
    await alice.close()
    const reinstalled = await ChatClient.reinstall(
      clientOptions(server, { http: proxiedHttp(seen) }),
      alice.username,
      next,
    )
    await reinstalled.close()

    const paths = seen.map((request) => request.path)
    expect(paths).toEqual(expect.arrayContaining(['/register', '/login', '/account/password', '/reinstall']))
    expect(leaks(seen, password)).toEqual([])
    expect(leaks(seen, next)).toEqual([])
    for (const request of seen.filter((r) => ['/register', '/login', '/reinstall'].includes(r.path))) {
      expect(JSON.parse(request.body).loginSecret).toMatch(/^[A-Za-z0-9_-]{43}$/)
    }
    for (const row of await serverRows()) {
      expect(row).not.toContain(password)
      expect(row).not.toContain(next)
    }
  })

  it('an account made before login secrets sends its password once, on its next log-in, and never again', async () => {
    const seen: Seen[] = []
    const { client, password } = await registerClient(server, { http: proxiedHttp(seen) })
    // As 0.1.0 stored it: bcrypt of the password itself.
    await server.database.db
      .updateTable('users')
      .set({ credential: 'password', password_hash: await hashPassword(password, TEST_BCRYPT_COST) })
      .where('username', '=', client.username)
      .execute()
    seen.length = 0
    await client.logout()
    await client.login(password)
    expect(leaks(seen, password).map((request) => request.path)).toEqual(['/login'])
    seen.length = 0
    await client.logout()
    await client.login(password)
    expect(leaks(seen, password)).toEqual([])
    await client.close()
  })
})

describe('changing the password', () => {
  it('re-seals the store and moves the server to the new secret; the old password opens neither', async () => {
    const store = new MemoryStore()
    const { client: alice, password } = await registerClient(server, { store })
    const { client: bob } = await registerClient(server)
    for (const client of [alice, bob]) client.connect()
    await Promise.all([alice.waitUntilOnline(), bob.waitUntilOnline()])
    await bob.send(alice.username, 'before the change')
    await alice.send(bob.username, 'hello bob')
    await alice.flush()

    // Messages keep arriving while the store is sealed again.
    const arrived = new Promise<void>((resolve) => {
      const during = new Set<string>()
      alice.events.on('message', (m) => {
        if (m.direction === 'in' && m.text.startsWith('during ')) during.add(m.text)
        if (during.size === 30) resolve()
      })
    })
    const next = strongPassword()
    const progress: [number, number][] = []
    const during = Promise.all(Array.from({ length: 30 }, (_, i) => bob.send(alice.username, `during ${i}`)))
    await alice.changePassword(password, next, { onProgress: (done, total) => progress.push([done, total]) })
    await during
    await arrived
    expect(progress.length).toBeGreaterThan(1)
    expect(progress.at(-1)![0]).toBe(progress.at(-1)![1])
    await alice.close()
    await bob.close()

    const options = clientOptions(server, { store })
    const wrong = await ChatClient.open(options, password).catch((error: unknown) => error)
    expect(isClientError(wrong, 'E2E_ERR_WRONG_PASSWORD')).toBe(true)
    const reopened = await ChatClient.open(options, next)
    const texts = (await reopened.history(bob.username, { limit: 100 })).map((m) => m.text)
    expect(texts).toEqual(
      expect.arrayContaining([
        'before the change',
        'hello bob',
        ...Array.from({ length: 30 }, (_, i) => `during ${i}`),
      ]),
    )
    expect(texts).toHaveLength(32)
    await reopened.logout()
    await reopened.login(next)
    expect(reopened.loggedIn).toBe(true)
    await reopened.close()
  })

  it('refuses a weak new password, the current one again, or a wrong current one, changing nothing', async () => {
    const store = new MemoryStore()
    const { client, password } = await registerClient(server, { store })
    const weak = await client.changePassword(password, 'password1234').catch((e: unknown) => e)
    expect(isClientError(weak, 'E2E_ERR_WEAK_PASSWORD')).toBe(true)
    const same = await client.changePassword(password, password).catch((e: unknown) => e)
    expect(isClientError(same, 'E2E_ERR_CLIENT_INPUT')).toBe(true)
    const wrong = await client.changePassword(`${password}x`, strongPassword()).catch((e: unknown) => e)
    expect(isClientError(wrong, 'E2E_ERR_WRONG_PASSWORD')).toBe(true)
    await client.close()
    const reopened = await ChatClient.open(clientOptions(server, { store }), password)
    await reopened.logout()
    await reopened.login(password)
    await reopened.close()
  })

  it('ends the other sessions when asked', async () => {
    const { client, password } = await registerClient(server)
    const user = await server.database.db
      .selectFrom('users')
      .select('id')
      .where('username', '=', client.username)
      .executeTakeFirstOrThrow()
    const tokens = () =>
      server.database.db
        .selectFrom('auth_tokens')
        .select('token_hash')
        .where('user_id', '=', user.id)
        .execute()
    // Other sessions: earlier log-ins whose tokens are still valid.
    await client.login(password)
    await client.login(password)
    const { endedSessions } = await client.changePassword(password, strongPassword(), {
      endOtherSessions: true,
    })
    expect(endedSessions).toBeGreaterThanOrEqual(2)
    expect(await tokens()).toHaveLength(1)
    expect(client.loggedIn).toBe(true)
    await client.close()
  })

  it('finishes on the next log-in when the server never heard of it', async () => {
    const store = new MemoryStore()
    let cut = true
    const seen: Seen[] = []
    const http = proxiedHttp(seen, (path) => cut && path === '/account/password')
    const { client, password } = await registerClient(server, { store, http })
    const next = strongPassword()
    await expect(client.changePassword(password, next)).rejects.toThrow(/connection reset/)
    await client.close()
    cut = false

    // The store already opens with the new password only; the server still has the old secret.
    const options = clientOptions(server, { store, http })
    expect(
      isClientError(
        await ChatClient.open(options, password).catch((e: unknown) => e),
        'E2E_ERR_WRONG_PASSWORD',
      ),
    ).toBe(true)
    const reopened = await ChatClient.open(options, next)
    await reopened.logout()
    await reopened.login(next)
    expect(reopened.loggedIn).toBe(true)
    await reopened.logout()
    await reopened.login(next)
    await reopened.close()
    // The server took the change: the old password's secret is refused.
    expect(seen.filter((request) => request.path === '/account/password')).toHaveLength(2)
  })
})
