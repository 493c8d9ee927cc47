/**
 * Login secrets (issue 10, item 1): clients stop sending the password and send a login secret
 * derived from it (shared/login-secret.ts). `users.credential` says what `password_hash` is a bcrypt
 * hash of: 'password' for every account made before (its owner's client upgrades it on the next
 * log-in, sending the password one last time with the new secret) or 'login-secret-v1'.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

export async function up(db: AnyDb, _dialect: Dialect): Promise<void> {
  await db.schema
    .alterTable('users')
    .addColumn('credential', 'text', (column) =>
      column.notNull().defaultTo('password').check(sql`credential in ('password', 'login-secret-v1')`),
    )
    .execute()
}

export async function down(db: AnyDb, _dialect: Dialect): Promise<void> {
  await db.schema.alterTable('users').dropColumn('credential').execute()
}
