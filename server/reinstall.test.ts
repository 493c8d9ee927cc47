/**
 * POST /api/v1/reinstall: a user whose device is gone starts over with new keys, proven by the
 * password. Over real TLS and WebSockets: wrong passwords are refused like logins, the old tokens
 * and sockets end, the new keys are served, and watchers learn of the change at once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fromBase64Url } from '../shared/bytes.js'
import { FRAME_VERSION } from '../shared/codec/frames.js'
import { generateRsaOaepKeyPair } from '../shared/crypto/primitives.js'
import {
  decryptToken,
  loginSecretFor,
  makeClient,
  signUp,
  startServer,
  type TestServer,
} from './test/harness.js'
import { connect } from './test/ws-client.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

describe('reinstall', () => {
  it('needs the password, answering unknown users and wrong passwords alike', async () => {
    const { client } = await signUp(server)
    const replacement = await makeClient({ username: client.username, password: client.password })
    const wrong = await server.request('/api/v1/reinstall', {
      body: { ...replacement.registerBody(), loginSecret: loginSecretFor(`${client.password}!`) },
    })
    const unknown = await server.request('/api/v1/reinstall', {
      body: { ...replacement.registerBody(), username: 'nobody-here-at-all' },
    })
    expect(wrong.status).toBe(401)
    expect(unknown.status).toBe(401)
    expect(wrong.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')
    expect(unknown.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')
    const identity = await server.request(`/api/v1/users/${client.username}/identity`, {
      token: (await signUp(server)).token,
    })
    expect(fromBase64Url(identity.body.identity.identityKey)).toEqual(client.identity.public.identityKey)
  })

  it('replaces the keys, ends old sessions and sockets, and tells watchers', async () => {
    const bob = await signUp(server)
    const alice = await signUp(server)
    const bobSocket = await connect(server, bob.token, 'bob')
    const aliceSocket = await connect(server, alice.token, 'alice')
    bobSocket.share([alice.client.username])
    await bobSocket.fence()
    aliceSocket.send({ v: FRAME_VERSION, type: 'presence.subscribe', users: [bob.client.username] })
    await aliceSocket.next('presence')

    // A new device: new identity, new prekeys and a new RSA login key.
    const replacement = await makeClient({
      username: bob.client.username,
      password: bob.client.password,
      oneTimePreKeys: 3,
      loginKey: await generateRsaOaepKeyPair(),
    })
    const response = await server.request('/api/v1/reinstall', { body: replacement.registerBody() })
    expect(response.status).toBe(200)
    expect(response.body.username).toBe(bob.client.username)

    expect((await aliceSocket.next('identity.changed')).username).toBe(bob.client.username)
    await bobSocket.closed
    const oldToken = await server.request('/api/v1/keys/status', { token: bob.token })
    expect(oldToken.status).toBe(401)

    const bundle = await server.request(`/api/v1/users/${bob.client.username}/bundle`, { token: alice.token })
    expect(fromBase64Url(bundle.body.identity.identityKey)).toEqual(replacement.identity.public.identityKey)
    expect(fromBase64Url(bundle.body.signedPreKey.publicKey)).toEqual(
      replacement.signedPreKey.keyPair.publicKey,
    )
    expect(bundle.body.oneTimePreKey.keyId).toBe(replacement.oneTimePreKeys[0]!.keyId)

    // Tokens are now encrypted to the new device's RSA key, and only it can read them.
    const login = await server.request('/api/v1/login', {
      body: { username: bob.client.username, loginSecret: bob.client.loginSecret },
    })
    expect(login.status).toBe(200)
    expect(await decryptToken(replacement, login.body)).toHaveLength(32)
    await expect(decryptToken(bob.client, login.body)).rejects.toMatchObject({
      code: 'E2E_ERR_DECRYPTION_FAILED',
    })
    aliceSocket.ws.close()
  })
})
