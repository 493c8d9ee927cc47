/**
 * The behaviour every ClientStore (shared/client/store.ts) must show, as one suite that each store
 * runs against itself: MemoryStore here (shared/client/test/memory-store.test.ts, in Node and in
 * Chromium), the terminal's SQLite store on real files, and the PWA's IndexedDB store in Chromium.
 * The client core is written against this behaviour and its tests run on MemoryStore, so whatever
 * one store does differently is a bug the core's tests cannot see.
 *
 * It is imported by browser tests too: no Node built-ins, no DOM (test/shared-boundary.test.ts).
 */
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { directConversation } from '../../address.js'
import {
  type ClientStore,
  MemoryStore,
  type StoreOperation,
  type StoreRecord,
  type StoreTable,
} from '../store.js'

/** The store is keyed by conversation; the tests name direct ones by username. */
const conversation = directConversation

export interface StoreContractSubject {
  /** A new, empty store of its own. */
  open(): Promise<ClientStore>
  /** The same store once more, after `close` (MemoryStore: the same object, which close keeps). */
  reopen(closed: ClientStore): Promise<ClientStore>
  /** Removes whatever `open` left behind (files, databases); the store is closed already. */
  dispose?(closed: ClientStore): Promise<void>
  /** Runs of the differential property; stores that are slow to open ask for fewer. */
  readonly propertyRuns?: number
}

export const ALL_TABLES: readonly StoreTable[] = [
  'account',
  'prekeys',
  'sessions',
  'contacts',
  'messages',
  'outbox',
]

/**
 * Keys the core does not make today but a store must not mangle: separators the core does use
 * ("<peer>/<id>", "signed:<id>"), the empty string, spaces, non-ASCII letters, characters beyond
 * the Basic Multilingual Plane (UTF-16 surrogate pairs) and ones just below its end.
 */
export const ODD_KEYS: readonly string[] = [
  '',
  ' ',
  'a',
  'a/b',
  'a/',
  '/a',
  'a:b',
  'signed:1',
  'one-time:4294967295',
  'bob/AAECAwQFBgcICQoLDA0ODw',
  'zoë',
  'ﬁ',
  '日本語',
  '\u{1F600}',
  'a\u{1F600}b',
  '\uFFFD',
  '\uFF21',
  'with\ttab',
  'new\nline',
  'quote\'"`',
  '%_*?',
]

/** The order `list` promises: JavaScript's string comparison (UTF-16 code units), as MemoryStore sorts. */
function keyOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values)
}

/** `length` bytes of a pattern that differs at every offset within 251 (a prime) positions. */
export function patternBytes(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = (i * 7 + seed) % 251
  return out
}

export function put(table: StoreTable, record: StoreRecord): StoreOperation {
  return { op: 'put', table, record }
}

export function del(table: StoreTable, key: string): StoreOperation {
  return { op: 'delete', table, key }
}

export function message(peer: string, order: number, key = `${peer}/${order}`): StoreOperation {
  return put('messages', { key, peer, order, value: bytes(order % 256) })
}

/** A record with its value as text: deep equality over a megabyte of Uint8Array elements takes seconds. */
export interface RecordText {
  readonly key: string
  readonly peer?: string
  readonly order?: number
  readonly value: string
}

/** One character per byte (code points 0–255): exact, and fast for megabytes. */
export function bytesText(value: Uint8Array): string {
  const chunks: string[] = []
  for (let start = 0; start < value.length; start += 8192) {
    chunks.push(String.fromCharCode(...value.subarray(start, start + 8192)))
  }
  return chunks.join('')
}

export function recordText(record: StoreRecord): RecordText {
  return { ...record, value: bytesText(record.value) }
}

/** Every table's records (values as hex), for comparing whole stores. */
export async function snapshot(store: ClientStore): Promise<Record<StoreTable, RecordText[]>> {
  const tables = {} as Record<StoreTable, RecordText[]>
  for (const table of ALL_TABLES) tables[table] = (await store.list(table)).map(recordText)
  return tables
}

function orders(records: readonly StoreRecord[]): (number | undefined)[] {
  return records.map((record) => record.order)
}

