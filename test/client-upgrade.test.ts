/**
 * Upgrades lose nothing: the stores version 0.1.0 wrote (test/fixtures/stores-0.1.0, made by
 * make-0.1.0-stores.ts at that version), and those commit c4be598 wrote (the last before usernames
 * were bound into the key agreement; test/fixtures/stores-c4be598), open with today's code. Alice's terminal-client SQLite
 * file and bob's records (in a memory store here; in IndexedDB in
 * client-web/src/store/idb-upgrade.browser.test.ts) are migrated on first open: sessions become
 * session records keyed by address, and the conversation goes on with the sessions they had, no new
 * key agreement, including the message that waited on the server across the upgrade. And those
 * commit 95dbac6 wrote (records layout 2, the last before a store remembered which of its
 * account's devices it is; test/fixtures/stores-layout-2) open as device 1. A message left in the
 * outbox by a client from before devices (616b6fd, test/fixtures/stores-outbox-before-devices: one
 * envelope, for the contact's device 1) goes out as it was, and the next sends fan out.
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
import { unlockAccount } from '../shared/client/account.js'
import { ChatClient, startLink } from '../shared/client/chat-client.js'
import { MemoryStore, type StoreOperation, type StoreTable } from '../shared/client/store.js'
import type { MessageView } from '../shared/client/views.js'
import { clientOptions, TEST_KDF_ITERATIONS, tappedWebSocketFactory } from './client-helpers.js'

const fixtures = join(import.meta.dirname, 'fixtures', 'stores-0.1.0')
const fixture = JSON.parse(readFileSync(join(fixtures, 'fixture.json'), 'utf8')) as {
  password: string
  alice: string
  bob: string
  aliceHistory: string[]
  bobHistory: string[]
  queuedForBob: string[]
}

/**
 * The fixture's server database at `serverFile` (a copy: opening migrates it), migrated to today's
 * schema and served. `refreshQueued` gives messages queued in it a day to live: they were written
 * with the server's 30-day expiry, as if the upgrade came in time.
 */
async function upgradedServer(serverFile: string, refreshQueued?: string): Promise<TestServer> {
  if (refreshQueued) {
    const raw = new BetterSqlite3(serverFile)
    raw.prepare(refreshQueued).run(Date.now() + 86_400_000)
    raw.close()
  }
  const open = () => openDatabase({ kind: 'sqlite', file: serverFile })
  const first = await open()
  await migrateToLatest(first.db, 'sqlite')
  return startServer({
    database: { ...first, location: serverFile, reopen: open, dispose: async () => {} },
  })
}

let dir: string
let server: TestServer

