/**
 * Upgrades of the core's records inside a client store, run when an account is opened, before
 * anything else reads the store. The stores' own schema (tables, indexes) is migrated by each store
 * (client-terminal/migrations/, client-web's IndexedDB upgrade); this is about what the core keeps
 * in those tables, which is the same in both. The layout is recorded in the sealed account secrets
 * (`recordsVersion`), so it is as trustworthy as the rest of the account.
 *
 *   layout 1  (0.1.0)  sessions: one session (format 1) per contact, key <username>
 *   layout 2           sessions: one session record per address, key <username>:<device>
 *   layout 3           the account secrets record the store's device id (`deviceId`): a store of
 *                      layout 1 or 2 is its account's device 1, the one that registered it
 *
 * Each step runs in one store transaction: a failure leaves the store as it was, and the step runs
 * again on the next open. A store whose layout is newer than this code is refused, never changed.
 */
import { address, addressKey, DEFAULT_DEVICE_ID } from '../address.js'
import { ClientError, ClientErrorCode } from './errors.js'
import type { SealedStore } from './sealed-store.js'
import type { ClientStore, StoreOperation } from './store.js'

export const RECORDS_VERSION = 3

export async function migrateRecords(store: ClientStore, records: SealedStore): Promise<void> {
  const version = records.account.secrets.recordsVersion ?? 1
  if (version > RECORDS_VERSION) {
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      `expected records of layout ${RECORDS_VERSION} or older, got ${version} (written by a newer version of secure-chat)`,
    )
  }
  if (version < 2) await sessionsIntoRecords(store, records)
  if (version < 3) await deviceIdRecorded(records)
}

/**
 * Layout 2 → 3: the store says which device it is. Every store written before linking existed is
 * the device that registered its account (a client of that time signed its prekeys as device 1).
 */
async function deviceIdRecorded(records: SealedStore): Promise<void> {
  await records.saveSecrets({ ...records.account.secrets, deviceId: DEFAULT_DEVICE_ID, recordsVersion: 3 })
}

/** Layout 1 → 2: each contact's session becomes the current session of its device 1's record. */
async function sessionsIntoRecords(store: ClientStore, records: SealedStore): Promise<void> {
  const operations: StoreOperation[] = []
  for (const entry of await store.list('sessions')) {
    if (entry.key.includes(':')) continue
    const session = await records.openLegacySession(entry.key, entry.value)
    operations.push(
      await records.sessionRecordPut(addressKey(address(entry.key)), { current: session, archived: [] }),
      { op: 'delete', table: 'sessions', key: entry.key },
    )
  }
  operations.push(await records.accountPut({ ...records.account.secrets, recordsVersion: 2 }))
  await store.commit(operations)
}
