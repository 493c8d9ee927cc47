/**
 * Deleting an account from the client core, against the real server over TLS: the typed name and
 * the password are both required, a refusal changes nothing, a deletion wipes the local store; the
 * contact's client marks the conversation (at once when online, through `identity.changed`; on
 * its next send when it was away), keeps its history, and refuses to send to it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashPassword } from '../server/auth/password.js'
import { DELETED_USERNAME_HOLD_MS } from '../server/limits.js'
import {
  makeClient,
  register,
  startServer,
  TEST_BCRYPT_COST,
  type TestServer,
} from '../server/test/harness.js'
import { type ChatClient, ChatClient as Client, type MessageView } from '../shared/client/chat-client.js'
import { ClientError, ClientErrorCode } from '../shared/client/errors.js'
import { type MemoryStore, STORE_TABLES } from '../shared/client/store.js'
import type { HttpClient } from '../shared/client/transport.js'
import { nodeHttpClient, registerClient } from './client-helpers.js'
import { copyStore } from './memory-relay.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

async function online(...clients: ChatClient[]): Promise<void> {
  for (const client of clients) client.connect()
  await Promise.all(clients.map((client) => client.waitUntilOnline()))
}

function nextMessage(client: ChatClient): Promise<MessageView> {
  return new Promise((resolve) => {
    const stop = client.events.on('message', (message) => {
      if (message.direction !== 'in') return
      stop()
      resolve(message)
    })
  })
}

function accountDeleted(client: ChatClient, peer: string): Promise<void> {
  return new Promise((resolve) => {
    const stop = client.events.on('account-deleted', (event) => {
      if (event.peer !== peer) return
      stop()
      resolve()
    })
  })
}

/**
 * Two accounts that have talked both ways: each shares presence with the other (only people who
 * talk do), so each watches the other and hears `identity.changed`.
 */
async function acquainted(target: TestServer = server) {
  const alice = await registerClient(target)
  const bob = await registerClient(target)
  await online(alice.client, bob.client)
  const toBob = nextMessage(bob.client)
  await alice.client.send(bob.client.username, 'hello bob')
  await toBob
  const toAlice = nextMessage(alice.client)
  await bob.client.send(alice.client.username, 'hello alice')
  await toAlice
  return { alice, bob }
}

/** Every request body the client sends, as a proxy that ends TLS would read it. */
function proxiedHttp(seen: { path: string; body: string }[]): HttpClient {
  const inner = nodeHttpClient(server)
  return {
    request(method, path, options = {}) {
      seen.push({ path, body: JSON.stringify(options.body ?? null) })
      return inner.request(method, path, options)
    },
  }
}

