/**
 * The key directory: signed prekeys (rotated, a few kept) and one-time prekeys (each handed out
 * exactly once), per device of an account; key ids are unique per device. Signatures are verified
 * by the caller before anything reaches these functions. Limits on claims count per account.
 */
import type { PublicPreKey } from '../../shared/identity.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'
import type { DeviceAddress } from './devices.js'
import type { Db, PreKeyRow, SignedPreKeyRow } from './schema.js'
import { inTransaction, isUniqueViolation, lockUser } from './transaction.js'

export async function insertSignedPreKey(
  db: Db,
  owner: DeviceAddress,
  preKey: PublicPreKey,
  now: number,
): Promise<void> {
  await db
    .insertInto('signed_prekeys')
    .values({
      user_id: owner.userId,
      device_id: owner.deviceId,
      key_id: preKey.keyId,
      public_key: preKey.publicKey,
      signature: preKey.signature,
      created_at: now,
    })
    .execute()
}

export async function insertOneTimePreKeys(
  db: Db,
  owner: DeviceAddress,
  preKeys: readonly PublicPreKey[],
): Promise<void> {
  if (preKeys.length === 0) return
  await db
    .insertInto('one_time_prekeys')
    .values(
      preKeys.map((preKey) => ({
        user_id: owner.userId,
        device_id: owner.deviceId,
        key_id: preKey.keyId,
        public_key: preKey.publicKey,
        signature: preKey.signature,
      })),
    )
    .execute()
}

/** The signed prekey handed out now: the device's most recently stored one. */
export function currentSignedPreKey(db: Db, owner: DeviceAddress): Promise<SignedPreKeyRow | undefined> {
  return db
    .selectFrom('signed_prekeys')
    .selectAll()
    .where('user_id', '=', owner.userId)
    .where('device_id', '=', owner.deviceId)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst()
}

