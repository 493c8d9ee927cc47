/**
 * Upgrades lose nothing: the stores version 0.1.0 wrote (test/fixtures/stores-0.1.0, made by
 * make-0.1.0-stores.ts at that version) open with today's code. Alice's terminal-client SQLite
 * file and bob's records (in a memory store here; in IndexedDB in
 * client-web/src/store/idb-upgrade.browser.test.ts) are migrated on first open: sessions become
 * session records keyed by address, and the conversation goes on with the sessions they had, no new
 * key agreement, including the message that waited on the server across the upgrade.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openSqliteStore } from '../client-terminal/store.js'
import { openDatabase } from '../server/db/connect.js'
import { migrateToLatest } from '../server/db/migrate.js'
import { startServer, type TestServer } from '../server/test/harness.js'
import { fromBase64Url } from '../shared/bytes.js'
import { ChatClient } from '../shared/client/chat-client.js'
import { MemoryStore, type StoreOperation, type StoreTable } from '../shared/client/store.js'
import { clientOptions, tappedWebSocketFactory } from './client-helpers.js'

const fixtures = join(import.meta.dirname, 'fixtures', 'stores-0.1.0')
const fixture = JSON.parse(readFileSync(join(fixtures, 'fixture.json'), 'utf8')) as {
  password: string
  alice: string
  bob: string
  aliceHistory: string[]
  bobHistory: string[]
  queuedForBob: string[]
}

let dir: string
let server: TestServer

beforeAll(async () => {
  // Never the fixtures themselves: opening migrates them.
  dir = mkdtempSync(join(tmpdir(), 'secure-chat-upgrade-'))
  for (const file of ['server.sqlite', 'alice.sqlite']) copyFileSync(join(fixtures, file), join(dir, file))
  const serverFile = join(dir, 'server.sqlite')
  // The queued message was written with the server's 30-day expiry: as if the upgrade came in time.
  const raw = new BetterSqlite3(serverFile)
  raw.prepare('update messages set expires_at = ? where delivered_at is null').run(Date.now() + 86_400_000)
  raw.close()
  const open = () => openDatabase({ kind: 'sqlite', file: serverFile })
  const first = await open()
  await migrateToLatest(first.db, 'sqlite')
  server = await startServer({
    database: { ...first, location: serverFile, reopen: open, dispose: async () => {} },
  })
})

afterAll(async () => {
  await server.close()
  await server.database.close()
  rmSync(dir, { recursive: true, force: true })
})

/** Bob's 0.1.0 records, as they were in his store. */
async function bobStore(): Promise<MemoryStore> {
  const dump = JSON.parse(readFileSync(join(fixtures, 'bob.json'), 'utf8')) as Record<
    StoreTable,
    { key: string; peer?: string; order?: number; value: string }[]
  >
  const store = new MemoryStore()
  const operations: StoreOperation[] = Object.entries(dump).flatMap(([table, records]) =>
    records.map((record) => ({
      op: 'put' as const,
      table: table as StoreTable,
      record: { ...record, value: fromBase64Url(record.value) },
    })),
  )
  await store.commit(operations)
  return store
}

