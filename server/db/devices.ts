/**
 * The devices of an account (migration 2026-12-03-08-devices). What belongs to a device rather
 * than to its account is keyed by a `DeviceAddress`: session tokens, prekeys, the queue and its
 * position. Device ids count from 1 (the device that registered) per account and are never
 * reused; a removed device keeps its row, marked removed, so that its id stays taken.
 */
import { sql } from 'kysely'
import type { Db, DeviceRow } from './schema.js'
import { inTransaction, lockUser } from './transaction.js'

/** One device of one account, as the database keys it: where a queue, a token or a prekey belongs. */
export interface DeviceAddress {
  readonly userId: number
  readonly deviceId: number
}

/** The device that registered an account; every account has it until devices can be linked. */
export const PRIMARY_DEVICE_ID = 1

export function primaryDevice(userId: number): DeviceAddress {
  return { userId, deviceId: PRIMARY_DEVICE_ID }
}

/** Adds an account's first device (in the registration's transaction). */
export async function insertPrimaryDevice(db: Db, userId: number, loginKey: Uint8Array, now: number) {
  await db
    .insertInto('devices')
    .values({
      user_id: userId,
      device_id: PRIMARY_DEVICE_ID,
      login_key: loginKey,
      name: null,
      created_at: now,
      last_seen_at: now,
    })
    .execute()
}

/** A device of the account that has not been removed. */
export function findDevice(db: Db, device: DeviceAddress): Promise<DeviceRow | undefined> {
  return db
    .selectFrom('devices')
    .selectAll()
    .where('user_id', '=', device.userId)
    .where('device_id', '=', device.deviceId)
    .where('removed_at', 'is', null)
    .executeTakeFirst()
}

/** True for a device the account had and removed. */
export async function wasRemoved(db: Db, device: DeviceAddress): Promise<boolean> {
  const row = await db
    .selectFrom('devices')
    .select('removed_at')
    .where('user_id', '=', device.userId)
    .where('device_id', '=', device.deviceId)
    .executeTakeFirst()
  return row !== undefined && row.removed_at !== null
}

/** The account's devices that have not been removed, by id. */
export function listDevices(db: Db, userId: number): Promise<DeviceRow[]> {
  return db
    .selectFrom('devices')
    .selectAll()
    .where('user_id', '=', userId)
    .where('removed_at', 'is', null)
    .orderBy('device_id')
    .execute()
}

/** Records that the device was seen at `now` (a log-in, an authenticated socket). */
export async function touchDevice(db: Db, device: DeviceAddress, now: number): Promise<void> {
  await db
    .updateTable('devices')
    .set({ last_seen_at: now })
    .where('user_id', '=', device.userId)
    .where('device_id', '=', device.deviceId)
    .where('last_seen_at', '<', now)
    .execute()
}

/** A link token's row, found by the token's SHA-256 (auth/tokens.ts hashSessionToken). */
export interface NewLinkToken {
  readonly tokenHash: Uint8Array
  readonly userId: number
  readonly now: number
  readonly expiresAt: number
}

/**
 * Stores a link token and reserves the next device id for it, in one transaction (under the
 * account's row lock): one above every id the account's devices and live link tokens have or had,
 * so two links under way never get one id. Drops the account's expired tokens and, beyond
 * `maxPerAccount` live ones, the oldest. Refused when the account already has `maxDevices`.
 */
export async function insertLinkToken(
  db: Db,
  token: NewLinkToken,
  limits: { readonly maxPerAccount: number; readonly maxDevices: number },
): Promise<{ deviceId: number } | 'too-many-devices' | 'not-found'> {
  return inTransaction(db, async (trx) => {
    if (!(await lockUser(trx, token.userId))) return 'not-found' as const
    await trx
      .deleteFrom('link_tokens')
      .where('user_id', '=', token.userId)
      .where('expires_at', '<=', token.now)
      .execute()
    const devices = await trx
      .selectFrom('devices')
      .select(['device_id', 'removed_at'])
      .where('user_id', '=', token.userId)
      .execute()
    if (devices.filter((row) => row.removed_at === null).length >= limits.maxDevices) {
      return 'too-many-devices' as const
    }
    const reserved = await trx
      .selectFrom('link_tokens')
      .select('device_id')
      .where('user_id', '=', token.userId)
      .execute()
    const deviceId =
      Math.max(
        0,
        ...devices.map((row) => Number(row.device_id)),
        ...reserved.map((row) => Number(row.device_id)),
      ) + 1
    await trx
      .insertInto('link_tokens')
      .values({
        token_hash: token.tokenHash,
        user_id: token.userId,
        device_id: deviceId,
        created_at: token.now,
        expires_at: token.expiresAt,
      })
      .execute()
    const newest = trx
      .selectFrom('link_tokens')
      .select('token_hash')
      .where('user_id', '=', token.userId)
      .orderBy('created_at', 'desc')
      .orderBy('token_hash')
      .limit(limits.maxPerAccount)
    await trx
      .deleteFrom('link_tokens')
      .where('user_id', '=', token.userId)
      .where('token_hash', 'not in', newest)
      .execute()
    return { deviceId }
  })
}

