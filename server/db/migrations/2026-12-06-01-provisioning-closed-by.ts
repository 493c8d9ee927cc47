/**
 * Which side closed a provisioning channel: the new device (it gave up, or finished) or an existing
 * device of the account (it refused). The new device is then told that the other device refused
 * (E2E_ERR_LINK_REFUSED) rather than only that the code is used, so both UIs can say which it was.
 * Channels closed before this migration keep null: refused to both sides as used, as before.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

export async function up(db: AnyDb, _dialect: Dialect): Promise<void> {
  await db.schema
    .alterTable('provisioning_channels')
    .addColumn('closed_by', 'text', (c) => c.check(sql`closed_by in ('new', 'existing')`))
    .execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.alterTable('provisioning_channels').dropColumn('closed_by').execute()
}
