/**
 * The relay's QueueRepository contract, run against every implementation: the SQLite fast path
 * (cached better-sqlite3 statements), Kysely on SQLite, and Kysely on PostgreSQL.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestDatabase, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { sqliteConnectionOf } from './connect.js'
import { PRIMARY_DEVICE_ID, primaryDevice } from './devices.js'
import {
  KyselyQueueRepository,
  type NewMessage,
  type QueueAck,
  type QueueLimits,
  type QueueRepository,
} from './queue.js'
import { openQueueRepository } from './queue-repository.js'
import { SqliteQueueRepository } from './queue-sqlite.js'
import type { SqlDialect } from './schema.js'
import { createAccount } from './users.js'

const pgSkip = await postgresUnavailable()

const bytes = (length: number) => new Uint8Array(randomBytes(length))
/** Acknowledgements of device 1's queues, as [user id, up to] pairs. */
const primaryAcks = (acks: readonly [number, number][]): QueueAck[] =>
  acks.map(([recipientId, upTo]) => ({ recipientId, recipientDevice: PRIMARY_DEVICE_ID, upTo }))

interface Variant {
  readonly name: string
  readonly dialect: SqlDialect
  make(database: TestDatabase, limits: QueueLimits): QueueRepository
}

const VARIANTS: Variant[] = [
  {
    name: 'SQLite fast path',
    dialect: 'sqlite',
    make: (database, limits) => new SqliteQueueRepository(sqliteConnectionOf(database.db)!.name, limits),
  },
  {
    name: 'Kysely on SQLite',
    dialect: 'sqlite',
    make: (database, limits) => new KyselyQueueRepository(database.db, 'sqlite', limits),
  },
  {
    name: 'Kysely on PostgreSQL',
    dialect: 'postgres',
    make: (database, limits) => new KyselyQueueRepository(database.db, 'postgres', limits),
  },
]

let names = 0
async function user(database: TestDatabase): Promise<number> {
  names += 1
  return createAccount(database.db, {
    username: `q${process.pid}x${names}`,
    passwordHash: 'x',
    loginKey: bytes(10),
    identity: { identityKey: bytes(32), signingKey: bytes(32), identitySignature: bytes(64) },
    signedPreKey: { keyId: 1, publicKey: bytes(32), signature: bytes(64) },
    oneTimePreKeys: [],
    now: 1,
  })
}

/** Whole-queue limits; the shares are out of the way (their own tests use SHARES). */
const LIMITS: QueueLimits = {
  maxMessages: 4,
  maxBytes: 400,
  maxMessagesPerSender: 100,
  maxBytesPerSender: 10_000,
}
/** Each sender's share is below the recipient's whole queue. */
const SHARES: QueueLimits = {
  maxMessages: 5,
  maxBytes: 1_000,
  maxMessagesPerSender: 3,
  maxBytesPerSender: 250,
}

