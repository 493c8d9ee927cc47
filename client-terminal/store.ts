/**
 * The terminal client's local database: the client core's `ClientStore` (shared/client/store.ts) in
 * one SQLite file per account, on better-sqlite3 (Kysely runs the migrations; the store's own
 * queries are statements prepared once, see SqliteStore).
 *
 * The core seals every value before it gets here; this file sees index fields and opaque bytes.
 *
 * A file is opened only if it proves to be ours: the SQLite magic bytes, then `application_id`
 * (the format marker "SCHT") and `user_version` (the format version) read through a read-only
 * connection, then an integrity check. Anything else (not SQLite, another program's SQLite file,
 * a file from a newer version, a damaged file) is refused with a StoreFileError and left exactly as
 * it was: no pragma, journal or migration ever touches a file before it passed those checks. A new
 * file is created only when asked (registration), with mode 0600.
 *
 * One process at a time: the connection runs with `locking_mode = EXCLUSIVE` and takes the write
 * lock at open, so a second client on the same account is refused ("in use") instead of both
 * advancing the same ratchet sessions from the same state. WAL with synchronous = FULL: a message
 * is on disk before the core acknowledges it to the server.
 */

import { chmodSync, closeSync, mkdirSync, openSync, readSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { Kysely, type Migration, Migrator, SqliteDialect } from 'kysely'
import type { ConversationId } from '../shared/address.js'
import { ClientError, ClientErrorCode } from '../shared/client/errors.js'
import {
  type ClientStore,
  STORE_TABLES,
  type StoreOperation,
  type StoreRecord,
  type StoreTable,
} from '../shared/client/store.js'
import * as initial from './migrations/2026-11-26-01-initial.js'
import * as sentContent from './migrations/2026-12-01-01-sent-content.js'
import * as messageOrderIndex from './migrations/2026-12-02-01-message-order-index.js'

/** `PRAGMA application_id` of our files: "SCHT". */
export const STORE_APPLICATION_ID = 0x53434854
/** `PRAGMA user_version` this code writes; a file with a higher one came from a newer version. */
export const STORE_FORMAT_VERSION = 3
/**
 * How long to wait for another process's lock. Each client holds its file's lock for as long as it
 * runs, so waiting longer would not help; this only rides out a process that is just exiting.
 */
export const STORE_BUSY_TIMEOUT_MS = 1_000

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1')
const SQLITE_HEADER_BYTES = 100

/** Every migration, by name, in the order they run (date prefix). */
export const STORE_MIGRATIONS: Readonly<
  // biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and take Kysely<any>
  Record<string, { up(db: Kysely<any>): Promise<void> }>
> = {
  '2026-11-26-01-initial': initial,
  '2026-12-01-01-sent-content': sentContent,
  '2026-12-02-01-message-order-index': messageOrderIndex,
}
const MIGRATION_TABLE = 'store_migration'
const MIGRATION_LOCK_TABLE = 'store_migration_lock'

export { STORE_TABLES }

/** One row of any store table. `peer` and `sort_order` are set for messages and outbox entries. */
export interface RecordTable {
  key: string
  peer: string | null
  sort_order: number | null
  value: Uint8Array
}

export interface StoreDatabase {
  account: RecordTable
  prekeys: RecordTable
  sessions: RecordTable
  contacts: RecordTable
  messages: RecordTable
  outbox: RecordTable
  sent: RecordTable
}

export type StoreFileProblem = 'missing' | 'not-sqlite' | 'foreign' | 'newer' | 'damaged' | 'in-use'

/** Why a database file was not opened. The file was not modified. */
export class StoreFileError extends ClientError {
  readonly problem: StoreFileProblem
  readonly file: string

  constructor(problem: StoreFileProblem, file: string, message: string, options: { cause?: unknown } = {}) {
    const code =
      problem === 'missing'
        ? ClientErrorCode.NoAccount
        : problem === 'in-use'
          ? ClientErrorCode.InvalidState
          : ClientErrorCode.CorruptStore
    super(code, `${file}: ${message}`, options)
    this.problem = problem
    this.file = file
  }
}

export interface OpenStoreOptions {
  /** Create the file (and its directory) if it does not exist; registration does, nothing else. */
  readonly create?: boolean
}

function sqliteCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined
}

