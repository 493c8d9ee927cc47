/**
 * Initial schema: accounts, the key directory, session tokens and the message queue.
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application, so later
 * changes to the code cannot change what it does. Fix mistakes with a new migration, never here.
 */
import { type ColumnDefinitionBuilder, type CreateTableBuilder, type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const pg = dialect === 'postgres'
  const bytes = pg ? 'bytea' : 'blob'
  // SQLite STRICT tables allow only INTEGER, REAL, TEXT, BLOB and ANY; INTEGER is 64-bit there.
  const int64 = pg ? 'bigint' : 'integer'
  const byteLength = (column: string) =>
    pg ? sql`octet_length(${sql.ref(column)})` : sql`length(${sql.ref(column)})`
  /** SQLite: AUTOINCREMENT so a deleted maximum is never reused; PostgreSQL: an identity column. */
  const serial = (column: ColumnDefinitionBuilder) =>
    pg ? column.primaryKey().generatedByDefaultAsIdentity() : column.primaryKey().autoIncrement()
  const strict = <T extends string, C extends string>(table: CreateTableBuilder<T, C>) =>
    pg ? table : table.modifyEnd(sql`strict`)

  await strict(
    db.schema
      .createTable('users')
      .addColumn('id', int64, serial)
      // Byte-wise collation in PostgreSQL, as in SQLite: prefix search and ordering must not depend
      // on the server's locale.
      .addColumn('username', pg ? sql`text collate "C"` : 'text', (c) => c.notNull().unique())
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('login_key', bytes, (c) => c.notNull())
      .addColumn('identity_key', bytes, (c) => c.notNull())
      .addColumn('signing_key', bytes, (c) => c.notNull())
      .addColumn('identity_signature', bytes, (c) => c.notNull())
      .addColumn('created_at', int64, (c) => c.notNull())
      .addColumn('identity_changed_at', int64, (c) => c.notNull())
      .addCheckConstraint('users_identity_key_length', sql`${byteLength('identity_key')} = 32`)
      .addCheckConstraint('users_signing_key_length', sql`${byteLength('signing_key')} = 32`)
      .addCheckConstraint('users_identity_signature_length', sql`${byteLength('identity_signature')} = 64`),
  ).execute()

  await strict(
    db.schema
      .createTable('signed_prekeys')
      .addColumn('id', int64, serial)
      .addColumn('user_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('key_id', int64, (c) => c.notNull())
      .addColumn('public_key', bytes, (c) => c.notNull())
      .addColumn('signature', bytes, (c) => c.notNull())
      .addColumn('created_at', int64, (c) => c.notNull())
      .addUniqueConstraint('signed_prekeys_user_key', ['user_id', 'key_id'])
      .addCheckConstraint('signed_prekeys_public_key_length', sql`${byteLength('public_key')} = 32`)
      .addCheckConstraint('signed_prekeys_signature_length', sql`${byteLength('signature')} = 64`),
  ).execute()

  await strict(
    db.schema
      .createTable('one_time_prekeys')
      .addColumn('user_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('key_id', int64, (c) => c.notNull())
      .addColumn('public_key', bytes, (c) => c.notNull())
      .addColumn('signature', bytes, (c) => c.notNull())
      .addPrimaryKeyConstraint('one_time_prekeys_pk', ['user_id', 'key_id'])
      .addCheckConstraint('one_time_prekeys_public_key_length', sql`${byteLength('public_key')} = 32`)
      .addCheckConstraint('one_time_prekeys_signature_length', sql`${byteLength('signature')} = 64`),
  ).execute()

  await strict(
    db.schema
      .createTable('auth_tokens')
      .addColumn('token_hash', bytes, (c) => c.primaryKey())
      .addColumn('user_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('created_at', int64, (c) => c.notNull())
      .addColumn('expires_at', int64, (c) => c.notNull())
      .addCheckConstraint('auth_tokens_hash_length', sql`${byteLength('token_hash')} = 32`),
  ).execute()
  await db.schema
    .createIndex('auth_tokens_user')
    .on('auth_tokens')
    .columns(['user_id', 'expires_at'])
    .execute()
  await db.schema.createIndex('auth_tokens_expiry').on('auth_tokens').column('expires_at').execute()

  await strict(
    db.schema
      .createTable('messages')
      .addColumn('seq', int64, serial)
      .addColumn('recipient_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('sender_id', int64, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('client_id', bytes, (c) => c.notNull())
      .addColumn('body', bytes, (c) => c.notNull())
      .addColumn('created_at', int64, (c) => c.notNull())
      .addColumn('expires_at', int64, (c) => c.notNull())
      .addUniqueConstraint('messages_sender_client_id', ['sender_id', 'client_id'])
      .addCheckConstraint('messages_client_id_length', sql`${byteLength('client_id')} = 16`),
  ).execute()
  await db.schema
    .createIndex('messages_recipient_seq')
    .on('messages')
    .columns(['recipient_id', 'seq'])
    .execute()
  await db.schema.createIndex('messages_expiry').on('messages').column('expires_at').execute()
}

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['messages', 'auth_tokens', 'one_time_prekeys', 'signed_prekeys', 'users']) {
    await db.schema.dropTable(table).execute()
  }
}