describe('stores written by 0.1.0', () => {
  it('open, migrate, and go on with the same sessions', async () => {
    const aliceFile = join(dir, 'alice.sqlite')
    const aliceTap = tappedWebSocketFactory(server)
    const bobTap = tappedWebSocketFactory(server)
    const alice = await ChatClient.open(
      clientOptions(server, { store: await openSqliteStore(aliceFile), webSocket: aliceTap.factory }),
      fixture.password,
      fixture.alice,
    )
    const bobRecords = await bobStore()
    const bob = await ChatClient.open(
      clientOptions(server, { store: bobRecords, webSocket: bobTap.factory }),
      fixture.password,
      fixture.bob,
    )
    // History is as it was.
    expect((await alice.history(fixture.bob)).map((m) => m.text)).toEqual(fixture.aliceHistory)
    expect((await bob.history(fixture.alice)).map((m) => m.text)).toEqual(fixture.bobHistory)
    // Sessions are now records keyed by address (alice's file is checked once it is closed).
    expect((await bobRecords.list('sessions')).map((r) => r.key)).toEqual([`${fixture.alice}:1`])

    // The message that waited on the server across the upgrade opens with the migrated session.
    const arriving = new Promise<string[]>((resolve) => {
      const texts: string[] = []
      bob.events.on('message', (m) => {
        if (m.direction === 'in') texts.push(m.text)
        if (texts.length === fixture.queuedForBob.length + 1) resolve(texts)
      })
    })
    const undecryptable: string[] = []
    for (const client of [alice, bob]) client.events.on('undecryptable', ({ id }) => undecryptable.push(id))
    // Contacts from before presence needed consent share it as before: each sees the other online.
    const aliceSeesBob = new Promise<void>((resolve) =>
      alice.events.on('presence', ({ username, online }) => username === fixture.bob && online && resolve()),
    )
    await Promise.all([alice.login(fixture.password), bob.login(fixture.password)])
    // 0.1.0's server stored bcrypt of the passwords: this first log-in moved both accounts to their
    // login secrets (docs/protocol.md §12.2), and from now on the password never leaves the device.
    const credentials = await server.database.db
      .selectFrom('users')
      .select(['username', 'credential'])
      .orderBy('username')
      .execute()
    expect(credentials).toEqual(
      [fixture.alice, fixture.bob].sort().map((username) => ({ username, credential: 'login-secret-v1' })),
    )
    alice.connect()
    bob.connect()
    await Promise.all([alice.waitUntilOnline(), bob.waitUntilOnline()])
    await alice.send(fixture.bob, 'after the upgrade')
    expect(await arriving).toEqual([...fixture.queuedForBob, 'after the upgrade'])
    const toAlice = new Promise<string>((resolve) =>
      alice.events.on('message', (m) => m.direction === 'in' && resolve(m.text)),
    )
    await bob.send(fixture.alice, 'and back')
    expect(await toAlice).toBe('and back')
    expect(undecryptable).toEqual([])
    await aliceSeesBob
    expect(aliceTap.tap.of('sent', 'presence.share').flatMap((frame) => frame.users)).toContain(fixture.bob)
    expect(await alice.contact(fixture.bob)).toMatchObject({ online: true, blocked: false })

    // No new key agreement: every envelope either sent is a plain ratchet message (type 1).
    for (const tap of [aliceTap.tap, bobTap.tap]) {
      const types = tap.of('sent', 'send').map((frame) => fromBase64Url(frame.body)[1])
      expect(types.length).toBeGreaterThan(0)
      expect(types.every((type) => type === 1)).toBe(true)
    }
    await Promise.all([alice.close(), bob.close()])
    // Alice's file (readable once her client let go of its lock): format 2, sessions by address.
    const file = new BetterSqlite3(aliceFile, { readonly: true, fileMustExist: true })
    try {
      expect(file.pragma('user_version', { simple: true })).toBe(3)
      expect(file.prepare('select key from sessions').all()).toEqual([{ key: `${fixture.bob}:1` }])
    } finally {
      file.close()
    }
  })

  it('prekey upkeep on a store without a one-time prekey ledger keeps every key the server holds', async () => {
    const records = await bobStore()
    const oneTimeKeys = async () =>
      (await records.list('prekeys')).filter((record) => record.key.startsWith('one-time:')).map((r) => r.key)
    const before = await oneTimeKeys()
    expect(before.length).toBeGreaterThan(0)
    expect(await records.get('prekeys', 'one-time-ledger')).toBeUndefined()
    const bob = await ChatClient.open(
      clientOptions(server, { store: records }),
      fixture.password,
      fixture.bob,
    )
    await bob.login(fixture.password)
    await bob.maintainPreKeys()
    // Nothing deleted (keys handed out before the upgrade are kept their full lifetime from now),
    // and a ledger written.
    expect(await oneTimeKeys()).toEqual(expect.arrayContaining(before))
    expect(await records.get('prekeys', 'one-time-ledger')).toBeDefined()
    await bob.close()
  })
})
