import { type Kysely, sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { bindRelationsKey } from '../relations-key.js'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { primaryDevice } from './devices.js'
import {
  appliedMigrations,
  MIGRATION_TABLE,
  MIGRATIONS,
  MigrationError,
  migrateDown,
  migrateTo,
  migrateToLatest,
} from './migrate.js'
import { claimPreKeyBundle, listOneTimePreKeyIds } from './prekeys.js'
import {
  channelRefusal,
  closeProvisioningChannel,
  findProvisioningChannel,
  openProvisioningChannel,
  postProvisioningMessage,
  readProvisioningMessages,
} from './provisioning.js'
import { openQueueRepository } from './queue-repository.js'
import { block, grantPresence, isBlocked, presenceVisibleTo, RelationsKey } from './relations.js'
import { findSession, purgeEndedTokens, tokenEnding } from './tokens.js'
import { createAccount, deleteAccount, isUsernameHeld } from './users.js'

const pgSkip = await postgresUnavailable()
const TABLES = [
  'auth_tokens',
  'deleted_usernames',
  'devices',
  'ended_tokens',
  'key_checks',
  'link_tokens',
  'message_tombstones',
  'messages',
  'one_time_prekey_claims',
  'one_time_prekeys',
  'provisioning_channels',
  'provisioning_messages',
  'queue_positions',
  'relations',
  'signed_prekeys',
  'users',
]
/** The tables before 2026-12-02-01-message-metadata. */
const TABLES_BEFORE_METADATA = ['auth_tokens', 'messages', 'one_time_prekeys', 'signed_prekeys', 'users']
/** The tables of 2026-12-03-09-provisioning-channels. */
const PROVISIONING_TABLES = ['provisioning_channels', 'provisioning_messages']
/** Today's tables less these. */
const without = (...names: string[]) => TABLES.filter((table) => !names.includes(table))
/** The tables each migration leaves, by name (those not named leave the tables as they found them). */
const TABLES_AFTER: Record<string, readonly string[]> = {
  '2026-11-26-01-initial': TABLES_BEFORE_METADATA,
  '2026-12-02-01-message-metadata': without(
    'devices',
    'link_tokens',
    'relations',
    'one_time_prekey_claims',
    'deleted_usernames',
    'key_checks',
    'ended_tokens',
    ...PROVISIONING_TABLES,
  ),
  '2026-12-03-02-one-time-prekey-claims': without(
    'devices',
    'link_tokens',
    'relations',
    'deleted_usernames',
    'key_checks',
    'ended_tokens',
    ...PROVISIONING_TABLES,
  ),
  '2026-12-03-03-relations': without(
    'devices',
    'link_tokens',
    'deleted_usernames',
    'key_checks',
    'ended_tokens',
    ...PROVISIONING_TABLES,
  ),
  '2026-12-03-04-deleted-usernames': without(
    'devices',
    'link_tokens',
    'key_checks',
    'ended_tokens',
    ...PROVISIONING_TABLES,
  ),
  '2026-12-03-06-key-checks': without('devices', 'link_tokens', 'ended_tokens', ...PROVISIONING_TABLES),
  '2026-12-03-07-ended-tokens': without('devices', 'link_tokens', ...PROVISIONING_TABLES),
  '2026-12-03-08-devices': without(...PROVISIONING_TABLES),
  '2026-12-03-09-provisioning-channels': TABLES,
  '2026-12-06-01-provisioning-closed-by': TABLES,
}

/** The tables a database that has run the first `applied` migrations holds. */
function tablesAfter(applied: number): readonly string[] {
  const names = Object.keys(MIGRATIONS).sort().slice(0, applied)
  let tables: readonly string[] = []
  for (const migration of names) tables = TABLES_AFTER[migration] ?? tables
  return tables
}

/** The database as a migration sees it: older layouts than schema.ts describes. */
// biome-ignore lint/suspicious/noExplicitAny: older layouts than today's types
const untyped = (database: TestDatabase) => database.db as unknown as Kysely<any>

/** 32 bytes that differ from name to name (keys are unique per account since 2026-12-03-05). */
function keyFor(username: string, kind: number): Uint8Array {
  const key = new Uint8Array(32).fill(kind)
  key.set(new TextEncoder().encode(username).subarray(0, 31), 1)
  return key
}

/** A users row as the migrations define it (every check satisfied). */
function user(username: string) {
  return {
    username,
    password_hash: 'x',
    login_key: new Uint8Array(10),
    identity_key: keyFor(username, 1),
    signing_key: keyFor(username, 2),
    identity_signature: new Uint8Array(64),
    created_at: 1,
    identity_changed_at: 1,
  }
}

async function userTables(database: TestDatabase): Promise<string[]> {
  const tables = await database.db.introspection.getTables()
  return tables
    .filter((table) => (database.dialect === 'postgres' ? table.schema === database.location : true))
    .map((table) => table.name)
    .filter((name) => !name.startsWith('kysely_'))
    .sort()
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`migrations on ${dialect}`, () => {
    let database: TestDatabase | undefined
    afterEach(async () => {
      await database?.dispose()
      database = undefined
    })

    it('migrates an empty database to the latest schema, then has nothing left to do', async () => {
      database = await createTestDatabase(dialect, { migrate: false })
      const ran = await migrateToLatest(database.db, dialect)
      expect(ran).toEqual(Object.keys(MIGRATIONS).sort())
      expect(await userTables(database)).toEqual(TABLES)
      expect(await migrateToLatest(database.db, dialect)).toEqual([])
      expect(await appliedMigrations(database.db, dialect)).toEqual(Object.keys(MIGRATIONS).sort())
    })

    it('refuses a database whose latest migration is unknown to this code (from the future)', async () => {
      database = await createTestDatabase(dialect)
      const future = '2999-01-01-01-from-the-future'
      await sql`insert into ${sql.table(MIGRATION_TABLE)} (name, timestamp) values (${future}, ${new Date().toISOString()})`.execute(
        database.db,
      )
      const attempt = migrateToLatest(database.db, dialect)
      await expect(attempt).rejects.toBeInstanceOf(MigrationError)
      await expect(migrateToLatest(database.db, dialect)).rejects.toThrow(
        /unknown migration\(s\) "2999-01-01-01-from-the-future".*newer server/,
      )
    })

    it('each migration reverts cleanly, newest first (initial: down drops every table)', async () => {
      database = await createTestDatabase(dialect)
      const names = Object.keys(MIGRATIONS).sort()
      for (let applied = names.length; applied > 0; applied--) {
        await migrateDown(database.db, dialect)
        expect(await appliedMigrations(database.db, dialect)).toEqual(names.slice(0, applied - 1))
        expect(await userTables(database)).toEqual(tablesAfter(applied - 1))
      }
      await migrateToLatest(database.db, dialect)
      expect(await userTables(database)).toEqual(TABLES)
    })

    it('message tombstones: the queue index is partial, and reverting drops only delivered rows', async () => {
      database = await createTestDatabase(dialect)
      await migrateTo(database.db, dialect, '2026-11-26-03-message-id-first')
      const db = untyped(database)
      const { id } = await db
        .insertInto('users')
        .values(user('alice'))
        .returning('id')
        .executeTakeFirstOrThrow()
      const message = (first: number, deliveredAt: number | null) => ({
        recipient_id: id,
        sender_id: id,
        client_id: new Uint8Array(16).fill(first),
        body: new Uint8Array(4),
        created_at: 1,
        expires_at: 2,
        delivered_at: deliveredAt,
      })
      await db
        .insertInto('messages')
        .values([message(1, null), message(2, 5)])
        .execute()
      const indexes =
        dialect === 'sqlite'
          ? await sql<{
              name: string
            }>`select name from sqlite_master where type = 'index' and tbl_name = 'messages' and sql like '%where%'`.execute(
              db,
            )
          : await sql<{
              name: string
            }>`select indexname as name from pg_indexes where tablename = 'messages' and schemaname = current_schema() and indexdef ilike '%where%'`.execute(
              db,
            )
      expect(indexes.rows.map((row) => row.name)).toEqual(['messages_undelivered'])
      // Down to before the tombstones: the later migrations first.
      while ((await appliedMigrations(db, dialect)).includes('2026-11-26-02-message-tombstones')) {
        await migrateDown(database.db, dialect)
      }
      const left = await db.selectFrom('messages').select('client_id').execute()
      expect(left.map((row) => row.client_id[0])).toEqual([1])
    })

    it('message id first: rows and the sequence counter survive both ways, duplicates stay refused', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-11-26-02-message-tombstones')
      expect((await appliedMigrations(db, dialect)).at(-1)).toBe('2026-11-26-02-message-tombstones')
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      const message = (senderId: number, first: number) => ({
        recipient_id: alice!.id,
        sender_id: senderId,
        client_id: new Uint8Array(16).fill(first),
        body: new Uint8Array([first]),
        created_at: 1,
        expires_at: 2,
        delivered_at: first === 2 ? 5 : null,
      })
      await db
        .insertInto('messages')
        .values([message(alice!.id, 1), message(alice!.id, 2), message(alice!.id, 3)])
        .execute()
      const highest = await db
        .deleteFrom('messages')
        .where('body', '=', new Uint8Array([3]))
        .returning('seq')
        .executeTakeFirstOrThrow()
      const rows = () =>
        db
          .selectFrom('messages')
          .select(['seq', 'sender_id', 'client_id', 'body', 'delivered_at'])
          .orderBy('seq')
          .execute()
      const before = await rows()

      await migrateTo(db, dialect, '2026-11-26-03-message-id-first')
      expect(await rows()).toEqual(before)
      await expect(db.insertInto('messages').values(message(alice!.id, 1)).execute()).rejects.toThrow()
      // The same id from another sender is another message.
      const other = await db
        .insertInto('messages')
        .values(message(bob!.id, 1))
        .returning('seq')
        .executeTakeFirstOrThrow()
      expect(other.seq).toBeGreaterThan(highest.seq)

      await migrateDown(db, dialect)
      expect((await rows()).map((row) => row.seq)).toEqual([...before.map((row) => row.seq), other.seq])
      await expect(db.insertInto('messages').values(message(bob!.id, 1)).execute()).rejects.toThrow()
      const next = await db
        .insertInto('messages')
        .values(message(bob!.id, 4))
        .returning('seq')
        .executeTakeFirstOrThrow()
      expect(next.seq).toBeGreaterThan(other.seq)
    })

    it('message metadata: a queue written before it still delivers, idempotency holds, tombstones lose the recipient', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-11-26-03-message-id-first')
      // Data as the previous version wrote it: one shared sequence, tombstones as delivered rows.
      const [alice, bob, carol, dave] = await Promise.all(
        ['alice', 'bob', 'carol', 'dave'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      const ttl = 30 * 24 * 60 * 60 * 1000
      const row = (from: number, to: number, first: number, deliveredAt: number | null) => ({
        recipient_id: to,
        sender_id: from,
        client_id: new Uint8Array(16).fill(first),
        body: deliveredAt === null ? new Uint8Array([first, first]) : new Uint8Array(0),
        created_at: 1_000 + first,
        expires_at: 1_000 + first + ttl,
        delivered_at: deliveredAt,
      })
      const written = await db
        .insertInto('messages')
        .values([
          row(alice!.id, bob!.id, 1, 1_500),
          row(carol!.id, dave!.id, 2, null),
          row(alice!.id, bob!.id, 3, null),
          row(carol!.id, bob!.id, 4, null),
        ])
        .returning('seq')
        .execute()
      const oldSeqs = written.map((inserted) => Number(inserted.seq))

      await migrateTo(db, dialect, '2026-12-02-01-message-metadata')
      expect(await appliedMigrations(db, dialect)).toContain('2026-12-02-01-message-metadata')
      const tombstonesThen = await db.selectFrom('message_tombstones').selectAll().execute()
      expect(Object.keys(tombstonesThen[0]!).sort()).toEqual(['client_id', 'expires_at', 'sender_id'])
      expect(tombstonesThen).toHaveLength(1)
      const columnsOf = async (name: string) =>
        (await database!.db.introspection.getTables())
          .find(
            (table) => table.name === name && (dialect === 'sqlite' || table.schema === database!.location),
          )!
          .columns.map((column) => column.name)
          .sort()
      expect(await columnsOf('messages')).toEqual([
        'body',
        'client_id',
        'created_at',
        'expires_at',
        'recipient_id',
        'sender_id',
        'seq',
      ])

      // Today's queue on that data, once the later migrations ran too.
      await migrateToLatest(db, dialect)
      const queue = openQueueRepository(database.db, {
        maxMessages: 100,
        maxBytes: 10_000,
        maxMessagesPerSender: 100,
        maxBytesPerSender: 10_000,
      })
      try {
        // Undelivered messages still deliver, with the numbers they had, in order.
        const queued = await queue.fetch(primaryDevice(bob!.id), 0, 10, 2_000)
        expect(queued.map((message) => [message.seq, message.sender, [...message.body]])).toEqual([
          [oldSeqs[2], 'alice', [3, 3]],
          [oldSeqs[3], 'carol', [4, 4]],
        ])
        expect(
          (await queue.fetch(primaryDevice(dave!.id), 0, 10, 2_000)).map((message) => message.seq),
        ).toEqual([oldSeqs[1]])
        const send = (from: number, first: number, now = 9_000) => ({
          recipientId: bob!.id,
          recipientDevice: 1,
          senderId: from,
          senderDevice: 1,
          clientId: new Uint8Array(16).fill(first),
          body: new Uint8Array([9]),
          now,
          expiresAt: now + ttl,
        })
        const outcomes = await queue.commit({
          sends: [send(alice!.id, 1), send(alice!.id, 3), send(alice!.id, 5)],
          acks: [],
          now: 9_000,
        })
        // Idempotency holds for what was delivered and for what is queued; a new message comes after.
        expect(outcomes).toEqual([
          { kind: 'duplicate', seq: 0, createdAt: 1_001, delivered: true },
          { kind: 'duplicate', seq: oldSeqs[2], createdAt: 1_003, delivered: false },
          { kind: 'stored', seq: oldSeqs[3]! + 1, createdAt: 9_000 },
        ])
        // Acknowledging leaves a tombstone with no recipient; the retry is still a duplicate.
        await queue.commit({
          sends: [],
          acks: [{ recipientId: bob!.id, recipientDevice: 1, upTo: oldSeqs[3]! + 1 }],
          now: 9_500,
        })
        expect(await queue.countQueued(primaryDevice(bob!.id), 9_500)).toBe(0)
        const [again] = await queue.commit({
          sends: [send(carol!.id, 4, 9_600)],
          acks: [],
          now: 9_600,
        })
        expect(again).toEqual({ kind: 'duplicate', seq: 0, createdAt: 1_004, delivered: true })
      } finally {
        await queue.close()
      }
      const tombstones = await db.selectFrom('message_tombstones').selectAll().execute()
      expect(Object.keys(tombstones[0]!).sort()).toEqual([
        'client_id',
        'expires_at',
        'recipient_device',
        'sender_device',
        'sender_id',
        'to_self',
      ])
      expect(tombstones).toHaveLength(4)
    })

    it('login secret: accounts written before it stay on their password, and the column takes only known kinds', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-02-01-message-metadata')
      // An account as the previous version wrote it: a bcrypt hash of the password.
      await db.insertInto('users').values(user('olduser')).execute()
      await migrateTo(db, dialect, '2026-12-03-01-login-secret')
      const old = await db
        .selectFrom('users')
        .select(['credential', 'password_hash'])
        .where('username', '=', 'olduser')
        .executeTakeFirstOrThrow()
      expect(old).toEqual({ credential: 'password', password_hash: 'x' })
      await db
        .insertInto('users')
        .values({ ...user('newuser'), credential: 'login-secret-v1' })
        .execute()
      await expect(
        db
          .insertInto('users')
          .values({ ...user('baduser'), credential: 'plaintext' })
          .execute(),
      ).rejects.toThrow()
      // Reverting drops the column and keeps every account.
      await migrateDown(db, dialect)
      const names = await db.selectFrom('users').select('username').orderBy('username').execute()
      expect(names.map((row: { username: string }) => row.username)).toEqual(['newuser', 'olduser'])
    })

    it('one-time prekey claims: keys stored before it are handed out under the per-target limit', async () => {
      database = await createTestDatabase(dialect, { migrate: false })
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-02-01-message-metadata')
      // Data as the previous version wrote it: two users, the target with a signed prekey and three
      // one-time prekeys.
      const [target, requester] = await Promise.all(
        ['target', 'requester'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      const key = (keyId: number) => ({
        user_id: target!.id,
        key_id: keyId,
        public_key: new Uint8Array(32).fill(keyId),
        signature: new Uint8Array(64),
      })
      await db
        .insertInto('signed_prekeys')
        .values({ ...key(1), created_at: 1 })
        .execute()
      await db
        .insertInto('one_time_prekeys')
        .values([key(2), key(3), key(4)])
        .execute()

      await migrateTo(db, dialect, '2026-12-03-02-one-time-prekey-claims')
      expect(await appliedMigrations(db, dialect)).toContain('2026-12-03-02-one-time-prekey-claims')
      // Today's key directory on that data, once the later migrations ran too.
      await migrateToLatest(db, dialect)
      const policy = (now: number) => ({
        requesterId: Number(requester!.id),
        now,
        claimsPerTarget: { max: 2, timeWindowMs: 60_000 },
        refetchWindowMs: 1_000,
      })
      const fetched = []
      for (const now of [10_000, 10_500, 20_000, 30_000, 80_000]) {
        const bundle = await claimPreKeyBundle(database.db, primaryDevice(Number(target!.id)), policy(now))
        fetched.push([bundle?.outcome, bundle?.oneTimePreKey?.key_id, bundle?.signedPreKey.key_id])
      }
      expect(fetched).toEqual([
        ['claimed', 2, 1],
        ['withheld', undefined, 1], // the same requester within the re-fetch window
        ['claimed', 3, 1],
        ['withheld', undefined, 1], // two claims in the last minute: the per-target limit
        ['claimed', 4, 1], // the first claim has left the window
      ])
      expect(await listOneTimePreKeyIds(database.db, primaryDevice(Number(target!.id)))).toEqual([])
    })

    it('relations: a database written before them keeps its queue and gains the table, and reverts', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-02-01-message-metadata')
      // Data as the previous version wrote it: two users, one queued message.
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      await db
        .insertInto('messages')
        .values({
          recipient_id: bob!.id,
          seq: 1,
          sender_id: alice!.id,
          client_id: new Uint8Array(16).fill(7),
          body: new Uint8Array([1, 2]),
          created_at: 10,
          expires_at: 10_000,
        })
        .execute()
      await db.insertInto('queue_positions').values({ recipient_id: bob!.id, last_seq: 1 }).execute()

      expect(await migrateToLatest(db, dialect)).toContain('2026-12-03-03-relations')
      const queue = openQueueRepository(database.db, {
        maxMessages: 100,
        maxBytes: 10_000,
        maxMessagesPerSender: 100,
        maxBytesPerSender: 10_000,
      })
      try {
        expect(
          (await queue.fetch(primaryDevice(bob!.id), 0, 10, 20)).map((message) => message.sender),
        ).toEqual(['alice'])
      } finally {
        await queue.close()
      }
      // No user shares presence with anyone yet (their clients do on their next connection).
      const key = RelationsKey.random()
      expect(await presenceVisibleTo(database.db, key, [alice!.id], bob!.id)).toEqual(new Set())
      expect(await grantPresence(database.db, key, alice!.id, [bob!.id], 10)).toEqual({
        granted: [bob!.id],
        ignored: 0,
      })
      expect(await presenceVisibleTo(database.db, key, [alice!.id], bob!.id)).toEqual(new Set([alice!.id]))
      // The schema refuses a hash of the wrong length and an unknown kind.
      await expect(
        db
          .insertInto('relations')
          .values({ pair_hash: new Uint8Array(31), owner_id: alice!.id, kind: 'block' })
          .execute(),
      ).rejects.toThrow()
      await expect(
        db
          .insertInto('relations')
          .values({ pair_hash: new Uint8Array(32), owner_id: alice!.id, kind: 'friend' })
          .execute(),
      ).rejects.toThrow()

      await migrateTo(db, dialect, '2026-12-02-01-message-metadata')
      expect(await userTables(database)).not.toContain('relations')
      expect(await db.selectFrom('messages').select('recipient_id').execute()).toEqual([
        { recipient_id: bob!.id },
      ])
    })

    it('deleted usernames: a database written by the previous version keeps its accounts and queue, and deleting one then holds its name', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-03-relations')
      // Data as the previous version wrote it: two accounts, a queued message, a tombstone, a token,
      // Alice's presence granted to Bob, Bob's block of Alice, and prekey claims each way.
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      await db
        .insertInto('messages')
        .values({
          recipient_id: bob!.id,
          seq: 1,
          sender_id: alice!.id,
          client_id: new Uint8Array(16).fill(1),
          body: new Uint8Array([1]),
          created_at: 1,
          expires_at: 10_000,
        })
        .execute()
      await db.insertInto('queue_positions').values({ recipient_id: bob!.id, last_seq: 1 }).execute()
      await db
        .insertInto('message_tombstones')
        .values({ client_id: new Uint8Array(16).fill(2), sender_id: bob!.id, expires_at: 10_000 })
        .execute()
      await db
        .insertInto('auth_tokens')
        .values({
          token_hash: new Uint8Array(32).fill(3),
          user_id: alice!.id,
          created_at: 1,
          expires_at: 10_000,
        })
        .execute()
      const key = RelationsKey.random()
      await grantPresence(database.db, key, alice!.id, [bob!.id], 10)
      await block(database.db, key, bob!.id, alice!.id, 10)
      await db
        .insertInto('one_time_prekey_claims')
        .values([
          { target_id: alice!.id, requester_id: bob!.id, claimed_at: 1 },
          { target_id: bob!.id, requester_id: alice!.id, claimed_at: 1 },
        ])
        .execute()
      const KEPT = [
        'users',
        'messages',
        'message_tombstones',
        'auth_tokens',
        'queue_positions',
        'relations',
        'one_time_prekey_claims',
      ]
      const before = await Promise.all(KEPT.map((table) => db.selectFrom(table).selectAll().execute()))

      await migrateTo(db, dialect, '2026-12-03-04-deleted-usernames')
      const after = await Promise.all(KEPT.map((table) => db.selectFrom(table).selectAll().execute()))
      expect(after).toEqual(before)
      expect(await db.selectFrom('relations').selectAll().execute()).toHaveLength(2)
      expect(await db.selectFrom('deleted_usernames').selectAll().execute()).toEqual([])
      await migrateToLatest(db, dialect)

      // Deleting Alice takes her rows, including the message she sent Bob, the relations either of
      // them kept with the other, the claims either made of the other, and holds her name.
      expect(
        await deleteAccount(database.db, Number(alice!.id), { heldUntil: 5_000, relationsKey: key }),
      ).toBe(true)
      expect(await db.selectFrom('users').select('username').execute()).toEqual([{ username: 'bob' }])
      expect(await db.selectFrom('messages').selectAll().execute()).toEqual([])
      expect(await db.selectFrom('auth_tokens').selectAll().execute()).toEqual([])
      expect(await db.selectFrom('message_tombstones').selectAll().execute()).toHaveLength(1)
      expect(await db.selectFrom('relations').selectAll().execute()).toEqual([])
      expect(await db.selectFrom('one_time_prekey_claims').selectAll().execute()).toEqual([])
      expect(await isUsernameHeld(database.db, 'alice', 4_999)).toBe(true)
      expect(await isUsernameHeld(database.db, 'alice', 5_000)).toBe(false)
      expect(
        await deleteAccount(database.db, Number(alice!.id), { heldUntil: 6_000, relationsKey: key }),
      ).toBe(false)
      const account = {
        username: 'alice',
        passwordHash: 'x',
        loginKey: new Uint8Array(10),
        identity: {
          identityKey: new Uint8Array(32),
          signingKey: new Uint8Array(32),
          identitySignature: new Uint8Array(64),
        },
        signedPreKey: { keyId: 1, publicKey: new Uint8Array(32), signature: new Uint8Array(64) },
        oneTimePreKeys: [],
      }
      await expect(createAccount(database.db, { ...account, now: 4_999 })).rejects.toMatchObject({
        code: 'E2E_ERR_USERNAME_TAKEN',
      })
      await createAccount(database.db, { ...account, now: 5_000 })
      expect(await db.selectFrom('deleted_usernames').selectAll().execute()).toEqual([])
    })

    it('unique identity keys: a database with copied keys keeps them for their first holder and withdraws the copies', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-03-relations')
      // Data as the previous version let it be written: keys copied from one account to another.
      const alice = user('alice')
      const rows = [
        alice,
        // eve copied alice's whole identity, later.
        {
          ...user('eve'),
          identity_key: alice.identity_key,
          signing_key: alice.signing_key,
          identity_changed_at: 5,
        },
        // mallory copied alice's identity key only (signed by a key of her own), at the same time:
        // the lower id (alice's) has held it longest.
        { ...user('mallory'), identity_key: alice.identity_key },
        // carol registered first, but dave has held these keys longer (carol reinstalled with them).
        { ...user('carol'), identity_changed_at: 20 },
        {
          ...user('dave'),
          identity_key: keyFor('carol', 1),
          signing_key: keyFor('carol', 2),
          identity_changed_at: 10,
        },
        user('bob'),
      ]
      const ids = new Map<string, number>()
      for (const row of rows) {
        const { id } = await db.insertInto('users').values(row).returning('id').executeTakeFirstOrThrow()
        ids.set(row.username, Number(id))
        await db
          .insertInto('signed_prekeys')
          .values({
            user_id: id,
            key_id: 1,
            public_key: new Uint8Array(32),
            signature: new Uint8Array(64),
            created_at: 1,
          })
          .execute()
        await db
          .insertInto('one_time_prekeys')
          .values({ user_id: id, key_id: 7, public_key: new Uint8Array(32), signature: new Uint8Array(64) })
          .execute()
      }

      await migrateTo(db, dialect, '2026-12-03-05-unique-identity-keys')
      expect(await appliedMigrations(db, dialect)).toContain('2026-12-03-05-unique-identity-keys')
      const stored = await db.selectFrom('users').selectAll().orderBy('id').execute()
      const byName = new Map(stored.map((row) => [row.username as string, row]))
      const keys = (name: string) => {
        const row = byName.get(name)!
        return {
          identity: [...row.identity_key],
          signing: [...row.signing_key],
          changedAt: Number(row.identity_changed_at),
        }
      }
      const original = new Map(rows.map((row) => [row.username, row]))
      const prekeyCount = async (name: string) => {
        const signed = await db
          .selectFrom('signed_prekeys')
          .select('id')
          .where('user_id', '=', ids.get(name))
          .execute()
        const oneTime = await db
          .selectFrom('one_time_prekeys')
          .select('key_id')
          .where('user_id', '=', ids.get(name))
          .execute()
        return signed.length + oneTime.length
      }
      for (const kept of ['alice', 'dave', 'bob']) {
        const row = original.get(kept)!
        expect(keys(kept)).toEqual({
          identity: [...row.identity_key],
          signing: [...row.signing_key],
          changedAt: row.identity_changed_at,
        })
        expect(await prekeyCount(kept)).toBe(2)
      }
      for (const withdrawn of ['eve', 'mallory', 'carol']) {
        const row = original.get(withdrawn)!
        const now = keys(withdrawn)
        expect(now.identity).toHaveLength(32)
        expect(now.identity).not.toEqual([...row.identity_key])
        expect(now.signing).not.toEqual([...row.signing_key])
        expect(now.changedAt).toBeGreaterThan(row.identity_changed_at)
        // No bundle can be made from keys the copy's signing key signed.
        expect(await prekeyCount(withdrawn)).toBe(0)
        // The account itself stays: its owner can start over with /reinstall.
        expect(byName.get(withdrawn)!.password_hash).toBe('x')
      }
      const identities = stored.map((row) => Buffer.from(row.identity_key).toString('hex'))
      expect(new Set(identities).size).toBe(stored.length)

      // From now on the database itself refuses a copy of either key.
      await expect(
        db
          .insertInto('users')
          .values({ ...user('zoe'), identity_key: alice.identity_key })
          .execute(),
      ).rejects.toThrow()
      await expect(
        db
          .insertInto('users')
          .values({ ...user('zoe'), signing_key: original.get('bob')!.signing_key })
          .execute(),
      ).rejects.toThrow()
      await db.insertInto('users').values(user('zoe')).execute()

      // Reverting drops the indexes (the withdrawn copies are not restored).
      await migrateDown(db, dialect)
      await db
        .insertInto('users')
        .values({ ...user('yves'), identity_key: alice.identity_key })
        .execute()
    })

    it('key checks: a database written by the previous version keeps its relations, gains the table, and the first start records its key', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-05-unique-identity-keys')
      // Data as the previous version wrote it: two users, a block under the node's key.
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      const key = RelationsKey.random()
      expect(await block(database.db, key, alice!.id, bob!.id, 10)).toBe(true)

      expect(await migrateToLatest(db, dialect)).toContain('2026-12-03-06-key-checks')
      const options = { file: 'relations.key', replace: false, now: 5 }
      // A database from before checks takes the key it is started with, and keeps its relations.
      expect(await bindRelationsKey(database.db, key, options)).toEqual({ kind: 'recorded' })
      expect(await isBlocked(database.db, key, alice!.id, bob!.id)).toBe(true)
      await expect(bindRelationsKey(database.db, RelationsKey.random(), options)).rejects.toThrow(
        'expected the relations key this database was set up with',
      )
      // The schema refuses a check value of the wrong length.
      await expect(
        db
          .insertInto('key_checks')
          .values({ name: 'other', check_value: new Uint8Array(31), recorded_at: 1 })
          .execute(),
      ).rejects.toThrow()

      await migrateTo(db, dialect, '2026-12-03-05-unique-identity-keys')
      expect(await userTables(database)).not.toContain('key_checks')
      expect(await isBlocked(database.db, key, alice!.id, bob!.id)).toBe(true)
    })

    it('ended tokens: an account of the previous version, deleted after the upgrade, leaves its tokens’ hashes until they expire', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-06-key-checks')
      // Data as the previous version wrote it: a user with two sessions.
      const alice = await db
        .insertInto('users')
        .values(user('alice'))
        .returning('id')
        .executeTakeFirstOrThrow()
      const hashes = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)]
      await db
        .insertInto('auth_tokens')
        .values(
          hashes.map((token_hash, i) => ({
            token_hash,
            user_id: alice.id,
            created_at: 1,
            expires_at: 1_000 * (i + 1),
          })),
        )
        .execute()

      expect(await migrateToLatest(db, dialect)).toContain('2026-12-03-07-ended-tokens')
      expect(
        await deleteAccount(database.db, alice.id, {
          heldUntil: 10_000,
          relationsKey: RelationsKey.random(),
        }),
      ).toBe(true)
      expect(await tokenEnding(database.db, hashes[0]!, 500)).toBe('account-deleted')
      expect(await tokenEnding(database.db, hashes[1]!, 1_500)).toBe('account-deleted')
      // Once a token would have expired it is nobody's business why it ended: purged, then unknown.
      expect(await tokenEnding(database.db, hashes[0]!, 1_000)).toBeUndefined()
      expect(await purgeEndedTokens(database.db, 1_500)).toBe(1)
      expect(await tokenEnding(database.db, hashes[1]!, 1_500)).toBe('account-deleted')
      expect(await tokenEnding(database.db, new Uint8Array(32).fill(3), 0)).toBeUndefined()
      // The schema takes only known reasons and whole hashes.
      await expect(
        db
          .insertInto('ended_tokens')
          .values({ token_hash: new Uint8Array(32).fill(4), reason: 'other', expires_at: 1 })
          .execute(),
      ).rejects.toThrow()
      await expect(
        db
          .insertInto('ended_tokens')
          .values({ token_hash: new Uint8Array(31), reason: 'account-deleted', expires_at: 1 })
          .execute(),
      ).rejects.toThrow()

      await migrateTo(db, dialect, '2026-12-03-06-key-checks')
      expect(await userTables(database)).not.toContain('ended_tokens')
    })

    it('devices: every account of the previous version becomes its device 1, and its queue, tokens, prekeys and tombstones carry over', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-07-ended-tokens')
      // Data as the previous version wrote it: two accounts, Alice with two sessions, Bob with
      // prekeys, a message from Alice queued for Bob and a tombstone of one he acknowledged.
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map((name) =>
          db
            .insertInto('users')
            .values({
              ...user(name),
              login_key: new TextEncoder().encode(`login key of ${name}`),
              created_at: 5,
            })
            .returning('id')
            .executeTakeFirstOrThrow(),
        ),
      )
      const aliceId = Number(alice!.id)
      const bobId = Number(bob!.id)
      const tokens = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)]
      await db
        .insertInto('auth_tokens')
        .values(
          tokens.map((token_hash, i) => ({
            token_hash,
            user_id: aliceId,
            created_at: 100 + i,
            expires_at: 50_000,
          })),
        )
        .execute()
      const key = (keyId: number) => ({
        user_id: bobId,
        key_id: keyId,
        public_key: new Uint8Array(32).fill(keyId),
        signature: new Uint8Array(64),
      })
      await db
        .insertInto('signed_prekeys')
        .values({ ...key(1), created_at: 7 })
        .execute()
      await db
        .insertInto('one_time_prekeys')
        .values([key(2), key(3)])
        .execute()
      const queuedId = new Uint8Array(16).fill(8)
      const acknowledgedId = new Uint8Array(16).fill(9)
      await db
        .insertInto('messages')
        .values({
          recipient_id: bobId,
          seq: 41,
          sender_id: aliceId,
          client_id: queuedId,
          body: new Uint8Array([4, 2]),
          created_at: 1_000,
          expires_at: 90_000,
        })
        .execute()
      await db.insertInto('queue_positions').values({ recipient_id: bobId, last_seq: 41 }).execute()
      await db
        .insertInto('message_tombstones')
        .values({ client_id: acknowledgedId, sender_id: aliceId, expires_at: 80_000 })
        .execute()

      expect(await migrateToLatest(db, dialect)).toEqual([
        '2026-12-03-08-devices',
        '2026-12-03-09-provisioning-channels',
        '2026-12-06-01-provisioning-closed-by',
      ])
      // Each account is device 1 with its login key; last seen is its newest session.
      const devices = await db.selectFrom('devices').selectAll().orderBy('user_id').execute()
      expect(devices.map((row) => ({ ...row, login_key: new TextDecoder().decode(row.login_key) }))).toEqual([
        {
          user_id: aliceId,
          device_id: 1,
          login_key: 'login key of alice',
          name: null,
          created_at: 5,
          last_seen_at: 101,
          removed_at: null,
        },
        {
          user_id: bobId,
          device_id: 1,
          login_key: 'login key of bob',
          name: null,
          created_at: 5,
          last_seen_at: 5,
          removed_at: null,
        },
      ])
      expect(Object.keys(await db.selectFrom('users').selectAll().executeTakeFirstOrThrow())).not.toContain(
        'login_key',
      )
      expect(await findSession(database.db, tokens[1]!, 1_000)).toMatchObject({
        userId: aliceId,
        deviceId: 1,
      })
      const bundle = await claimPreKeyBundle(database.db, primaryDevice(bobId), {
        requesterId: aliceId,
        now: 2_000,
        claimsPerTarget: { max: 10, timeWindowMs: 60_000 },
        refetchWindowMs: 0,
      })
      expect([bundle?.signedPreKey.key_id, bundle?.oneTimePreKey?.key_id]).toEqual([1, 2])
      // Key ids are per device now: another device of Bob's may use the same ones.
      await db
        .insertInto('signed_prekeys')
        .values({ ...key(1), device_id: 2, created_at: 8 })
        .execute()
      await expect(
        db
          .insertInto('signed_prekeys')
          .values({ ...key(1), device_id: 1, created_at: 9 })
          .execute(),
      ).rejects.toThrow()

      const queue = openQueueRepository(database.db, {
        maxMessages: 100,
        maxBytes: 10_000,
        maxMessagesPerSender: 100,
        maxBytesPerSender: 10_000,
      })
      try {
        const queued = await queue.fetch(primaryDevice(bobId), 0, 10, 2_000)
        expect(
          queued.map((message) => [message.seq, message.sender, message.senderDevice, [...message.body]]),
        ).toEqual([[41, 'alice', 1, [4, 2]]])
        const send = (clientId: Uint8Array, recipientDevice = 1) => ({
          recipientId: bobId,
          recipientDevice,
          senderId: aliceId,
          senderDevice: 1,
          clientId,
          body: new Uint8Array([1]),
          now: 3_000,
          expiresAt: 3_000 + 30 * 24 * 60 * 60 * 1000,
        })
        // Retries of what was queued or acknowledged before stay duplicates; the same id to
        // another device is that device's own copy.
        const outcomes = await queue.commit({
          sends: [send(queuedId), send(acknowledgedId), send(acknowledgedId, 2)],
          acks: [],
          now: 3_000,
        })
        expect(outcomes.map((outcome) => outcome.kind)).toEqual(['duplicate', 'duplicate', 'stored'])
        expect(outcomes[0]).toMatchObject({ seq: 41, delivered: false })
        expect(outcomes[1]).toMatchObject({ delivered: true })
        await queue.commit({
          sends: [],
          acks: [{ recipientId: bobId, recipientDevice: 1, upTo: 41 }],
          now: 3_100,
        })
        const [again] = await queue.commit({ sends: [send(queuedId)], acks: [], now: 3_200 })
        expect(again).toMatchObject({ kind: 'duplicate', delivered: true })
        // Tombstones, old and new, name of the destination only its device and whether it was a sent copy.
        const rows = await db
          .selectFrom('message_tombstones')
          .select(['client_id', 'sender_device', 'recipient_device', 'to_self'])
          .execute()
        expect(
          rows.map((row) => [row.client_id[0], row.sender_device, row.recipient_device, row.to_self]).sort(),
        ).toEqual([
          [8, 1, 1, 0],
          [9, 1, 1, 0],
        ])
      } finally {
        await queue.close()
      }

      // A token may now end because its device was removed.
      await db
        .insertInto('ended_tokens')
        .values({ token_hash: new Uint8Array(32).fill(5), reason: 'device-removed', expires_at: 9 })
        .execute()

      // Reverting keeps device 1 (its login key back on the account) and drops the others' rows.
      await migrateTo(db, dialect, '2026-12-03-07-ended-tokens')
      expect(await userTables(database)).not.toContain('devices')
      const users = await db.selectFrom('users').select(['id', 'login_key']).orderBy('id').execute()
      expect(users.map((row) => new TextDecoder().decode(row.login_key))).toEqual([
        'login key of alice',
        'login key of bob',
      ])
      expect(await db.selectFrom('auth_tokens').select('token_hash').execute()).toHaveLength(2)
      expect(await db.selectFrom('signed_prekeys').select('key_id').execute()).toEqual([{ key_id: 1 }])
      expect(await db.selectFrom('messages').select('seq').execute()).toEqual([])
      // Tombstones of device 1 to device 1 stay (they are what the previous version wrote).
      expect(await db.selectFrom('message_tombstones').select('client_id').execute()).toHaveLength(2)
      expect(await db.selectFrom('ended_tokens').select('reason').execute()).toEqual([])
      await migrateToLatest(db, dialect)
    })

    it('provisioning channels: a database written by the previous version gains them; a claimed channel goes with its account', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-07-ended-tokens')
      // Data as the previous version wrote it: two users, one with a session.
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map((name) =>
          db.insertInto('users').values(user(name)).returning('id').executeTakeFirstOrThrow(),
        ),
      )
      await db
        .insertInto('auth_tokens')
        .values({
          token_hash: new Uint8Array(32).fill(7),
          user_id: alice!.id,
          created_at: 1,
          expires_at: 10_000,
        })
        .execute()

      expect(await migrateToLatest(db, dialect)).toContain('2026-12-03-09-provisioning-channels')
      expect(await userTables(database)).toEqual(TABLES)
      const channel = (fill: number) => ({
        id: new Uint8Array(16).fill(fill),
        secretHash: new Uint8Array(32).fill(fill),
        openerHash: new Uint8Array(32).fill(9),
        now: 100,
        expiresAt: 1_000,
      })
      expect(await openProvisioningChannel(database.db, channel(1), 5)).toEqual({ opened: true })
      expect(await openProvisioningChannel(database.db, channel(2), 5)).toEqual({ opened: true })
      const handle = database.db
      const post = (id: number, claimant: number | undefined) =>
        postProvisioningMessage(handle, {
          channelId: new Uint8Array(16).fill(id),
          recipient: 'new',
          body: new Uint8Array(32).fill(3),
          now: 200,
          maxMessages: 8,
          ...(claimant === undefined ? {} : { claimant }),
        })
      expect(await post(1, alice!.id)).toEqual({ position: 1 })
      expect(await post(1, bob!.id)).toEqual({ refused: 'claimed' })
      expect(await post(2, bob!.id)).toEqual({ position: 1 })
      expect(await readProvisioningMessages(database.db, new Uint8Array(16).fill(1), 'new', 0)).toHaveLength(
        1,
      )
      // The schema refuses ids, hashes and sides of the wrong shape.
      const row = {
        id: new Uint8Array(16).fill(5),
        secret_hash: new Uint8Array(32),
        opener_hash: new Uint8Array(32),
        created_at: 1,
        expires_at: 2,
      }
      await expect(
        db
          .insertInto('provisioning_channels')
          .values({ ...row, id: new Uint8Array(15) })
          .execute(),
      ).rejects.toThrow()
      await expect(
        db
          .insertInto('provisioning_channels')
          .values({ ...row, secret_hash: new Uint8Array(31) })
          .execute(),
      ).rejects.toThrow()
      await expect(
        db
          .insertInto('provisioning_messages')
          .values({
            channel_id: new Uint8Array(16).fill(1),
            position: 2,
            recipient: 'other',
            body: new Uint8Array(1),
            created_at: 1,
          })
          .execute(),
      ).rejects.toThrow()

      // Deleting bob takes the channel he claimed, with its messages; alice's stays.
      expect(
        await deleteAccount(database.db, bob!.id, { heldUntil: 10_000, relationsKey: RelationsKey.random() }),
      ).toBe(true)
      expect(await findProvisioningChannel(database.db, new Uint8Array(16).fill(2))).toBeUndefined()
      expect(await findProvisioningChannel(database.db, new Uint8Array(16).fill(1))).toMatchObject({
        claimed_by: alice!.id,
        message_count: 1,
      })
      const messages = await db.selectFrom('provisioning_messages').select('channel_id').execute()
      expect(messages.map((message) => message.channel_id[0])).toEqual([1])

      await migrateTo(db, dialect, '2026-12-03-08-devices')
      expect(await userTables(database)).toEqual(without(...PROVISIONING_TABLES))
      expect(await db.selectFrom('users').select('username').orderBy('username').execute()).toEqual([
        { username: 'alice' },
      ])
    })

    it('provisioning closed-by: channels of the previous version keep their state; who closes is kept from then on', async () => {
      database = await createTestDatabase(dialect)
      const db = untyped(database)
      await migrateTo(db, dialect, '2026-12-03-09-provisioning-channels')
      // As the previous version left them: one channel open, one closed.
      const row = (fill: number, closedAt: number | null) => ({
        id: new Uint8Array(16).fill(fill),
        secret_hash: new Uint8Array(32).fill(fill),
        opener_hash: new Uint8Array(32).fill(9),
        created_at: 100,
        expires_at: 10_000,
        closed_at: closedAt,
      })
      await db
        .insertInto('provisioning_channels')
        .values([row(1, null), row(2, 150)])
        .execute()

      expect(await migrateToLatest(db, dialect)).toEqual(['2026-12-06-01-provisioning-closed-by'])
      const open = await findProvisioningChannel(database.db, new Uint8Array(16).fill(1))
      const closed = await findProvisioningChannel(database.db, new Uint8Array(16).fill(2))
      expect([open?.closed_by, closed?.closed_by]).toEqual([null, null])
      expect(channelRefusal(open, 200)).toBeUndefined()
      // Closed before anyone kept who closed it: used, to both sides, as before.
      expect([channelRefusal(closed, 200), channelRefusal(closed, 200, { claimant: 1 })]).toEqual([
        'used',
        'used',
      ])
      // Closed by an existing device now: the new device hears it was refused; the existing, used.
      await closeProvisioningChannel(database.db, new Uint8Array(16).fill(1), 300, 'existing')
      const refused = await findProvisioningChannel(database.db, new Uint8Array(16).fill(1))
      expect(refused).toMatchObject({ closed_at: 300, closed_by: 'existing' })
      expect([channelRefusal(refused, 400), channelRefusal(refused, 400, { claimant: 1 })]).toEqual([
        'refused',
        'used',
      ])
      await expect(
        db
          .updateTable('provisioning_channels')
          .set({ closed_by: 'someone' })
          .where('id', '=', new Uint8Array(16).fill(2))
          .execute(),
      ).rejects.toThrow()

      await migrateTo(db, dialect, '2026-12-03-09-provisioning-channels')
      expect(
        Object.keys(await db.selectFrom('provisioning_channels').selectAll().executeTakeFirstOrThrow()),
      ).not.toContain('closed_by')
    })

    it('enforces the schema: binary lengths are checked and usernames are unique', async () => {
      database = await createTestDatabase(dialect)
      const { login_key: _, ...alice } = user('alice')
      await database.db.insertInto('users').values(alice).execute()
      await expect(database.db.insertInto('users').values(alice).execute()).rejects.toThrow()
      await expect(
        database.db
          .insertInto('users')
          .values({ ...alice, username: 'bob', identity_key: new Uint8Array(31) })
          .execute(),
      ).rejects.toThrow()
    })
  })
}
