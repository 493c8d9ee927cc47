import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import {
  appliedMigrations,
  MIGRATION_TABLE,
  MIGRATIONS,
  MigrationError,
  migrateDown,
  migrateToLatest,
} from './migrate.js'

const pgSkip = await postgresUnavailable()
const TABLES = ['auth_tokens', 'messages', 'one_time_prekeys', 'signed_prekeys', 'users']

/** A users row as the migrations define it (every check satisfied). */
function user(username: string) {
  return {
    username,
    password_hash: 'x',
    login_key: new Uint8Array(10),
    identity_key: new Uint8Array(32),
    signing_key: new Uint8Array(32),
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
        expect(await userTables(database)).toEqual(applied > 1 ? TABLES : [])
      }
      await migrateToLatest(database.db, dialect)
      expect(await userTables(database)).toEqual(TABLES)
    })

    it('message tombstones: the queue index is partial, and reverting drops only delivered rows', async () => {
      database = await createTestDatabase(dialect)
      const db = database.db
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
      const db = database.db
      await migrateDown(db, dialect)
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

      await migrateToLatest(db, dialect)
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

    it('enforces the schema: binary lengths are checked and usernames are unique', async () => {
      database = await createTestDatabase(dialect)
      const alice = user('alice')
      await database.db.insertInto('users').values(alice).execute()
      await expect(database.db.insertInto('users').values(alice).execute()).rejects.toThrow()
      await expect(
        database.db
          .insertInto('users')
          .values({ ...user('bob'), identity_key: new Uint8Array(31) })
          .execute(),
      ).rejects.toThrow()
    })
  })
}