/** The account a live link token belongs to, without using it up. */
export async function linkTokenAccount(
  db: Db,
  tokenHash: Uint8Array,
  now: number,
): Promise<number | undefined> {
  const row = await db
    .selectFrom('link_tokens')
    .select('user_id')
    .where('token_hash', '=', tokenHash)
    .where('expires_at', '>', now)
    .executeTakeFirst()
  return row?.user_id
}

/** Deletes the link tokens expired at `now`; returns how many. */
export async function purgeExpiredLinkTokens(db: Db, now: number): Promise<number> {
  const result = await db.deleteFrom('link_tokens').where('expires_at', '<=', now).executeTakeFirst()
  return Number(result.numDeletedRows)
}

export interface NewDevice {
  /** The link token's SHA-256: used up by the addition, all or nothing. */
  readonly linkTokenHash: Uint8Array
  /** The id the token reserved, as the new device says (its prekeys are signed for it). */
  readonly deviceId: number
  readonly loginKey: Uint8Array
  readonly name: Uint8Array | null
  readonly now: number
  readonly maxDevices: number
}

/** Why `addDevice` added nothing. */
export type DeviceRefusal = 'link-token-invalid' | 'too-many-devices'

/**
 * Adds a device to the account of a live link token under the id it reserved, using the token up,
 * in one transaction: its login key and sealed name, then `keys` checks and stores its prekeys
 * (signed for that id). Refused when the token is unknown, expired, used or reserved another id,
 * and when the account has `maxDevices` devices.
 */
export async function addDevice(
  db: Db,
  device: NewDevice,
  keys: (trx: Db, added: DeviceAddress) => Promise<void>,
): Promise<DeviceAddress | DeviceRefusal> {
  try {
    return await inTransaction(db, (trx) => addInTransaction(trx, device, keys))
  } catch (error) {
    // Thrown so that the transaction rolls back: a refused addition leaves the token as it was.
    if (error instanceof Refused) return error.refusal
    throw error
  }
}

class Refused extends Error {
  constructor(readonly refusal: DeviceRefusal) {
    super(refusal)
  }
}

async function addInTransaction(
  trx: Db,
  device: NewDevice,
  keys: (trx: Db, added: DeviceAddress) => Promise<void>,
): Promise<DeviceAddress> {
  const used = await trx
    .deleteFrom('link_tokens')
    .where('token_hash', '=', device.linkTokenHash)
    .where('expires_at', '>', device.now)
    .returning(['user_id', 'device_id'])
    .executeTakeFirst()
  if (!used || Number(used.device_id) !== device.deviceId) throw new Refused('link-token-invalid')
  const userId = used.user_id
  // The account's row lock: two additions at once cannot both pass the limit.
  if (!(await lockUser(trx, userId))) throw new Refused('link-token-invalid')
  const devices = await trx
    .selectFrom('devices')
    .select(['device_id', 'removed_at'])
    .where('user_id', '=', userId)
    .execute()
  if (devices.filter((row) => row.removed_at === null).length >= device.maxDevices) {
    throw new Refused('too-many-devices')
  }
  if (devices.some((row) => Number(row.device_id) === device.deviceId))
    throw new Refused('link-token-invalid')
  await trx
    .insertInto('devices')
    .values({
      user_id: userId,
      device_id: device.deviceId,
      login_key: device.loginKey,
      name: device.name,
      created_at: device.now,
      last_seen_at: device.now,
    })
    .execute()
  const added = { userId, deviceId: device.deviceId }
  await keys(trx, added)
  return added
}

