/**
 * Session tokens, stored only as SHA-256(token). Looking a token up hashes it and finds the row by
 * that hash through the primary-key index, so no code compares secret bytes with early exit.
 */
import type { DeviceAddress } from './devices.js'
import type { Db, TokenEnding } from './schema.js'
import { inTransaction } from './transaction.js'

export interface NewToken {
  readonly tokenHash: Uint8Array
  /** The device the session is of. */
  readonly device: DeviceAddress
  readonly now: number
  readonly expiresAt: number
}

/**
 * Stores a new token; in the same transaction drops the user's expired tokens and, beyond
 * `maxPerDevice` live ones of the token's device, that device's oldest (a log-in on one device
 * never ends another device's sessions). Returns the hashes of the tokens it dropped, so sockets
 * opened with them can be closed.
 */
export async function insertToken(db: Db, token: NewToken, maxPerDevice: number): Promise<Uint8Array[]> {
  const { userId, deviceId } = token.device
  return inTransaction(db, async (trx) => {
    const expired = await trx
      .deleteFrom('auth_tokens')
      .where('user_id', '=', userId)
      .where('expires_at', '<=', token.now)
      .returning('token_hash')
      .execute()
    await trx
      .insertInto('auth_tokens')
      .values({
        token_hash: token.tokenHash,
        user_id: userId,
        device_id: deviceId,
        created_at: token.now,
        expires_at: token.expiresAt,
      })
      .execute()
    const newest = trx
      .selectFrom('auth_tokens')
      .select('token_hash')
      .where('user_id', '=', userId)
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .orderBy('token_hash')
      .limit(maxPerDevice)
    const oldest = await trx
      .deleteFrom('auth_tokens')
      .where('user_id', '=', userId)
      .where('device_id', '=', deviceId)
      .where('token_hash', 'not in', newest)
      .returning('token_hash')
      .execute()
    return [...expired, ...oldest].map((row) => new Uint8Array(row.token_hash))
  })
}

export interface Session {
  readonly userId: number
  /** The device the session is of. */
  readonly deviceId: number
  readonly username: string
  readonly expiresAt: number
}

/** The session a token hash belongs to, if it exists and has not expired at `now`. */
export async function findSession(db: Db, tokenHash: Uint8Array, now: number): Promise<Session | undefined> {
  const row = await db
    .selectFrom('auth_tokens')
    .innerJoin('users', 'users.id', 'auth_tokens.user_id')
    .select(['auth_tokens.user_id', 'auth_tokens.device_id', 'users.username', 'auth_tokens.expires_at'])
    .where('auth_tokens.token_hash', '=', tokenHash)
    .where('auth_tokens.expires_at', '>', now)
    .executeTakeFirst()
  return (
    row && {
      userId: row.user_id,
      deviceId: Number(row.device_id),
      username: row.username,
      expiresAt: row.expires_at,
    }
  )
}

/**
 * Why a token that is no session ended, when its holder should be told (ended_tokens): undefined
 * for a token that never existed, was revoked (logout, a new password) or expired.
 */
export async function tokenEnding(
  db: Db,
  tokenHash: Uint8Array,
  now: number,
): Promise<TokenEnding | undefined> {
  const row = await db
    .selectFrom('ended_tokens')
    .select('reason')
    .where('token_hash', '=', tokenHash)
    .where('expires_at', '>', now)
    .executeTakeFirst()
  return row?.reason
}

/** Deletes the ended tokens that would have expired by `now`; returns how many. */
export async function purgeEndedTokens(db: Db, now: number): Promise<number> {
  const result = await db.deleteFrom('ended_tokens').where('expires_at', '<=', now).executeTakeFirst()
  return Number(result.numDeletedRows)
}

/** Token hashes per query in `liveTokenHashes` (well under any driver's bound-parameter limit). */
const TOKEN_CHUNK = 1_000

/** Which of these token hashes (as hex) belong to a live, unexpired session now. */
export async function liveTokenHashes(
  db: Db,
  tokenHashes: readonly Uint8Array[],
  now: number,
): Promise<Set<string>> {
  const live = new Set<string>()
  for (let start = 0; start < tokenHashes.length; start += TOKEN_CHUNK) {
    const rows = await db
      .selectFrom('auth_tokens')
      .select('token_hash')
      .where('token_hash', 'in', tokenHashes.slice(start, start + TOKEN_CHUNK))
      .where('expires_at', '>', now)
      .execute()
    for (const row of rows) live.add(Buffer.from(row.token_hash).toString('hex'))
  }
  return live
}

/** Revokes one token; true when it existed. */
export async function deleteToken(db: Db, tokenHash: Uint8Array): Promise<boolean> {
  const result = await db.deleteFrom('auth_tokens').where('token_hash', '=', tokenHash).executeTakeFirst()
  return result.numDeletedRows > 0n
}

export async function countTokens(db: Db, userId: number): Promise<number> {
  const row = await db
    .selectFrom('auth_tokens')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('user_id', '=', userId)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/** Deletes every token expired at `now`; returns how many. */
export async function purgeExpiredTokens(db: Db, now: number): Promise<number> {
  const result = await db.deleteFrom('auth_tokens').where('expires_at', '<=', now).executeTakeFirst()
  return Number(result.numDeletedRows)
}

/** Ends every session of a user but the one `keepHash` names; returns the hashes it ended. */
export async function deleteOtherTokens(db: Db, userId: number, keepHash: Uint8Array): Promise<Uint8Array[]> {
  const rows = await db
    .deleteFrom('auth_tokens')
    .where('user_id', '=', userId)
    .where('token_hash', '!=', keepHash)
    .returning('token_hash')
    .execute()
  return rows.map((row) => new Uint8Array(row.token_hash))
}
