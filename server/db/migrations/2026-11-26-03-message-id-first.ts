/**
 * The idempotency key of a message becomes UNIQUE (client_id, sender_id) instead of
 * (sender_id, client_id). Clients make message ids that begin with the time they were written
 * (docs/protocol.md, message ids), so with the id first every insert lands at the end of the index,
 * where the previous insert left off, instead of at one place per sender: a batch of sends from
 * two hundred senders then rewrites a handful of index pages instead of two hundred, and the queue's
 * writes (WAL pages per message) shrink accordingly. Ids that are not time-ordered still work; they
 * only cost what every id cost before.
 *
 * PostgreSQL swaps the constraint in place. SQLite cannot drop a table constraint, so the table is
 * rebuilt (SQLite's documented procedure: create the new table, copy, drop, rename, re-create the
 * indexes), carrying over the AUTOINCREMENT counter so that no sequence number is ever reused.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

const COLUMNS = [
  'seq',
  'recipient_id',
  'sender_id',
  'client_id',
  'body',
  'created_at',
  'expires_at',
  'delivered_at',
]

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  if (dialect === 'postgres') {
    await db.schema.alterTable('messages').dropConstraint('messages_sender_client_id').execute()
    await db.schema
      .alterTable('messages')
      .addUniqueConstraint('messages_client_id_sender', ['client_id', 'sender_id'])
      .execute()
    return
  }
  await rebuildSqliteTable(db, ['client_id', 'sender_id'], 'messages_client_id_sender')
}

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function down(db: Kysely<any>, dialect: Dialect): Promise<void> {
  if (dialect === 'postgres') {
    await db.schema.alterTable('messages').dropConstraint('messages_client_id_sender').execute()
    await db.schema
      .alterTable('messages')
      .addUniqueConstraint('messages_sender_client_id', ['sender_id', 'client_id'])
      .execute()
    return
  }
  await rebuildSqliteTable(db, ['sender_id', 'client_id'], 'messages_sender_client_id')
}

/** The messages table as migrations 01 and 02 left it, with the given UNIQUE constraint. */
async function rebuildSqliteTable(
  // biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
  db: Kysely<any>,
  unique: ('client_id' | 'sender_id')[],
  uniqueName: string,
): Promise<void> {
  const counter = await sql<{
    seq: number
  }>`select seq from sqlite_sequence where name = 'messages'`.execute(db)
  await db.schema
    .createTable('messages_rebuilt')
    .addColumn('seq', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('recipient_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('sender_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('client_id', 'blob', (c) => c.notNull())
    .addColumn('body', 'blob', (c) => c.notNull())
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .addColumn('expires_at', 'integer', (c) => c.notNull())
    .addColumn('delivered_at', 'integer')
    .addUniqueConstraint(uniqueName, unique)
    .addCheckConstraint('messages_client_id_length', sql`length(${sql.ref('client_id')}) = 16`)
    .modifyEnd(sql`strict`)
    .execute()
  await sql`insert into messages_rebuilt (${sql.join(COLUMNS.map((column) => sql.ref(column)))})
    select ${sql.join(COLUMNS.map((column) => sql.ref(column)))} from messages order by seq`.execute(db)
  const last = counter.rows[0]?.seq
  if (last !== undefined) {
    await sql`delete from sqlite_sequence where name = 'messages_rebuilt'`.execute(db)
    await sql`insert into sqlite_sequence (name, seq) values ('messages_rebuilt', ${last})`.execute(db)
  }
  await db.schema.dropTable('messages').execute()
  await db.schema.alterTable('messages_rebuilt').renameTo('messages').execute()
  await db.schema
    .createIndex('messages_undelivered')
    .on('messages')
    .columns(['recipient_id', 'seq'])
    .where(sql.ref('delivered_at'), 'is', null)
    .execute()
  await db.schema.createIndex('messages_expiry').on('messages').column('expires_at').execute()
}
