/**
 * The IndexedDB store against the ClientStore contract, in Chromium: the same answers as the
 * MemoryStore reference for any sequence of batches, all-or-nothing commits, paging messages,
 * wiping, and refusing a database written by a newer version.
 */
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { isClientError } from '../../../shared/client/errors.js'
import {
  type ClientStore,
  MemoryStore,
  type StoreOperation,
  type StoreRecord,
  type StoreTable,
} from '../../../shared/client/store.js'
import { IdbStore, localAccounts, SCHEMA_VERSION, STORE_TABLES } from './idb-store.js'

const opened: IdbStore[] = []
let counter = 0

async function freshStore(): Promise<IdbStore> {
  counter++
  const store = await IdbStore.open(`store-test-${Date.now().toString(36)}-${counter}`)
  opened.push(store)
  return store
}

afterEach(async () => {
  for (const store of opened.splice(0)) {
    await store.wipe().catch(() => undefined)
    await store.close()
  }
})

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values)
}

function message(peer: string, id: string, order: number): StoreRecord {
  return { key: `${peer}/${id}`, peer, order, value: bytes(order % 256) }
}

async function snapshot(store: ClientStore) {
  const tables: Record<string, StoreRecord[]> = {}
  for (const table of STORE_TABLES) tables[table] = await store.list(table)
  return tables
}

