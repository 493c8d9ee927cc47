/**
 * The browser's ClientStore: one IndexedDB database per account on this device, named
 * "secure-chat:<normalised username>", with one object store per StoreTable.
 *
 * One database per account (not one per device) makes the boundaries simple: an account's data is
 * deleted by deleting its database, a second account on the same browser shares nothing with the
 * first, and "which accounts does this browser hold" is the list of database names, readable
 * without any password. Every value arrives sealed by the core (AES-256-GCM under the
 * password-derived key); the store sees only keys, the peer and order index fields, and bytes.
 *
 * `commit` applies a batch in one readwrite transaction over the tables it touches, so either every
 * operation lands or none does. The core never runs crypto inside a transaction: it seals first
 * and hands over finished bytes, as IndexedDB transactions end once they have nothing to wait on.
 */

import { type DBSchema, deleteDB, type IDBPDatabase, openDB } from 'idb'
import type { ConversationId } from '../../../shared/address.js'
import { ClientError, ClientErrorCode } from '../../../shared/client/errors.js'
import {
  type ClientStore,
  STORE_TABLES,
  type StoreOperation,
  type StoreRecord,
  type StoreTable,
} from '../../../shared/client/store.js'
import { normalizeUsername } from '../../../shared/username.js'

export const DATABASE_PREFIX = 'secure-chat:'
/** Bumped with a migration in `upgrade`; a database from a newer version is refused, never opened. */
export const SCHEMA_VERSION = 2

export { STORE_TABLES }

const MESSAGES_BY_PEER = 'by-peer-order'

/** What a row looks like inside IndexedDB: the StoreRecord as given (key path "key"). */
interface Row {
  key: string
  peer?: string
  order?: number
  value: Uint8Array
}

interface Schema extends DBSchema {
  account: { key: string; value: Row }
  prekeys: { key: string; value: Row }
  sessions: { key: string; value: Row }
  contacts: { key: string; value: Row }
  messages: { key: string; value: Row; indexes: { [MESSAGES_BY_PEER]: [string, number] } }
  outbox: { key: string; value: Row }
  sent: { key: string; value: Row }
}

export function databaseName(username: string): string {
  return `${DATABASE_PREFIX}${normalizeUsername(username)}`
}

/** Rows come back from storage another program (or version) may have written: check them. */
function toRecord(row: unknown, table: StoreTable): StoreRecord {
  const candidate = row as Partial<Row> | null
  if (
    typeof candidate !== 'object' ||
    candidate === null ||
    typeof candidate.key !== 'string' ||
    !(candidate.value instanceof Uint8Array) ||
    (candidate.peer !== undefined && typeof candidate.peer !== 'string') ||
    (candidate.order !== undefined && typeof candidate.order !== 'number')
  ) {
    throw new ClientError(ClientErrorCode.CorruptStore, `expected a ${table} record, got something else`)
  }
  return {
    key: candidate.key,
    ...(candidate.peer !== undefined ? { peer: candidate.peer } : {}),
    ...(candidate.order !== undefined ? { order: candidate.order } : {}),
    value: candidate.value,
  }
}

function invalid(message: string): ClientError {
  return new ClientError(ClientErrorCode.InvalidInput, message)
}

/**
 * The row for a put, checked first: IndexedDB would store any cloneable value (and a number as a
 * key) without complaint, and `toRecord` would then refuse the record on every later read.
 */
