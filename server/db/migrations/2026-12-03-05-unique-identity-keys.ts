/**
 * Keys bound to names (issue 10, item 7): no two accounts may hold the same X25519 identity key or
 * the same Ed25519 signing key. Until now the server stored whatever a registration or reinstall
 * carried, so a user could register another user's public keys under a name of their own (an
 * unknown key-share: messages meant for the copy reach, and seem to come from, the original).
 * Two unique indexes now refuse that, whatever the code above them does, also under a race.
 *
 * Duplicates already stored: honest clients make fresh random keys for every registration and
 * reinstall, so a key held by two accounts was copied from one to the other, and the copy is the
 * later one (a key is public only once registered). Per key, the account that has held it longest
 * keeps it: the earliest `identity_changed_at`, then the lowest id. Every other account holding
 * either of its keys has its keys withdrawn:
 *
 *   - its identity and signing keys are replaced by random bytes nobody holds a private key for,
 *     which its stored identity signature does not vouch for, so no client will start a session
 *     with it (clients verify that signature before any key agreement), and `identity_changed_at`
 *     moves to now, so its contacts are told its identity changed;
 *   - its signed and one-time prekeys are deleted (they were signed by the copied signing key), so
 *     its bundle answers as for an account without keys.
 *
 * The account itself stays (name, password, queued messages): its owner, if honest, gets working
 * keys back with /reinstall, as after losing a device. Reverting drops the indexes; withdrawn keys
 * are not restored (they were a copy of someone else's).
 *
 * Frozen in time: this file takes Kysely<any> and imports nothing from the application.
 */
import { randomBytes } from 'node:crypto'
import { type Kysely, sql } from 'kysely'

type Dialect = 'sqlite' | 'postgres'

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time and must not see today's types
type AnyDb = Kysely<any>

export async function up(db: AnyDb, _dialect: Dialect): Promise<void> {
  // Accounts holding a key that an account which has held it longer also holds.
  const withdrawn = await sql<{ id: number | string }>`
    select later.id from users later
    where exists (
      select 1 from users earlier
      where earlier.id <> later.id
        and (earlier.identity_key = later.identity_key or earlier.signing_key = later.signing_key)
        and (earlier.identity_changed_at < later.identity_changed_at
          or (earlier.identity_changed_at = later.identity_changed_at and earlier.id < later.id)))
    order by later.id`.execute(db)
  const now = Date.now()
  for (const { id } of withdrawn.rows) {
    const userId = Number(id)
    await db
      .updateTable('users')
      .set({
        identity_key: new Uint8Array(randomBytes(32)),
        signing_key: new Uint8Array(randomBytes(32)),
        identity_changed_at: now,
      })
      .where('id', '=', userId)
      .execute()
    await db.deleteFrom('signed_prekeys').where('user_id', '=', userId).execute()
    await db.deleteFrom('one_time_prekeys').where('user_id', '=', userId).execute()
  }

  await db.schema
    .createIndex('users_identity_key_unique')
    .unique()
    .on('users')
    .column('identity_key')
    .execute()
  await db.schema.createIndex('users_signing_key_unique').unique().on('users').column('signing_key').execute()
}

export async function down(db: AnyDb, _dialect: Dialect): Promise<void> {
  await db.schema.dropIndex('users_signing_key_unique').execute()
  await db.schema.dropIndex('users_identity_key_unique').execute()
}
