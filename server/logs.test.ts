import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../shared/address.js'
import { toBase64Url, toHex } from '../shared/bytes.js'
import type { LoginResponse } from '../shared/codec/api.js'
import { preKeyToJson } from '../shared/codec/keys.js'
import { generateOneTimePreKeys, publicPreKey } from '../shared/identity.js'
import { loggerOptions } from './log.js'
import {
  decryptToken,
  login,
  loginSecretFor,
  makeClient,
  startServer,
  type TestServer,
} from './test/harness.js'
import { connect } from './test/ws-client.js'

describe('logger options', () => {
  it('redact tokens, passwords, authorization headers and bodies at any depth', async () => {
    const lines: string[] = []
    // The logger exactly as build() makes it: Fastify's pino with log.ts's options.
    const app = Fastify({
      logger: loggerOptions({ level: 'trace', stream: { write: (line) => lines.push(line) } }),
    })
    const secret = (name: string) => `${name}-${toBase64Url(crypto.getRandomValues(new Uint8Array(12)))}`
    const secrets = {
      token: secret('token'),
      nestedToken: secret('nested-token'),
      deepToken: secret('deep-token'),
      password: secret('password'),
      nestedPassword: secret('nested-password'),
      deepPassword: secret('deep-password'),
      loginSecret: secret('login-secret'),
      newLoginSecret: secret('new-login-secret'),
      deepLoginSecret: secret('deep-login-secret'),
      authorization: secret('authorization'),
      headerAuthorization: secret('header-authorization'),
      requestAuthorization: secret('request-authorization'),
      query: secret('query'),
      body: secret('body'),
      nestedBody: secret('nested-body'),
      deepBody: secret('deep-body'),
      listedBody: secret('listed-body'),
      bodyField: secret('body-field'),
    }
    app.log.info({ event: 'top', token: secrets.token, password: secrets.password, body: secrets.body })
    app.log.info({
      event: 'secrets',
      loginSecret: secrets.loginSecret,
      newLoginSecret: secrets.newLoginSecret,
    })
    app.log.info({ event: 'deep-secret', a: { b: { loginSecret: secrets.deepLoginSecret } } })
    app.log.info({
      event: 'one-down',
      session: { token: secrets.nestedToken },
      frame: { body: secrets.nestedBody },
    })
    app.log.info({
      event: 'deeper',
      request: { payload: { credentials: { password: secrets.deepPassword, token: secrets.deepToken } } },
      relay: { frame: { message: { body: secrets.deepBody } } },
      sends: [{ id: 'a', body: secrets.listedBody }],
    })
    app.log.warn({
      event: 'http',
      request: { body: { password: secrets.nestedPassword, note: secrets.bodyField } },
    })
    app.log.info({ event: 'headers', authorization: `Bearer ${secrets.authorization}` })
    app.log.info({ event: 'headers', headers: { authorization: `Bearer ${secrets.headerAuthorization}` } })
    app.log.info({
      event: 'request',
      req: {
        method: 'GET',
        url: `/api/v1/keys/status?token=${secrets.query}`,
        headers: { authorization: `Bearer ${secrets.requestAuthorization}` },
      },
    })
    await app.close()

    const output = lines.join('')
    for (const event of [
      'top',
      'secrets',
      'deep-secret',
      'one-down',
      'deeper',
      'http',
      'headers',
      'request',
    ]) {
      expect(output).toContain(`"event":"${event}"`)
    }
    expect(output).toContain('[redacted]')
    expect(output).toContain('"path":"/api/v1/keys/status"')
    for (const [name, value] of Object.entries(secrets)) {
      expect(output.includes(value), `the log shows the ${name}`).toBe(false)
    }
    expect(output).not.toMatch(/bearer/i)
  })
})

