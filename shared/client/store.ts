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
  /** Every record of a table (for the small ones: prekeys, contacts, outbox), in key order. */
  list(table: StoreTable): Promise<StoreRecord[]>
  /** The newest `limit` messages of one conversation before `beforeOrder`, oldest first. */
  listMessages(peer: string, options: { limit: number; beforeOrder?: number }): Promise<StoreRecord[]>
  /** Applies every operation or none. */
  commit(operations: readonly StoreOperation[]): Promise<void>
  /** Deletes everything (log out and wipe this device). */
  wipe(): Promise<void>
  close(): Promise<void>
}

/** A reference store in memory, for unit tests of the core and as the model the real stores follow. */
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
    return this.table(table).get(key)
  }

  async list(table: StoreTable): Promise<StoreRecord[]> {
    return [...this.table(table).values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  }

  async listMessages(peer: string, options: { limit: number; beforeOrder?: number }): Promise<StoreRecord[]> {
    const before = options.beforeOrder ?? Number.POSITIVE_INFINITY
    const matching = [...this.table('messages').values()]
      .filter((record) => record.peer === peer && (record.order ?? 0) < before)
      .sort((a, b) => (a.order ?? 0) - (b.order ?? 0))
    return matching.slice(Math.max(0, matching.length - options.limit))
  }

  async commit(operations: readonly StoreOperation[]): Promise<void> {
    // All or nothing: apply to copies of the touched tables, then swap them in.
    const staged = new Map<StoreTable, Map<string, StoreRecord>>()
    for (const operation of operations) {
      let table = staged.get(operation.table)
      if (!table) {
        table = new Map(this.table(operation.table))
        staged.set(operation.table, table)
      }
      if (operation.op === 'put') {
        if (typeof operation.record.key !== 'string' || !(operation.record.value instanceof Uint8Array)) {
          throw new TypeError(
            `expected a record with a string key and bytes, got another in ${operation.table}`,
          )
        }
        table.set(operation.record.key, operation.record)
      } else {
        table.delete(operation.key)
      }
    }
    for (const [name, table] of staged) this.tables.set(name, table)
  }

  async wipe(): Promise<void> {
    this.tables.clear()
  }

  async close(): Promise<void> {}
}
