import type { ConversationId } from '../address.js'

/**
 * What the client core needs from a local database, as one small interface each UI implements
 * (IndexedDB in the browser, SQLite in the terminal). The core seals every secret and every message
 * before it reaches the store; the store sees only the index fields and opaque bytes.
 *
 * Writes come as a batch that the store applies atomically (one IndexedDB or SQLite transaction):
 * a session update, the message it produced and the prekey it consumed land together or not at all.
 * Crypto never runs inside a store transaction (IndexedDB transactions cannot wait on it).
 */

export type StoreTable =
  /** One record, key "account": the account header (plaintext) and its sealed secrets. */
  | 'account'
  /** Our prekeys' private halves, key "signed:<id>" or "one-time:<id>". */
  | 'prekeys'
  /** One session record per remote address, key = "<username>:<device>" (shared/address.ts). */
  | 'sessions'
  /** One record per contact (identity keys seen, verification, unread count), key = username. */
  | 'contacts'
  /** Conversation history, key = "<peer>/<message id>"; indexed by peer and order. */
  | 'messages'
  /** Envelopes sent but not yet accepted by the server, resent on reconnect; key = message id. */
  | 'outbox'
  /** Content we sent, kept for a while to send again on request; key = "<peer>/<id>", order = sent. */
  | 'sent'

export interface StoreRecord {
  readonly key: string
  /** Messages, outbox and sent entries: the conversation they belong to. */
  readonly peer?: string
  /** Messages, outbox and sent entries: the sort position (milliseconds, then a tiebreak). */
  readonly order?: number
  readonly value: Uint8Array
}

export type StoreOperation =
  | { readonly op: 'put'; readonly table: StoreTable; readonly record: StoreRecord }
  | { readonly op: 'delete'; readonly table: StoreTable; readonly key: string }

export interface ClientStore {
  get(table: StoreTable, key: string): Promise<StoreRecord | undefined>
  /**
   * Several records of one table at once, in the order of `keys` (undefined where none is stored):
   * one read for a batch (IndexedDB: one transaction instead of one per key).
   */
  getMany(table: StoreTable, keys: readonly string[]): Promise<(StoreRecord | undefined)[]>
  /**
   * Every record of a table (for the small ones: prekeys, contacts, outbox), in key order
   * (JavaScript's string comparison).
   */
  list(table: StoreTable): Promise<StoreRecord[]>
  /** The newest `limit` messages of one conversation before `beforeOrder`, oldest first (equal orders by key). */
  listMessages(
    conversation: ConversationId,
    options: { limit: number; beforeOrder?: number },
  ): Promise<StoreRecord[]>
  /** Applies every operation or none. */
  commit(operations: readonly StoreOperation[]): Promise<void>
  /** Deletes everything (log out and wipe this device). */
  wipe(): Promise<void>
  close(): Promise<void>
}

/** Every table, once: a Record so that a table added to StoreTable must be added here too. */
const TABLES: Readonly<Record<StoreTable, true>> = {
  account: true,
  prekeys: true,
  sessions: true,
  contacts: true,
  messages: true,
  outbox: true,
  sent: true,
}
/** Every table of the client store, in a fixed order (each store creates and wipes these). */
export const STORE_TABLES = Object.keys(TABLES) as readonly StoreTable[]
const TABLE_NAMES: ReadonlySet<string> = new Set(STORE_TABLES)

