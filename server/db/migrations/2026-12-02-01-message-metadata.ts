/**
 * Less metadata at rest (issue 10, item 6):
 *
 * - Tombstones move to their own table, `message_tombstones`, with only what idempotency needs: the
 *   sender, the client's message id and the expiry. No recipient, no delivery time, no body: an
 *   acknowledged message no longer leaves a row that says who wrote to whom, or when it was read.
 * - `seq` becomes a position in one recipient's queue (1, 2, 3, … per recipient, the last one kept
 *   in `queue_positions`) instead of one sequence shared by every message on the server, so the
 *   numbers a recipient sees no longer count the server's whole traffic. The queue's key is
 *   (recipient_id, seq). Rows already queued keep their numbers, and each recipient's counter starts
 *   at the highest of them, so nothing queued is renumbered and numbers keep increasing.
 * - `messages` then holds only queued messages: `delivered_at` goes.
 *
 * Both dialects rebuild `messages` (create, copy, drop, rename), the way SQLite must. Reverting puts
 * tombstones back as delivered rows whose recipient is unknown (the sender stands in for it; a
 * delivered row is never read as queued) and renumbers every row on one shared sequence again.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

/** The message lifetime when this migration was written (server/limits.ts MESSAGE_TTL_MS then). */
const MESSAGE_TTL_MS = 30 * 24 * 60 * 60 * 1000

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

const strictTable = (dialect: Dialect) => (dialect === 'sqlite' ? sql`strict` : sql``)

export async function up(db: AnyDb, dialect: Dialect): Promise<void> {
  const pg = dialect === 'postgres'
  const bytes = pg ? 'bytea' : 'blob'
  const int64 = pg ? 'bigint' : 'integer'
  const byteLength = (column: string) =>
    pg ? sql`octet_length(${sql.ref(column)})` : sql`length(${sql.ref(column)})`

  await db.schema
    .createTable('message_tombstones')
    .addColumn('client_id', bytes, (c) => c.notNull())
    .addColumn('sender_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('expires_at', int64, (c) => c.notNull())
    .addPrimaryKeyConstraint('message_tombstones_pk', ['client_id', 'sender_id'])
    .addCheckConstraint('message_tombstones_client_id_length', sql`${byteLength('client_id')} = 16`)
    .modifyEnd(strictTable(dialect))
    .execute()
  await db.schema
    .createIndex('message_tombstones_expiry')
    .on('message_tombstones')
    .column('expires_at')
    .execute()
  await sql`insert into message_tombstones (client_id, sender_id, expires_at)
    select client_id, sender_id, expires_at from messages where delivered_at is not null`.execute(db)

  await db.schema
    .createTable('queue_positions')
    .addColumn('recipient_id', int64, (c) => c.primaryKey().references('users.id').onDelete('cascade'))
    .addColumn('last_seq', int64, (c) => c.notNull())
    .modifyEnd(strictTable(dialect))
    .execute()
  await sql`insert into queue_positions (recipient_id, last_seq)
    select recipient_id, max(seq) from messages where delivered_at is null group by recipient_id`.execute(db)

  if (pg) {
    // Index names are per schema: the old table gives up its unique index's name first.
    await db.schema.alterTable('messages').renameTo('messages_retired').execute()
    await sql`alter table messages_retired drop constraint messages_client_id_sender`.execute(db)
  }
  await db.schema
    .createTable('messages_rebuilt')
    .addColumn('recipient_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('seq', int64, (c) => c.notNull())
    .addColumn('sender_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('client_id', bytes, (c) => c.notNull())
    .addColumn('body', bytes, (c) => c.notNull())
    .addColumn('created_at', int64, (c) => c.notNull())
    .addColumn('expires_at', int64, (c) => c.notNull())
    .addPrimaryKeyConstraint('messages_recipient_seq', ['recipient_id', 'seq'])
    .addUniqueConstraint('messages_client_id_sender', ['client_id', 'sender_id'])
    .addCheckConstraint('messages_client_id_length', sql`${byteLength('client_id')} = 16`)
    .modifyEnd(strictTable(dialect))
    .execute()
  await sql`insert into messages_rebuilt (recipient_id, seq, sender_id, client_id, body, created_at, expires_at)
    select recipient_id, seq, sender_id, client_id, body, created_at, expires_at
    from ${sql.table(pg ? 'messages_retired' : 'messages')} where delivered_at is null`.execute(db)
  await db.schema.dropTable(pg ? 'messages_retired' : 'messages').execute()
  await db.schema.alterTable('messages_rebuilt').renameTo('messages').execute()
  await db.schema.createIndex('messages_expiry').on('messages').column('expires_at').execute()
  // The old shared counter would still tell the server's total volume.
  if (!pg) await sql`delete from sqlite_sequence where name = 'messages'`.execute(db)
}

export async function down(db: AnyDb, dialect: Dialect): Promise<void> {
  const pg = dialect === 'postgres'
  const bytes = pg ? 'bytea' : 'blob'
  const int64 = pg ? 'bigint' : 'integer'
  const byteLength = (column: string) =>
    pg ? sql`octet_length(${sql.ref(column)})` : sql`length(${sql.ref(column)})`
  if (pg) {
    await db.schema.alterTable('messages').renameTo('messages_retired').execute()
    await sql`alter table messages_retired drop constraint messages_client_id_sender`.execute(db)
    await sql`drop index messages_expiry`.execute(db)
  }
  await db.schema
    .createTable('messages_old')
    .addColumn('seq', int64, (c) =>
      pg ? c.primaryKey().generatedByDefaultAsIdentity() : c.primaryKey().autoIncrement(),
    )
    .addColumn('recipient_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('sender_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('client_id', bytes, (c) => c.notNull())
    .addColumn('body', bytes, (c) => c.notNull())
    .addColumn('created_at', int64, (c) => c.notNull())
    .addColumn('expires_at', int64, (c) => c.notNull())
    .addColumn('delivered_at', int64)
    .addUniqueConstraint('messages_client_id_sender', ['client_id', 'sender_id'])
    .addCheckConstraint('messages_client_id_length', sql`${byteLength('client_id')} = 16`)
    .modifyEnd(strictTable(dialect))
    .execute()
  // Tombstones first (they are older than anything still queued, or as old), then the queue in order.
  await sql`insert into messages_old (recipient_id, sender_id, client_id, body, created_at, expires_at, delivered_at)
    select sender_id, sender_id, client_id, ${pg ? sql`'\\x'::bytea` : sql`x''`}, expires_at - ${MESSAGE_TTL_MS},
      expires_at, expires_at - ${MESSAGE_TTL_MS}
    from message_tombstones order by expires_at`.execute(db)
  await sql`insert into messages_old (recipient_id, sender_id, client_id, body, created_at, expires_at)
    select recipient_id, sender_id, client_id, body, created_at, expires_at
    from ${sql.table(pg ? 'messages_retired' : 'messages')} order by created_at, recipient_id, seq`.execute(
    db,
  )
  await db.schema.dropTable(pg ? 'messages_retired' : 'messages').execute()
  await db.schema.alterTable('messages_old').renameTo('messages').execute()
  if (!pg) {
    await sql`update sqlite_sequence set name = 'messages' where name = 'messages_old'`.execute(db)
  }
  await db.schema
    .createIndex('messages_undelivered')
    .on('messages')
    .columns(['recipient_id', 'seq'])
    .where(sql.ref('delivered_at'), 'is', null)
    .execute()
  await db.schema.createIndex('messages_expiry').on('messages').column('expires_at').execute()
  await db.schema.dropTable('queue_positions').execute()
  await db.schema.dropTable('message_tombstones').execute()
}
