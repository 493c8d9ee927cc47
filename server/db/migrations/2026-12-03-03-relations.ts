/**
 * Relations between users (issue 10, items 5 and 11): who may see whose presence, and who blocked
 * whom. One row per (owner, kind, other user), but the other user is not stored: `pair_hash` is
 * HMAC-SHA-256 under a key kept outside the database (server/db/relations.ts says how it is made),
 * so a copied database tells how many relations each user has, never with whom.
 *
 *   pair_hash  32 bytes, the primary key: the server looks a relation up by recomputing it
 *   owner_id   the user who granted or blocked; their rows go with them (on delete cascade)
 *   kind       'presence' (the owner lets the other user see their presence) or 'block'
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

export async function up(db: AnyDb, dialect: Dialect): Promise<void> {
  const pg = dialect === 'postgres'
  await db.schema
    .createTable('relations')
    .addColumn('pair_hash', pg ? 'bytea' : 'blob', (c) => c.primaryKey())
    .addColumn('owner_id', pg ? 'bigint' : 'integer', (c) =>
      c.notNull().references('users.id').onDelete('cascade'),
    )
    .addColumn('kind', 'text', (c) => c.notNull())
    .addCheckConstraint(
      'relations_pair_hash_length',
      pg ? sql`octet_length(pair_hash) = 32` : sql`length(pair_hash) = 32`,
    )
    .addCheckConstraint('relations_kind', sql`kind in ('presence', 'block')`)
    .modifyEnd(dialect === 'sqlite' ? sql`strict` : sql``)
    .execute()
  await db.schema.createIndex('relations_owner').on('relations').columns(['owner_id', 'kind']).execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('relations').execute()
}
