/**
 * The key directory: signed prekeys (rotated, a few kept) and one-time prekeys (each handed out
 * exactly once). Signatures are verified by the caller before anything reaches these functions.
 */
import type { PublicPreKey } from '../../shared/identity.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'
import type { Db, PreKeyRow, SignedPreKeyRow } from './schema.js'
import { inTransaction, isUniqueViolation, lockUser } from './transaction.js'

export async function insertSignedPreKey(
  db: Db,
  userId: number,
  preKey: PublicPreKey,
  now: number,
): Promise<void> {
  await db
    .insertInto('signed_prekeys')
    .values({
      user_id: userId,
      key_id: preKey.keyId,
      public_key: preKey.publicKey,
      signature: preKey.signature,
      created_at: now,
    })
    .execute()
}

export async function insertOneTimePreKeys(
  db: Db,
  userId: number,
  preKeys: readonly PublicPreKey[],
): Promise<void> {
  if (preKeys.length === 0) return
  await db
    .insertInto('one_time_prekeys')
    .values(
      preKeys.map((preKey) => ({
        user_id: userId,
        key_id: preKey.keyId,
        public_key: preKey.publicKey,
        signature: preKey.signature,
      })),
    )
    .execute()
}

/** The signed prekey handed out now: the most recently stored one. */
export function currentSignedPreKey(db: Db, userId: number): Promise<SignedPreKeyRow | undefined> {
  return db
    .selectFrom('signed_prekeys')
    .selectAll()
    .where('user_id', '=', userId)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst()
}

export async function countOneTimePreKeys(db: Db, userId: number): Promise<number> {
  const row = await db
    .selectFrom('one_time_prekeys')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('user_id', '=', userId)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/**
 * Adds one-time prekeys for a user, all or none: refused when an id is already stored
 * (PreKeyIdConflict) or the total would exceed `maxStored` (TooManyPreKeys). The user's row lock
 * makes the count check and the insert atomic against a concurrent upload. Returns the new count.
 */
export async function uploadOneTimePreKeys(
  db: Db,
  userId: number,
  preKeys: readonly PublicPreKey[],
  maxStored: number,
): Promise<number> {
  try {
    return await inTransaction(db, async (trx) => {
      if (!(await lockUser(trx, userId))) throw serverErrors.userNotFound()
      const stored = await countOneTimePreKeys(trx, userId)
      if (stored + preKeys.length > maxStored) {
        throw new ServerError(
          ServerErrorCode.TooManyPreKeys,
          409,
          `one-time prekeys: expected at most ${maxStored} stored, got ${stored} stored plus ${preKeys.length} uploaded`,
        )
      }
      await insertOneTimePreKeys(trx, userId, preKeys)
      return stored + preKeys.length
    })
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw serverErrors.preKeyIdConflict('one-time prekeys: expected new key ids, got an id already stored')
    }
    throw error
  }
}

/**
 * Makes `preKey` the current signed prekey and keeps only the newest `keep` (the current one and its
 * predecessors, which peers may still be using while messages drain).
 */
export async function rotateSignedPreKey(
  db: Db,
  userId: number,
  preKey: PublicPreKey,
  now: number,
  keep: number,
): Promise<void> {
  try {
    await inTransaction(db, async (trx) => {
      if (!(await lockUser(trx, userId))) throw serverErrors.userNotFound()
      await insertSignedPreKey(trx, userId, preKey, now)
      const kept = trx
        .selectFrom('signed_prekeys')
        .select('id')
        .where('user_id', '=', userId)
        .orderBy('id', 'desc')
        .limit(keep)
      await trx
        .deleteFrom('signed_prekeys')
        .where('user_id', '=', userId)
        .where('id', 'not in', kept)
        .execute()
    })
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw serverErrors.preKeyIdConflict('signed prekey: expected a new key id, got one already used')
    }
    throw error
  }
}

/**
 * Bound on claim retries under contention. Each failed attempt means another transaction claimed the
 * key this one aimed at, so 64 concurrent claimers on one user would all succeed; beyond that the
 * caller falls back to the signed prekey alone, which is always safe.
 */
const MAX_CLAIM_ATTEMPTS = 64

/**
 * Removes and returns one of the user's one-time prekeys (the lowest id), or undefined when none are
 * left. The DELETE … RETURNING is the claim, so a key is handed out at most once: in PostgreSQL a
 * concurrent claimer that aimed at the same row finds it gone (zero rows) and tries the next lowest;
 * SQLite serialises write transactions, so its first attempt always succeeds.
 */
export async function claimOneTimePreKey(db: Db, userId: number): Promise<PreKeyRow | undefined> {
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    const claimed = await db
      .deleteFrom('one_time_prekeys')
      .where('user_id', '=', userId)
      .where('key_id', '=', (eb) =>
        eb
          .selectFrom('one_time_prekeys')
          .select((inner) => inner.fn.min('key_id').as('key_id'))
          .where('user_id', '=', userId),
      )
      .returning(['key_id', 'public_key', 'signature'])
      .executeTakeFirst()
    if (claimed) return claimed
    const remaining = await db
      .selectFrom('one_time_prekeys')
      .select('key_id')
      .where('user_id', '=', userId)
      .limit(1)
      .executeTakeFirst()
    if (!remaining) return undefined
  }
  return undefined
}

export interface ClaimedBundle {
  readonly signedPreKey: SignedPreKeyRow
  readonly oneTimePreKey: PreKeyRow | undefined
}

/** The current signed prekey and, when any is left, one claimed one-time prekey, in one transaction. */
export function claimPreKeyBundle(db: Db, userId: number): Promise<ClaimedBundle | undefined> {
  return inTransaction(db, async (trx) => {
    const signedPreKey = await currentSignedPreKey(trx, userId)
    if (!signedPreKey) return undefined
    const oneTimePreKey = await claimOneTimePreKey(trx, userId)
    return { signedPreKey, oneTimePreKey }
  })
}
