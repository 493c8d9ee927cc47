/** The terminal's SQLite store against the ClientStore contract, on real files in a temporary directory. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'
import { describeStoreContract } from '../../shared/client/test/store-contract.js'
import { openSqliteStore, type SqliteStore } from '../store.js'

const root = mkdtempSync(join(tmpdir(), 'secure-chat-store-contract-'))
let counter = 0
afterAll(() => rmSync(root, { recursive: true, force: true }))

describeStoreContract('SqliteStore', {
  open: () => {
    counter++
    return openSqliteStore(join(root, `case${counter}`, 'alice.sqlite'), { create: true })
  },
  reopen: (closed) => openSqliteStore((closed as SqliteStore).file),
  dispose: async (closed) =>
    rmSync(join((closed as SqliteStore).file, '..'), { recursive: true, force: true }),
})