export async function countOneTimePreKeys(db: Db, owner: DeviceAddress): Promise<number> {
  const row = await db
    .selectFrom('one_time_prekeys')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('user_id', '=', owner.userId)
    .where('device_id', '=', owner.deviceId)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/**
 * Adds one-time prekeys for a device, all or none: refused when an id is already stored
 * (PreKeyIdConflict) or the total would exceed `maxStored` (TooManyPreKeys). The user's row lock
 * makes the count check and the insert atomic against a concurrent upload. Returns the new count.
 */
export async function uploadOneTimePreKeys(
  db: Db,
  owner: DeviceAddress,
  preKeys: readonly PublicPreKey[],
  maxStored: number,
): Promise<number> {
  try {
    return await inTransaction(db, async (trx) => {
      if (!(await lockUser(trx, owner.userId))) throw serverErrors.userNotFound()
      const stored = await countOneTimePreKeys(trx, owner)
      if (stored + preKeys.length > maxStored) {
        throw new ServerError(
          ServerErrorCode.TooManyPreKeys,
          409,
          `one-time prekeys: expected at most ${maxStored} stored, got ${stored} stored plus ${preKeys.length} uploaded`,
        )
      }
      await insertOneTimePreKeys(trx, owner, preKeys)
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
  owner: DeviceAddress,
  preKey: PublicPreKey,
  now: number,
  keep: number,
): Promise<void> {
  try {
    await inTransaction(db, async (trx) => {
      if (!(await lockUser(trx, owner.userId))) throw serverErrors.userNotFound()
      await insertSignedPreKey(trx, owner, preKey, now)
      const kept = trx
        .selectFrom('signed_prekeys')
        .select('id')
        .where('user_id', '=', owner.userId)
        .where('device_id', '=', owner.deviceId)
        .orderBy('id', 'desc')
        .limit(keep)
      await trx
        .deleteFrom('signed_prekeys')
        .where('user_id', '=', owner.userId)
        .where('device_id', '=', owner.deviceId)
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
 * Removes and returns one of the device's one-time prekeys (the lowest id), or undefined when none are
 * left. The DELETE … RETURNING is the claim, so a key is handed out at most once: in PostgreSQL a
 * concurrent claimer that aimed at the same row finds it gone (zero rows) and tries the next lowest;
 * SQLite serialises write transactions, so its first attempt always succeeds.
 */
export async function claimOneTimePreKey(db: Db, owner: DeviceAddress): Promise<PreKeyRow | undefined> {
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    const claimed = await db
      .deleteFrom('one_time_prekeys')
      .where('user_id', '=', owner.userId)
      .where('device_id', '=', owner.deviceId)
      .where('key_id', '=', (eb) =>
        eb
          .selectFrom('one_time_prekeys')
          .select((inner) => inner.fn.min('key_id').as('key_id'))
          .where('user_id', '=', owner.userId)
          .where('device_id', '=', owner.deviceId),
      )
      .returning(['key_id', 'public_key', 'signature'])
      .executeTakeFirst()
    if (claimed) return claimed
    const remaining = await db
      .selectFrom('one_time_prekeys')
      .select('key_id')
      .where('user_id', '=', owner.userId)
      .where('device_id', '=', owner.deviceId)
      .limit(1)
      .executeTakeFirst()
    if (!remaining) return undefined
  }
  return undefined
}

/** What decides whether a bundle fetch may claim one of the target's one-time prekeys. */
export interface ClaimPolicy {
  /** Who asks: a re-fetch by the same requester within `refetchWindowMs` claims nothing. */
  readonly requesterId: number
  readonly now: number
  /** One-time prekeys handed out per target per window, across all requesters. */
  readonly claimsPerTarget: { readonly max: number; readonly timeWindowMs: number }
  readonly refetchWindowMs: number
}

/**
 * Why a bundle has no one-time prekey: none were left, or one was withheld (the target's claims in
 * the window reached the limit, or this requester was handed one within the re-fetch window).
 */
export type OneTimePreKeyOutcome = 'claimed' | 'none-left' | 'withheld'

export interface ClaimedBundle {
  readonly signedPreKey: SignedPreKeyRow
  readonly oneTimePreKey: PreKeyRow | undefined
  readonly outcome: OneTimePreKeyOutcome
}

/** How long claim rows are needed: the longer of the two windows that read them. */
export function claimsKeptMs(policy: {
  readonly oneTimePreKeyClaimsPerTarget: { readonly timeWindowMs: number }
  readonly bundleRefetchWindowMs: number
}): number {
  return Math.max(policy.oneTimePreKeyClaimsPerTarget.timeWindowMs, policy.bundleRefetchWindowMs)
}

/**
 * The device's current signed prekey and, unless none are left or the policy withholds one, one
 * claimed one-time prekey, in one transaction. Claims are counted per account (the target user). The target's row lock makes the count of recent claims, the
 * claim and its record atomic against concurrent fetches (PostgreSQL; SQLite serialises writes),
 * so the limit holds across several server processes on one database.
 */
export function claimPreKeyBundle(
  db: Db,
  target: DeviceAddress,
  policy: ClaimPolicy,
): Promise<ClaimedBundle | undefined> {
  const userId = target.userId
  return inTransaction(db, async (trx) => {
    const signedPreKey = await currentSignedPreKey(trx, target)
    if (!signedPreKey) return undefined
    if (!(await lockUser(trx, userId))) return undefined
    const keptSince = policy.now - Math.max(policy.claimsPerTarget.timeWindowMs, policy.refetchWindowMs)
    await trx
      .deleteFrom('one_time_prekey_claims')
      .where('target_id', '=', userId)
      .where('claimed_at', '<=', keptSince)
      .execute()
    const recent = await trx
      .selectFrom('one_time_prekey_claims')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('target_id', '=', userId)
      .where('claimed_at', '>', policy.now - policy.claimsPerTarget.timeWindowMs)
      .executeTakeFirstOrThrow()
    // A zero window means none (a claim committed by a fetch that read the clock later than this
    // one would otherwise count as within it).
    const refetch =
      policy.refetchWindowMs > 0 &&
      (await trx
        .selectFrom('one_time_prekey_claims')
        .select('claimed_at')
        .where('target_id', '=', userId)
        .where('requester_id', '=', policy.requesterId)
        .where('claimed_at', '>', policy.now - policy.refetchWindowMs)
        .limit(1)
        .executeTakeFirst())
    if (refetch || Number(recent.count) >= policy.claimsPerTarget.max) {
      return { signedPreKey, oneTimePreKey: undefined, outcome: 'withheld' as const }
    }
    const oneTimePreKey = await claimOneTimePreKey(trx, target)
    if (!oneTimePreKey) return { signedPreKey, oneTimePreKey, outcome: 'none-left' as const }
    await trx
      .insertInto('one_time_prekey_claims')
      .values({ target_id: userId, requester_id: policy.requesterId, claimed_at: policy.now })
      .execute()
    return { signedPreKey, oneTimePreKey, outcome: 'claimed' as const }
  })
}

/** Deletes the claim records no window reads any more (older than `keptMs`); returns how many. */
export async function purgeOneTimePreKeyClaims(db: Db, now: number, keptMs: number): Promise<number> {
  const result = await db
    .deleteFrom('one_time_prekey_claims')
    .where('claimed_at', '<=', now - keptMs)
    .executeTakeFirst()
  return Number(result.numDeletedRows)
}

/** The ids of the device's one-time prekeys the server still holds (not yet claimed), lowest first. */
export async function listOneTimePreKeyIds(db: Db, owner: DeviceAddress): Promise<number[]> {
  const rows = await db
    .selectFrom('one_time_prekeys')
    .select('key_id')
    .where('user_id', '=', owner.userId)
    .where('device_id', '=', owner.deviceId)
    .orderBy('key_id')
    .execute()
  return rows.map((row) => row.key_id)
}