function toRow(record: unknown): Row {
  if (typeof record !== 'object' || record === null) {
    throw invalid(`store record: expected an object, got ${record === null ? 'null' : typeof record}`)
  }
  const { key, peer, order, value } = record as Partial<Record<keyof Row, unknown>>
  if (typeof key !== 'string') throw invalid(`store record key: expected a string, got ${typeof key}`)
  if (!(value instanceof Uint8Array)) throw invalid('store record value: expected bytes, got another type')
  if (peer !== undefined && typeof peer !== 'string') {
    throw invalid(`store record peer: expected a string, got ${typeof peer}`)
  }
  if (order !== undefined && !(typeof order === 'number' && Number.isFinite(order))) {
    throw invalid(`store record order: expected a finite number, got ${String(order)}`)
  }
  return {
    key,
    ...(peer !== undefined ? { peer } : {}),
    ...(order !== undefined ? { order } : {}),
    // Structured clone copies a view's whole buffer: store only the view's bytes.
    value: value.byteOffset === 0 && value.byteLength === value.buffer.byteLength ? value : value.slice(),
  }
}

export interface IdbStoreOptions {
  /** Called when the database goes away underneath us (deleted by another tab, or by the browser). */
  readonly onLost?: () => void
}

export class IdbStore implements ClientStore {
  readonly name: string
  private db: IDBPDatabase<Schema> | undefined
  /** Set by `wipe`: `close` then deletes the (empty) database itself, leaving no trace of the name. */
  private wiped = false

  private constructor(name: string, db: IDBPDatabase<Schema>) {
    this.name = name
    this.db = db
  }

  /** Opens (creating if needed) the database of `username`'s account on this device. */
  static async open(username: string, options: IdbStoreOptions = {}): Promise<IdbStore> {
    return IdbStore.openNamed(databaseName(username), options)
  }

