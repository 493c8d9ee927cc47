/**
 * Upgrades lose nothing, in Chromium: an IndexedDB database as version 0.1.0 made it (schema 1,
 * holding bob's records from test/fixtures/stores-0.1.0) opens with today's IdbStore, which adds the
 * table for sent content, and today's client core, which turns bob's session into a session record
 * keyed by address. Bob then writes to alice offline, on the session he had (with no server to
 * fetch a prekey bundle from, nothing else could encrypt it). (The same fixture's SQLite
 * side and the conversation through a real server are in test/client-upgrade.test.ts.)
 */
import { openDB } from 'idb'
import { afterEach, describe, expect, it } from 'vitest'
import { fromBase64Url } from '../../../shared/bytes.js'
import { ChatClient } from '../../../shared/client/chat-client.js'
import type { HttpClient, WebSocketFactory } from '../../../shared/client/transport.js'
import bobDump from '../../../test/fixtures/stores-0.1.0/bob.json' with { type: 'json' }
import fixture from '../../../test/fixtures/stores-0.1.0/fixture.json' with { type: 'json' }
import { IdbStore, SCHEMA_VERSION } from './idb-store.js'

const name = `secure-chat:upgrade-test-${Date.now().toString(36)}`
let store: IdbStore | undefined

afterEach(async () => {
  await store?.wipe()
  await store?.close()
})

/** Schema 1 exactly as 0.1.0 created it, filled with bob's records. */
async function writeVersion1Database(): Promise<void> {
  const db = await openDB(name, 1, {
    upgrade(database) {
      for (const table of ['account', 'prekeys', 'sessions', 'contacts', 'outbox']) {
        database.createObjectStore(table, { keyPath: 'key' })
      }
      database
        .createObjectStore('messages', { keyPath: 'key' })
        .createIndex('by-peer-order', ['peer', 'order'])
    },
  })
  const dump = bobDump as Record<string, { key: string; peer?: string; order?: number; value: string }[]>
  const tables = Object.keys(dump)
  const tx = db.transaction(tables, 'readwrite')
  for (const table of tables) {
    for (const row of dump[table]!) tx.objectStore(table).put({ ...row, value: fromBase64Url(row.value) })
  }
  await tx.done
  db.close()
}

/** The client never reaches a server here: every request fails as if offline. */
const offline: HttpClient = {
  request: () => Promise.reject(new Error('test: offline')),
}
const noSocket: WebSocketFactory = () => {
  throw new Error('test: offline')
}

describe('an IndexedDB database written by 0.1.0', () => {
  it('opens, migrates, and keeps the session it had', async () => {
    await writeVersion1Database()
    store = await IdbStore.openNamed(name)
    expect(SCHEMA_VERSION).toBe(2)
    const bob = await ChatClient.open(
      {
        serverUrl: 'https://chat.invalid',
        http: offline,
        webSocket: noSocket,
        store,
        storageKeyIterations: fixture.kdfIterations,
        minimumStorageKeyIterations: fixture.kdfIterations,
      },
      fixture.password,
      fixture.bob,
    )
    expect((await bob.history(fixture.alice)).map((m) => m.text)).toEqual(fixture.bobHistory)
    expect((await store.list('sessions')).map((record) => record.key)).toEqual([`${fixture.alice}:1`])

    // Every request fails here, so a send that needed a new session (a prekey bundle) would fail:
    // this one succeeds only on the migrated session.
    const sent = await bob.send(fixture.alice, 'written after the upgrade')
    expect(sent.state).toBe('sending')
    const [waiting] = await store.list('outbox')
    expect(waiting?.key).toBe(sent.id)
    // The sent content is kept too, in the table the upgrade added.
    expect((await store.list('sent')).map((record) => record.key)).toEqual([`${fixture.alice}/${sent.id}`])
    await bob.close()
    store = await IdbStore.openNamed(name)
  })
})
