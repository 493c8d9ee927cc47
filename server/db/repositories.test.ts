import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { PublicPreKey } from '../../shared/identity.js'
import { isServerError, ServerErrorCode } from '../errors.js'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { findDevice, primaryDevice } from './devices.js'
import {
  claimOneTimePreKey,
  claimPreKeyBundle,
  claimsKeptMs,
  countOneTimePreKeys,
  currentSignedPreKey,
  listOneTimePreKeyIds,
  purgeOneTimePreKeyClaims,
  rotateSignedPreKey,
  uploadOneTimePreKeys,
} from './prekeys.js'
import {
  acknowledgeUpTo,
  countQueued,
  fetchQueued,
  KyselyQueueRepository,
  purgeExpiredMessages,
} from './queue.js'
import { countTokens, deleteToken, findSession, insertToken, purgeExpiredTokens } from './tokens.js'
import {
  createAccount,
  findUserByUsername,
  replaceAccountKeys,
  searchUsernames,
  usernameExists,
} from './users.js'

const pgSkip = await postgresUnavailable()

const bytes = (length: number) => new Uint8Array(randomBytes(length))
const preKey = (keyId: number): PublicPreKey => ({ keyId, publicKey: bytes(32), signature: bytes(64) })
const preKeys = (first: number, count: number) => Array.from({ length: count }, (_, i) => preKey(first + i))

let nameCounter = 0
function account(overrides: { username?: string; oneTimePreKeys?: PublicPreKey[] } = {}) {
  nameCounter += 1
  return {
    username: overrides.username ?? `user${nameCounter}`,
    passwordHash: '$2b$04$placeholderplaceholderplaceholderplaceholderplacehold',
    loginKey: bytes(422),
    identity: { identityKey: bytes(32), signingKey: bytes(32), identitySignature: bytes(64) },
    signedPreKey: preKey(1),
    oneTimePreKeys: overrides.oneTimePreKeys ?? preKeys(100, 5),
    now: 1_000,
  }
}

/** A claim policy that withholds nothing: every fetch may claim (the old behaviour). */
const unlimited = (requesterId: number, now = 1_000) => ({
  requesterId,
  now,
  claimsPerTarget: { max: 1_000_000, timeWindowMs: 60 * 60_000 },
  refetchWindowMs: 0,
})

