/**
 * Accounts: creating one with its keys in one transaction, deleting one with everything keyed by
 * it, the names of deleted accounts held for a while, lookups, and username search.
 */
import { createHash } from 'node:crypto'
import { sql } from 'kysely'
import type { PublicIdentity, PublicPreKey } from '../../shared/identity.js'
import { serverErrors } from '../errors.js'
import { insertPrimaryDevice, PRIMARY_DEVICE_ID, primaryDevice } from './devices.js'
import { insertOneTimePreKeys, insertSignedPreKey } from './prekeys.js'
import { deleteRelationsOf, type RelationsKey } from './relations.js'
import type { Db, UserRow } from './schema.js'
import { inTransaction, isUniqueViolation } from './transaction.js'

export interface NewAccount {
  /** Already normalised (shared/username.ts). */
  readonly username: string
  /** bcrypt of the account's login secret (auth/password.ts). */
  readonly passwordHash: string
  /** The first device's RSA-OAEP public key, SPKI DER, already checked. */
  readonly loginKey: Uint8Array
  /** Identity and the first device's prekeys, whose signatures the caller has verified. */
  readonly identity: PublicIdentity
  readonly signedPreKey: PublicPreKey
  readonly oneTimePreKeys: readonly PublicPreKey[]
  readonly now: number
}

/** The unique indexes that keep one identity key and one signing key to one account. */
const IDENTITY_KEY_INDEXES = ['users_identity_key_unique', 'users_signing_key_unique']
const IDENTITY_KEY_COLUMNS = ['users.identity_key', 'users.signing_key']

/**
 * True when a unique violation is on an account's identity or signing key rather than its name:
 * PostgreSQL names the index, SQLite the columns ("UNIQUE constraint failed: users.signing_key").
 */
function isIdentityKeyViolation(error: unknown): boolean {
  if (!isUniqueViolation(error)) return false
  const { constraint, message } = error as { constraint?: unknown; message?: unknown }
  if (typeof constraint === 'string') return IDENTITY_KEY_INDEXES.includes(constraint)
  return typeof message === 'string' && IDENTITY_KEY_COLUMNS.some((column) => message.includes(column))
}

/**
 * Stores a user with the identity and its first device (device 1) with its login key, signed
 * prekey and one-time prekeys, all or nothing.
 * Throws ServerError(UsernameTaken) when the normalised name exists (also under a race), and
 * ServerError(IdentityKeyTaken) when another account holds the identity key or the signing key.
 */
export async function createAccount(db: Db, account: NewAccount): Promise<number> {
  try {
    return await inTransaction(db, async (trx) => {
      // After the insert: in PostgreSQL it waits for a deletion of the same name still in progress,
      // so the hold that deletion leaves is seen here (users.ts deleteAccount swaps the two at once).
      const { id } = await trx
        .insertInto('users')
        .values({
          username: account.username,
          password_hash: account.passwordHash,
          credential: 'login-secret-v1',
          identity_key: account.identity.identityKey,
          signing_key: account.identity.signingKey,
          identity_signature: account.identity.identitySignature,
          created_at: account.now,
          identity_changed_at: account.now,
        })
        .returning('id')
        .executeTakeFirstOrThrow()
      if (await isUsernameHeld(trx, account.username, account.now)) throw serverErrors.usernameHeld()
      // A hold that ended and was not purged yet goes now, or it would name the new account.
      await trx
        .deleteFrom('deleted_usernames')
        .where('username_hash', '=', usernameHash(account.username))
        .execute()
      await insertPrimaryDevice(trx, id, account.loginKey, account.now)
      await insertSignedPreKey(trx, primaryDevice(id), account.signedPreKey, account.now)
      await insertOneTimePreKeys(trx, primaryDevice(id), account.oneTimePreKeys)
      return id
    })
  } catch (error) {
    // Prekey ids were checked for duplicates before; the unique keys left are the name and the keys.
    if (isIdentityKeyViolation(error)) throw serverErrors.identityKeyTaken()
    if (isUniqueViolation(error)) throw serverErrors.usernameTaken()
    throw error
  }
}

export interface ReplacedKeys {
  readonly loginKey: Uint8Array
  readonly identity: PublicIdentity
  readonly signedPreKey: PublicPreKey
  readonly oneTimePreKeys: readonly PublicPreKey[]
  readonly now: number
}

