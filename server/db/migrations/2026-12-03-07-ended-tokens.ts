/**
 * Session tokens that ended for a reason their holder should hear, kept until they would have
 * expired: today only the tokens of a deleted account. A device that presents one (the device
 * that deleted the account, when the answer to its request was lost; any other device of the
 * account) is told that the account was deleted (E2E_ERR_ACCOUNT_DELETED), not that its session is
 * unknown, which led it to log in again and hear "wrong password". Only the token's SHA-256, as
 * auth_tokens keeps it, and the reason: nothing links the row to the account, its name or keys.
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
    .createTable('ended_tokens')
    .addColumn('token_hash', bytes, (c) => c.primaryKey())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('expires_at', int64, (c) => c.notNull())
    .addCheckConstraint('ended_tokens_hash_length', sql`${byteLength('token_hash')} = 32`)
    .addCheckConstraint('ended_tokens_reason', sql`reason in ('account-deleted')`)
    .modifyEnd(pg ? sql`` : sql`strict`)
    .execute()
  await db.schema.createIndex('ended_tokens_expiry').on('ended_tokens').column('expires_at').execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('ended_tokens').execute()
}
