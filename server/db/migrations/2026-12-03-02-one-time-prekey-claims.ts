/**
 * Prekeys that cannot be drained cheaply (issue 10, item 4): `one_time_prekey_claims` records each
 * one-time prekey the server hands out, by target and requester and when, so that bundle fetches
 * can be limited per target across all requesters and a requester's re-fetch within a short window
 * claims nothing. Rows are kept only as long as the longer of those two windows (the server purges
 * older ones), so the table is bounded by the per-target limit times the number of targets.
 *
 * The requester is needed for the re-fetch window only; it is never logged. Reverting drops the
 * table: the limits then start from nothing, as they would after the window.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

export async function up(db: AnyDb, dialect: Dialect): Promise<void> {
  const int64 = dialect === 'postgres' ? 'bigint' : 'integer'
  await db.schema
    .createTable('one_time_prekey_claims')
    .addColumn('target_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('requester_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('claimed_at', int64, (c) => c.notNull())
    .modifyEnd(dialect === 'sqlite' ? sql`strict` : sql``)
    .execute()
  // The per-target count and the re-fetch check both start from the target.
  await db.schema
    .createIndex('one_time_prekey_claims_target')
    .on('one_time_prekey_claims')
    .columns(['target_id', 'claimed_at'])
    .execute()
  await db.schema
    .createIndex('one_time_prekey_claims_time')
    .on('one_time_prekey_claims')
    .column('claimed_at')
    .execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('one_time_prekey_claims').execute()
}