/** Sets (or clears) the sealed name of a device of the account; false when it has no such device. */
export async function renameDevice(db: Db, device: DeviceAddress, name: Uint8Array | null): Promise<boolean> {
  const result = await db
    .updateTable('devices')
    .set({ name })
    .where('user_id', '=', device.userId)
    .where('device_id', '=', device.deviceId)
    .where('removed_at', 'is', null)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/** Why `removeDevice` removed nothing. */
export type RemovalRefusal = 'not-found' | 'last-device'

/**
 * Removes a device from its account, in one transaction: marked removed (its id stays taken, its
 * name goes), its session tokens end (kept in ended_tokens as 'device-removed' until they would have
 * expired, so the device hears why), and its queue, queue position and prekeys are deleted.
 * Returns the hashes of the tokens that ended, so sockets opened with them can be closed; refused
 * for an id the account has not (or no longer has) and for its last device.
 */
export async function removeDevice(
  db: Db,
  device: DeviceAddress,
  now: number,
): Promise<Uint8Array[] | RemovalRefusal> {
  return inTransaction(db, async (trx) => {
    if (!(await lockUser(trx, device.userId))) return 'not-found' as const
    const active = await trx
      .selectFrom('devices')
      .select('device_id')
      .where('user_id', '=', device.userId)
      .where('removed_at', 'is', null)
      .execute()
    if (!active.some((row) => Number(row.device_id) === device.deviceId)) return 'not-found' as const
    if (active.length === 1) return 'last-device' as const
    await trx
      .updateTable('devices')
      .set({ removed_at: now, name: null })
      .where('user_id', '=', device.userId)
      .where('device_id', '=', device.deviceId)
      .execute()
    await trx
      .insertInto('ended_tokens')
      .columns(['token_hash', 'reason', 'expires_at'])
      .expression((eb) =>
        eb
          .selectFrom('auth_tokens')
          .select(['token_hash', sql.lit('device-removed').as('reason'), 'expires_at'])
          .where('user_id', '=', device.userId)
          .where('device_id', '=', device.deviceId),
      )
      .onConflict((conflict) => conflict.column('token_hash').doNothing())
      .execute()
    const ended = await trx
      .deleteFrom('auth_tokens')
      .where('user_id', '=', device.userId)
      .where('device_id', '=', device.deviceId)
      .returning('token_hash')
      .execute()
    for (const table of ['signed_prekeys', 'one_time_prekeys'] as const) {
      await trx
        .deleteFrom(table)
        .where('user_id', '=', device.userId)
        .where('device_id', '=', device.deviceId)
        .execute()
    }
    await trx
      .deleteFrom('messages')
      .where('recipient_id', '=', device.userId)
      .where('recipient_device', '=', device.deviceId)
      .execute()
    await trx
      .deleteFrom('queue_positions')
      .where('recipient_id', '=', device.userId)
      .where('recipient_device', '=', device.deviceId)
      .execute()
    return ended.map((row) => new Uint8Array(row.token_hash))
  })
}

/** The ids of the account's devices (not removed), lowest first. */
export async function deviceIds(db: Db, userId: number): Promise<number[]> {
  const rows = await db
    .selectFrom('devices')
    .select('device_id')
    .where('user_id', '=', userId)
    .where('removed_at', 'is', null)
    .orderBy('device_id')
    .execute()
  return rows.map((row) => Number(row.device_id))
}

/** An account's device ids: those it has, and those it had and removed. */
export interface DeviceIdSets {
  readonly live: ReadonlySet<number>
  readonly removed: ReadonlySet<number>
}

/** The device ids of these accounts, in one query (a relay batch's device-list checks). */
export async function deviceIdSets(db: Db, userIds: readonly number[]): Promise<Map<number, DeviceIdSets>> {
  const sets = new Map<number, { live: Set<number>; removed: Set<number> }>()
  for (const userId of userIds) sets.set(userId, { live: new Set(), removed: new Set() })
  if (userIds.length === 0) return sets
  const rows = await db
    .selectFrom('devices')
    .select(['user_id', 'device_id', 'removed_at'])
    .where('user_id', 'in', [...new Set(userIds)])
    .execute()
  for (const row of rows) {
    const set = sets.get(Number(row.user_id))!
    ;(row.removed_at === null ? set.live : set.removed).add(Number(row.device_id))
  }
  return sets
}
