/**
 * What only the SQLite store's file can show (its ClientStore behaviour, durability across
 * reopening included, is in store-contract.test.ts): the file mode, WAL, one process at a time, and
 * files that are not ours (not SQLite, another program's SQLite, a newer format, a damaged one)
 * refused and left byte-for-byte alone.
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { afterAll, describe, expect, it } from 'vitest'
import { directConversation } from '../../shared/address.js'
import { isClientError } from '../../shared/client/errors.js'
import type { StoreOperation, StoreRecord } from '../../shared/client/store.js'
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

  it('reads each page of history through an index, also in a file of format 2 (upgraded on open)', async () => {
    const file = freshFile()
    const store = await openSqliteStore(file, { create: true })
    await store.commit(Array.from({ length: 300 }, (_, i) => message('bob', i)))
    await store.commit([put('messages', { key: 'bob/unordered', peer: 'bob', value: bytes(7) })])
    const before = await store.listMessages(directConversation('bob'), { limit: 20, beforeOrder: 100 })
    await store.close()
    // Format 2 as the previous version wrote it: the same tables, the index of format 1.
    const raw = new BetterSqlite3(file)
    raw.exec(`drop index "messages_by_peer_order"; create index "messages_by_peer" on "messages" ("peer", "sort_order");
      delete from "store_migration" where "name" = '2026-12-02-01-message-order-index'; pragma user_version = 2`)
    raw.close()

    const upgraded = await openSqliteStore(file)
    expect(await upgraded.listMessages(directConversation('bob'), { limit: 20, beforeOrder: 100 })).toEqual(
      before,
    )
    expect(before.map((record) => record.order)).toEqual(Array.from({ length: 20 }, (_, i) => 80 + i))
    const oldest = await upgraded.listMessages(directConversation('bob'), { limit: 2, beforeOrder: 1 })
    expect(oldest.map((record) => record.key)).toEqual(['bob/0', 'bob/unordered'])
    await upgraded.close()
    const check = new BetterSqlite3(file, { readonly: true })
    expect(check.pragma('user_version', { simple: true })).toBe(STORE_FORMAT_VERSION)
    const order = 'order by coalesce(sort_order, 0) desc, "key" desc limit 20'
    for (const query of [
      `select * from "messages" where "peer" = 'bob' ${order}`,
      `select * from "messages" where "peer" = 'bob' and coalesce(sort_order, 0) < 100 ${order}`,
    ]) {
      const plan = (check.prepare(`explain query plan ${query}`).all() as { detail: string }[])
        .map((step) => step.detail)
        .join('; ')
      // A sort of the whole conversation for every page is what made reading a backlog quadratic.
      expect(plan).toContain('messages_by_peer_order')
      expect(plan).not.toContain('TEMP B-TREE')
    }
    check.close()
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