describe('logs', () => {
  const lines: string[] = []
  let server: TestServer
  beforeAll(async () => {
    server = await startServer({
      log: { level: 'trace', stream: { write: (line: string) => lines.push(line) } },
    })
  })
  afterAll(async () => {
    await server?.close()
  })

  it('a register + login + bundle + upload + relay send + logout flow writes no password, token, key or message body', async () => {
    const bob = await makeClient()
    const alice = await makeClient()
    const secrets: string[] = []
    for (const client of [alice, bob]) {
      const body = client.registerBody()
      expect((await server.request('/api/v1/register', { body })).status).toBe(201)
      secrets.push(
        client.password,
        client.loginSecret,
        body.loginKey,
        body.identity.identityKey,
        body.identity.signingKey,
      )
      secrets.push(body.identity.identitySignature, body.signedPreKey.publicKey, body.signedPreKey.signature)
      for (const preKey of body.oneTimePreKeys) secrets.push(preKey.publicKey, preKey.signature)
    }
    const loginResponse = await server.request('/api/v1/login', {
      body: { username: alice.username, loginSecret: alice.loginSecret },
    })
    const encryptedToken = (loginResponse.body as LoginResponse).encryptedToken
    const token = await decryptToken(alice, loginResponse.body as LoginResponse)
    secrets.push(encryptedToken, toBase64Url(token), toHex(token), Buffer.from(token).toString('base64'))

    const failed = await server.request('/api/v1/login', {
      body: { username: alice.username, loginSecret: loginSecretFor('a-wrong-password-attempt') },
    })
    expect(failed.status).toBe(401)
    secrets.push('a-wrong-password-attempt', loginSecretFor('a-wrong-password-attempt'))

    const bundle = await server.request(`/api/v1/users/${bob.username}/bundle`, { token })
    expect(bundle.status).toBe(200)
    const more = await generateOneTimePreKeys(alice.identity, DEFAULT_DEVICE_ID, 900, 3)
    const upload = await server.request('/api/v1/keys/one-time', {
      token,
      body: { oneTimePreKeys: more.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
    })
    expect(upload.status).toBe(200)
    for (const preKey of more)
      secrets.push(toBase64Url(preKey.keyPair.publicKey), toBase64Url(preKey.signature))

    // A message over the relay: alice's socket authenticates with her token and sends a body that
    // stands for ciphertext; bob's socket (his own token) receives and acknowledges it.
    const bobToken = await login(server, bob)
    secrets.push(toBase64Url(bobToken))
    const a = await connect(server, token, 'alice')
    const b = await connect(server, bobToken, 'bob')
    const ciphertext = toBase64Url(crypto.getRandomValues(new Uint8Array(200)))
    secrets.push(ciphertext)
    const id = a.sendMessage(bob.username, { body: ciphertext })
    await a.next('accepted')
    const delivered = await b.next('deliver')
    expect(delivered).toMatchObject({ id, body: ciphertext })
    b.ack(delivered.seq)
    await b.fence()
    await a.close()
    await b.close()

    expect((await server.request('/api/v1/logout', { method: 'POST', token })).status).toBe(204)

    const output = lines.join('')
    // The log is not empty: requests, refusals and events were recorded.
    expect(output).toContain('/api/v1/login')
    expect(output).toContain('E2E_ERR_INVALID_CREDENTIALS')
    expect(output).toContain('"event":"bundle"')
    expect(output).toContain('"path":"/ws"')
    for (const secret of secrets) {
      expect(output.includes(secret), `log output contains a secret of length ${secret.length}`).toBe(false)
    }
    expect(output).not.toMatch(/bearer/i)
    // Nor who fetched whose bundle: no target name in a path, no user ids beside the bundle event.
    expect(output).toContain('"path":"/api/v1/users/:username/bundle"')
    expect(output).not.toContain(`/users/${bob.username}`)
    const bundleLines = lines.filter((line) => line.includes('"event":"bundle"'))
    expect(bundleLines).toHaveLength(1)
    expect(JSON.parse(bundleLines[0]!)).not.toHaveProperty('requester')
    expect(JSON.parse(bundleLines[0]!)).not.toHaveProperty('target')
  })
})