for (const variant of VARIANTS) {
  describe.skipIf(variant.dialect === 'postgres' && pgSkip !== undefined)(
    `queue repository: ${variant.name}`,
    () => {
      let database: TestDatabase
      let queue: QueueRepository
      beforeAll(async () => {
        database = await createTestDatabase(variant.dialect)
        queue = variant.make(database, LIMITS)
      })
      afterAll(async () => {
        await queue?.close()
        await database?.dispose()
      })

      const send = (
        from: number,
        to: number,
        options: { id?: Uint8Array; body?: Uint8Array; now?: number; expiresAt?: number } = {},
        devices: { from?: number; to?: number } = {},
      ): NewMessage => ({
        senderId: from,
        senderDevice: devices.from ?? PRIMARY_DEVICE_ID,
        recipientId: to,
        recipientDevice: devices.to ?? PRIMARY_DEVICE_ID,
        clientId: options.id ?? bytes(16),
        body: options.body ?? bytes(50),
        now: options.now ?? 1_000,
        expiresAt: options.expiresAt ?? 100_000,
      })
      const commit = (sends: NewMessage[], acks: [number, number][] = [], now = 2_000) =>
        queue.commit({ sends, acks: primaryAcks(acks), now })

      it('openQueueRepository picks this dialect', async () => {
        const opened = openQueueRepository(database.db, LIMITS)
        expect(opened.dialect).toBe(variant.dialect)
        await opened.close()
      })

      it('stores a batch in arrival order and fetches it back in queue order', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const sends = [send(alice, bob, { now: 1_111 }), send(alice, bob), send(bob, alice), send(alice, bob)]
        const outcomes = await commit(sends)
        expect(outcomes.map((outcome) => outcome.kind)).toEqual(['stored', 'stored', 'stored', 'stored'])
        const seqs = outcomes.map((outcome) => (outcome.kind === 'stored' ? outcome.seq : 0))
        // Positions in each recipient's own queue: nothing about the other's traffic shows.
        expect(seqs).toEqual([1, 2, 1, 3])
        expect(outcomes[0]).toMatchObject({ createdAt: 1_111 })

        const queued = await queue.fetch(primaryDevice(bob), 0, 10, 2_000)
        expect(queued.map((message) => message.seq)).toEqual([seqs[0], seqs[1], seqs[3]])
        expect(new Uint8Array(queued[0]!.clientId)).toEqual(sends[0]!.clientId)
        expect(new Uint8Array(queued[0]!.body)).toEqual(sends[0]!.body)
        expect(queued[0]!.createdAt).toBe(1_111)
        expect(await queue.fetch(primaryDevice(bob), seqs[1]!, 10, 2_000)).toHaveLength(1)
        expect(await queue.fetch(primaryDevice(bob), 0, 1, 2_000)).toHaveLength(1)
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(3)
        expect(await queue.countQueued(primaryDevice(alice), 2_000)).toBe(1)
      })

      it('keeps one queue per device: its own positions, acknowledgements and depth limit', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const id = bytes(16)
        // One send to two of Bob's devices and a sent copy to Alice's device 2: the same id each time.
        const outcomes = await commit([
          send(alice, bob, { id }, { to: 1 }),
          send(alice, bob, { id }, { to: 2 }),
          send(alice, alice, { id }, { to: 2 }),
          send(alice, bob, {}, { to: 2 }),
        ])
        expect(outcomes).toEqual([
          { kind: 'stored', seq: 1, createdAt: 1_000 },
          { kind: 'stored', seq: 1, createdAt: 1_000 },
          { kind: 'stored', seq: 1, createdAt: 1_000 },
          { kind: 'stored', seq: 2, createdAt: 1_000 },
        ])
        const bob2 = { userId: bob, deviceId: 2 }
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(1)
        expect(await queue.countQueued(bob2, 2_000)).toBe(2)
        expect(await queue.countQueued({ userId: alice, deviceId: 2 }, 2_000)).toBe(1)
        expect(await queue.countQueued(primaryDevice(alice), 2_000)).toBe(0)
        const fetched = await queue.fetch(bob2, 0, 10, 2_000)
        const { username } = await database.db
          .selectFrom('users')
          .select('username')
          .where('id', '=', alice)
          .executeTakeFirstOrThrow()
        expect(fetched.map((message) => [message.seq, message.sender, message.senderDevice])).toEqual([
          [1, username, 1],
          [2, username, 1],
        ])
        // Device 1 acknowledges: device 2's copy stays, and the retry to each device is a duplicate.
        await queue.commit({
          sends: [],
          acks: [{ recipientId: bob, recipientDevice: 1, upTo: 1 }],
          now: 2_000,
        })
        expect(await queue.countQueued(bob2, 2_000)).toBe(2)
        const retried = await commit([
          send(alice, bob, { id }, { to: 1 }),
          send(alice, bob, { id }, { to: 2 }),
        ])
        expect(retried).toEqual([
          { kind: 'duplicate', seq: 0, createdAt: 1_000, delivered: true },
          { kind: 'duplicate', seq: 1, createdAt: 1_000, delivered: false },
        ])
        // The same id from another device of Alice's is that device's message.
        expect(await commit([send(alice, bob, { id }, { from: 2, to: 1 })])).toEqual([
          { kind: 'stored', seq: 2, createdAt: 1_000 },
        ])
        // Depth limits count per device queue: device 3 has room while device 2 fills up.
        const more = await commit([
          send(alice, bob, {}, { to: 2 }),
          send(alice, bob, {}, { to: 2 }),
          send(alice, bob, {}, { to: 2 }),
          send(alice, bob, {}, { to: 3 }),
        ])
        expect(more.map((outcome) => outcome.kind)).toEqual(['stored', 'stored', 'full', 'stored'])
      })

      it('stores a group (one message to several devices) all or none, and the sends around it', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        // Bob's device 2 has room for one more; his device 1 for four.
        const filler = [1, 2, 3].map(() => send(alice, bob, {}, { to: 2 }))
        expect((await commit(filler)).map((outcome) => outcome.kind)).toEqual(['stored', 'stored', 'stored'])
        const id = bytes(16)
        const group = (to: number[]) => to.map((device) => send(alice, bob, { id }, { to: device }))
        const before = send(alice, bob, {}, { to: 1 })
        const after = send(alice, bob, {}, { to: 2 })
        // The group fits (device 2's last place), the send after it then does not.
        const outcomes = await queue.commit({
          sends: [before, ...group([1, 2]), after],
          groups: [1, 2, 1],
          acks: [],
          now: 2_000,
        })
        expect(outcomes.map((outcome) => outcome.kind)).toEqual(['stored', 'stored', 'stored', 'full'])
        // Device 2 is full now: a group to 1 and 2 stores on neither, and leaves room it did not use.
        const second = bytes(16)
        const refused = await queue.commit({
          sends: [
            send(alice, bob, { id: second }, { to: 1 }),
            send(alice, bob, { id: second }, { to: 2 }),
            send(alice, bob, {}, { to: 1 }),
          ],
          groups: [2, 1],
          acks: [],
          now: 2_000,
        })
        expect(refused.map((outcome) => outcome.kind)).toEqual(['full', 'full', 'stored'])
        expect(refused[2]).toMatchObject({ seq: 3 })
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(3)
        expect(await queue.countQueued({ userId: bob, deviceId: 2 }, 2_000)).toBe(4)
        // After device 2 acknowledges, the same group goes through whole, in its positions.
        const again = await queue.commit({
          sends: [send(alice, bob, { id: second }, { to: 1 }), send(alice, bob, { id: second }, { to: 2 })],
          groups: [2],
          acks: [{ recipientId: bob, recipientDevice: 2, upTo: 4 }],
          now: 3_000,
        })
        expect(again).toEqual([
          { kind: 'stored', seq: 4, createdAt: 1_000 },
          { kind: 'stored', seq: 5, createdAt: 1_000 },
        ])
        // A retry of the first group is a duplicate on both devices (one delivered, one queued).
        expect(
          (await queue.commit({ sends: group([1, 2]), groups: [2], acks: [], now: 3_000 })).map(
            (outcome) => outcome.kind,
          ),
        ).toEqual(['duplicate', 'duplicate'])
      })

      it('is idempotent by (sender, id): within a batch, across batches, and after acknowledgement', async () => {
        const [alice, bob, carol] = [await user(database), await user(database), await user(database)]
        const id = bytes(16)
        const [first, again] = await commit([
          send(alice, bob, { id }),
          send(alice, bob, { id, body: bytes(9) }),
        ])
        expect(first).toMatchObject({ kind: 'stored' })
        const seq = first!.kind === 'stored' ? first!.seq : 0
        expect(again).toEqual({ kind: 'duplicate', seq, createdAt: 1_000, delivered: false })
        // The same id from another sender is another message.
        expect((await commit([send(carol, bob, { id })]))[0]!.kind).toBe('stored')
        expect(await commit([send(alice, bob, { id, now: 5_000 })])).toEqual([
          { kind: 'duplicate', seq, createdAt: 1_000, delivered: false },
        ])

        await commit([], [[bob, seq]])
        // A tombstone keeps no position and no time: the acceptance time is its expiry less the lifetime.
        expect(await commit([send(alice, bob, { id, now: 6_000, expiresAt: 105_000 })])).toEqual([
          { kind: 'duplicate', seq: 0, createdAt: 1_000, delivered: true },
        ])
        expect(
          (await queue.fetch(primaryDevice(bob), 0, 10, 2_000)).map((message) => message.seq),
        ).not.toContain(seq)
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(1)
      })

      it('acknowledges cumulatively, only the acknowledging recipient’s rows, before the batch’s sends', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const stored = await commit([send(alice, bob), send(alice, bob), send(bob, alice)])
        const [a, b, c] = stored.map((outcome) => (outcome.kind === 'stored' ? outcome.seq : 0))
        await commit([], [[bob, b!]])
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(0)
        expect(await queue.countQueued(primaryDevice(alice), 2_000)).toBe(1)
        // An acknowledgement beyond the newest row changes nothing it should not.
        await commit([], [[alice, c! - 1]])
        expect((await queue.fetch(primaryDevice(alice), 0, 10, 2_000)).map((message) => message.seq)).toEqual(
          [c],
        )
        expect(a).toBeLessThan(b!)
      })

      it('refuses sends beyond the message limit, counts acknowledgements in the same batch first', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const four = await commit([1, 2, 3, 4].map(() => send(alice, bob)))
        expect(four.every((outcome) => outcome.kind === 'stored')).toBe(true)
        const kept = send(alice, bob)
        const [full] = await commit([kept])
        expect(full).toEqual({ kind: 'full' })
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(4)
        // A retry of a stored message is still a duplicate when the queue is full.
        const firstId = (await queue.fetch(primaryDevice(bob), 0, 1, 2_000))[0]!.clientId
        expect((await commit([send(alice, bob, { id: new Uint8Array(firstId) })]))[0]!.kind).toBe('duplicate')

        const oldest = four[0]!.kind === 'stored' ? four[0]!.seq : 0
        const [retried] = await commit([kept], [[bob, oldest]])
        expect(retried!.kind).toBe('stored')
        expect((await commit([send(alice, bob)]))[0]!.kind).toBe('full')
      })

      it('refuses sends beyond the byte limit', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const outcomes = await commit([
          send(alice, bob, { body: bytes(300) }),
          send(alice, bob, { body: bytes(101) }),
          send(alice, bob, { body: bytes(100) }),
        ])
        expect(outcomes.map((outcome) => outcome.kind)).toEqual(['stored', 'full', 'stored'])
      })

      it('gives each sender a share: one is refused at its share by count or bytes, another gets through', async () => {
        const shared = variant.make(database, SHARES)
        try {
          const [mallory, carol, bob] = [await user(database), await user(database), await user(database)]
          const kinds = async (sends: NewMessage[], acks: [number, number][] = []) =>
            (await shared.commit({ sends, acks: primaryAcks(acks), now: 2_000 })).map(
              (outcome) => outcome.kind,
            )
          // By count: the fourth from one sender is refused, in the same batch as the others.
          expect(await kinds([1, 2, 3, 4].map(() => send(mallory, bob)))).toEqual([
            'stored',
            'stored',
            'stored',
            'share-full',
          ])
          // Another sender still gets through, until the recipient's whole queue is full.
          expect(await kinds([send(carol, bob), send(carol, bob), send(carol, bob)])).toEqual([
            'stored',
            'stored',
            'full',
          ])
          // Acknowledging frees the sender's share (and the queue) for the next batch.
          const queued = await shared.fetch(primaryDevice(bob), 0, 10, 2_000)
          expect(await kinds([send(mallory, bob)], [[bob, queued[0]!.seq]])).toEqual(['stored'])
          // By bytes: 200 + 51 is over a 250-byte share; 50 more still fits.
          const [dave, erin] = [await user(database), await user(database)]
          expect(
            await kinds([
              send(dave, erin, { body: bytes(200) }),
              send(dave, erin, { body: bytes(51) }),
              send(dave, erin, { body: bytes(50) }),
            ]),
          ).toEqual(['stored', 'share-full', 'stored'])
        } finally {
          await shared.close()
        }
      })

      it('a refused group gives back the share it took, in every queue it touched, and leaves other senders’ shares as they were', async () => {
        const shared = variant.make(database, SHARES)
        try {
          const [mallory, carol, bob] = [await user(database), await user(database), await user(database)]
          const to = (from: number, device: number, id = bytes(16)) => send(from, bob, { id }, { to: device })
          // Mallory's share on bob's device 2 is full; carol has two on device 1.
          await shared.commit({
            sends: [to(mallory, 2), to(mallory, 2), to(mallory, 2), to(carol, 1), to(carol, 1)],
            acks: [],
            now: 2_000,
          })
          // Mallory's message to devices 1 and 2 is refused whole (device 2's share), in a batch where
          // her share on device 1 would be new.
          const id = bytes(16)
          const outcomes = await shared.commit({
            sends: [
              to(mallory, 1, id),
              to(mallory, 2, id),
              to(mallory, 1),
              to(mallory, 1),
              to(mallory, 1),
              to(carol, 1),
            ],
            groups: [2, 1, 1, 1, 1],
            acks: [],
            now: 2_000,
          })
          // Her share on device 1 is whole again: three fit there after the group, the queue takes
          // carol's third (5 in all), and nothing of the group stayed.
          expect(outcomes.map((outcome) => outcome.kind)).toEqual([
            'share-full',
            'share-full',
            'stored',
            'stored',
            'stored',
            'full',
          ])
          expect(await shared.countQueued(primaryDevice(bob), 2_000)).toBe(5)
          expect(await shared.countQueued({ userId: bob, deviceId: 2 }, 2_000)).toBe(3)
        } finally {
          await shared.close()
        }
      })

      it('reads depths from the database, so two repositories on it (two processes) share the limits', async () => {
        const [first, second] = [variant.make(database, SHARES), variant.make(database, SHARES)]
        try {
          const [mallory, carol, bob] = [await user(database), await user(database), await user(database)]
          const commitOn = async (queue: QueueRepository, sends: NewMessage[]) =>
            (await queue.commit({ sends, acks: [], now: 2_000 })).map((outcome) => outcome.kind)
          expect(await commitOn(first, [send(mallory, bob), send(mallory, bob)])).toEqual([
            'stored',
            'stored',
          ])
          expect(await commitOn(second, [send(mallory, bob), send(mallory, bob)])).toEqual([
            'stored',
            'share-full',
          ])
          expect(await commitOn(first, [send(carol, bob), send(carol, bob), send(carol, bob)])).toEqual([
            'stored',
            'stored',
            'full',
          ])
          // Concurrent batches for the same recipient still cannot take the last room twice.
          const [a, b] = await Promise.all([
            commitOn(first, [send(await user(database), bob)]),
            commitOn(second, [send(await user(database), bob)]),
          ])
          expect([...a, ...b]).toEqual(['full', 'full'])
          const queued = await first.fetch(primaryDevice(bob), 0, 10, 2_000)
          await first.commit({ sends: [], acks: primaryAcks([[bob, queued[0]!.seq]]), now: 2_000 })
          const [c, d] = await Promise.all([
            commitOn(first, [send(await user(database), bob)]),
            commitOn(second, [send(await user(database), bob)]),
          ])
          expect([...c, ...d].sort()).toEqual(['full', 'stored'])
          expect(await first.countQueued(primaryDevice(bob), 2_000)).toBe(5)
        } finally {
          await first.close()
          await second.close()
        }
      })

      it('rolls back a whole batch when one row fails, and its depth accounting with it', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const good = send(alice, bob)
        // A recipient that does not exist breaks the foreign key after `good` was inserted.
        await expect(commit([good, send(alice, 987_654_321)], [])).rejects.toThrow()
        await expect(commit([send(alice, bob, { id: bytes(15) })], [])).rejects.toThrow()
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(0)
        const outcomes = await commit([
          good,
          send(alice, bob),
          send(alice, bob),
          send(alice, bob),
          send(alice, bob),
        ])
        expect(outcomes.map((outcome) => outcome.kind)).toEqual([
          'stored',
          'stored',
          'stored',
          'stored',
          'full',
        ])
      })

      it('hides expired messages, then purges them with tombstones, and recounts depth after', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        const outcomes = await commit([
          send(alice, bob, { expiresAt: 1_500 }),
          send(alice, bob, { expiresAt: 1_500 }),
          send(alice, bob, { expiresAt: 1_500 }),
          send(alice, bob, { expiresAt: 9_000 }),
        ])
        const seqs = outcomes.map((outcome) => (outcome.kind === 'stored' ? outcome.seq : 0))
        await commit([], [[bob, seqs[0]!]])
        expect((await queue.fetch(primaryDevice(bob), 0, 10, 2_000)).map((message) => message.seq)).toEqual([
          seqs[3],
        ])
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(1)
        expect((await commit([send(alice, bob), send(alice, bob)])).map((outcome) => outcome.kind)).toEqual([
          'stored',
          'full',
        ])
        expect(await queue.purgeExpired(2_000, 1)).toBeGreaterThanOrEqual(3)
        const after = await commit([send(alice, bob), send(alice, bob), send(alice, bob)])
        expect(after.map((outcome) => outcome.kind)).toEqual(['stored', 'stored', 'full'])
      })

      it('never runs inside another transaction on the same database', async () => {
        const [alice, bob] = [await user(database), await user(database)]
        let release!: () => void
        const held = new Promise<void>((resolve) => {
          release = resolve
        })
        let entered!: () => void
        const inside = new Promise<void>((resolve) => {
          entered = resolve
        })
        const other = database.db
          .transaction()
          .execute(async (trx) => {
            await trx.selectFrom('users').select('id').where('id', '=', alice).execute()
            entered()
            await held
            throw new Error('roll back the other transaction')
          })
          .catch(() => 'rolled back')
        await inside
        const committed = commit([send(alice, bob)])
        release()
        expect(await other).toBe('rolled back')
        expect((await committed)[0]!.kind).toBe('stored')
        expect(await queue.countQueued(primaryDevice(bob), 2_000)).toBe(1)
      })
    },
  )
}
