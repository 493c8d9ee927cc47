/**
 * Format 3: an index that serves the history query as it is written. The query orders a
 * conversation by `coalesce(sort_order, 0)` then key (entries without an order sort first, as in
 * the other stores), which the `(peer, sort_order)` index of format 1 cannot serve: every page of
 * history sorted the whole conversation, so reading a backlog of n messages page by page cost n²
 * (10,000 messages: about 0.8 s of sorting in `read`). SQLite uses an index on the same expression.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index "messages_by_peer_order" on "messages" ("peer", coalesce("sort_order", 0), "key")`.execute(
    db,
  )
  await sql`drop index "messages_by_peer"`.execute(db)
  await sql`pragma user_version = 3`.execute(db)
}
