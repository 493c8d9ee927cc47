import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../shared/address.js'
import { fromBase64Url, toBase64Url } from '../shared/bytes.js'
import type { PreKeyBundleResponse } from '../shared/codec/api.js'
import { preKeyBundleFromJson, preKeyToJson } from '../shared/codec/keys.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  publicPreKey,
  verifyPreKeyBundle,
} from '../shared/identity.js'
import { BUNDLE_REFETCH_WINDOW_MS, ONE_TIME_PREKEY_CLAIMS_PER_TARGET } from './limits.js'
import { createTestDatabase, DIALECTS, postgresUnavailable } from './test/databases.js'
import { signUp, startServer, type TestServer } from './test/harness.js'
import { connect, newMessageId } from './test/ws-client.js'

const pgSkip = await postgresUnavailable()

const bundlePath = (username: string) => `/api/v1/users/${encodeURIComponent(username)}/bundle`
const STATUS = '/api/v1/keys/status'
const ONE_TIME = '/api/v1/keys/one-time'
const SIGNED = '/api/v1/keys/signed'

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(
    `key directory over TLS (${dialect})`,
    () => {
      let server: TestServer
      beforeAll(async () => {
        server = await startServer({
          database: await createTestDatabase(dialect),
          limits: { maxOneTimePreKeysPerUser: 120 },
        })
      })
      afterAll(async () => {
        await server?.stop()
        await server?.database.dispose()
      })

      it('serves a verifiable bundle, then falls back to the signed prekey alone', async () => {
        const bob = await signUp(server, { oneTimePreKeys: 2 })
        const alice = await signUp(server)
        const seen: number[] = []
        for (let i = 0; i < 2; i++) {
          const response = await server.request(bundlePath(bob.client.username), { token: alice.token })
          expect(response.status).toBe(200)
          const bundle = response.body as PreKeyBundleResponse
          await verifyPreKeyBundle(preKeyBundleFromJson(bundle), bob.client.username)
          expect(bundle.identity.identityKey).toBe(toBase64Url(bob.client.identity.public.identityKey))
          seen.push(bundle.oneTimePreKey!.keyId)
        }
        expect(seen.sort()).toEqual([1, 2])
        const last = await server.request(bundlePath(bob.client.username), { token: alice.token })
        expect(last.status).toBe(200)
        expect(last.body.oneTimePreKey).toBeUndefined()
        expect(last.body.signedPreKey.keyId).toBe(1)
        expect((await server.request(STATUS, { token: bob.token })).body.oneTimePreKeys).toBe(0)
      })

      it('never hands out a one-time prekey twice under many parallel requests', async () => {
        const bob = await signUp(server, { oneTimePreKeys: 40 })
        const requesters = await Promise.all([signUp(server), signUp(server), signUp(server)])
        const responses = await Promise.all(
          Array.from({ length: 60 }, (_, i) =>
            server.request(bundlePath(bob.client.username), {
              token: requesters[i % requesters.length]!.token,
            }),
          ),
        )
        expect(responses.map((response) => response.status)).toEqual(Array(60).fill(200))
        const handedOut = responses
          .map((response) => (response.body as PreKeyBundleResponse).oneTimePreKey?.keyId)
          .filter((keyId) => keyId !== undefined)
        expect(handedOut).toHaveLength(40)
        expect(new Set(handedOut).size).toBe(40)
      })

      it('hands out bundles while the queue commits messages on its own connection', async () => {
        // A bundle claim reads, then deletes, in one transaction. In SQLite a transaction that has
        // read cannot take the write lock once another connection (the queue's) has committed
        // since: it failed at once with SQLITE_BUSY, a 500, unless it writes first.
        const bob = await signUp(server, { oneTimePreKeys: 100 })
        const alice = await signUp(server)
        const carol = await signUp(server)
        const sender = await connect(server, carol.token)
        const body = toBase64Url(new Uint8Array(200))
        let sending = true
        const traffic = (async () => {
          while (sending) {
            for (let i = 0; i < 20; i++)
              sender.send({ v: 1, type: 'send', id: newMessageId(), to: alice.client.username, body })
            await sender.take('accepted', 20)
          }
        })()
        const statuses: number[] = []
        for (let round = 0; round < 10; round++) {
          const responses = await Promise.all(
            Array.from({ length: 8 }, () =>
              server.request(bundlePath(bob.client.username), { token: alice.token }),
            ),
          )
          statuses.push(...responses.map((response) => response.status))
        }
        sending = false
        await traffic
        await sender.close()
        expect(statuses).toEqual(Array(80).fill(200))
      })

      it('answers HEAD for a bundle with 404, claiming nothing (a GET claims a one-time prekey)', async () => {
        const bob = await signUp(server, { oneTimePreKeys: 3 })
        const alice = await signUp(server)
        const head = await server.request(bundlePath(bob.client.username), {
          method: 'HEAD',
          token: alice.token,
        })
        expect(head.status).toBe(404)
        expect((await server.request(STATUS, { token: bob.token })).body.oneTimePreKeys).toBe(3)
      })

      it('requires authentication for every directory and key route', async () => {
        for (const path of [
          bundlePath('anyone'),
          '/api/v1/users/anyone/identity',
          '/api/v1/users?query=a',
          STATUS,
        ]) {
          const response = await server.request(path)
          expect(response.status).toBe(401)
          expect(response.body.error.code).toBe('E2E_ERR_UNAUTHENTICATED')
        }
        const upload = await server.request(ONE_TIME, { body: { oneTimePreKeys: [] } })
        expect(upload.status).toBe(401)
      })

      it('answers 404 E2E_ERR_USER_NOT_FOUND for an unknown user', async () => {
        const alice = await signUp(server)
        for (const path of [bundlePath('nobody-at-all'), '/api/v1/users/nobody-at-all/identity']) {
          const response = await server.request(path, { token: alice.token })
          expect(response.status).toBe(404)
          expect(response.body.error.code).toBe('E2E_ERR_USER_NOT_FOUND')
        }
      })

      it('publishes identities and finds users by prefix, case-insensitively', async () => {
        const alice = await signUp(server)
        const identity = await server.request(
          `/api/v1/users/${alice.client.username.toUpperCase()}/identity`,
          {
            token: alice.token,
          },
        )
        expect(identity.status).toBe(200)
        expect(identity.body).toEqual({
          username: alice.client.username,
          identity: {
            identityKey: toBase64Url(alice.client.identity.public.identityKey),
            signingKey: toBase64Url(alice.client.identity.public.signingKey),
            identitySignature: toBase64Url(alice.client.identity.public.identitySignature),
          },
        })
        const search = await server.request(
          `/api/v1/users?query=${alice.client.username.slice(0, -1).toUpperCase()}`,
          {
            token: alice.token,
          },
        )
        expect(search.status).toBe(200)
        expect(search.body.users).toContainEqual({ username: alice.client.username })
        const none = await server.request('/api/v1/users?query=%25%25%25', { token: alice.token })
        expect(none.body).toEqual({ users: [] })
        // Fewer than USER_SEARCH_MIN_LENGTH characters (after normalisation) would page through the
        // directory a letter at a time: refused.
        for (const query of ['a', 'AL', '%20al%20']) {
          const short = await server.request(`/api/v1/users?query=${query}`, { token: alice.token })
          expect(short.status).toBe(400)
          expect(short.body.error.code).toBe('E2E_ERR_BAD_REQUEST')
        }
      })

      it('uploads one-time prekeys with verified signatures, refusing conflicts and overflow', async () => {
        const { client, token } = await signUp(server, { oneTimePreKeys: 5 })
        const more = await generateOneTimePreKeys(client.identity, DEFAULT_DEVICE_ID, 100, 100)
        const upload = await server.request(ONE_TIME, {
          token,
          body: { oneTimePreKeys: more.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
        })
        expect(upload.status).toBe(200)
        expect(upload.body).toMatchObject({ oneTimePreKeys: 105, signedPreKeyId: 1 })

        const conflict = await server.request(ONE_TIME, {
          token,
          body: { oneTimePreKeys: [preKeyToJson(publicPreKey(more[0]!))] },
        })
        expect(conflict.status).toBe(409)
        expect(conflict.body.error.code).toBe('E2E_ERR_PREKEY_ID_CONFLICT')

        const overflow = await generateOneTimePreKeys(client.identity, DEFAULT_DEVICE_ID, 1000, 20)
        const tooMany = await server.request(ONE_TIME, {
          token,
          body: { oneTimePreKeys: overflow.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
        })
        expect(tooMany.status).toBe(409)
        expect(tooMany.body.error.code).toBe('E2E_ERR_TOO_MANY_PREKEYS')

        const oversized = [
          ...(await generateOneTimePreKeys(client.identity, DEFAULT_DEVICE_ID, 5000, 100)),
          ...(await generateOneTimePreKeys(client.identity, DEFAULT_DEVICE_ID, 5100, 1)),
        ]
        const batch = await server.request(ONE_TIME, {
          token,
          body: { oneTimePreKeys: oversized.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
        })
        expect(batch.status).toBe(400)
        expect(batch.body.error.code).toBe('E2E_ERR_BAD_REQUEST')
        expect((await server.request(STATUS, { token })).body.oneTimePreKeys).toBe(105)
      })

      it("refuses keys not signed by the caller's own signing key (nobody uploads for another user)", async () => {
        const alice = await signUp(server)
        const mallory = await signUp(server)
        // Mallory cannot name a target: the routes act on the token's user, and extra fields are refused.
        const malloryKeys = await generateOneTimePreKeys(mallory.client.identity, DEFAULT_DEVICE_ID, 500, 2)
        const named = await server.request(ONE_TIME, {
          token: mallory.token,
          body: {
            username: alice.client.username,
            oneTimePreKeys: malloryKeys.map((k) => preKeyToJson(publicPreKey(k))),
          },
        })
        expect(named.status).toBe(400)
        // Keys signed by someone else's identity are refused for the caller's account.
        const foreign = await generateOneTimePreKeys(await generateIdentity(), DEFAULT_DEVICE_ID, 600, 2)
        const response = await server.request(ONE_TIME, {
          token: alice.token,
          body: { oneTimePreKeys: foreign.map((preKey) => preKeyToJson(publicPreKey(preKey))) },
        })
        expect(response.status).toBe(400)
        expect(response.body.error.code).toBe('E2E_ERR_BAD_SIGNATURE')
        expect((await server.request(STATUS, { token: alice.token })).body.oneTimePreKeys).toBe(5)
        expect((await server.request(STATUS, { token: mallory.token })).body.oneTimePreKeys).toBe(5)
      })

      it('rotates the signed prekey after verifying it; bundles then carry the new one', async () => {
        const bob = await signUp(server)
        const alice = await signUp(server)
        const next = await generateSignedPreKey(bob.client.identity, DEFAULT_DEVICE_ID, 2)
        const rotated = await server.request(SIGNED, {
          method: 'PUT',
          token: bob.token,
          body: { signedPreKey: preKeyToJson(publicPreKey(next)) },
        })
        expect(rotated.status).toBe(200)
        expect(rotated.body.signedPreKeyId).toBe(2)
        const bundle = await server.request(bundlePath(bob.client.username), { token: alice.token })
        expect(bundle.body.signedPreKey.publicKey).toBe(toBase64Url(next.keyPair.publicKey))

        const reused = await server.request(SIGNED, {
          method: 'PUT',
          token: bob.token,
          body: { signedPreKey: preKeyToJson(publicPreKey(next)) },
        })
        expect(reused.status).toBe(409)

        const forged = preKeyToJson(
          publicPreKey(await generateSignedPreKey(await generateIdentity(), DEFAULT_DEVICE_ID, 3)),
        )
        const bad = await server.request(SIGNED, {
          method: 'PUT',
          token: bob.token,
          body: { signedPreKey: forged },
        })
        expect(bad.status).toBe(400)
        expect(bad.body.error.code).toBe('E2E_ERR_BAD_SIGNATURE')
        // A one-time prekey's signature is not valid as a signed prekey's (different labels).
        const [oneTime] = await generateOneTimePreKeys(bob.client.identity, DEFAULT_DEVICE_ID, 4, 1)
        const relabelled = await server.request(SIGNED, {
          method: 'PUT',
          token: bob.token,
          body: { signedPreKey: preKeyToJson(publicPreKey(oneTime!)) },
        })
        expect(relabelled.status).toBe(400)
        const status = await server.request(STATUS, { token: bob.token })
        expect(status.body.signedPreKeyId).toBe(2)
        expect(fromBase64Url(bundle.body.signedPreKey.signature)).toHaveLength(64)
      })
    },
  )
}

describe('bundle fetches limited per target, over TLS (default limits, injected clock)', () => {
  let server: TestServer
  let clock = 1_800_000_000_000
  beforeAll(async () => {
    // The harness relaxes these two for other tests; here they are the defaults of server/limits.ts.
    server = await startServer({
      now: () => clock,
      limits: {
        oneTimePreKeyClaimsPerTarget: ONE_TIME_PREKEY_CLAIMS_PER_TARGET,
        bundleRefetchWindowMs: BUNDLE_REFETCH_WINDOW_MS,
      },
    })
  })
  afterAll(async () => {
    await server?.close()
  })

  const fetchBundle = async (username: string, token: Uint8Array) => {
    const response = await server.request(bundlePath(username), { token })
    expect(response.status).toBe(200)
    await verifyPreKeyBundle(preKeyBundleFromJson(response.body), username)
    return response.body as PreKeyBundleResponse
  }

  it('a re-fetch by the same requester within the window claims no key; after the window, one more', async () => {
    const bob = await signUp(server, { oneTimePreKeys: 5 })
    const alice = await signUp(server)
    const carol = await signUp(server)
    const first = await fetchBundle(bob.client.username, alice.token)
    expect(first.oneTimePreKey?.keyId).toBe(1)
    for (let i = 0; i < 20; i++) {
      clock += 25_000
      const again = await fetchBundle(bob.client.username, alice.token)
      expect(again.oneTimePreKey).toBeUndefined()
      expect(again.signedPreKey.keyId).toBe(first.signedPreKey.keyId)
    }
    // Another requester still gets a key of its own.
    expect((await fetchBundle(bob.client.username, carol.token)).oneTimePreKey?.keyId).toBe(2)
    clock += BUNDLE_REFETCH_WINDOW_MS - 20 * 25_000
    expect((await fetchBundle(bob.client.username, alice.token)).oneTimePreKey?.keyId).toBe(3)
    const held = await server.request(ONE_TIME, { token: bob.token })
    expect(held.status).toBe(200)
    expect(held.body).toEqual({ keyIds: [4, 5] })
    expect((await server.request(STATUS, { token: bob.token })).body.oneTimePreKeys).toBe(2)
  })

  it('beyond the per-target limit, bundles come without a one-time prekey until the window moves on', async () => {
    const bob = await signUp(server, { oneTimePreKeys: 100 })
    const requesters = await Promise.all(
      Array.from({ length: ONE_TIME_PREKEY_CLAIMS_PER_TARGET.max + 5 }, () => signUp(server)),
    )
    const start = clock
    const got = []
    for (const requester of requesters) {
      clock += 1_000
      got.push((await fetchBundle(bob.client.username, requester.token)).oneTimePreKey !== undefined)
    }
    expect(got.filter(Boolean)).toHaveLength(ONE_TIME_PREKEY_CLAIMS_PER_TARGET.max)
    expect(got.slice(ONE_TIME_PREKEY_CLAIMS_PER_TARGET.max)).toEqual([false, false, false, false, false])
    expect((await server.request(STATUS, { token: bob.token })).body.oneTimePreKeys).toBe(
      100 - ONE_TIME_PREKEY_CLAIMS_PER_TARGET.max,
    )
    // Once the first claim is a window old, the next requester gets a key again.
    clock = start + 1_000 + ONE_TIME_PREKEY_CLAIMS_PER_TARGET.timeWindowMs
    expect((await fetchBundle(bob.client.username, requesters.at(-1)!.token)).oneTimePreKey).toBeDefined()
  })

  it('lists only the caller’s own one-time prekey ids', async () => {
    const bob = await signUp(server, { oneTimePreKeys: 3 })
    const alice = await signUp(server, { oneTimePreKeys: 2 })
    expect((await server.request(ONE_TIME, { token: bob.token })).body).toEqual({ keyIds: [1, 2, 3] })
    expect((await server.request(ONE_TIME, { token: alice.token })).body).toEqual({ keyIds: [1, 2] })
    expect((await server.request(ONE_TIME)).status).toBe(401)
  })
})
