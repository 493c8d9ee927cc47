/**
 * The devices of an account (migration 2026-12-03-08-devices). What belongs to a device rather
 * than to its account is keyed by a `DeviceAddress`: session tokens, prekeys, the queue and its
 * position. Device ids count from 1 (the device that registered) per account and are never
 * reused; a removed device keeps its row, marked removed, so that its id stays taken.
 */
import type { Db, DeviceRow } from './schema.js'

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
