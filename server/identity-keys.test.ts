/**
 * Keys bound to names (issue 10, item 7), on the server's side: no account may register, or
 * reinstall with, an identity key or a signing key that another account holds. Over real TLS, on
 * SQLite and PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { concatBytes, fromBase64Url } from '../shared/bytes.js'
import { publicIdentityToJson } from '../shared/codec/keys.js'
import { ed25519Sign } from '../shared/crypto/primitives.js'
import { IDENTITY_SIGNATURE_LABEL } from '../shared/labels.js'
import { DIALECTS, postgresUnavailable } from './test/databases.js'
import {
  makeClient,
  register,
  signUp,
  startServer,
  type TestClient,
  type TestServer,
} from './test/harness.js'

const pgSkip = await postgresUnavailable()

/**
 * `client`'s registration (name, password, login key) carrying `victim`'s public identity and
 * prekeys, all of it public: what an unknown key-share needs the server to accept.
 */
function withIdentityOf(client: TestClient, victim: TestClient) {
  const { identity, signedPreKey, oneTimePreKeys } = victim.registerBody()
  return { ...client.registerBody(), identity, signedPreKey, oneTimePreKeys }
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`identity keys on ${dialect}`, () => {
    let server: TestServer
    beforeAll(async () => {
      server = await startServer({ dialect })
    })
    afterAll(async () => {
      await server?.close()
    })

    async function identityOf(username: string) {
      const { token } = await signUp(server)
      const response = await server.request(`/api/v1/users/${username}/identity`, { token })
      return fromBase64Url(response.body.identity.identityKey)
    }

    it("refuses to register another account's whole public identity under a new name (409 E2E_ERR_IDENTITY_KEY_TAKEN)", async () => {
      const alice = await makeClient()
      await register(server, alice)
      // Eve copies alice's public identity and prekeys (keys and signatures, all public).
      const eve = await makeClient()
      const response = await server.request('/api/v1/register', { body: withIdentityOf(eve, alice) })
      expect(response.status).toBe(409)
      expect(response.body).toEqual({
        error: { code: 'E2E_ERR_IDENTITY_KEY_TAKEN', message: expect.stringMatching(/^expected .*, got /) },
      })
      // Nothing of eve's attempt was stored; alice keeps her keys.
      const lookup = await server.request(`/api/v1/users?query=${eve.username}`, {
        token: (await signUp(server)).token,
      })
      expect(lookup.body.users).toEqual([])
      expect(await identityOf(alice.username)).toEqual(alice.identity.public.identityKey)
    })

    it("refuses another account's identity key vouched for by a signing key of one's own", async () => {
      const alice = await makeClient()
      await register(server, alice)
      const eve = await makeClient()
      // A valid identity: eve's own signing key signs alice's (public) X25519 key.
      const identitySignature = await ed25519Sign(
        eve.identity.signing.privateKey,
        concatBytes(IDENTITY_SIGNATURE_LABEL, alice.identity.public.identityKey),
      )
      const identity = publicIdentityToJson({
        identityKey: alice.identity.public.identityKey,
        signingKey: eve.identity.public.signingKey,
        identitySignature,
      })
      const response = await server.request('/api/v1/register', {
        body: { ...eve.registerBody(), identity },
      })
      expect(response.status).toBe(409)
      expect(response.body.error.code).toBe('E2E_ERR_IDENTITY_KEY_TAKEN')
    })

    it('lets exactly one of two concurrent registrations of the same keys win', async () => {
      const first = await makeClient()
      const second = await makeClient()
      const responses = await Promise.all([
        server.request('/api/v1/register', { body: first.registerBody() }),
        server.request('/api/v1/register', { body: withIdentityOf(second, first) }),
      ])
      expect(responses.map((response) => response.status).sort()).toEqual([201, 409])
      expect(responses.find((response) => response.status === 409)!.body.error.code).toBe(
        'E2E_ERR_IDENTITY_KEY_TAKEN',
      )
    })

    it("refuses a reinstall with another account's keys, and allows one with the account's own", async () => {
      const alice = await makeClient()
      await register(server, alice)
      const { client: eve } = await signUp(server)
      const stolen = await server.request('/api/v1/reinstall', {
        body: { ...withIdentityOf(eve, alice), password: eve.password },
      })
      expect(stolen.status).toBe(409)
      expect(stolen.body.error.code).toBe('E2E_ERR_IDENTITY_KEY_TAKEN')
      expect(await identityOf(eve.username)).toEqual(eve.identity.public.identityKey)

      // Starting over with the keys one already holds (a restored backup) is not a copy.
      const again = await server.request('/api/v1/reinstall', { body: alice.registerBody() })
      expect(again.status).toBe(200)
      expect(await identityOf(alice.username)).toEqual(alice.identity.public.identityKey)
    })
  })
}