/**
 * A user starting over on a new device: new identity, login key and prekeys replace the old ones,
 * and every session token ends (they were encrypted to the old login key's holder), in one
 * transaction. The new device is device 1 again; every other device of the account is removed
 * (it holds the old identity), its queue and prekeys deleted. Queued messages stay: they were sent to the old keys, and the new device reports
 * them as unreadable rather than the server dropping them unseen. Throws
 * ServerError(IdentityKeyTaken) when another account holds the new identity or signing key (the
 * account's own current keys may be given again).
 */
export async function replaceAccountKeys(db: Db, userId: number, keys: ReplacedKeys): Promise<void> {
  try {
    await replaceKeys(db, userId, keys)
  } catch (error) {
    if (isIdentityKeyViolation(error)) throw serverErrors.identityKeyTaken()
    throw error
  }
}

async function replaceKeys(db: Db, userId: number, keys: ReplacedKeys): Promise<void> {
  await inTransaction(db, async (trx) => {
    await trx
      .updateTable('users')
      .set({
        identity_key: keys.identity.identityKey,
        signing_key: keys.identity.signingKey,
        identity_signature: keys.identity.identitySignature,
        identity_changed_at: keys.now,
      })
      .where('id', '=', userId)
      .execute()
    await trx
      .updateTable('devices')
      .set({ login_key: keys.loginKey, last_seen_at: keys.now })
      .where('user_id', '=', userId)
      .where('device_id', '=', PRIMARY_DEVICE_ID)
      .execute()
    await trx
      .updateTable('devices')
      .set({ removed_at: keys.now, name: null })
      .where('user_id', '=', userId)
      .where('device_id', '<>', PRIMARY_DEVICE_ID)
      .where('removed_at', 'is', null)
      .execute()
    await trx
      .deleteFrom('messages')
      .where('recipient_id', '=', userId)
      .where('recipient_device', '<>', PRIMARY_DEVICE_ID)
      .execute()
    await trx
      .deleteFrom('queue_positions')
      .where('recipient_id', '=', userId)
      .where('recipient_device', '<>', PRIMARY_DEVICE_ID)
      .execute()
    await trx.deleteFrom('signed_prekeys').where('user_id', '=', userId).execute()
    await trx.deleteFrom('one_time_prekeys').where('user_id', '=', userId).execute()
    await trx.deleteFrom('auth_tokens').where('user_id', '=', userId).execute()
    await insertSignedPreKey(trx, primaryDevice(userId), keys.signedPreKey, keys.now)
    await insertOneTimePreKeys(trx, primaryDevice(userId), keys.oneTimePreKeys)
  })
}

/**
 * Deletes the account and everything keyed by it, in one transaction: its devices, keys and prekeys, its
 * session tokens, its queue (messages waiting for it) and the messages it sent that are still
 * waiting for others (their sender would be a name nobody holds any more), its tombstones, its
 * queue position, the one-time prekey claims it made or that were made of it, every relation it
 * keeps or others keep with it (presence grants and blocks: `relationsKey` finds the latter), and
 * the user row; and holds its name until `heldUntil` (only a hash of it is kept). Every table that
 * gains rows keyed by a user adds its delete here, before the user row. Returns false when there
 * was no such user (nothing changed).
 */