describe('deleting an account', () => {
  it('proves the account with the login secret; the password goes only to upgrade an old account', async () => {
    const seen: { path: string; body: string }[] = []
    const fresh = await registerClient(server, { http: proxiedHttp(seen) })
    await fresh.client.deleteAccount(fresh.password, fresh.client.username)
    const deletes = seen.filter((request) => request.path === '/account/delete')
    expect(deletes).toHaveLength(1)
    expect(Object.keys(JSON.parse(deletes[0]!.body)).sort()).toEqual(['loginSecret', 'username'])
    expect(seen.filter((request) => request.body.includes(fresh.password))).toEqual([])
    await fresh.client.close()

    // An account as 0.1.0 stored it (bcrypt of the password itself), already logged in here.
    seen.length = 0
    const old = await registerClient(server, { http: proxiedHttp(seen) })
    await server.database.db
      .updateTable('users')
      .set({ credential: 'password', password_hash: await hashPassword(old.password, TEST_BCRYPT_COST) })
      .where('username', '=', old.client.username)
      .execute()
    seen.length = 0
    await old.client.deleteAccount(old.password, old.client.username)
    // Asked for the upgrade, it sends the password once beside the secret, and the account is gone.
    expect(
      seen.filter((request) => request.path === '/account/delete').map((r) => JSON.parse(r.body)),
    ).toEqual([
      { username: old.client.username, loginSecret: expect.any(String) },
      { username: old.client.username, loginSecret: expect.any(String), password: old.password },
    ])
    const rows = await server.database.db
      .selectFrom('users')
      .select('username')
      .where('username', 'in', [fresh.client.username, old.client.username])
      .execute()
    expect(rows).toEqual([])
    await old.client.close()
  })

  it('needs the typed name and the password; a refusal changes nothing here or on the server', async () => {
    const { alice, bob } = await acquainted()
    await expect(bob.client.deleteAccount(bob.password, alice.client.username)).rejects.toMatchObject({
      code: ClientErrorCode.InvalidInput,
    })
    await expect(bob.client.deleteAccount(`${bob.password}x`, bob.client.username)).rejects.toMatchObject({
      serverCode: 'E2E_ERR_INVALID_CREDENTIALS',
    })
    // Still registered, still online, history intact.
    await bob.client.waitUntilOnline()
    expect((await bob.client.history(alice.client.username)).map((m) => m.text)).toEqual([
      'hello bob',
      'hello alice',
    ])
    const toBob = nextMessage(bob.client)
    await alice.client.send(bob.client.username, 'still there?')
    expect((await toBob).text).toBe('still there?')
    await Promise.all([alice.client.close(), bob.client.close()])
  })

  it('the answer to the delete is lost: the next attempt hears the account is gone and wipes this device', async () => {
    // The request reaches the server and is carried out; its answer never comes back.
    let loseAnswer = true
    const inner = nodeHttpClient(server)
    const http: HttpClient = {
      async request(method, path, options = {}) {
        const response = await inner.request(method, path, options)
        if (loseAnswer && path.endsWith('/account/delete')) {
          loseAnswer = false
          throw new ClientError(ClientErrorCode.Network, 'expected a reply, got none (connection reset)')
        }
        return response
      },
    }
    const bob = await registerClient(server, { http })
    await online(bob.client)
    await expect(bob.client.deleteAccount(bob.password, bob.client.username)).rejects.toMatchObject({
      code: ClientErrorCode.Network,
    })
    // Nothing was wiped here: this device could not know the deletion had happened.
    expect(await Client.accountIn(bob.options.store)).toBeDefined()
    // The user tries again: the server says the account is gone, and this device's copy goes too.
    await bob.client.deleteAccount(bob.password, bob.client.username)
    for (const table of STORE_TABLES) expect(await bob.options.store.list(table)).toEqual([])
    expect(await Client.accountIn(bob.options.store)).toBeUndefined()
    await bob.client.close()
  })

  it('another device of the account deleted it: this one hears so on connecting, and erases its copy when asked', async () => {
    const bob = await registerClient(server)
    // Bob's second device: the same account's identity, on a store of its own.
    const secondStore = await copyStore(bob.options.store as MemoryStore)
    const second = await Client.open({ ...bob.options, store: secondStore }, bob.password)
    await second.login(bob.password)
    await bob.client.deleteAccount(bob.password, bob.client.username)
    await bob.client.close()

    const told = new Promise<string>((resolve) => {
      const stop = second.events.on('problem', (problem) => {
        if (problem.code !== 'E2E_ERR_ACCOUNT_DELETED') return
        stop()
        resolve(problem.message)
      })
    })
    second.connect()
    expect(await told).toMatch(/account that was deleted/)
    // Not "wrong password": the deletion is what it says, and erasing needs no server.
    await second.deleteAccount(bob.password, bob.client.username)
    expect(await Client.accountIn(secondStore)).toBeUndefined()
    await second.close()
  })

  it('wipes the local store; an online contact marks the conversation at once, keeps it, and cannot send', async () => {
    const { alice, bob } = await acquainted()
    const marked = accountDeleted(alice.client, bob.client.username)
    await bob.client.deleteAccount(bob.password, bob.client.username.toUpperCase())
    for (const table of STORE_TABLES) expect(await bob.options.store.list(table)).toEqual([])
    expect(await Client.accountIn(bob.options.store)).toBeUndefined()
    await bob.client.close()

    await marked
    const contact = await alice.client.contact(bob.client.username)
    expect(contact?.accountDeleted).toBe(true)
    expect(
      (await alice.client.conversations()).find((c) => c.username === bob.client.username),
    ).toMatchObject({ accountDeleted: true })
    expect((await alice.client.history(bob.client.username)).map((m) => m.text)).toEqual([
      'hello bob',
      'hello alice',
    ])
    await expect(alice.client.send(bob.client.username, 'are you there?')).rejects.toMatchObject({
      code: ClientErrorCode.AccountDeleted,
    })
    // The mark is stored: a reopened client still shows it.
    await alice.client.close()
    const reopened = await Client.open(alice.options, alice.password)
    expect((await reopened.contact(bob.client.username))?.accountDeleted).toBe(true)
    await reopened.close()
  })

  it('a contact who was away: a message written meanwhile fails with the clear error, and the conversation is marked', async () => {
    const { alice, bob } = await acquainted()
    await alice.client.disconnect()
    await bob.client.deleteAccount(bob.password, bob.client.username)
    await bob.client.close()

    // Written offline, on the session Alice still has with Bob.
    const written = await alice.client.send(bob.client.username, 'back now')
    const marked = accountDeleted(alice.client, bob.client.username)
    const failed = new Promise<void>((resolve) => {
      alice.client.events.on('delivery', (event) => {
        if (event.id === written.id && event.state === 'failed') resolve()
      })
    })
    await online(alice.client)
    await Promise.all([marked, failed])
    expect((await alice.client.history(bob.client.username)).at(-1)).toMatchObject({
      text: 'back now',
      state: 'failed',
    })
    expect((await alice.client.contact(bob.client.username))?.accountDeleted).toBe(true)
    await alice.client.close()
  })

  it('a name registered again after the hold is a key change to review, never the old contact', async () => {
    let clock = Date.now()
    const held = await startServer({ now: () => clock })
    try {
      const { alice, bob } = await acquainted(held)
      const marked = accountDeleted(alice.client, bob.client.username)
      await bob.client.deleteAccount(bob.password, bob.client.username)
      await bob.client.close()
      await marked
      await alice.client.disconnect()

      // The hold ends and someone else takes the name.
      clock += DELETED_USERNAME_HOLD_MS
      await register(held, await makeClient({ username: bob.client.username }))
      // Alice's token expired on the server's clock meanwhile: she logs in again and reconnects.
      await alice.client.login(alice.password)
      const changed = new Promise<void>((resolve) => {
        alice.client.events.on('identity-changed', ({ peer }) => peer === bob.client.username && resolve())
      })
      await online(alice.client)
      await changed
      const contact = await alice.client.contact(bob.client.username)
      expect(contact).toMatchObject({ accountDeleted: false, identityChanged: true })
      await expect(alice.client.send(bob.client.username, 'is that you?')).rejects.toMatchObject({
        code: ClientErrorCode.IdentityChanged,
      })
      await alice.client.close()
    } finally {
      await held.close()
    }
  })
})