async function expectServerError(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  )
  expect(isServerError(error), `expected a ServerError ${code}, got ${String(error)}`).toBe(true)
  expect((error as { code: string }).code).toBe(code)
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`repositories on ${dialect}`, () => {
    let database: TestDatabase
    beforeAll(async () => {
      database = await createTestDatabase(dialect)
    })
    afterAll(async () => {
      await database?.dispose()
    })

    describe('users', () => {
      it('creates an account with its keys in one transaction and finds it by name', async () => {
        const input = account()
        const id = await createAccount(database.db, input)
        const user = await findUserByUsername(database.db, input.username)
        expect(user?.id).toBe(id)
        expect(new Uint8Array(user!.identity_key)).toEqual(input.identity.identityKey)
        const device = await findDevice(database.db, primaryDevice(id))
        expect(new Uint8Array(device!.login_key)).toEqual(input.loginKey)
        expect(device).toMatchObject({ name: null, created_at: input.now, last_seen_at: input.now })
        expect(await countOneTimePreKeys(database.db, primaryDevice(id))).toBe(5)
        expect((await currentSignedPreKey(database.db, primaryDevice(id)))?.key_id).toBe(1)
      })

      it('refuses a taken username with UsernameTaken and stores nothing of the second attempt', async () => {
        const first = account()
        await createAccount(database.db, first)
        await expectServerError(
          createAccount(database.db, { ...account(), username: first.username }),
          ServerErrorCode.UsernameTaken,
        )
      })

      it('lets exactly one of two concurrent registrations of a name win', async () => {
        const username = `race${nameCounter}`
        const results = await Promise.allSettled([
          createAccount(database.db, account({ username })),
          createAccount(database.db, account({ username })),
        ])
        expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1)
        const failure = results.find((result) => result.status === 'rejected') as PromiseRejectedResult
        expect(isServerError(failure.reason, ServerErrorCode.UsernameTaken)).toBe(true)
      })

      it('refuses an identity key or a signing key another account holds with IdentityKeyTaken', async () => {
        const first = account()
        await createAccount(database.db, first)
        for (const identity of [
          { ...account().identity, identityKey: first.identity.identityKey },
          { ...account().identity, signingKey: first.identity.signingKey },
        ]) {
          const copy = { ...account(), identity }
          await expectServerError(createAccount(database.db, copy), ServerErrorCode.IdentityKeyTaken)
          expect(await usernameExists(database.db, copy.username)).toBe(false)
        }
        const other = await createAccount(database.db, account())
        await expectServerError(
          replaceAccountKeys(database.db, other, { ...account(), identity: first.identity }),
          ServerErrorCode.IdentityKeyTaken,
        )
      })

      it('rolls the whole registration back when a prekey cannot be stored', async () => {
        const input = account({ oneTimePreKeys: [preKey(7), preKey(7)] })
        await expect(createAccount(database.db, input)).rejects.toThrow()
        expect(await usernameExists(database.db, input.username)).toBe(false)
      })

      it('searches by prefix, treating LIKE wildcards in the prefix literally', async () => {
        for (const username of ['sam_one', 'samxone', 'sam.two', 'other']) {
          await createAccount(database.db, account({ username }))
        }
        expect(await searchUsernames(database.db, 'sam', 50)).toEqual(['sam.two', 'sam_one', 'samxone'])
        expect(await searchUsernames(database.db, 'sam_', 50)).toEqual(['sam_one'])
        expect(await searchUsernames(database.db, 'sam%', 50)).toEqual([])
        expect(await searchUsernames(database.db, 'sam', 2)).toHaveLength(2)
      })
    })

    describe('prekeys', () => {
      it('hands out each one-time prekey once, lowest id first, then none', async () => {
        const id = await createAccount(database.db, account({ oneTimePreKeys: preKeys(10, 3) }))
        const claimed = [
          await claimOneTimePreKey(database.db, primaryDevice(id)),
          await claimOneTimePreKey(database.db, primaryDevice(id)),
          await claimOneTimePreKey(database.db, primaryDevice(id)),
        ]
        expect(claimed.map((key) => key?.key_id)).toEqual([10, 11, 12])
        expect(await claimOneTimePreKey(database.db, primaryDevice(id))).toBeUndefined()
        const bundle = await claimPreKeyBundle(database.db, primaryDevice(id), unlimited(id))
        expect(bundle?.signedPreKey.key_id).toBe(1)
        expect(bundle?.oneTimePreKey).toBeUndefined()
        expect(bundle?.outcome).toBe('none-left')
      })

      it('never hands out a one-time prekey twice under concurrent claims', async () => {
        const id = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 30) }))
        const results = await Promise.all(
          Array.from({ length: 40 }, () => claimPreKeyBundle(database.db, primaryDevice(id), unlimited(id))),
        )
        const ids = results
          .map((bundle) => bundle?.oneTimePreKey?.key_id)
          .filter((keyId) => keyId !== undefined)
        expect(ids).toHaveLength(30)
        expect(new Set(ids).size).toBe(30)
        expect(await countOneTimePreKeys(database.db, primaryDevice(id))).toBe(0)
      })

      it('hands out at most the per-target limit in a sliding window, whoever asks, then the signed prekey alone', async () => {
        const target = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 20) }))
        const requesters = await Promise.all(
          Array.from({ length: 6 }, () => createAccount(database.db, account())),
        )
        const policy = (requesterId: number, now: number) => ({
          requesterId,
          now,
          claimsPerTarget: { max: 4, timeWindowMs: 60_000 },
          refetchWindowMs: 10_000,
        })
        const outcomes = []
        for (const [i, requester] of requesters.entries()) {
          const bundle = await claimPreKeyBundle(
            database.db,
            primaryDevice(target),
            policy(requester, 1_000 + i),
          )
          outcomes.push([bundle?.outcome, bundle?.oneTimePreKey?.key_id, bundle?.signedPreKey.key_id])
        }
        expect(outcomes).toEqual([
          ['claimed', 1, 1],
          ['claimed', 2, 1],
          ['claimed', 3, 1],
          ['claimed', 4, 1],
          ['withheld', undefined, 1],
          ['withheld', undefined, 1],
        ])
        expect(await countOneTimePreKeys(database.db, primaryDevice(target))).toBe(16)
        // The window slides: once the first claim is a window old, one more may be handed out.
        expect(
          (await claimPreKeyBundle(database.db, primaryDevice(target), policy(requesters[4]!, 61_000)))
            ?.outcome,
        ).toBe('claimed')
        expect(
          (await claimPreKeyBundle(database.db, primaryDevice(target), policy(requesters[5]!, 61_000)))
            ?.outcome,
        ).toBe('withheld')
      })

      it('a re-fetch by the same requester within the window claims nothing; after it, one more', async () => {
        const target = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 5) }))
        const [alice, bob] = await Promise.all([
          createAccount(database.db, account()),
          createAccount(database.db, account()),
        ])
        const policy = (requesterId: number, now: number) => ({
          requesterId,
          now,
          claimsPerTarget: { max: 100, timeWindowMs: 60_000 },
          refetchWindowMs: 10_000,
        })
        const first = await claimPreKeyBundle(database.db, primaryDevice(target), policy(alice, 1_000))
        const again = await claimPreKeyBundle(database.db, primaryDevice(target), policy(alice, 10_999))
        const other = await claimPreKeyBundle(database.db, primaryDevice(target), policy(bob, 10_999))
        const later = await claimPreKeyBundle(database.db, primaryDevice(target), policy(alice, 11_000))
        expect(
          [first, again, other, later].map((bundle) => [bundle?.outcome, bundle?.oneTimePreKey?.key_id]),
        ).toEqual([
          ['claimed', 1],
          ['withheld', undefined],
          ['claimed', 2],
          ['claimed', 3],
        ])
        expect(await listOneTimePreKeyIds(database.db, primaryDevice(target))).toEqual([4, 5])
      })

      it('keeps the per-target limit under concurrent fetches from many requesters', async () => {
        const target = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 30) }))
        const requesters = await Promise.all(
          Array.from({ length: 20 }, () => createAccount(database.db, account())),
        )
        const results = await Promise.all(
          requesters.map((requesterId) =>
            claimPreKeyBundle(database.db, primaryDevice(target), {
              requesterId,
              now: 5_000,
              claimsPerTarget: { max: 7, timeWindowMs: 60_000 },
              refetchWindowMs: 10_000,
            }),
          ),
        )
        expect(results.filter((bundle) => bundle?.outcome === 'claimed')).toHaveLength(7)
        expect(await countOneTimePreKeys(database.db, primaryDevice(target))).toBe(23)
      })

      it('purges claim records once no window reads them', async () => {
        const target = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 5) }))
        const requester = await createAccount(database.db, account())
        const limits = {
          oneTimePreKeyClaimsPerTarget: { max: 10, timeWindowMs: 60_000 },
          bundleRefetchWindowMs: 10_000,
        }
        expect(claimsKeptMs(limits)).toBe(60_000)
        await claimPreKeyBundle(database.db, primaryDevice(target), {
          requesterId: requester,
          now: 2_000_000,
          claimsPerTarget: limits.oneTimePreKeyClaimsPerTarget,
          refetchWindowMs: limits.bundleRefetchWindowMs,
        })
        const claimsOf = () =>
          database.db
            .selectFrom('one_time_prekey_claims')
            .selectAll()
            .where('target_id', '=', target)
            .execute()
        expect(await claimsOf()).toHaveLength(1)
        await purgeOneTimePreKeyClaims(database.db, 2_059_999, claimsKeptMs(limits))
        expect(await claimsOf()).toHaveLength(1)
        await purgeOneTimePreKeyClaims(database.db, 2_060_000, claimsKeptMs(limits))
        expect(await claimsOf()).toEqual([])
      })

      it('uploads one-time prekeys up to the cap, refusing stored ids and overflow atomically', async () => {
        const id = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 5) }))
        expect(await uploadOneTimePreKeys(database.db, primaryDevice(id), preKeys(6, 5), 12)).toBe(10)
        await expectServerError(
          uploadOneTimePreKeys(database.db, primaryDevice(id), [preKey(20), preKey(3)], 12),
          ServerErrorCode.PreKeyIdConflict,
        )
        await expectServerError(
          uploadOneTimePreKeys(database.db, primaryDevice(id), preKeys(30, 3), 12),
          ServerErrorCode.TooManyPreKeys,
        )
        expect(await countOneTimePreKeys(database.db, primaryDevice(id))).toBe(10)
      })

      it('keeps the cap under concurrent uploads', async () => {
        const id = await createAccount(database.db, account({ oneTimePreKeys: preKeys(1, 1) }))
        const uploads = await Promise.allSettled(
          Array.from({ length: 6 }, (_, i) =>
            uploadOneTimePreKeys(database.db, primaryDevice(id), preKeys(1000 + i * 10, 10), 31),
          ),
        )
        expect(uploads.filter((upload) => upload.status === 'fulfilled')).toHaveLength(3)
        expect(await countOneTimePreKeys(database.db, primaryDevice(id))).toBe(31)
      })

      it('rotates the signed prekey, keeping only the newest few, and refuses a reused id', async () => {
        const id = await createAccount(database.db, account())
        for (const keyId of [2, 3, 4, 5])
          await rotateSignedPreKey(database.db, primaryDevice(id), preKey(keyId), 2_000 + keyId, 3)
        expect((await currentSignedPreKey(database.db, primaryDevice(id)))?.key_id).toBe(5)
        const kept = await database.db
          .selectFrom('signed_prekeys')
          .select('key_id')
          .where('user_id', '=', id)
          .orderBy('key_id')
          .execute()
        expect(kept.map((row) => row.key_id)).toEqual([3, 4, 5])
        await expectServerError(
          rotateSignedPreKey(database.db, primaryDevice(id), preKey(4), 3_000, 3),
          ServerErrorCode.PreKeyIdConflict,
        )
        expect((await currentSignedPreKey(database.db, primaryDevice(id)))?.key_id).toBe(5)
      })

      it('stores uint32 key ids at the top of the range', async () => {
        const id = await createAccount(database.db, account({ oneTimePreKeys: [preKey(0xffff_ffff)] }))
        expect((await claimOneTimePreKey(database.db, primaryDevice(id)))?.key_id).toBe(0xffff_ffff)
      })
    })

    describe('tokens', () => {
      it('finds a session by token hash until it expires, and not after logout', async () => {
        const id = await createAccount(database.db, account())
        const tokenHash = bytes(32)
        await insertToken(
          database.db,
          { tokenHash, device: primaryDevice(id), now: 1_000, expiresAt: 5_000 },
          10,
        )
        expect(await findSession(database.db, tokenHash, 4_999)).toMatchObject({
          userId: id,
          expiresAt: 5_000,
        })
        expect(await findSession(database.db, tokenHash, 5_000)).toBeUndefined()
        expect(await findSession(database.db, bytes(32), 1_000)).toBeUndefined()
        expect(await deleteToken(database.db, tokenHash)).toBe(true)
        expect(await findSession(database.db, tokenHash, 1_000)).toBeUndefined()
        expect(await deleteToken(database.db, tokenHash)).toBe(false)
      })

      it('keeps at most N live tokens per user, dropping the oldest, and purges expired ones', async () => {
        const id = await createAccount(database.db, account())
        const hashes = Array.from({ length: 5 }, () => bytes(32))
        const dropped: Uint8Array[][] = []
        for (const [i, tokenHash] of hashes.entries()) {
          dropped.push(
            await insertToken(
              database.db,
              { tokenHash, device: primaryDevice(id), now: 1_000 + i, expiresAt: 10_000 },
              3,
            ),
          )
        }
        // Each insert names the tokens it dropped (so their sockets can be closed).
        expect(dropped).toEqual([[], [], [], [hashes[0]], [hashes[1]]])
        expect(await countTokens(database.db, id)).toBe(3)
        expect(await findSession(database.db, hashes[0]!, 2_000)).toBeUndefined()
        expect(await findSession(database.db, hashes[4]!, 2_000)).toBeDefined()
        expect(await purgeExpiredTokens(database.db, 10_000)).toBeGreaterThanOrEqual(3)
        expect(await countTokens(database.db, id)).toBe(0)
      })
    })

    describe('message queue', () => {
      let alice: number
      let bob: number
      let queue: KyselyQueueRepository
      beforeAll(async () => {
        alice = await createAccount(database.db, account({ username: 'queue-alice' }))
        bob = await createAccount(database.db, account({ username: 'queue-bob' }))
        queue = new KyselyQueueRepository(database.db, dialect, {
          maxMessages: 1_000,
          maxBytes: 1_000_000,
          maxMessagesPerSender: 1_000,
          maxBytesPerSender: 1_000_000,
        })
      })
      const enqueue = async (clientId: Uint8Array, body = bytes(20), expiresAt = 100_000) => {
        const [outcome] = await queue.commit({
          sends: [
            {
              recipientId: bob,
              recipientDevice: 1,
              senderId: alice,
              senderDevice: 1,
              clientId,
              body,
              now: 1_000,
              expiresAt,
            },
          ],
          acks: [],
          now: 1_000,
        })
        return outcome!
      }
      const seqOf = (outcome: Awaited<ReturnType<typeof enqueue>>) =>
        outcome.kind === 'stored' ? outcome.seq : 0
      const ack = (recipient: number, upTo: number) =>
        acknowledgeUpTo(database.db, primaryDevice(recipient), upTo)

      it('fetches in order and acknowledges cumulatively, only the acknowledging recipient’s rows', async () => {
        const ids = Array.from({ length: 5 }, () => bytes(16))
        const seqs: number[] = []
        for (const id of ids) seqs.push(seqOf(await enqueue(id)))
        expect(seqs).toEqual([1, 2, 3, 4, 5])
        expect(await countQueued(database.db, primaryDevice(bob))).toBe(5)
        const batch = await fetchQueued(database.db, primaryDevice(bob), 0, 3, 2_000)
        expect(batch.map((queued) => queued.seq)).toEqual(seqs.slice(0, 3))
        expect(batch[0]).toMatchObject({ sender: 'queue-alice', createdAt: 1_000 })
        expect(new Uint8Array(batch[0]!.clientId)).toEqual(ids[0])
        await ack(bob, seqs[2]!)
        expect(
          (await fetchQueued(database.db, primaryDevice(bob), 0, 10, 2_000)).map((queued) => queued.seq),
        ).toEqual(seqs.slice(3))
        await ack(alice, Number.MAX_SAFE_INTEGER)
        expect(await countQueued(database.db, primaryDevice(bob))).toBe(2)
        await ack(bob, seqs[4]!)
        expect(await countQueued(database.db, primaryDevice(bob))).toBe(0)
      })

      it('leaves a tombstone of the id, the sending device, the receiving device and the expiry only; a retry is a duplicate', async () => {
        const id = bytes(16)
        const first = await enqueue(id)
        await ack(bob, seqOf(first))
        expect(await enqueue(id)).toEqual({ kind: 'duplicate', seq: 0, createdAt: 1_000, delivered: true })
        expect(await countQueued(database.db, primaryDevice(bob))).toBe(0)
        const tombstones = await database.db
          .selectFrom('message_tombstones')
          .selectAll()
          .where('client_id', '=', id)
          .execute()
        // No recipient: of the destination only its device id, and that it was not a sent copy.
        expect(tombstones).toEqual([
          {
            client_id: expect.anything(),
            sender_id: alice,
            sender_device: 1,
            recipient_device: 1,
            to_self: 0,
            expires_at: 100_000,
          },
        ])
      })

      it('never reuses a sequence number after the newest rows are deleted', async () => {
        const a = await enqueue(bytes(16), bytes(8), 1_200)
        await purgeExpiredMessages(database.db, 1_300)
        const b = await enqueue(bytes(16))
        expect(seqOf(b)).toBe(seqOf(a) + 1)
        await ack(bob, seqOf(b))
      })

      it('hides expired messages from fetches and purges them, tombstones included', async () => {
        await enqueue(bytes(16), bytes(8), 1_500)
        const delivered = await enqueue(bytes(16), bytes(8), 1_500)
        await ack(bob, seqOf(delivered))
        const live = await enqueue(bytes(16), bytes(8), 9_000)
        expect(
          (await fetchQueued(database.db, primaryDevice(bob), 0, 10, 2_000)).map((queued) => queued.seq),
        ).toEqual([seqOf(live)])
        expect(await countQueued(database.db, primaryDevice(bob), 2_000)).toBe(1)
        expect(await purgeExpiredMessages(database.db, 2_000)).toBeGreaterThanOrEqual(2)
        expect(await countQueued(database.db, primaryDevice(bob))).toBe(1)
        await ack(bob, seqOf(live))
      })

      it('rejects a client id that is not 16 bytes', async () => {
        await expect(enqueue(bytes(15))).rejects.toThrow()
      })
    })
  })
}