function isBusy(error: unknown): boolean {
  const code = sqliteCode(error)
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code?.startsWith('SQLITE_BUSY_') === true
}

function inUse(file: string, cause: unknown): StoreFileError {
  return new StoreFileError(
    'in-use',
    file,
    'expected to open the database alone, got it in use by another secure-chat process',
    { cause },
  )
}

function readHeader(file: string): Buffer {
  const header = Buffer.alloc(SQLITE_HEADER_BYTES)
  const fd = openSync(file, 'r')
  try {
    const read = readSync(fd, header, 0, SQLITE_HEADER_BYTES, 0)
    return header.subarray(0, read)
  } finally {
    closeSync(fd)
  }
}

/**
 * Checks, through a read-only connection, that an existing non-empty file is a secure-chat
 * database this code can open. Throws StoreFileError otherwise; never writes.
 */
function checkExistingFile(file: string): { version: number } {
  const header = readHeader(file)
  if (header.length < SQLITE_HEADER_BYTES || !header.subarray(0, SQLITE_MAGIC.length).equals(SQLITE_MAGIC)) {
    throw new StoreFileError(
      'not-sqlite',
      file,
      'expected a secure-chat database, got a file that is not SQLite; it was left untouched',
    )
  }
  let connection: BetterSqlite3.Database
  try {
    connection = new BetterSqlite3(file, {
      readonly: true,
      fileMustExist: true,
      timeout: STORE_BUSY_TIMEOUT_MS,
    })
  } catch (cause) {
    if (isBusy(cause)) throw inUse(file, cause)
    throw new StoreFileError('damaged', file, 'expected a readable database, got one SQLite cannot open', {
      cause,
    })
  }
  try {
    const applicationId = connection.pragma('application_id', { simple: true }) as number
    const version = connection.pragma('user_version', { simple: true }) as number
    if (applicationId !== STORE_APPLICATION_ID) {
      throw new StoreFileError(
        'foreign',
        file,
        `expected a secure-chat database (application_id 0x${STORE_APPLICATION_ID.toString(16)}), got another program's SQLite file (application_id 0x${(applicationId >>> 0).toString(16)}); it was left untouched`,
      )
    }
    if (version > STORE_FORMAT_VERSION) {
      throw new StoreFileError(
        'newer',
        file,
        `expected database format ${STORE_FORMAT_VERSION} or older, got ${version} (written by a newer secure-chat); it was left untouched`,
      )
    }
    if (version < 1) {
      throw new StoreFileError(
        'damaged',
        file,
        `expected a database format version of at least 1, got ${version}; it was left untouched`,
      )
    }
    const applied = (
      connection.prepare(`select name from ${MIGRATION_TABLE} order by name`).all() as { name: string }[]
    ).map((row) => row.name)
    const unknown = applied.filter((name) => !Object.hasOwn(STORE_MIGRATIONS, name))
    if (unknown.length > 0) {
      throw new StoreFileError(
        'newer',
        file,
        `expected known migrations, got ${unknown.join(', ')} (written by a newer secure-chat); it was left untouched`,
      )
    }
    const integrity = connection.pragma('quick_check(1)', { simple: true })
    if (integrity !== 'ok') {
      throw new StoreFileError(
        'damaged',
        file,
        `expected an intact database, got a damaged one (${String(integrity)}); it was left untouched`,
      )
    }
    return { version }
  } catch (cause) {
    if (cause instanceof StoreFileError) throw cause
    if (isBusy(cause)) throw inUse(file, cause)
    throw new StoreFileError(
      'damaged',
      file,
      `expected an intact database, got a damaged one (${sqliteCode(cause) ?? 'unreadable'}); it was left untouched`,
      { cause },
    )
  } finally {
    connection.close()
  }
}

