/**
 * The client core (shared/client) against the real server over TLS: accounts, unlocking, prekey
 * upkeep, contacts and safety numbers. Messaging over the WebSocket is in client-messaging.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LOGIN_FAILURES_PER_ACCOUNT_ADDRESS } from '../server/limits.js'
import { loginSecretFor, signUp, startServer, type TestServer } from '../server/test/harness.js'
import { ChatClient } from '../shared/client/chat-client.js'
import { isClientError } from '../shared/client/errors.js'
import { MemoryStore } from '../shared/client/store.js'
import { ONE_TIME_PREKEY_BATCH, SIGNED_PREKEY_ROTATION_MS } from '../shared/limits.js'
import { deriveLoginSecret } from '../shared/login-secret.js'
import { clientOptions, registerClient, TEST_KDF_ITERATIONS } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

describe('accounts', () => {
  it('registers, stores the account sealed, and reopens only with the right password', async () => {
    const store = new MemoryStore()
    const { client, password, options } = await registerClient(server, { store })
    expect(client.loggedIn).toBe(true)
    expect(await ChatClient.accountIn(store)).toEqual({ username: client.username, server: server.origin })

    const record = await store.get('account', 'account')
    expect(new TextDecoder().decode(record!.value)).not.toContain(password)

    const wrong = await ChatClient.open(options, `${password}x`).catch((error: unknown) => error)
    expect(isClientError(wrong, 'E2E_ERR_WRONG_PASSWORD')).toBe(true)
    const reopened = await ChatClient.open(options, password, client.username)
    expect(reopened.loggedIn).toBe(true)
    expect(reopened.publicIdentity.identityKey).toEqual(client.publicIdentity.identityKey)
    const mismatch = await ChatClient.open(options, password, 'somebody-else').catch(
      (error: unknown) => error,
    )
    expect(isClientError(mismatch, 'E2E_ERR_ACCOUNT_MISMATCH')).toBe(true)
  })

  it('a refused registration leaves the local database empty', async () => {
    const { client } = await registerClient(server)
    const store = new MemoryStore()
    const error = await ChatClient.register(
      clientOptions(server, { store }),
      client.username.toUpperCase(),
      'another long passphrase 2026',
    ).catch((e: unknown) => e)
    expect(isClientError(error, 'E2E_ERR_SERVER')).toBe(true)
    expect((error as { serverCode?: string }).serverCode).toBe('E2E_ERR_USERNAME_TAKEN')
    expect(await ChatClient.accountIn(store)).toBeUndefined()
  })

  it('logout ends the session on the server', async () => {
    const { client, password } = await registerClient(server)
    await client.logout()
    expect(client.loggedIn).toBe(false)
    const error = await client.searchUsers('c00').catch((e: unknown) => e)
    expect(isClientError(error, 'E2E_ERR_NOT_LOGGED_IN')).toBe(true)
    await client.login(password)
    expect(await client.searchUsers('zzzz-nobody')).toEqual([])
    // A search needs USER_SEARCH_MIN_LENGTH characters; the core says so before asking.
    const short = await client.searchUsers(' ZZ ').catch((e: unknown) => e)
    expect(isClientError(short, 'E2E_ERR_CLIENT_INPUT')).toBe(true)
  })

  it("logs in with the device's proof while someone guesses the account's password from the same address", async () => {
    const { client, password } = await registerClient(server)
    await client.logout()
    for (let i = 0; i <= LOGIN_FAILURES_PER_ACCOUNT_ADDRESS; i++) {
      await server.request('/api/v1/login', {
        localAddress: '127.0.0.1',
        body: { username: client.username, loginSecret: loginSecretFor(`wrong guess ${i}`) },
      })
    }
    // That address is refused for this account, the right password included, without the proof.
    const refused = await server.request('/api/v1/login', {
      localAddress: '127.0.0.1',
      body: {
        username: client.username,
        loginSecret: await deriveLoginSecret(password, client.username, TEST_KDF_ITERATIONS),
      },
    })
    expect(refused.status).toBe(429)
    await client.login(password)
    expect(client.loggedIn).toBe(true)
  })
})

describe('contacts and safety numbers', () => {
  it('finds users, adds a contact on first use, and both sides compute the same safety number', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    expect(await alice.searchUsers(bob.username)).toContain(bob.username)
    await alice.addContact(bob.username)
    await bob.addContact(alice.username)
    const fromAlice = await alice.safetyNumber(bob.username)
    const fromBob = await bob.safetyNumber(alice.username)
    expect(fromAlice.digits).toBe(fromBob.digits)
    await alice.markVerified(bob.username)
    expect((await alice.contact(bob.username))?.verified).toBe(true)
  })
})

describe('prekey upkeep', () => {
  it('refills one-time prekeys when the server runs low, and the new ones work', async () => {
    const { client: owner } = await registerClient(server)
    const { token } = await signUp(server)
    // Others' session starts consume the owner's one-time prekeys.
    for (let i = 0; i < ONE_TIME_PREKEY_BATCH - 5; i++) {
      const response = await server.request(`/api/v1/users/${owner.username}/bundle`, { token })
      expect(response.status).toBe(200)
    }
    expect((await owner.preKeyStatus()).oneTimePreKeys).toBe(5)
    await owner.maintainPreKeys()
    expect((await owner.preKeyStatus()).oneTimePreKeys).toBe(5 + ONE_TIME_PREKEY_BATCH)
  })

  it('rotates the signed prekey once it is older than the rotation period', async () => {
    let clock = Date.now()
    const { client } = await registerClient(server, { now: () => clock })
    const before = await client.preKeyStatus()
    await client.maintainPreKeys()
    expect((await client.preKeyStatus()).signedPreKeyId).toBe(before.signedPreKeyId)
    // The server stamped the key a little after our clock was read: step well past the period.
    clock += SIGNED_PREKEY_ROTATION_MS + 60_000
    await client.maintainPreKeys()
    expect((await client.preKeyStatus()).signedPreKeyId).not.toBe(before.signedPreKeyId)
  })
})
