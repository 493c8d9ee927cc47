import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { toBase64Url, toHex } from '../shared/bytes.js'
import type { LoginResponse } from '../shared/codec/api.js'
import { preKeyToJson } from '../shared/codec/keys.js'
import { generateOneTimePreKeys, publicPreKey } from '../shared/identity.js'
import { decryptToken, makeClient, startServer, type TestServer } from './test/harness.js'

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

  it('a register + login + bundle + upload + logout flow writes no password, token or key material', async () => {
    const bob = await makeClient()
    const alice = await makeClient()
    const secrets: string[] = []
    for (const client of [alice, bob]) {
      const body = client.registerBody()
      expect((await server.request('/api/v1/register', { body })).status).toBe(201)
      secrets.push(client.password, body.loginKey, body.identity.identityKey, body.identity.signingKey)
      secrets.push(body.identity.identitySignature, body.signedPreKey.publicKey, body.signedPreKey.signature)
      for (const preKey of body.oneTimePreKeys) secrets.push(preKey.publicKey, preKey.signature)
    }
    const loginResponse = await server.request('/api/v1/login', {
      body: { username: alice.username, password: alice.password },
    })
    const encryptedToken = (loginResponse.body as LoginResponse).encryptedToken
    const token = await decryptToken(alice, loginResponse.body as LoginResponse)
    secrets.push(encryptedToken, toBase64Url(token), toHex(token), Buffer.from(token).toString('base64'))

    const failed = await server.request('/api/v1/login', {
      body: { username: alice.username, password: 'a-wrong-password-attempt' },
    })
    expect(failed.status).toBe(401)
    secrets.push('a-wrong-password-attempt')

    const bundle = await server.request(`/api/v1/users/${bob.username}/bundle`, { token })
    expect(bundle.status).toBe(200)
    const more = await generateOneTimePreKeys(alice.identity, 900, 3)
    const upload = await server.request('/api/v1/keys/one-time', {
      token,
      body: { oneTimePreKeys: more.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
    })
    expect(upload.status).toBe(200)
    for (const preKey of more)
      secrets.push(toBase64Url(preKey.keyPair.publicKey), toBase64Url(preKey.signature))
    expect((await server.request('/api/v1/logout', { method: 'POST', token })).status).toBe(204)

    const output = lines.join('')
    // The log is not empty: requests, refusals and events were recorded.
    expect(output).toContain('/api/v1/login')
    expect(output).toContain('E2E_ERR_INVALID_CREDENTIALS')
    expect(output).toContain('"event":"bundle"')
    for (const secret of secrets) {
      expect(output.includes(secret), `log output contains a secret of length ${secret.length}`).toBe(false)
    }
    expect(output).not.toMatch(/bearer/i)
  })
})