/**
 * Files this process has open. SQLite's locks are POSIX advisory locks, which a process loses when
 * it closes *any* descriptor of the file, so a second open in the same process must be refused
 * before it so much as reads the header.
 */
const openInThisProcess = new Set<string>()

class InlineMigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return { ...STORE_MIGRATIONS }
  }
}

/** Opens (or, with `create`, creates) the account database at `file`. */
export async function openSqliteStore(file: string, options: OpenStoreOptions = {}): Promise<SqliteStore> {
  const identity = resolve(file)
  if (openInThisProcess.has(identity)) throw inUse(file, undefined)
  openInThisProcess.add(identity)
  try {
    const store = await openFile(file, options)
    store.onClose = () => openInThisProcess.delete(identity)
    return store
  } catch (error) {
    openInThisProcess.delete(identity)
    throw error
  }
}

async function openFile(file: string, options: OpenStoreOptions): Promise<SqliteStore> {
  let size: number
  try {
    size = statSync(file).size
  } catch {
    if (!options.create) {
      throw new StoreFileError('missing', file, 'expected an account database, got no such file')
    }
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
    try {
      // Exclusive create: a file that appeared meanwhile is never taken over.
      closeSync(openSync(file, 'wx', 0o600))
    } catch (cause) {
      throw new StoreFileError('in-use', file, 'expected to create a new database, got a file appearing', {
        cause,
      })
    }
    size = 0
  }
  // An empty file is one we created (or an interrupted creation): the only kind we initialise.
  const fresh = size === 0
  if (fresh && !options.create) {
    throw new StoreFileError('missing', file, 'expected an account database, got an empty file')
  }
  const version = fresh ? 0 : checkExistingFile(file).version

  let connection: BetterSqlite3.Database
  try {
    connection = new BetterSqlite3(file, { fileMustExist: true, timeout: STORE_BUSY_TIMEOUT_MS })
  } catch (cause) {
    if (isBusy(cause)) throw inUse(file, cause)
    throw cause
  }
  try {
    // Exclusive locking first: the WAL then lives without a shared-memory file, and the lock taken
    // below is held until close.
    connection.pragma('locking_mode = EXCLUSIVE')
    const mode = connection.pragma('journal_mode = WAL', { simple: true })
    if (mode !== 'wal') throw new Error(`SQLite journal_mode: expected wal, got ${String(mode)}`)
    connection.pragma('synchronous = FULL')
    connection.pragma('secure_delete = ON')
    connection.exec('BEGIN EXCLUSIVE; COMMIT')
    chmodSync(file, 0o600)
  } catch (cause) {
    connection.close()
    if (isBusy(cause)) throw inUse(file, cause)
    throw cause
  }

  const db = new Kysely<StoreDatabase>({ dialect: new SqliteDialect({ database: connection }) })
  try {
    if (version < STORE_FORMAT_VERSION) await migrate(db, connection)
  } catch (error) {
    await db.destroy()
    throw error
  }
  return new SqliteStore(db, connection, file)
}

/**
 * Runs the pending migrations, their bookkeeping and the format marker in one transaction (Kysely
 * runs SQLite migrations without one, so it is opened here, around the migrator).
 */
async function migrate(db: Kysely<StoreDatabase>, connection: BetterSqlite3.Database): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: new InlineMigrationProvider(),
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  })
  connection.exec('BEGIN IMMEDIATE')
  try {
    const { error, results } = await migrator.migrateToLatest()
    if (error) {
      const failed = results?.find((result) => result.status === 'Error')?.migrationName ?? 'unknown'
      throw new Error(`local database: migration "${failed}" failed: ${(error as Error).message}`, {
        cause: error,
      })
    }
    connection.exec('COMMIT')
  } catch (error) {
    if (connection.inTransaction) connection.exec('ROLLBACK')
    throw error
  }
}

