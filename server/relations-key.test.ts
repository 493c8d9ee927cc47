/**
 * The relations key tied to its database (relations-key.ts bindRelationsKey), on both dialects:
 * recorded by the first start, matched after, a stranger refused with nothing changed, replaced
 * only when asked (its old relations gone with it), and two nodes racing on a new database with
 * different keys: one wins, the other is refused.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { migrateToLatest } from './db/migrate.js'
import { block, isBlocked, RelationsKey } from './db/relations.js'
import { bindRelationsKey, RelationsKeyError } from './relations-key.js'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from './test/databases.js'

const pgSkip = await postgresUnavailable()
const FILE = '/srv/secure-chat/data/relations.key'

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`relations key on ${dialect}`, () => {
    let database: TestDatabase | undefined
    afterEach(async () => {
      await database?.dispose()
      database = undefined
    })

    it('is recorded by the first start, matched after; another key is refused and changes nothing; replace takes it and drops the old relations', async () => {
      database = await createTestDatabase(dialect)
      await migrateToLatest(database.db, dialect)
      const first = RelationsKey.random()
      const bind = (key: RelationsKey, replace = false) =>
        bindRelationsKey(database!.db, key, { file: FILE, replace, now: 1_000 })
      expect(await bind(first)).toEqual({ kind: 'recorded' })
      expect(await bind(first)).toEqual({ kind: 'matched' })
      // The same bytes in a new object (the file read again) match too.
      expect(await bind(new RelationsKey(first.exportForFile()))).toEqual({ kind: 'matched' })

      const alice = await account(database, 'alice')
      const bob = await account(database, 'bob')
      await block(database.db, first, alice, bob, 5)
      expect(await isBlocked(database.db, first, alice, bob)).toBe(true)

      const stranger = RelationsKey.random()
      const refusal = await bind(stranger).catch((error: unknown) => error)
      expect(refusal).toBeInstanceOf(RelationsKeyError)
      expect((refusal as Error).message).toMatch(
        new RegExp(
          `^${FILE}: expected the relations key this database was set up with \\(check [0-9a-f]{12}…\\), got another \\(check [0-9a-f]{12}…\\)\\..*--replace-relations-key$`,
        ),
      )
      // Refused, nothing changed: the first key still matches and still finds the block.
      expect(await bind(first)).toEqual({ kind: 'matched' })
      expect(await isBlocked(database.db, first, alice, bob)).toBe(true)

      expect(await bind(stranger, true)).toEqual({ kind: 'replaced', relationsDeleted: 1 })
      expect(await bind(stranger)).toEqual({ kind: 'matched' })
      await expect(bind(first)).rejects.toThrow(RelationsKeyError)
      expect(await isBlocked(database.db, first, alice, bob)).toBe(false)
      // With the key that matches, asking to replace changes nothing.
      await block(database.db, stranger, alice, bob, 6)
      expect(await bind(stranger, true)).toEqual({ kind: 'matched' })
      expect(await isBlocked(database.db, stranger, alice, bob)).toBe(true)
    })

    it('two nodes starting at once on a new database with different keys: one records its key, the other is refused', async () => {
      database = await createTestDatabase(dialect)
      await migrateToLatest(database.db, dialect)
      const outcomes = await Promise.allSettled(
        [RelationsKey.random(), RelationsKey.random()].map((key) =>
          bindRelationsKey(database!.db, key, { file: FILE, replace: false, now: 1_000 }),
        ),
      )
      expect(
        outcomes.filter((outcome) => outcome.status === 'fulfilled').map((outcome) => outcome.value),
      ).toEqual([{ kind: 'recorded' }])
      const rejected = outcomes.find((outcome) => outcome.status === 'rejected')
      expect(rejected?.reason).toBeInstanceOf(RelationsKeyError)
    })
  })
}

/** A users row, as the schema takes it (keys unique per account). */
async function account(database: TestDatabase, username: string): Promise<number> {
  const key = (kind: number) => new Uint8Array(32).fill(kind + username.charCodeAt(0) * 3)
  const row = await database.db
    .insertInto('users')
    .values({
      username,
      password_hash: 'x',
      credential: 'login-secret-v1',
      identity_key: key(1),
      signing_key: key(2),
      identity_signature: new Uint8Array(64),
      created_at: 1,
      identity_changed_at: 1,
    })
    .returning('id')
    .executeTakeFirstOrThrow()
  return row.id
}