/** Throws TypeError unless `operation` is one a real store could apply and give back unchanged. */
function checkOperation(operation: StoreOperation): void {
  const { op, table } = operation as { op: unknown; table: unknown }
  if (typeof table !== 'string' || !TABLE_NAMES.has(table)) {
    throw new TypeError(`store table: expected one of ${[...STORE_TABLES].join(', ')}, got ${String(table)}`)
  }
  if (op === 'delete') {
    const { key } = operation as { key: unknown }
    if (typeof key !== 'string') throw new TypeError(`store delete key: expected a string, got ${typeof key}`)
    return
  }
  if (op !== 'put') throw new TypeError(`store operation: expected put or delete, got ${String(op)}`)
  const record: unknown = (operation as { record: unknown }).record
  if (typeof record !== 'object' || record === null) {
    throw new TypeError(`store record: expected an object, got ${record === null ? 'null' : typeof record}`)
  }
  const { key, peer, order, value } = record as Record<string, unknown>
  if (typeof key !== 'string') throw new TypeError(`store record key: expected a string, got ${typeof key}`)
  if (!(value instanceof Uint8Array))
    throw new TypeError('store record value: expected bytes, got another type')
  if (peer !== undefined && typeof peer !== 'string') {
    throw new TypeError(`store record peer: expected a string, got ${typeof peer}`)
  }
  if (order !== undefined && !(typeof order === 'number' && Number.isFinite(order))) {
    throw new TypeError(`store record order: expected a finite number, got ${String(order)}`)
  }
}

/** A record with its own copy of the bytes: what a real store hands out, sharing nothing with callers. */
function copied(record: StoreRecord): StoreRecord {
  return {
    key: record.key,
    ...(record.peer !== undefined ? { peer: record.peer } : {}),
    ...(record.order !== undefined ? { order: record.order } : {}),
    value: record.value.slice(),
  }
}

/**
 * A reference store in memory, for unit tests of the core and as the model the real stores follow
 * (shared/client/test/store-contract.ts holds them all to the same behaviour). Like a real store it
 * copies bytes in and out, so a caller that changes an array after committing it, or one it was
 * given, changes nothing stored. Closing keeps the records: tests reopen a client on the same object.
 */
export class MemoryStore implements ClientStore {
  private readonly tables = new Map<StoreTable, Map<string, StoreRecord>>()

  private table(name: StoreTable): Map<string, StoreRecord> {
    let table = this.tables.get(name)
    if (!table) {
      table = new Map()
      this.tables.set(name, table)
    }
    return table
  }

  async get(table: StoreTable, key: string): Promise<StoreRecord | undefined> {
    const record = this.table(table).get(key)
    return record && copied(record)
  }

  async getMany(table: StoreTable, keys: readonly string[]): Promise<(StoreRecord | undefined)[]> {
    const rows = this.table(table)
    return keys.map((key) => {
      const record = rows.get(key)
      return record && copied(record)
    })
  }

  async list(table: StoreTable): Promise<StoreRecord[]> {
    return [...this.table(table).values()].sort((a, b) => compareKeys(a.key, b.key)).map(copied)
  }

  async listMessages(
    conversation: ConversationId,
    options: { limit: number; beforeOrder?: number },
  ): Promise<StoreRecord[]> {
    const before = options.beforeOrder ?? Number.POSITIVE_INFINITY
    // Equal orders by key, as the SQLite and IndexedDB indexes sort them.
    const matching = [...this.table('messages').values()]
      .filter((record) => record.peer === conversation && (record.order ?? 0) < before)
      .sort((a, b) => (a.order ?? 0) - (b.order ?? 0) || compareKeys(a.key, b.key))
    return matching.slice(Math.max(0, matching.length - options.limit)).map(copied)
  }

  async commit(operations: readonly StoreOperation[]): Promise<void> {
    for (const operation of operations) checkOperation(operation)
    // All or nothing: apply to copies of the touched tables, then swap them in.
    const staged = new Map<StoreTable, Map<string, StoreRecord>>()
    for (const operation of operations) {
      let table = staged.get(operation.table)
      if (!table) {
        table = new Map(this.table(operation.table))
        staged.set(operation.table, table)
      }
      if (operation.op === 'put') table.set(operation.record.key, copied(operation.record))
      else table.delete(operation.key)
    }
    for (const [name, table] of staged) this.tables.set(name, table)
  }

  async wipe(): Promise<void> {
    this.tables.clear()
  }

  async close(): Promise<void> {}
}

/** Key order: JavaScript's string comparison (UTF-16 code units), which IndexedDB uses too. */
function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
