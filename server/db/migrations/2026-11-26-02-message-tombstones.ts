/**
 * Acknowledged messages become tombstones instead of disappearing: `delivered_at` records the
 * acknowledgement and the body is emptied, while the row (and so its UNIQUE (sender_id, client_id)
 * entry) stays until the message's original `expires_at`. A sender's late retry of a message that
 * was already delivered then finds the row and is not queued again.
 *
 * The queue index becomes partial (undelivered rows only), so draining, counting and acknowledging
 * never walk over tombstones, and acknowledging removes one index entry instead of three.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const int64 = dialect === 'postgres' ? 'bigint' : 'integer'
  await db.schema.alterTable('messages').addColumn('delivered_at', int64).execute()
  await db.schema.dropIndex('messages_recipient_seq').execute()
  await db.schema
    .createIndex('messages_undelivered')
    .on('messages')
    .columns(['recipient_id', 'seq'])
    .where(sql.ref('delivered_at'), 'is', null)
    .execute()
}

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function down(db: Kysely<any>): Promise<void> {
  // Tombstones were delivered already; without the column they would read as queued again.
  await db.deleteFrom('messages').where('delivered_at', 'is not', null).execute()
  await db.schema.dropIndex('messages_undelivered').execute()
  await db.schema
    .createIndex('messages_recipient_seq')
    .on('messages')
    .columns(['recipient_id', 'seq'])
    .execute()
  await db.schema.alterTable('messages').dropColumn('delivered_at').execute()
}
