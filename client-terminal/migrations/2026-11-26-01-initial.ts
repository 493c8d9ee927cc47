/**
 * The terminal client's first local schema: one table per client-store table (shared/client/store.ts),
 * each holding opaque sealed values under a text key, with the conversation and sort position in
 * the clear for the two tables that need an index (messages and outbox).
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application. Fix
 * mistakes with a new migration, never here. It also writes the file's format marker
 * (application_id) and format version (user_version), in the same transaction as the tables.
 */
import { type Kysely, sql } from 'kysely'

const TABLES = ['account', 'prekeys', 'sessions', 'contacts', 'messages', 'outbox'] as const

/** "SCHT": marks a SQLite file as a secure-chat client database. */
const APPLICATION_ID = 0x53434854

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function up(db: Kysely<any>): Promise<void> {
  for (const table of TABLES) {
    await db.schema
      .createTable(table)
      .addColumn('key', 'text', (column) => column.primaryKey().notNull())
      .addColumn('peer', 'text')
      .addColumn('sort_order', 'real')
      .addColumn('value', 'blob', (column) => column.notNull())
      .modifyEnd(sql`strict`)
      .execute()
  }
  await db.schema.createIndex('messages_by_peer').on('messages').columns(['peer', 'sort_order']).execute()
  await sql`pragma application_id = ${sql.raw(String(APPLICATION_ID))}`.execute(db)
  await sql`pragma user_version = 1`.execute(db)
}