beforeAll(async () => {
  // Never the fixtures themselves: opening migrates them.
  dir = mkdtempSync(join(tmpdir(), 'secure-chat-upgrade-'))
  for (const file of ['server.sqlite', 'alice.sqlite']) copyFileSync(join(fixtures, file), join(dir, file))
  server = await upgradedServer(
    join(dir, 'server.sqlite'),
    'update messages set expires_at = ? where delivered_at is null',
  )
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
      const types = tap
        .of('sent', 'send.devices')
        .flatMap((frame) => frame.messages)
        .map((envelope) => fromBase64Url(envelope.body)[1])
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

const fixturesC4be598 = join(import.meta.dirname, 'fixtures', 'stores-c4be598')
const fixtureC4be598 = JSON.parse(readFileSync(join(fixturesC4be598, 'fixture.json'), 'utf8')) as {
  password: string
  alice: string
  bob: string
  carol: string
  dave: string
  aliceHistory: string[]
  bobHistory: string[]
  queuedForBob: string[]
  queuedForBobFromCarol: string[]
  queuedForDave: string[]
}

/** A memory store holding the records of one of the fixture's JSON dumps. */
async function storeFrom(file: string): Promise<MemoryStore> {
  const dump = JSON.parse(readFileSync(file, 'utf8')) as Record<
    StoreTable,
    { key: string; peer?: string; order?: number; value: string }[]
  >
  const store = new MemoryStore()
  await store.commit(
    Object.entries(dump).flatMap(([table, records]) =>
      records.map((record) => ({
        op: 'put' as const,
        table: table as StoreTable,
        record: { ...record, value: fromBase64Url(record.value) },
      })),
    ),
  )
  return store
}

describe('stores written by c4be598 (before usernames were bound)', () => {
  let upgradeDir: string
  let upgraded: TestServer
  beforeAll(async () => {
    upgradeDir = mkdtempSync(join(tmpdir(), 'secure-chat-upgrade-c4be598-'))
    for (const file of ['server.sqlite', 'alice.sqlite'])
      copyFileSync(join(fixturesC4be598, file), join(upgradeDir, file))
    upgraded = await upgradedServer(join(upgradeDir, 'server.sqlite'), 'update messages set expires_at = ?')
  })
  afterAll(async () => {
    await upgraded?.close()
    await upgraded?.database.close()
    rmSync(upgradeDir, { recursive: true, force: true })
  })

  it('established sessions go on; first messages from the old app are refused with a notice; new sessions bind names', async () => {
    const f = fixtureC4be598
    const aliceTap = tappedWebSocketFactory(upgraded)
    const bobTap = tappedWebSocketFactory(upgraded)
    const daveTap = tappedWebSocketFactory(upgraded)
    const alice = await ChatClient.open(
      clientOptions(upgraded, {
        store: await openSqliteStore(join(upgradeDir, 'alice.sqlite')),
        webSocket: aliceTap.factory,
      }),
      f.password,
      f.alice,
    )
    const bob = await ChatClient.open(
      clientOptions(upgraded, {
        store: await storeFrom(join(fixturesC4be598, 'bob.json')),
        webSocket: bobTap.factory,
      }),
      f.password,
      f.bob,
    )
    const dave = await ChatClient.open(
      clientOptions(upgraded, {
        store: await storeFrom(join(fixturesC4be598, 'dave.json')),
        webSocket: daveTap.factory,
      }),
      f.password,
      f.dave,
    )
    expect((await alice.history(f.bob)).map((m) => m.text)).toEqual(f.aliceHistory)
    expect((await bob.history(f.alice)).map((m) => m.text)).toEqual(f.bobHistory)

    const undecryptable: { peer: string; kind: string; reason: string }[] = []
    for (const client of [alice, bob, dave])
      client.events.on('undecryptable', ({ peer, kind, reason }) =>
        undecryptable.push({ peer, kind, reason }),
      )
    const incoming = (client: ChatClient, count: number) =>
      new Promise<MessageView[]>((resolve) => {
        const seen: MessageView[] = []
        client.events.on('message', (m) => {
          if (m.direction === 'in') seen.push(m)
          if (seen.length === count) resolve(seen)
        })
      })
    // Bob: alice's message on their session, and carol's first message from the old app.
    const atBob = incoming(bob, 2)
    // Dave: alice's first message from the old app.
    const atDave = incoming(dave, 1)
    await Promise.all([alice, bob, dave].map((client) => client.login(f.password)))
    for (const client of [alice, bob, dave]) client.connect()
    await Promise.all([alice, bob, dave].map((client) => client.waitUntilOnline()))

    const bobGot = await atBob
    expect(bobGot.filter((m) => m.peer === f.alice).map((m) => [m.kind, m.text])).toEqual(
      f.queuedForBob.map((text) => ['text', text]),
    )
    expect(bobGot.filter((m) => m.peer === f.carol).map((m) => m.kind)).toEqual(['outdated'])
    const daveGot = await atDave
    expect(daveGot.map((m) => [m.peer, m.kind])).toEqual([[f.alice, 'outdated']])
    // Bob's and dave's notices, in whichever order their deliveries came.
    expect([...undecryptable].sort((a, b) => a.peer.localeCompare(b.peer))).toEqual([
      { peer: f.alice, kind: 'outdated', reason: 'E2E_ERR_OUTDATED_SENDER' },
      { peer: f.carol, kind: 'outdated', reason: 'E2E_ERR_OUTDATED_SENDER' },
    ])

    // Alice and bob go on with the session they had: plain messages of version 1, both ways.
    const toBob = incoming(bob, 1)
    await alice.send(f.bob, 'after the upgrade')
    const toAlice = incoming(alice, 1)
    await bob.send(f.alice, 'and back')
    expect((await toAlice).map((m) => m.text)).toEqual(['and back'])
    expect((await toBob).at(-1)?.text).toBe('after the upgrade')

    // Alice's unanswered session with dave is not sent on again (dave would refuse it): her next
    // message starts a session of version 2, which dave opens, and his answer opens at hers.
    const toDave = incoming(dave, 1)
    await alice.send(f.dave, 'hello again, dave')
    expect((await toDave).at(-1)).toMatchObject({ kind: 'text', text: 'hello again, dave' })
    const fromDave = incoming(alice, 1)
    await dave.send(f.alice, 'hi alice')
    expect((await fromDave).at(-1)?.text).toBe('hi alice')

    const sentBodies = (tap: typeof aliceTap.tap, to: string) =>
      tap
        .of('sent', 'send.devices')
        .filter((frame) => frame.to === to)
        .flatMap((frame) => frame.messages)
        .map((envelope) => fromBase64Url(envelope.body))
    // Version and type of every envelope sent (texts and receipts): version 1, type 1 on the old
    // session; on the new one, version 2, a prekey message (type 2) until dave answered.
    const headers = (tap: typeof aliceTap.tap, to: string) => [
      ...new Set(sentBodies(tap, to).map((body) => `${body[0]}.${body[1]}`)),
    ]
    expect(headers(aliceTap.tap, f.bob)).toEqual(['1.1'])
    expect(headers(bobTap.tap, f.alice)).toEqual(['1.1'])
    expect(headers(aliceTap.tap, f.dave)[0]).toBe('2.2')
    expect(headers(aliceTap.tap, f.dave).every((header) => header.startsWith('2.'))).toBe(true)
    expect(headers(daveTap.tap, f.alice)).toEqual(['2.1'])
    // Neither refusal asked the old app to send again (it could not read the request).
    expect(bobTap.tap.of('sent', 'send.devices').filter((frame) => frame.to === f.carol)).toEqual([])
    expect(undecryptable).toHaveLength(2)
    await Promise.all([alice.close(), bob.close(), dave.close()])
  })
})

const fixturesLayout2 = join(import.meta.dirname, 'fixtures', 'stores-layout-2')
const fixtureLayout2 = JSON.parse(readFileSync(join(fixturesLayout2, 'fixture.json'), 'utf8')) as {
  password: string
  alice: string
  bob: string
  aliceHistory: string[]
  queuedForAlice: string[]
}

async function storedSecrets(store: MemoryStore, password: string) {
  const record = await store.get('account', 'account')
  return (await unlockAccount(record!.value, password, TEST_KDF_ITERATIONS)).secrets
}

describe('stores of records layout 2 (written at 95dbac6, before a store remembered its device)', () => {
  let dir: string
  let upgraded: TestServer
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'secure-chat-layout-2-'))
    const serverFile = join(dir, 'server.sqlite')
    copyFileSync(join(fixturesLayout2, 'server.sqlite'), serverFile)
    upgraded = await upgradedServer(serverFile, 'update messages set expires_at = ?')
  })
  afterAll(async () => {
    await upgraded?.close()
    await upgraded?.database.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('open as device 1 and go on: the history, the queued message, prekeys signed for device 1, a link', async () => {
    const f = fixtureLayout2
    const store = await storeFrom(join(fixturesLayout2, 'alice.json'))
    expect((await storedSecrets(store, f.password)).recordsVersion).toBe(2)
    const alice = await ChatClient.open(clientOptions(upgraded, { store }), f.password, f.alice)
    expect(alice.deviceId).toBe(1)
    const migrated = await storedSecrets(store, f.password)
    expect({ deviceId: migrated.deviceId, recordsVersion: migrated.recordsVersion }).toEqual({
      deviceId: 1,
      recordsVersion: 3,
    })
    expect((await alice.history(f.bob)).map((m) => m.text)).toEqual(f.aliceHistory)
    expect(await alice.contact(f.bob)).toMatchObject({ verified: true })

    const arrived = new Promise<MessageView>((resolve) =>
      alice.events.on('message', (m) => m.direction === 'in' && resolve(m)),
    )
    // Device 1 logs in as accounts always have (no `device` field), and its keys sign as device 1's:
    // the server takes the rotated signed prekey only if its signature is for device 1.
    await alice.login(f.password)
    alice.connect()
    await alice.waitUntilOnline()
    expect((await arrived).text).toBe(f.queuedForAlice[0])
    // Once the fixture is older than SIGNED_PREKEY_ROTATION_MS, connecting rotated it already; the
    // rotation asked for here runs after that one, never beside it with the same key id.
    await alice.rotateSignedPreKey()
    const rotated = await storedSecrets(store, f.password)
    expect(rotated.signedPreKeyId).toBeGreaterThanOrEqual(migrated.nextPreKeyId)
    expect((await alice.preKeyStatus()).signedPreKeyId).toBe(rotated.signedPreKeyId)
    expect((await alice.devices()).map((device) => [device.id, device.current])).toEqual([[1, true]])

    // The migrated account links a second device, which gets its contacts and is device 2.
    const laptopOptions = clientOptions(upgraded, { store: new MemoryStore() })
    const pending = await startLink(laptopOptions.http)
    const check = pending.waitForCheck()
    const approval = await alice.approveLink(pending.code)
    expect(await check).toBe(approval.check)
    const provisioned = pending.waitForProvisioning()
    await approval.approve()
    expect(await provisioned).toMatchObject({ username: f.alice, deviceId: 2, contacts: 1 })
    const laptop = await ChatClient.completeLink(laptopOptions, pending, f.password)
    expect(laptop.deviceId).toBe(2)
    expect(await laptop.contact(f.bob)).toMatchObject({ verified: true })
    await Promise.all([alice.close(), laptop.close()])
  })
})

