/**
 * Format 2: a table for the content of sent messages, kept for a while (sealed, like every value)
 * so that a recipient who could not decrypt one can ask for it again.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('sent')
    .addColumn('key', 'text', (column) => column.primaryKey().notNull())
    .addColumn('peer', 'text')
    .addColumn('sort_order', 'real')
    .addColumn('value', 'blob', (column) => column.notNull())
    .modifyEnd(sql`strict`)
    .execute()
  await sql`pragma user_version = 2`.execute(db)
}