function assertTable(table: unknown): asserts table is StoreTable {
  if (typeof table !== 'string' || !(STORE_TABLES as readonly string[]).includes(table)) {
    throw new TypeError(`store table: expected one of ${STORE_TABLES.join(', ')}, got ${String(table)}`)
  }
}

function checkedRow(operation: Extract<StoreOperation, { op: 'put' }>): RecordTable {
  const record: unknown = operation.record
  if (typeof record !== 'object' || record === null) {
    throw new TypeError(`store record: expected an object, got ${record === null ? 'null' : typeof record}`)
  }
  const { key, peer, order, value } = record as Partial<StoreRecord>
  if (typeof key !== 'string') throw new TypeError(`store record key: expected a string, got ${typeof key}`)
  if (!(value instanceof Uint8Array))
    throw new TypeError('store record value: expected bytes, got another type')
  if (peer !== undefined && typeof peer !== 'string')
    throw new TypeError(`store record peer: expected a string, got ${typeof peer}`)
  if (order !== undefined && !Number.isFinite(order))
    throw new TypeError(`store record order: expected a finite number, got ${String(order)}`)
  return { key, peer: peer ?? null, sort_order: order ?? null, value }
}

function toRecord(row: RecordTable): StoreRecord {
  // better-sqlite3 returns Buffers; the core gets plain Uint8Array views of the same bytes.
  const value = new Uint8Array(row.value.buffer, row.value.byteOffset, row.value.byteLength)
  return {
    key: row.key,
    ...(row.peer !== null ? { peer: row.peer } : {}),
    ...(row.sort_order !== null ? { order: row.sort_order } : {}),
    value,
  }
}

/** The statements on one table, prepared once (the first time the table is used) and kept. */
interface TableStatements {
  readonly get: BetterSqlite3.Statement<[string], RecordTable>
  readonly list: BetterSqlite3.Statement<[], RecordTable>
  readonly put: BetterSqlite3.Statement<[RecordTable], void>
  readonly delete: BetterSqlite3.Statement<[string], void>
  readonly deleteAll: BetterSqlite3.Statement<[], void>
}

function prepareTable(connection: BetterSqlite3.Database, table: StoreTable): TableStatements {
  // `table` is one of STORE_TABLES (assertTable ran), so it is safe to put into the SQL text.
  const name = `"${table}"`
  return {
    get: connection.prepare(`select * from ${name} where "key" = ?`),
    list: connection.prepare(`select * from ${name} order by "key"`),
    put: connection.prepare(
      `insert into ${name} ("key", "peer", "sort_order", "value") values (@key, @peer, @sort_order, @value)
       on conflict ("key") do update set "peer" = excluded."peer", "sort_order" = excluded."sort_order", "value" = excluded."value"`,
    ),
    delete: connection.prepare(`delete from ${name} where "key" = ?`),
    deleteAll: connection.prepare(`delete from ${name}`),
  }
}

/**
 * The store's queries run on the better-sqlite3 connection directly, through statements prepared
 * once and kept, and a batch is one synchronous SQLite transaction. Kysely (which the migrations
 * still use) compiles and prepares every query anew and awaits between the statements of a batch:
 * about 0.4 ms of CPU per three-record batch and 0.03 ms per read here, several times what SQLite
 * spends on them apart from the commit's fsync (measured for bench/client.ts's terminal drain).
 * Being synchronous, a batch also cannot interleave with any other query of this process.
 */
