/**
 * The SQLite store against the ClientStore contract, with the core's MemoryStore as the reference:
 * the same behavioural tests run on both. Then what only a file can show: durability across
 * reopening, the file mode, WAL, one process at a time, and files that are not ours (not SQLite,
 * another program's SQLite, a newer format, a damaged one) refused and left byte-for-byte alone.
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isClientError } from '../../shared/client/errors.js'
import {
  type ClientStore,
  MemoryStore,
  type StoreOperation,
  type StoreRecord,
} from '../../shared/client/store.js'
import { openSqliteStore, STORE_APPLICATION_ID, STORE_FORMAT_VERSION, StoreFileError } from '../store.js'

const root = mkdtempSync(join(tmpdir(), 'secure-chat-store-'))
let counter = 0
afterAll(() => rmSync(root, { recursive: true, force: true }))

function freshFile(): string {
  counter++
  return join(root, `case${counter}`, 'alice.sqlite')
}

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values)
}

function put(table: 'contacts' | 'messages' | 'sessions' | 'outbox', record: StoreRecord): StoreOperation {
  return { op: 'put', table, record }
}

function message(peer: string, order: number, key = `${peer}/${order}`): StoreOperation {
  return put('messages', { key, peer, order, value: bytes(order % 256) })
}

const implementations: [string, () => Promise<ClientStore>][] = [
  ['MemoryStore', async () => new MemoryStore()],
  ['SqliteStore', () => openSqliteStore(freshFile(), { create: true })],
]

describe.each(implementations)('%s: the ClientStore contract', (_name, open) => {
  let store: ClientStore
  beforeEach(async () => {
    store = await open()
  })
  afterEach(async () => {
    await store.close()
  })

  it('puts, gets, overwrites and deletes records', async () => {
    expect(await store.get('contacts', 'bob')).toBeUndefined()
    await store.commit([put('contacts', { key: 'bob', value: bytes(1, 2, 3) })])
    expect(await store.get('contacts', 'bob')).toEqual({ key: 'bob', value: bytes(1, 2, 3) })
    await store.commit([put('contacts', { key: 'bob', value: bytes(9) })])
    expect((await store.get('contacts', 'bob'))?.value).toEqual(bytes(9))
    await store.commit([{ op: 'delete', table: 'contacts', key: 'bob' }])
    expect(await store.get('contacts', 'bob')).toBeUndefined()
    // Deleting what is not there is no error.
    await store.commit([{ op: 'delete', table: 'contacts', key: 'nobody' }])
  })

  it('keeps tables apart and returns values as Uint8Array', async () => {
    await store.commit([
      put('contacts', { key: 'bob', value: bytes(1) }),
      put('sessions', { key: 'bob', value: bytes(2) }),
    ])
    const contact = await store.get('contacts', 'bob')
    const session = await store.get('sessions', 'bob')
    expect(contact?.value).toEqual(bytes(1))
    expect(session?.value).toEqual(bytes(2))
    expect(contact?.value).toBeInstanceOf(Uint8Array)
  })

  it('keeps peer and order of messages and outbox entries', async () => {
    await store.commit([
      put('outbox', { key: 'id1', peer: 'bob', order: 1_700_000_000_123, value: bytes(5) }),
    ])
    expect(await store.get('outbox', 'id1')).toEqual({
      key: 'id1',
      peer: 'bob',
      order: 1_700_000_000_123,
      value: bytes(5),
    })
  })

  it('lists a table in key order', async () => {
    await store.commit([
      put('contacts', { key: 'carol', value: bytes(3) }),
      put('contacts', { key: 'alice', value: bytes(1) }),
      put('contacts', { key: 'bob', value: bytes(2) }),
    ])
    expect((await store.list('contacts')).map((record) => record.key)).toEqual(['alice', 'bob', 'carol'])
    expect(await store.list('outbox')).toEqual([])
  })

  it('lists messages of one conversation, oldest first, the newest `limit` before `beforeOrder`', async () => {
    await store.commit([
      message('bob', 30),
      message('bob', 10),
      message('carol', 15),
      message('bob', 20),
      message('bob', 40),
      message('carol', 25),
    ])
    const orders = (records: StoreRecord[]) => records.map((record) => record.order)
    expect(orders(await store.listMessages('bob', { limit: 10 }))).toEqual([10, 20, 30, 40])
    expect(orders(await store.listMessages('bob', { limit: 2 }))).toEqual([30, 40])
    expect(orders(await store.listMessages('bob', { limit: 2, beforeOrder: 40 }))).toEqual([20, 30])
    expect(orders(await store.listMessages('bob', { limit: 10, beforeOrder: 20 }))).toEqual([10])
    expect(orders(await store.listMessages('bob', { limit: 10, beforeOrder: 10 }))).toEqual([])
    expect(orders(await store.listMessages('carol', { limit: 10 }))).toEqual([15, 25])
    expect(await store.listMessages('dave', { limit: 10 })).toEqual([])
    expect(await store.listMessages('bob', { limit: 0 })).toEqual([])
    const [first] = await store.listMessages('bob', { limit: 1, beforeOrder: 20 })
    expect(first).toEqual({ key: 'bob/10', peer: 'bob', order: 10, value: bytes(10) })
  })

  it('pages through a long conversation without gaps or repeats', async () => {
    await store.commit(Array.from({ length: 250 }, (_, i) => message('bob', 1_000 + i)))
    const seen: number[] = []
    let before: number | undefined
    for (;;) {
      const page = await store.listMessages('bob', {
        limit: 40,
        ...(before !== undefined ? { beforeOrder: before } : {}),
      })
      if (page.length === 0) break
      seen.unshift(...page.map((record) => record.order as number))
      before = page[0]?.order
    }
    expect(seen).toEqual(Array.from({ length: 250 }, (_, i) => 1_000 + i))
  })

  it('applies a batch of puts and deletes together, later operations winning', async () => {
    await store.commit([put('sessions', { key: 'bob', value: bytes(1) })])
    await store.commit([
      put('sessions', { key: 'bob', value: bytes(2) }),
      message('bob', 1),
      { op: 'delete', table: 'sessions', key: 'bob' },
      put('sessions', { key: 'bob', value: bytes(3) }),
    ])
    expect((await store.get('sessions', 'bob'))?.value).toEqual(bytes(3))
    expect(await store.listMessages('bob', { limit: 5 })).toHaveLength(1)
  })

  it('applies nothing of a batch in which one operation fails', async () => {
    await store.commit([put('sessions', { key: 'bob', value: bytes(1) })])
    const failing = [
      put('sessions', { key: 'bob', value: bytes(2) }),
      message('bob', 1),
      { op: 'put', table: 'contacts', record: undefined } as unknown as StoreOperation,
      put('contacts', { key: 'bob', value: bytes(3) }),
    ]
    await expect(store.commit(failing)).rejects.toThrow()
    expect((await store.get('sessions', 'bob'))?.value).toEqual(bytes(1))
    expect(await store.listMessages('bob', { limit: 5 })).toEqual([])
    expect(await store.get('contacts', 'bob')).toBeUndefined()
  })

  it('wipes everything', async () => {
    await store.commit([
      put('contacts', { key: 'bob', value: bytes(1) }),
      put('sessions', { key: 'bob', value: bytes(2) }),
      message('bob', 1),
      put('outbox', { key: 'x', peer: 'bob', order: 1, value: bytes(3) }),
    ])
    await store.wipe()
    for (const table of ['account', 'prekeys', 'sessions', 'contacts', 'messages', 'outbox'] as const) {
      expect(await store.list(table)).toEqual([])
    }
    // Still usable afterwards.
    await store.commit([put('contacts', { key: 'carol', value: bytes(4) })])
    expect(await store.list('contacts')).toHaveLength(1)
  })
})

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex')
}

async function expectRefused(file: string, problem: StoreFileError['problem']): Promise<void> {
  const before = sha256(file)
  const error = await openSqliteStore(file).then(
    () => undefined,
    (caught: unknown) => caught,
  )
  expect(error).toBeInstanceOf(StoreFileError)
  expect((error as StoreFileError).problem).toBe(problem)
  expect((error as StoreFileError).message).toContain(file)
  // Opening for registration must refuse it just the same.
  await expect(openSqliteStore(file, { create: true })).rejects.toBeInstanceOf(StoreFileError)
  expect(sha256(file)).toBe(before)
}

describe('SqliteStore on disk', () => {
  it('keeps what was committed across closing and reopening', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.commit([put('contacts', { key: 'bob', value: bytes(7) }), message('bob', 5)])
    await store.close()
    const reopened = await openSqliteStore(file)
    expect((await reopened.get('contacts', 'bob'))?.value).toEqual(bytes(7))
    expect(await reopened.listMessages('bob', { limit: 5 })).toHaveLength(1)
    await reopened.close()
  })

  it('creates the file with mode 0600 in a 0700 directory, in WAL mode, marked as ours', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.commit([put('contacts', { key: 'bob', value: bytes(1) })])
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(statSync(join(file, '..')).mode & 0o777).toBe(0o700)
    expect(statSync(`${file}-wal`).mode & 0o777).toBe(0o600)
    await store.close()
    const raw = new BetterSqlite3(file, { readonly: true })
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(raw.pragma('application_id', { simple: true })).toBe(STORE_APPLICATION_ID)
    expect(raw.pragma('user_version', { simple: true })).toBe(STORE_FORMAT_VERSION)
    raw.close()
  })

  it('does not create a file unless asked, and says there is no account', async () => {
    const file = freshFile()
    const error = await openSqliteStore(file).catch((caught: unknown) => caught)
    expect(isClientError(error, 'E2E_ERR_NO_ACCOUNT')).toBe(true)
    expect(() => statSync(file)).toThrow()
  })

  it('refuses a second opener while the first holds the file, in this process and in another', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    const error = await openSqliteStore(file).catch((caught: unknown) => caught)
    expect((error as StoreFileError).problem).toBe('in-use')
    const script = `
      const Database = require('better-sqlite3')
      const db = new Database(process.argv[1], { fileMustExist: true, timeout: 0 })
      try { db.pragma('user_version'); console.log('opened') } catch (e) { console.log(e.code) }
    `
    const other = spawnSync(process.execPath, ['-e', script, file], { encoding: 'utf8' })
    expect(other.stdout.trim()).toBe('SQLITE_BUSY')
    await store.close()
    const again = await openSqliteStore(file)
    await again.close()
  })

  it('refuses a file that is not SQLite and leaves it untouched', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.close()
    writeFileSync(file, 'these are my notes, not a database\n'.repeat(20))
    await expectRefused(file, 'not-sqlite')
  })

  it("refuses another program's SQLite file and leaves it untouched", async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.close()
    rmSync(file)
    const foreign = new BetterSqlite3(file)
    foreign.exec("create table notes (body text); insert into notes values ('keep me')")
    foreign.close()
    await expectRefused(file, 'foreign')
  })

  it('refuses a database written by a newer version and leaves it untouched', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.commit([put('contacts', { key: 'bob', value: bytes(1) })])
    await store.close()
    const raw = new BetterSqlite3(file)
    raw.pragma(`user_version = ${STORE_FORMAT_VERSION + 1}`)
    raw.close()
    await expectRefused(file, 'newer')
  })

  it('refuses a database with a migration this version does not know', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.close()
    const raw = new BetterSqlite3(file)
    raw
      .prepare('insert into store_migration (name, timestamp) values (?, ?)')
      .run('2099-01-01-01-future', 'x')
    raw.close()
    await expectRefused(file, 'newer')
  })

  it('refuses a damaged database and leaves it untouched', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.commit(Array.from({ length: 200 }, (_, i) => message('bob', i)))
    await store.close()
    const content = readFileSync(file)
    // Overwrite the middle of the file (b-tree pages) while keeping the header intact.
    content.fill(0xa5, 4096, content.length - 4096)
    writeFileSync(file, content)
    await expectRefused(file, 'damaged')
  })

  it('refuses an empty file when not registering, and initialises one when registering', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.close()
    rmSync(file)
    writeFileSync(file, '')
    const error = await openSqliteStore(file).catch((caught: unknown) => caught)
    expect((error as StoreFileError).problem).toBe('missing')
    const created = await openSqliteStore(file, { create: true })
    await created.close()
  })
})