export async function deleteAccount(
  db: Db,
  userId: number,
  options: { readonly heldUntil: number; readonly relationsKey: RelationsKey },
): Promise<boolean> {
  return inTransaction(db, async (trx) => {
    const user = await trx.selectFrom('users').select('username').where('id', '=', userId).executeTakeFirst()
    if (!user) return false
    await trx
      .deleteFrom('messages')
      .where((eb) => eb.or([eb('recipient_id', '=', userId), eb('sender_id', '=', userId)]))
      .execute()
    await trx.deleteFrom('message_tombstones').where('sender_id', '=', userId).execute()
    await trx.deleteFrom('queue_positions').where('recipient_id', '=', userId).execute()
    // Each device still holding a token hears that the account was deleted, not "unknown token".
    await trx
      .insertInto('ended_tokens')
      .columns(['token_hash', 'reason', 'expires_at'])
      .expression((eb) =>
        eb
          .selectFrom('auth_tokens')
          .select(['token_hash', sql.lit('account-deleted').as('reason'), 'expires_at'])
          .where('user_id', '=', userId),
      )
      .onConflict((conflict) => conflict.column('token_hash').doNothing())
      .execute()
    await trx.deleteFrom('auth_tokens').where('user_id', '=', userId).execute()
    await trx.deleteFrom('one_time_prekeys').where('user_id', '=', userId).execute()
    await trx.deleteFrom('signed_prekeys').where('user_id', '=', userId).execute()
    await trx
      .deleteFrom('one_time_prekey_claims')
      .where((eb) => eb.or([eb('target_id', '=', userId), eb('requester_id', '=', userId)]))
      .execute()
    // Provisioning channels the account's devices claimed, with what they carried (the foreign
    // keys' cascade would take them too; named here with the rest).
    const claimed = trx.selectFrom('provisioning_channels').select('id').where('claimed_by', '=', userId)
    await trx.deleteFrom('provisioning_messages').where('channel_id', 'in', claimed).execute()
    await trx.deleteFrom('provisioning_channels').where('claimed_by', '=', userId).execute()
    // Before the user row: the hashes of others' relations with this user are found by owner.
    await deleteRelationsOf(trx, options.relationsKey, userId)
    await trx.deleteFrom('devices').where('user_id', '=', userId).execute()
    await trx.deleteFrom('users').where('id', '=', userId).execute()
    await trx
      .insertInto('deleted_usernames')
      .values({ username_hash: usernameHash(user.username), held_until: options.heldUntil })
      .onConflict((conflict) =>
        conflict.column('username_hash').doUpdateSet({ held_until: options.heldUntil }),
      )
      .execute()
    return true
  })
}

/**
 * What the hold of a deleted name keeps: SHA-256 over a label and the normalised name. A guessed
 * name can still be checked against it (names are short), but the table does not list the names
 * of deleted accounts to whoever reads the database.
 */
export function usernameHash(username: string): Uint8Array {
  return new Uint8Array(
    createHash('sha256').update('secure-chat deleted username v1\0').update(username).digest(),
  )
}

/** True while the normalised name belongs to a deleted account whose hold has not ended at `now`. */
export async function isUsernameHeld(db: Db, username: string, now: number): Promise<boolean> {
  const row = await db
    .selectFrom('deleted_usernames')
    .select('held_until')
    .where('username_hash', '=', usernameHash(username))
    .where('held_until', '>', now)
    .executeTakeFirst()
  return row !== undefined
}

/** Deletes the holds that ended at `now`; returns how many. */
export async function purgeEndedUsernameHolds(db: Db, now: number): Promise<number> {
  const result = await db.deleteFrom('deleted_usernames').where('held_until', '<=', now).executeTakeFirst()
  return Number(result.numDeletedRows)
}

export function findUserByUsername(db: Db, username: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst()
}

export function findUserById(db: Db, id: number): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
}

export async function usernameExists(db: Db, username: string): Promise<boolean> {
  const row = await db.selectFrom('users').select('id').where('username', '=', username).executeTakeFirst()
  return row !== undefined
}

export async function updatePasswordHash(db: Db, userId: number, passwordHash: string): Promise<void> {
  await db.updateTable('users').set({ password_hash: passwordHash }).where('id', '=', userId).execute()
}

/**
 * The account proves itself from now on with the login secret `passwordHash` is a hash of, not with
 * its password (an upgrade, or a password change).
 */
export async function setLoginSecretHash(db: Db, userId: number, passwordHash: string): Promise<void> {
  await db
    .updateTable('users')
    .set({ password_hash: passwordHash, credential: 'login-secret-v1' })
    .where('id', '=', userId)
    .execute()
}

/** Escapes LIKE wildcards; usernames may contain '_', which LIKE would read as "any character". */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (char) => `\\${char}`)}%`
}

/** Usernames starting with `prefix` (already normalised), in byte order, at most `limit`. */
export async function searchUsernames(db: Db, prefix: string, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('users')
    .select('username')
    .where(sql<boolean>`username like ${likePrefix(prefix)} escape '\\'`)
    .orderBy('username')
    .limit(limit)
    .execute()
  return rows.map((row) => row.username)
}