const fixturesOutbox = join(import.meta.dirname, 'fixtures', 'stores-outbox-before-devices')
const fixtureOutbox = JSON.parse(readFileSync(join(fixturesOutbox, 'fixture.json'), 'utf8')) as {
  password: string
  alice: string
  bob: string
  texts: { hello: string; reply: string; queued: string }
}

describe('an outbox entry written before devices (at 616b6fd: one envelope, for device 1)', () => {
  let dir: string
  let upgraded: TestServer
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'secure-chat-outbox-'))
    const serverFile = join(dir, 'server.sqlite')
    copyFileSync(join(fixturesOutbox, 'server.sqlite'), serverFile)
    upgraded = await upgradedServer(serverFile)
  })
  afterAll(async () => {
    await upgraded?.close()
    await upgraded?.database.close()
    rmSync(dir, { force: true, recursive: true })
  })

  /** Resolves once `check` holds (tried every 25 ms, for at most 20 s). */
  async function until<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
    const deadline = Date.now() + 20_000
    for (;;) {
      const value = await check()
      if (value !== undefined) return value
      if (Date.now() > deadline) throw new Error(`expected ${what} within 20 s, got nothing`)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }

  it('goes out as the send it was, reaches the contact, and the conversation goes on with fan-out to a device linked since', async () => {
    const f = fixtureOutbox
    const bobTap = tappedWebSocketFactory(upgraded)
    const bob = await ChatClient.open(
      clientOptions(upgraded, {
        store: await storeFrom(join(fixturesOutbox, 'bob.json')),
        webSocket: bobTap.factory,
      }),
      f.password,
      f.bob,
    )
    const alice = await ChatClient.open(
      clientOptions(upgraded, { store: await storeFrom(join(fixturesOutbox, 'alice.json')) }),
      f.password,
      f.alice,
    )
    const queued = (await bob.history(f.alice)).at(-1)
    expect(queued).toMatchObject({ text: f.texts.queued, direction: 'out', state: 'sending' })
    const problems: string[] = []
    for (const client of [alice, bob]) client.events.on('problem', ({ code }) => problems.push(code))

    // Alice links a laptop while bob's old entry waits: it was encrypted for her device 1 alone.
    await alice.login(f.password)
    alice.connect()
    await alice.waitUntilOnline()
    const laptopOptions = clientOptions(upgraded, { store: new MemoryStore() })
    const pending = await startLink(laptopOptions.http, { name: 'Laptop' })
    const check = pending.waitForCheck()
    const approval = await alice.approveLink(pending.code)
    expect(await check).toBe(approval.check)
    const provisioned = pending.waitForProvisioning()
    await approval.approve()
    await provisioned
    const laptop = await ChatClient.completeLink(laptopOptions, pending, f.password)
    laptop.connect()
    await laptop.waitUntilOnline()

    await bob.login(f.password)
    bob.connect()
    await bob.waitUntilOnline()
    const onPhone = await until(
      async () => (await alice.history(f.bob)).find((m) => m.text === f.texts.queued),
      'the queued message on alice’s phone',
    )
    expect(onPhone).toMatchObject({ id: queued!.id, direction: 'in' })
    // As the one `send` it holds (its device 1), not re-encrypted, and no longer waiting.
    expect(bobTap.tap.of('sent', 'send').map((frame) => (frame as { id: string }).id)).toEqual([queued!.id])
    await until(
      async () => (await bob.history(f.alice)).find((m) => m.id === queued!.id && m.state === 'delivered'),
      'bob to see it delivered',
    )

    // From here on bob's client sends to every device: its next message reaches the laptop too.
    const next = await bob.send(f.alice, 'and now to every device')
    for (const client of [alice, laptop]) {
      await until(
        async () => (await client.history(f.bob)).find((m) => m.id === next.id),
        'the next message on each of alice’s devices',
      )
    }
    expect(problems).toEqual([])
    await Promise.all([alice.close(), laptop.close(), bob.close()])
  })
})