/** A value comes back as a plain Uint8Array (not a Buffer, whose slice() shares memory) of its bytes. */
function expectPlainBytes(value: Uint8Array | undefined, expected: Uint8Array): void {
  expect(value).toBeDefined()
  expect(Object.getPrototypeOf(value)).toBe(Uint8Array.prototype)
  expect(value?.byteLength).toBe(expected.byteLength)
  // Not toEqual: comparing a megabyte element by element takes seconds.
  expect(bytesText(value ?? new Uint8Array(0)) === bytesText(expected)).toBe(true)
}

/**
 * Operations a correct caller never makes (the types forbid them) but a buggy one might: the
 * store must refuse each, and with it the whole batch, rather than store something it cannot
 * give back as a StoreRecord.
 */
const INVALID_OPERATIONS: readonly [string, unknown][] = [
  ['a put without a record', { op: 'put', table: 'contacts', record: undefined }],
  ['a key that is not a string', { op: 'put', table: 'contacts', record: { key: 7, value: bytes(1) } }],
  ['a value that is a string', { op: 'put', table: 'contacts', record: { key: 'x', value: 'bytes' } }],
  ['a value that is an array', { op: 'put', table: 'contacts', record: { key: 'x', value: [1, 2] } }],
  [
    'a value that is an ArrayBuffer',
    { op: 'put', table: 'contacts', record: { key: 'x', value: new ArrayBuffer(2) } },
  ],
  [
    'a peer that is not a string',
    { op: 'put', table: 'messages', record: { key: 'x', peer: 5, order: 1, value: bytes(1) } },
  ],
  [
    'an order that is not a finite number',
    { op: 'put', table: 'messages', record: { key: 'x', peer: 'bob', order: Number.NaN, value: bytes(1) } },
  ],
  [
    'an order that is a string',
    { op: 'put', table: 'messages', record: { key: 'x', peer: 'bob', order: '1', value: bytes(1) } },
  ],
  ['an unknown table', { op: 'put', table: 'secrets', record: { key: 'x', value: bytes(1) } }],
  ['a delete in an unknown table', { op: 'delete', table: 'secrets', key: 'x' }],
  ['an unknown operation', { op: 'upsert', table: 'contacts', key: 'x' }],
  ['a delete without a key', { op: 'delete', table: 'contacts' }],
]

