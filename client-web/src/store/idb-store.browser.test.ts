/**
 * What only the IndexedDB store does (its ClientStore behaviour is in
 * idb-store.contract.browser.test.ts), in Chromium: a wiped store deletes its database on close, the
 * accounts a browser holds are the database names, a database from a newer version is refused, and
 * a closed store refuses to work.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { isClientError } from '../../../shared/client/errors.js'
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

describe('IdbStore', () => {
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