  static async openNamed(name: string, options: IdbStoreOptions = {}): Promise<IdbStore> {
    let store: IdbStore | undefined
    let db: IDBPDatabase<Schema>
    try {
      db = await openDB<Schema>(name, SCHEMA_VERSION, {
        upgrade(database, oldVersion) {
          // Each step is frozen in time: it names its own tables, never today's list.
          if (oldVersion < 1) {
            for (const table of ['account', 'prekeys', 'sessions', 'contacts', 'outbox'] as const) {
              database.createObjectStore(table, { keyPath: 'key' })
            }
            database
              .createObjectStore('messages', { keyPath: 'key' })
              .createIndex(MESSAGES_BY_PEER, ['peer', 'order'])
          }
          // 2: the content of sent messages, kept for a while to send again on request.
          if (oldVersion < 2) database.createObjectStore('sent', { keyPath: 'key' })
        },
        // Another tab wants to delete or upgrade this database: let it, and tell the app.
        blocking() {
          store?.lose()
          options.onLost?.()
        },
        terminated() {
          store?.lose()
          options.onLost?.()
        },
      })
    } catch (cause) {
      if (cause instanceof DOMException && cause.name === 'VersionError') {
        throw new ClientError(
          ClientErrorCode.CorruptStore,
          `expected a local database of version ${SCHEMA_VERSION} or older, got a newer one (written by a newer version of the app?)`,
          { cause },
        )
      }
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        'expected to open the local database, got an error',
        {
          cause,
        },
      )
    }
    store = new IdbStore(name, db)
    return store
  }

  private lose(): void {
    this.db?.close()
    this.db = undefined
  }

  private database(): IDBPDatabase<Schema> {
    if (!this.db) {
      throw new ClientError(ClientErrorCode.InvalidState, 'expected an open local database, got a closed one')
    }
    return this.db
  }

  async get(table: StoreTable, key: string): Promise<StoreRecord | undefined> {
    const row: unknown = await this.database().get(table, key)
    return row === undefined ? undefined : toRecord(row, table)
  }

  async getMany(table: StoreTable, keys: readonly string[]): Promise<(StoreRecord | undefined)[]> {
    if (keys.length === 0) return []
    // One transaction for all of them: a transaction per key costs far more than the reads.
    const tx = this.database().transaction(table, 'readonly')
    const rows: unknown[] = await Promise.all(keys.map((key) => tx.store.get(key)))
    await tx.done
    return rows.map((row) => (row === undefined ? undefined : toRecord(row, table)))
  }

  async list(table: StoreTable): Promise<StoreRecord[]> {
    // getAll walks the object store in key order, the order ClientStore promises.
    const rows: unknown[] = await this.database().getAll(table)
    return rows.map((row) => toRecord(row, table))
  }

  async listMessages(
    conversation: ConversationId,
    options: { limit: number; beforeOrder?: number },
  ): Promise<StoreRecord[]> {
    if (!Number.isInteger(options.limit) || options.limit < 0) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        `limit: expected a whole number ≥ 0, got ${options.limit}`,
      )
    }
    if (options.limit === 0) return []
    const range = IDBKeyRange.bound(
      [conversation, Number.NEGATIVE_INFINITY],
      [conversation, options.beforeOrder ?? Number.POSITIVE_INFINITY],
      false,
      options.beforeOrder !== undefined,
    )
    const newestFirst: StoreRecord[] = []
    const tx = this.database().transaction('messages', 'readonly')
    let cursor = await tx.store.index(MESSAGES_BY_PEER).openCursor(range, 'prev')
    while (cursor && newestFirst.length < options.limit) {
      newestFirst.push(toRecord(cursor.value, 'messages'))
      cursor = await cursor.continue()
    }
    await tx.done
    return newestFirst.reverse()
  }

  async commit(operations: readonly StoreOperation[]): Promise<void> {
    if (operations.length === 0) return
    // Everything checked before the transaction opens, so a bad batch touches nothing.
    const checked = operations.map((operation): [StoreTable, Row | string] => {
      if (!STORE_TABLES.includes(operation.table)) {
        throw invalid(`table: expected one of ${STORE_TABLES.join(', ')}, got ${String(operation.table)}`)
      }
      const { op, record, key } = operation as { op: unknown; record?: unknown; key?: unknown }
      if (op === 'put') return [operation.table, toRow(record)]
      if (op !== 'delete') throw invalid(`store operation: expected put or delete, got ${String(op)}`)
      if (typeof key !== 'string') throw invalid(`store delete key: expected a string, got ${typeof key}`)
      return [operation.table, key]
    })
    const tables = [...new Set(operations.map((operation) => operation.table))]
    const tx = this.database().transaction(tables, 'readwrite')
    const requests: Promise<unknown>[] = []
    try {
      for (const [table, change] of checked) {
        const objectStore = tx.objectStore(table)
        requests.push(typeof change === 'string' ? objectStore.delete(change) : objectStore.put(change))
      }
    } catch (cause) {
      // A request refused synchronously (e.g. an invalid key): undo the ones already queued.
      tx.abort()
      await Promise.allSettled([...requests, tx.done])
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        'expected storable records, got one IndexedDB refused',
        {
          cause,
        },
      )
    }
    await Promise.all([...requests, tx.done])
    this.wiped = false
  }

  async wipe(): Promise<void> {
    const tx = this.database().transaction([...STORE_TABLES], 'readwrite')
    await Promise.all([...STORE_TABLES.map((table) => tx.objectStore(table).clear()), tx.done])
    this.wiped = true
  }

  async close(): Promise<void> {
    const wasOpen = this.db !== undefined
    this.lose()
    if (wasOpen && this.wiped) await deleteDB(this.name)
  }
}

/** The accounts this browser holds (usernames, normalised), from the database names alone. */
export async function localAccounts(): Promise<string[]> {
  if (typeof indexedDB.databases !== 'function') return []
  const databases = await indexedDB.databases()
  return databases
    .map((database) => database.name ?? '')
    .filter((name) => name.startsWith(DATABASE_PREFIX))
    .map((name) => name.slice(DATABASE_PREFIX.length))
    .sort()
}

/** Whether this browser holds a database for `username` (without creating one). */
export async function hasLocalAccount(username: string): Promise<boolean> {
  return (await localAccounts()).includes(normalizeUsername(username))
}

/** Deletes an account's database outright (used when a registration never completed). */
export async function deleteLocalAccount(username: string): Promise<void> {
  await deleteDB(databaseName(username))
}