export function describeStoreContract(name: string, subject: StoreContractSubject): void {
  describe(`${name}: the ClientStore contract`, () => {
    const opened: ClientStore[] = []

    async function fresh(): Promise<ClientStore> {
      const store = await subject.open()
      opened.push(store)
      return store
    }

    /** Closes `store` and opens it again, as a client does when it restarts. */
    async function reopened(store: ClientStore): Promise<ClientStore> {
      await store.close()
      const again = await subject.reopen(store)
      opened[opened.indexOf(store)] = again
      return again
    }

    afterEach(async () => {
      for (const store of opened.splice(0)) {
        await store.close()
        await subject.dispose?.(store)
      }
    })

    describe('reading and writing records', () => {
      it('answers an empty store with nothing', async () => {
        const store = await fresh()
        for (const table of ALL_TABLES) {
          expect(await store.get(table, 'account')).toBeUndefined()
          expect(await store.list(table)).toEqual([])
        }
        expect(await store.listMessages(conversation('bob'), { limit: 10 })).toEqual([])
      })

      it('gets what was put, with exactly the fields given', async () => {
        const store = await fresh()
        await store.commit([
          put('contacts', { key: 'bob', value: bytes(1, 2, 3) }),
          put('outbox', { key: 'id1', peer: 'bob', order: 1_700_000_000_123, value: bytes(5) }),
        ])
        expect(await store.get('contacts', 'bob')).toStrictEqual({ key: 'bob', value: bytes(1, 2, 3) })
        expect(await store.get('outbox', 'id1')).toStrictEqual({
          key: 'id1',
          peer: 'bob',
          order: 1_700_000_000_123,
          value: bytes(5),
        })
        expect(await store.get('contacts', 'bo')).toBeUndefined()
        expect(await store.get('contacts', 'bob ')).toBeUndefined()
        expect(await store.get('contacts', 'Bob')).toBeUndefined()
      })

      it('gets several records of a table at once, in the order asked, with a gap for each missing one', async () => {
        const store = await fresh()
        await store.commit([
          put('messages', { key: 'bob/1', peer: 'bob', order: 1, value: bytes(1) }),
          put('messages', { key: 'bob/2', peer: 'bob', order: 2, value: bytes(2) }),
          put('contacts', { key: 'bob/3', value: bytes(3) }),
        ])
        expect(await store.getMany('messages', ['bob/2', 'bob/3', 'bob/1', 'bob/2'])).toStrictEqual([
          { key: 'bob/2', peer: 'bob', order: 2, value: bytes(2) },
          undefined,
          { key: 'bob/1', peer: 'bob', order: 1, value: bytes(1) },
          { key: 'bob/2', peer: 'bob', order: 2, value: bytes(2) },
        ])
        expect(await store.getMany('contacts', [])).toEqual([])
        expect(await store.getMany('outbox', ['bob/1'])).toEqual([undefined])
      })

      it('overwrites a record with a put of the same key, index fields included', async () => {
        const store = await fresh()
        await store.commit([put('messages', { key: 'm', peer: 'bob', order: 10, value: bytes(1) })])
        await store.commit([put('messages', { key: 'm', peer: 'carol', order: 20, value: bytes(2, 2) })])
        expect(await store.get('messages', 'm')).toStrictEqual({
          key: 'm',
          peer: 'carol',
          order: 20,
          value: bytes(2, 2),
        })
        expect(await store.listMessages(conversation('bob'), { limit: 10 })).toEqual([])
        expect(orders(await store.listMessages(conversation('carol'), { limit: 10 }))).toEqual([20])
        // A put without index fields leaves none behind.
        await store.commit([put('messages', { key: 'm', value: bytes(3) })])
        expect(await store.get('messages', 'm')).toStrictEqual({ key: 'm', value: bytes(3) })
        expect(await store.list('messages')).toHaveLength(1)
      })

      it('deletes a record, and deleting what is not there is no error', async () => {
        const store = await fresh()
        await store.commit([
          put('contacts', { key: 'bob', value: bytes(1) }),
          put('sessions', { key: 'bob', value: bytes(2) }),
        ])
        await store.commit([del('contacts', 'bob')])
        expect(await store.get('contacts', 'bob')).toBeUndefined()
        expect(await store.list('contacts')).toEqual([])
        // Only in the table named.
        expect((await store.get('sessions', 'bob'))?.value).toEqual(bytes(2))
        await store.commit([del('contacts', 'nobody'), del('contacts', 'bob')])
        expect(await store.list('sessions')).toHaveLength(1)
      })

      it('keeps the tables apart', async () => {
        const store = await fresh()
        await store.commit(ALL_TABLES.map((table, i) => put(table, { key: 'same', value: bytes(i) })))
        for (const [i, table] of ALL_TABLES.entries()) {
          expect(await store.get(table, 'same')).toStrictEqual({ key: 'same', value: bytes(i) })
          expect(await store.list(table)).toHaveLength(1)
        }
      })

      it('lists a table in key order', async () => {
        const store = await fresh()
        await store.commit([
          put('contacts', { key: 'carol', value: bytes(3) }),
          put('contacts', { key: 'alice', value: bytes(1) }),
          put('contacts', { key: 'bob', value: bytes(2) }),
          put('contacts', { key: 'bo', value: bytes(4) }),
          put('contacts', { key: 'Bob', value: bytes(5) }),
        ])
        expect((await store.list('contacts')).map((record) => record.key)).toEqual([
          'Bob',
          'alice',
          'bo',
          'bob',
          'carol',
        ])
        // Numbered keys sort as text, as the core knows (it sorts signed prekey ids itself).
        await store.commit([2, 10, 1].map((id) => put('prekeys', { key: `signed:${id}`, value: bytes(id) })))
        expect((await store.list('prekeys')).map((record) => record.key)).toEqual([
          'signed:1',
          'signed:10',
          'signed:2',
        ])
      })
    })

    describe('keys', () => {
      it('keeps keys with separators, spaces and non-ASCII characters exactly', async () => {
        const store = await fresh()
        await store.commit(ODD_KEYS.map((key, i) => put('sessions', { key, value: bytes(i) })))
        for (const [i, key] of ODD_KEYS.entries()) {
          expect(await store.get('sessions', key)).toStrictEqual({ key, value: bytes(i) })
        }
        const listed = await store.list('sessions')
        expect(listed.map((record) => record.key)).toEqual([...ODD_KEYS].sort(keyOrder))
        // Keys are compared exactly: neither normalised nor case-folded.
        await store.commit([put('sessions', { key: 'zoe\u0308', value: bytes(99) })])
        expect((await store.get('sessions', 'zoë'))?.value).toEqual(bytes(ODD_KEYS.indexOf('zoë')))
        expect(await store.get('sessions', 'fi')).toBeUndefined()
        await store.commit(ODD_KEYS.map((key) => del('sessions', key)))
        expect((await store.list('sessions')).map((record) => record.key)).toEqual(['zoe\u0308'])
      })

      it('keeps odd peers apart in listMessages', async () => {
        const store = await fresh()
        const peers = ['a', 'a/b', 'a:b', 'zoë', '\u{1F600}', '']
        await store.commit(peers.map((peer, i) => message(peer, 100 + i, `${peer}/m`)))
        for (const [i, peer] of peers.entries()) {
          expect(await store.listMessages(conversation(peer), { limit: 10 })).toStrictEqual([
            { key: `${peer}/m`, peer, order: 100 + i, value: bytes(100 + i) },
          ])
        }
        expect(await store.listMessages(conversation('a/'), { limit: 10 })).toEqual([])
      })
    })

    describe('values', () => {
      it('returns values byte for byte: empty, every byte value, and large', async () => {
        const store = await fresh()
        const everyByte = Uint8Array.from({ length: 256 }, (_, i) => i)
        const large = patternBytes(1024 * 1024 + 3)
        await store.commit([
          put('sessions', { key: 'empty', value: new Uint8Array(0) }),
          put('sessions', { key: 'every', value: everyByte }),
          put('sessions', { key: 'large', value: large }),
          put('messages', { key: 'bob/empty', peer: 'bob', order: 1, value: new Uint8Array(0) }),
        ])
        expectPlainBytes((await store.get('sessions', 'empty'))?.value, new Uint8Array(0))
        expectPlainBytes((await store.get('sessions', 'every'))?.value, everyByte)
        expectPlainBytes((await store.get('sessions', 'large'))?.value, large)
        const [empty] = await store.listMessages(conversation('bob'), { limit: 1 })
        expectPlainBytes(empty?.value, new Uint8Array(0))
        for (const record of await store.list('sessions')) expect(record.value).toBeInstanceOf(Uint8Array)
      })

      it('stores only the bytes of a view into a larger buffer', async () => {
        const store = await fresh()
        const backing = patternBytes(64, 1)
        const view = backing.subarray(10, 20)
        await store.commit([put('contacts', { key: 'view', value: view })])
        const value = (await store.get('contacts', 'view'))?.value
        expectPlainBytes(value, patternBytes(64, 1).slice(10, 20))
        // Nothing of the rest of the buffer is stored with it.
        expect(value?.buffer.byteLength).toBe(10)
      })

      it('keeps what was committed when the caller changes its arrays afterwards, and the other way round', async () => {
        const store = await fresh()
        const value = bytes(1, 2, 3)
        await store.commit([put('contacts', { key: 'bob', value })])
        value.fill(0)
        const first = await store.get('contacts', 'bob')
        expect(first?.value).toEqual(bytes(1, 2, 3))
        first?.value.fill(9)
        const [listed] = await store.list('contacts')
        listed?.value.fill(8)
        expect((await store.get('contacts', 'bob'))?.value).toEqual(bytes(1, 2, 3))
        await store.commit([message('bob', 5)])
        const [fromHistory] = await store.listMessages(conversation('bob'), { limit: 1 })
        fromHistory?.value.fill(7)
        expect((await store.get('messages', 'bob/5'))?.value).toEqual(bytes(5))
      })
    })

    describe('listMessages', () => {
      it('returns one conversation, oldest first: the newest `limit` before `beforeOrder`', async () => {
        const store = await fresh()
        await store.commit([
          message('bob', 30),
          message('bob', 10),
          message('carol', 15),
          message('bob', 20),
          message('bob', 40),
          message('carol', 25),
          // Outbox entries carry peer and order too, but are not history.
          put('outbox', { key: 'o', peer: 'bob', order: 35, value: bytes(1) }),
        ])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 10 }))).toEqual([10, 20, 30, 40])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 4 }))).toEqual([10, 20, 30, 40])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 2 }))).toEqual([30, 40])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 1 }))).toEqual([40])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 2, beforeOrder: 40 }))).toEqual([
          20, 30,
        ])
        // beforeOrder is exclusive, and need not be an order that exists.
        expect(orders(await store.listMessages(conversation('bob'), { limit: 10, beforeOrder: 20 }))).toEqual(
          [10],
        )
        expect(orders(await store.listMessages(conversation('bob'), { limit: 10, beforeOrder: 21 }))).toEqual(
          [10, 20],
        )
        expect(orders(await store.listMessages(conversation('bob'), { limit: 10, beforeOrder: 10 }))).toEqual(
          [],
        )
        expect(
          orders(await store.listMessages(conversation('bob'), { limit: 10, beforeOrder: 1_000 })),
        ).toEqual([10, 20, 30, 40])
        expect(orders(await store.listMessages(conversation('carol'), { limit: 10 }))).toEqual([15, 25])
        expect(await store.listMessages(conversation('dave'), { limit: 10 })).toEqual([])
        expect(await store.listMessages(conversation('bob'), { limit: 0 })).toEqual([])
        expect(await store.listMessages(conversation('bo'), { limit: 10 })).toEqual([])
        const [first] = await store.listMessages(conversation('bob'), { limit: 1, beforeOrder: 20 })
        expect(first).toStrictEqual({ key: 'bob/10', peer: 'bob', order: 10, value: bytes(10) })
      })

      it('orders by the number, not its text: fractions, negatives, zero and large times', async () => {
        const store = await fresh()
        const values = [1_700_000_000_000, 2, 10, 0, -5, 1.5, 9_007_199_254_740_991, 100]
        await store.commit(values.map((order, i) => message('bob', order, `bob/${i}`)))
        const sorted = [...values].sort((a, b) => a - b)
        expect(orders(await store.listMessages(conversation('bob'), { limit: 100 }))).toEqual(sorted)
        expect(orders(await store.listMessages(conversation('bob'), { limit: 3, beforeOrder: 10 }))).toEqual([
          0, 1.5, 2,
        ])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 100, beforeOrder: 0 }))).toEqual(
          [-5],
        )
      })

      // By key as SQLite and IndexedDB compare it in their indexes: the same order as `list` for
      // every key without both characters beyond U+FFFF and ones from U+E000 to U+FFFF, which SQLite
      // (UTF-8 bytes) and JavaScript (UTF-16 code units) order differently. The core's message keys
      // are "<username>/<base64url id>", ASCII only.
      it('breaks ties between equal orders by key, so a limit cuts them the same way everywhere', async () => {
        const store = await fresh()
        await store.commit([
          message('bob', 5, 'bob/c'),
          message('bob', 5, 'bob/a'),
          message('bob', 7, 'bob/z'),
          message('bob', 5, 'bob/b'),
          message('bob', 3, 'bob/y'),
        ])
        const keys = (records: StoreRecord[]) => records.map((record) => record.key)
        expect(keys(await store.listMessages(conversation('bob'), { limit: 10 }))).toEqual([
          'bob/y',
          'bob/a',
          'bob/b',
          'bob/c',
          'bob/z',
        ])
        expect(keys(await store.listMessages(conversation('bob'), { limit: 3 }))).toEqual([
          'bob/b',
          'bob/c',
          'bob/z',
        ])
        expect(keys(await store.listMessages(conversation('bob'), { limit: 2, beforeOrder: 7 }))).toEqual([
          'bob/b',
          'bob/c',
        ])
      })

      it('pages through a long conversation without gaps or repeats', async () => {
        const store = await fresh()
        await store.commit([
          ...Array.from({ length: 250 }, (_, i) => message('bob', 1_000 + i)),
          ...Array.from({ length: 100 }, (_, i) => message('carol', 1_000 + i * 2)),
        ])
        const seen: number[] = []
        let before: number | undefined
        for (;;) {
          const page = await store.listMessages(conversation('bob'), {
            limit: 40,
            ...(before !== undefined ? { beforeOrder: before } : {}),
          })
          if (page.length === 0) break
          expect(page.length === 40 || seen.length + page.length === 250).toBe(true)
          seen.unshift(...page.map((record) => record.order as number))
          before = page[0]?.order
        }
        expect(seen).toEqual(Array.from({ length: 250 }, (_, i) => 1_000 + i))
      })
    })

    describe('commit', () => {
      it('applies a batch of puts and deletes in order, later operations winning', async () => {
        const store = await fresh()
        await store.commit([put('sessions', { key: 'bob', value: bytes(1) })])
        await store.commit([
          put('sessions', { key: 'bob', value: bytes(2) }),
          message('bob', 1),
          del('sessions', 'bob'),
          put('sessions', { key: 'bob', value: bytes(3) }),
          put('contacts', { key: 'gone', value: bytes(4) }),
          del('contacts', 'gone'),
        ])
        expect((await store.get('sessions', 'bob'))?.value).toEqual(bytes(3))
        expect(await store.get('contacts', 'gone')).toBeUndefined()
        expect(await store.listMessages(conversation('bob'), { limit: 5 })).toHaveLength(1)
      })

      it('accepts an empty batch and a batch of a thousand operations', async () => {
        const store = await fresh()
        await store.commit([])
        await store.commit(Array.from({ length: 1_000 }, (_, i) => message('bob', i)))
        expect(await store.listMessages(conversation('bob'), { limit: 2_000 })).toHaveLength(1_000)
      })

      it.each(INVALID_OPERATIONS)(
        'refuses a batch with %s and applies none of it',
        async (_what, invalid) => {
          const store = await fresh()
          await store.commit([put('sessions', { key: 'bob', value: bytes(1) }), message('bob', 1)])
          const before = await snapshot(store)
          const batch = [
            put('sessions', { key: 'bob', value: bytes(2) }),
            message('bob', 2),
            del('messages', 'bob/1'),
            invalid as StoreOperation,
            put('contacts', { key: 'bob', value: bytes(3) }),
          ]
          await expect(store.commit(batch)).rejects.toThrow()
          expect(await snapshot(store)).toEqual(before)
          // The store still works afterwards.
          await store.commit([put('contacts', { key: 'carol', value: bytes(4) })])
          expect((await store.list('contacts')).map((record) => record.key)).toEqual(['carol'])
        },
      )

      it('applies batches committed without waiting in the order they were committed', async () => {
        const store = await fresh()
        const writes = Array.from({ length: 20 }, (_, i) =>
          store.commit([put('contacts', { key: 'bob', value: bytes(i) }), message('bob', i)]),
        )
        // A read asked for after a commit sees it, even before the commit's promise settles.
        const read = store.get('contacts', 'bob')
        await Promise.all(writes)
        expect((await read)?.value).toEqual(bytes(19))
        expect((await store.get('contacts', 'bob'))?.value).toEqual(bytes(19))
        expect(await store.listMessages(conversation('bob'), { limit: 100 })).toHaveLength(20)
      })
    })

    describe('wipe', () => {
      it('deletes every table, and the store stays usable', async () => {
        const store = await fresh()
        await store.commit([
          ...ALL_TABLES.map((table) => put(table, { key: 'k', value: bytes(1) })),
          message('bob', 1),
          put('outbox', { key: 'x', peer: 'bob', order: 1, value: bytes(3) }),
        ])
        await store.wipe()
        expect(await snapshot(store)).toEqual(await snapshot(new MemoryStore()))
        expect(await store.listMessages(conversation('bob'), { limit: 10 })).toEqual([])
        await store.commit([put('contacts', { key: 'carol', value: bytes(4) })])
        expect(await store.list('contacts')).toHaveLength(1)
      })

      it('a wiped store is still empty after reopening', async () => {
        let store = await fresh()
        await store.commit([put('account', { key: 'account', value: bytes(1) }), message('bob', 1)])
        await store.wipe()
        store = await reopened(store)
        expect(await snapshot(store)).toEqual(await snapshot(new MemoryStore()))
      })
    })

    describe('closing and reopening', () => {
      it('keeps everything committed, byte for byte, with its index fields', async () => {
        let store = await fresh()
        const large = patternBytes(1024 * 1024, 3)
        await store.commit([
          put('account', { key: 'account', value: bytes(1, 2) }),
          put('prekeys', { key: 'signed:1', value: bytes(3) }),
          put('sessions', { key: 'bob', value: large }),
          put('contacts', { key: 'bob', value: new Uint8Array(0) }),
          put('outbox', { key: 'o1', peer: 'bob', order: 12.5, value: bytes(4) }),
          ...ODD_KEYS.map((key, i) => put('contacts', { key: `odd:${key}`, value: bytes(i) })),
          ...Array.from({ length: 30 }, (_, i) => message('bob', 1_700_000_000_000 + i)),
        ])
        await store.commit([del('messages', `bob/${1_700_000_000_000 + 29}`)])
        const before = await snapshot(store)
        store = await reopened(store)
        expect(await snapshot(store)).toEqual(before)
        expectPlainBytes((await store.get('sessions', 'bob'))?.value, large)
        expect(orders(await store.listMessages(conversation('bob'), { limit: 2 }))).toEqual([
          1_700_000_000_027, 1_700_000_000_028,
        ])
        // And it goes on working after the reopen.
        await store.commit([message('bob', 1_700_000_000_100)])
        expect(orders(await store.listMessages(conversation('bob'), { limit: 1 }))).toEqual([
          1_700_000_000_100,
        ])
      })

      it('keeps nothing of a refused batch', async () => {
        let store = await fresh()
        await store.commit([put('sessions', { key: 'bob', value: bytes(1) })])
        await expect(
          store.commit([
            put('sessions', { key: 'bob', value: bytes(2) }),
            message('bob', 1),
            { op: 'put', table: 'contacts', record: undefined } as unknown as StoreOperation,
          ]),
        ).rejects.toThrow()
        store = await reopened(store)
        expect((await store.get('sessions', 'bob'))?.value).toEqual(bytes(1))
        expect(await store.list('messages')).toEqual([])
      })

      it('can be closed twice', async () => {
        const store = await fresh()
        await store.close()
        await store.close()
      })
    })

    describe('against the MemoryStore reference', () => {
      it('answers like MemoryStore for any sequence of batches', async () => {
        const tables: StoreTable[] = ['contacts', 'messages', 'outbox', 'sessions']
        const key = fc.constantFrom('a', 'b', 'c', 'a/b', 'zoë', '')
        const peer = fc.constantFrom('ann', 'bo')
        const value = fc.uint8Array({ maxLength: 8 })
        // Records with both index fields or neither, as the core writes them; few distinct orders,
        // so ties are common.
        const record: fc.Arbitrary<StoreRecord> = fc.oneof(
          fc.record({ key, peer, order: fc.integer({ min: 0, max: 6 }), value }),
          fc.record({ key, value }),
        )
        const operation: fc.Arbitrary<StoreOperation> = fc.oneof(
          fc.record({ op: fc.constant('put' as const), table: fc.constantFrom(...tables), record }),
          fc.record({ op: fc.constant('delete' as const), table: fc.constantFrom(...tables), key }),
        )
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.array(operation, { minLength: 1, maxLength: 6 }), { maxLength: 8 }),
            fc.integer({ min: 1, max: 6 }),
            fc.option(fc.integer({ min: 0, max: 7 }), { nil: undefined }),
            async (batches, limit, beforeOrder) => {
              const store = await fresh()
              const reference = new MemoryStore()
              for (const batch of batches) {
                await store.commit(batch)
                await reference.commit(batch)
              }
              expect(await snapshot(store)).toEqual(await snapshot(reference))
              const keys = ['a', 'b', 'c', 'a/b', 'zoë', '', 'missing']
              for (const table of tables) {
                expect((await store.getMany(table, keys)).map((found) => found && recordText(found))).toEqual(
                  (await reference.getMany(table, keys)).map((found) => found && recordText(found)),
                )
              }
              for (const who of ['ann', 'bo']) {
                const options = { limit, ...(beforeOrder !== undefined ? { beforeOrder } : {}) }
                expect((await store.listMessages(conversation(who), options)).map(recordText)).toEqual(
                  (await reference.listMessages(conversation(who), options)).map(recordText),
                )
              }
              opened.splice(opened.indexOf(store), 1)
              await store.close()
              await subject.dispose?.(store)
            },
          ),
          { numRuns: subject.propertyRuns ?? 40 },
        )
      })
    })
  })
}
