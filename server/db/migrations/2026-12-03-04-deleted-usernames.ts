/**
 * Deleting an account (issue 10, item 12) leaves one row behind: the name it had, held for a while so
 * that nobody else can register it and pass for its old owner with the contacts who still have the
 * conversation. Only a SHA-256 of the normalised name is kept (the check at registration and on a
 * send needs nothing more), with the time the hold ends; nothing links it to the deleted user's id,
 * keys or contacts.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

export async function up(db: AnyDb, dialect: Dialect): Promise<void> {
  const pg = dialect === 'postgres'
  const bytes = pg ? 'bytea' : 'blob'
  const int64 = pg ? 'bigint' : 'integer'
  const byteLength = (column: string) =>
    pg ? sql`octet_length(${sql.ref(column)})` : sql`length(${sql.ref(column)})`
  await db.schema
    .createTable('deleted_usernames')
    .addColumn('username_hash', bytes, (c) => c.primaryKey())
    .addColumn('held_until', int64, (c) => c.notNull())
    .addCheckConstraint('deleted_usernames_hash_length', sql`${byteLength('username_hash')} = 32`)
    .modifyEnd(pg ? sql`` : sql`strict`)
    .execute()
  await db.schema
    .createIndex('deleted_usernames_expiry')
    .on('deleted_usernames')
    .column('held_until')
    .execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('deleted_usernames').execute()
}
