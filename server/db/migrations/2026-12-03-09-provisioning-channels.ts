/**
 * One-time provisioning channels (issue 12, linking a device): the relay between a new device and
 * an existing device of the account, kept in the database so that every node of a cluster serves
 * the same channel. The server stores what it needs to relay and to refuse, nothing it could read:
 *
 *   provisioning_channels   the channel's random id, the SHA-256 of the new device's channel secret
 *                           (never the secret), a keyed hash of the address that opened it (for the
 *                           per-address limit; not the address), the account whose device claimed
 *                           it, how many messages it carried, when it expires and when it closed
 *   provisioning_messages   ciphertext for one side ('new' or 'existing'), by position in the
 *                           channel (1, 2, 3, … shared by both sides)
 *
 * A channel claimed by an account goes with the account (foreign key, on delete cascade), and its
 * messages with it.
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
    .createTable('provisioning_channels')
    .addColumn('id', bytes, (c) => c.primaryKey())
    .addColumn('secret_hash', bytes, (c) => c.notNull())
    .addColumn('opener_hash', bytes, (c) => c.notNull())
    .addColumn('claimed_by', int64, (c) => c.references('users.id').onDelete('cascade'))
    .addColumn('message_count', int64, (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', int64, (c) => c.notNull())
    .addColumn('expires_at', int64, (c) => c.notNull())
    .addColumn('closed_at', int64)
    .addCheckConstraint('provisioning_channels_id_length', sql`${byteLength('id')} = 16`)
    .addCheckConstraint('provisioning_channels_secret_length', sql`${byteLength('secret_hash')} = 32`)
    .addCheckConstraint('provisioning_channels_opener_length', sql`${byteLength('opener_hash')} = 32`)
    .addCheckConstraint('provisioning_channels_count', sql`message_count >= 0`)
    .modifyEnd(pg ? sql`` : sql`strict`)
    .execute()
  await db.schema
    .createIndex('provisioning_channels_expiry')
    .on('provisioning_channels')
    .column('expires_at')
    .execute()
  await db.schema
    .createIndex('provisioning_channels_opener')
    .on('provisioning_channels')
    .columns(['opener_hash', 'expires_at'])
    .execute()
  // Found by account when the account is deleted (and by the foreign key's cascade).
  await db.schema
    .createIndex('provisioning_channels_claimant')
    .on('provisioning_channels')
    .column('claimed_by')
    .execute()
  await db.schema
    .createTable('provisioning_messages')
    .addColumn('channel_id', bytes, (c) =>
      c.notNull().references('provisioning_channels.id').onDelete('cascade'),
    )
    .addColumn('position', int64, (c) => c.notNull())
    .addColumn('recipient', 'text', (c) => c.notNull())
    .addColumn('body', bytes, (c) => c.notNull())
    .addColumn('created_at', int64, (c) => c.notNull())
    .addPrimaryKeyConstraint('provisioning_messages_pkey', ['channel_id', 'position'])
    .addCheckConstraint('provisioning_messages_recipient', sql`recipient in ('new', 'existing')`)
    .addCheckConstraint('provisioning_messages_position', sql`position >= 1`)
    .addCheckConstraint('provisioning_messages_body_length', sql`${byteLength('body')} >= 1`)
    .modifyEnd(pg ? sql`` : sql`strict`)
    .execute()
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('provisioning_messages').execute()
  await db.schema.dropTable('provisioning_channels').execute()
}
