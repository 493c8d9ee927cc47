/**
 * A check value for each server secret kept outside the database (today only the relations key,
 * relations-key.ts): an HMAC under the key of a fixed label, which tells whether a node's key file
 * is the one the stored data was written under, and reveals nothing about the key. Without it a
 * node started with another `relations.key` (a cluster member it was not copied to, a data
 * directory restored without it) silently wrote and looked up relations under the wrong key:
 * blocks stopped holding and presence grants vanished, with nothing in any log.
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
    .createTable('key_checks')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('check_value', bytes, (c) => c.notNull())
    .addColumn('recorded_at', int64, (c) => c.notNull())
    .addCheckConstraint('key_checks_value_length', sql`${byteLength('check_value')} = 32`)
    .modifyEnd(pg ? sql`` : sql`strict`)
    .execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('key_checks').execute()
}