describe('IdbStore', () => {
  it('stores and returns records with their bytes, index fields and key order', async () => {
    const store = await freshStore()
    await store.commit([
      { op: 'put', table: 'contacts', record: { key: 'zoe', value: bytes(3) } },
      { op: 'put', table: 'contacts', record: { key: 'amir', value: bytes(1, 2) } },
      { op: 'put', table: 'outbox', record: { key: 'm1', peer: 'zoe', order: 7, value: bytes(9) } },
    ])
    expect(await store.get('contacts', 'amir')).toEqual({ key: 'amir', value: bytes(1, 2) })
    expect((await store.get('contacts', 'amir'))?.value).toBeInstanceOf(Uint8Array)
    expect(await store.get('contacts', 'nobody')).toBeUndefined()
    expect((await store.list('contacts')).map((record) => record.key)).toEqual(['amir', 'zoe'])
    expect(await store.list('outbox')).toEqual([{ key: 'm1', peer: 'zoe', order: 7, value: bytes(9) }])
    await store.commit([{ op: 'delete', table: 'contacts', key: 'zoe' }])
    expect((await store.list('contacts')).map((record) => record.key)).toEqual(['amir'])
  })

  it('pages a conversation: the newest `limit` before `beforeOrder`, oldest first, one peer only', async () => {
    const store = await freshStore()
    const operations: StoreOperation[] = []
    for (let order = 1; order <= 250; order++) {
      operations.push({ op: 'put', table: 'messages', record: message('ann', `a${order}`, order * 10) })
      operations.push({ op: 'put', table: 'messages', record: message('bo', `b${order}`, order * 10 + 5) })
    }
    await store.commit(operations)
    const newest = await store.listMessages('ann', { limit: 100 })
    expect(newest.map((record) => record.order)).toEqual(
      Array.from({ length: 100 }, (_, i) => (151 + i) * 10),
    )
    const older = await store.listMessages('ann', { limit: 100, beforeOrder: newest[0]?.order })
    expect(older.at(-1)?.order).toBe(1500)
    expect(older[0]?.order).toBe(510)
    const oldest = await store.listMessages('ann', { limit: 100, beforeOrder: older[0]?.order })
    expect(oldest.map((record) => record.order)).toEqual(Array.from({ length: 50 }, (_, i) => (i + 1) * 10))
    expect(oldest.every((record) => record.peer === 'ann')).toBe(true)
    expect(await store.listMessages('nobody', { limit: 10 })).toEqual([])
    expect(await store.listMessages('ann', { limit: 0 })).toEqual([])
  })

  it('answers like the MemoryStore reference for any sequence of batches', async () => {
    const tables: StoreTable[] = ['contacts', 'messages', 'outbox', 'sessions']
    const key = fc.constantFrom('a', 'b', 'c', 'd', 'e')
    const peer = fc.constantFrom('ann', 'bo')
    const operation: fc.Arbitrary<StoreOperation> = fc.oneof(
      fc.record({
        op: fc.constant('put' as const),
        table: fc.constantFrom(...tables),
        record: fc.record({
          key,
          peer,
          order: fc.integer({ min: 0, max: 1000 }),
          value: fc.uint8Array({ maxLength: 8 }),
        }),
      }),
      fc.record({ op: fc.constant('delete' as const), table: fc.constantFrom(...tables), key }),
    )
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(operation, { minLength: 1, maxLength: 6 }), { maxLength: 8 }),
        fc.integer({ min: 1, max: 6 }),
        async (batches, limit) => {
          const store = await freshStore()
          const reference = new MemoryStore()
          for (const batch of batches) {
            await store.commit(batch)
            await reference.commit(batch)
          }
          expect(await snapshot(store)).toEqual(await snapshot(reference))
          for (const who of ['ann', 'bo']) {
            const mine = await store.listMessages(who, { limit })
            const theirs = await reference.listMessages(who, { limit })
            // Equal orders may come back in either order; compare what is there.
            expect(mine.map((record) => record.order)).toEqual(theirs.map((record) => record.order))
          }
        },
      ),
      { numRuns: 40 },
    )
  })

  it('applies a batch entirely or not at all', async () => {
    const store = await freshStore()
    await store.commit([{ op: 'put', table: 'sessions', record: { key: 'ann', value: bytes(1) } }])
    const failing: StoreOperation[] = [
      { op: 'put', table: 'sessions', record: { key: 'ann', value: bytes(2) } },
      { op: 'put', table: 'messages', record: message('ann', 'x', 5) },
      // A record without a usable key: IndexedDB refuses it, so the whole batch must roll back.
      { op: 'put', table: 'contacts', record: { key: undefined as unknown as string, value: bytes(3) } },
    ]
    await expect(store.commit(failing)).rejects.toSatisfy((error) => isClientError(error))
    expect(await store.get('sessions', 'ann')).toEqual({ key: 'ann', value: bytes(1) })
    expect(await store.list('messages')).toEqual([])
    expect(await store.list('contacts')).toEqual([])
  })

  it('wipes everything, and deletes its database when closed after a wipe', async () => {
    const store = await freshStore()
    await store.commit(
      STORE_TABLES.map((table) => ({ op: 'put' as const, table, record: { key: 'k', value: bytes(1) } })),
    )
    await store.wipe()
    for (const table of STORE_TABLES) expect(await store.list(table)).toEqual([])
    const name = store.name
    await store.close()
    opened.splice(opened.indexOf(store), 1)
    const names = (await indexedDB.databases()).map((database) => database.name)
    expect(names).not.toContain(name)
  })

  it('lists the accounts this browser holds by their database names', async () => {
    const store = await IdbStore.open('Listed.User')
    opened.push(store)
    expect(await localAccounts()).toContain('listed.user')
  })

  it('refuses a database written by a newer version of the app', async () => {
    const name = `secure-chat:future-${counter++}`
    await new Promise<void>((resolve, reject) => {
      const request = indexedDB.open(name, SCHEMA_VERSION + 1)
      request.onsuccess = () => {
        request.result.close()
        resolve()
      }
      request.onerror = () => reject(request.error)
    })
    await expect(IdbStore.openNamed(name)).rejects.toSatisfy(
      (error) => isClientError(error, 'E2E_ERR_CORRUPT_STORE') && /newer/.test((error as Error).message),
    )
    indexedDB.deleteDatabase(name)
  })

  it('refuses to work once closed', async () => {
    const store = await freshStore()
    await store.close()
    opened.splice(opened.indexOf(store), 1)
    await expect(store.get('account', 'account')).rejects.toSatisfy((error) =>
      isClientError(error, 'E2E_ERR_CLIENT_STATE'),
    )
  })
})