export class SqliteStore implements ClientStore {
  private closed = false
  /** Set by openSqliteStore: forgets the file once closed. */
  onClose: (() => void) | undefined
  private readonly tables = new Map<StoreTable, TableStatements>()
  private readonly latestMessages: BetterSqlite3.Statement<[string, number], RecordTable>
  private readonly messagesBefore: BetterSqlite3.Statement<[string, number, number], RecordTable>
  /** Applies a batch in one transaction (BEGIN … COMMIT, or ROLLBACK if anything throws). */
  private readonly applyBatch: (operations: readonly StoreOperation[]) => void
  private readonly deleteEverything: () => void

  constructor(
    private readonly db: Kysely<StoreDatabase>,
    private readonly connection: BetterSqlite3.Database,
    readonly file: string,
  ) {
    const newestFirst = 'order by coalesce(sort_order, 0) desc, "key" desc limit ?'
    this.latestMessages = connection.prepare(`select * from "messages" where "peer" = ? ${newestFirst}`)
    this.messagesBefore = connection.prepare(
      `select * from "messages" where "peer" = ? and coalesce(sort_order, 0) < ? ${newestFirst}`,
    )
    this.applyBatch = connection.transaction((operations: readonly StoreOperation[]) => {
      for (const operation of operations) {
        const statements = this.statements(operation.table)
        if (operation.op === 'put') {
          statements.put.run(checkedRow(operation))
        } else if (operation.op === 'delete') {
          const key: unknown = operation.key
          if (typeof key !== 'string')
            throw new TypeError(`store delete key: expected a string, got ${typeof key}`)
          statements.delete.run(key)
        } else {
          throw new TypeError(
            `store operation: expected put or delete, got ${String((operation as { op: unknown }).op)}`,
          )
        }
      }
    })
    this.deleteEverything = connection.transaction(() => {
      for (const table of STORE_TABLES) this.statements(table).deleteAll.run()
    })
  }

  private statements(table: StoreTable): TableStatements {
    assertTable(table)
    let statements = this.tables.get(table)
    if (!statements) {
      statements = prepareTable(this.connection, table)
      this.tables.set(table, statements)
    }
    return statements
  }

  async get(table: StoreTable, key: string): Promise<StoreRecord | undefined> {
    const row = this.statements(table).get.get(key)
    return row && toRecord(row)
  }

  async getMany(table: StoreTable, keys: readonly string[]): Promise<(StoreRecord | undefined)[]> {
    // One prepared statement run per key: each is a B-tree lookup, far cheaper than any IN (…) parse.
    const { get } = this.statements(table)
    return keys.map((key) => {
      const row = get.get(key)
      return row && toRecord(row)
    })
  }

  async list(table: StoreTable): Promise<StoreRecord[]> {
    const rows = this.statements(table).list.all()
    // Sorted here: SQLite compares text as UTF-8 bytes, which puts characters beyond U+FFFF after
    // U+E000–U+FFFF, where JavaScript's comparison (the ClientStore key order) puts them before.
    return rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map(toRecord)
  }

  async listMessages(
    conversation: ConversationId,
    options: { limit: number; beforeOrder?: number },
  ): Promise<StoreRecord[]> {
    if (!(options.limit > 0)) return []
    const limit = Math.ceil(options.limit)
    const rows =
      options.beforeOrder === undefined
        ? this.latestMessages.all(conversation, limit)
        : this.messagesBefore.all(conversation, options.beforeOrder, limit)
    return rows.reverse().map(toRecord)
  }

  async commit(operations: readonly StoreOperation[]): Promise<void> {
    this.applyBatch(operations)
  }

  async wipe(): Promise<void> {
    this.deleteEverything()
    // secure_delete zeroed the freed pages; move them out of the WAL into the file now.
    this.connection.pragma('wal_checkpoint(TRUNCATE)')
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.db.destroy()
    } finally {
      // Kysely closes the connection only if it ever ran a query through it, and reads and batches
      // here use prepared statements instead: without this the file stayed locked until exit.
      if (this.connection.open) this.connection.close()
      this.onClose?.()
    }
  }
}
