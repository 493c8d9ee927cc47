/**
 * Relation hashes and the block screen on their own: the remembered hashes are the HMACs they
 * stand for, and a batch with the same pair many times is answered for every send.
 */
import { createHmac } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import {
  block,
  blockedPairs,
  countRelations,
  DERIVED_KEY_LABEL,
  grantPresence,
  RELATION_HASH_LABEL,
  RELATION_HASH_MEMO_ENTRIES,
  RelationsKey,
} from './relations.js'
import { createAccount } from './users.js'

const pgSkip = await postgresUnavailable()
const keyBytes = Uint8Array.from({ length: 32 }, (_, index) => index)

/** The hash as docs/protocol.md §13.4 defines it, computed here without the class. */
function expected(kind: 1 | 2, owner: number, other: number): Buffer {
  const input = Buffer.alloc(RELATION_HASH_LABEL.length + 18)
  const offset = input.write(RELATION_HASH_LABEL, 0, 'latin1')
  input[offset] = 0
  input[offset + 1] = kind
  input.writeBigUInt64BE(BigInt(owner), offset + 2)
  input.writeBigUInt64BE(BigInt(other), offset + 10)
  return createHmac('sha256', keyBytes).update(input).digest()
}

describe('RelationsKey.hash', () => {
  it('gives the HMAC of kind, owner and other, the same when asked again, past the memo size too', () => {
    const key = new RelationsKey(keyBytes)
    expect(key.hash('presence', 7, 9)).toEqual(expected(1, 7, 9))
    expect(key.hash('block', 7, 9)).toEqual(expected(2, 7, 9))
    expect(key.hash('block', 9, 7)).toEqual(expected(2, 9, 7))
    expect(key.hash('block', 7, 9)).toEqual(expected(2, 7, 9))
    // More pairs than it remembers: it forgets, and still answers every pair right.
    for (let other = 0; other <= RELATION_HASH_MEMO_ENTRIES; other++) key.hash('presence', 1, other)
    expect(key.hash('block', 7, 9)).toEqual(expected(2, 7, 9))
    expect(key.hash('presence', 1, 3)).toEqual(expected(1, 1, 3))
    expect(new RelationsKey(Uint8Array.from(keyBytes).reverse()).hash('block', 7, 9)).not.toEqual(
      expected(2, 7, 9),
    )
  })
})

describe('blockedPairs', () => {
  let database: TestDatabase
  beforeAll(async () => {
    database = await createTestDatabase('sqlite')
  })
  afterAll(async () => {
    await database?.dispose()
  })

  it('answers each send of a batch, repeated pairs included', async () => {
    const bytes = (length: number, fill: number) => new Uint8Array(length).fill(fill)
    const ids: number[] = []
    for (const [index, username] of ['owner', 'blocked', 'friend'].entries()) {
      ids.push(
        await createAccount(database.db, {
          username,
          passwordHash: '$2b$04$placeholderplaceholderplaceholderplaceholderplacehold',
          loginKey: bytes(422, index),
          identity: {
            identityKey: bytes(32, index),
            signingKey: bytes(32, 10 + index),
            identitySignature: bytes(64, index),
          },
          signedPreKey: { keyId: 1, publicKey: bytes(32, 20 + index), signature: bytes(64, index) },
          oneTimePreKeys: [],
          now: 1_000,
        }),
      )
    }
    const [owner, blocked, friend] = ids as [number, number, number]
    const key = RelationsKey.random()
    expect(await block(database.db, key, owner, blocked, 100)).toBe(true)
    const batch = [blocked, friend, blocked, blocked, friend].map((otherId) => ({ ownerId: owner, otherId }))
    expect(await blockedPairs(database.db, key, batch)).toEqual([true, false, true, true, false])
  })
})

describe('RelationsKey.deriveKey', () => {
  it('is HMAC-SHA-256 of the derived-key label and the purpose: one key per purpose, the same on every node', () => {
    const key = new RelationsKey(keyBytes)
    const purpose = 'login device proof'
    const expectedKey = createHmac('sha256', keyBytes).update(`${DERIVED_KEY_LABEL}\0${purpose}`).digest()
    expect(Buffer.from(key.deriveKey(purpose))).toEqual(expectedKey)
    expect(new RelationsKey(keyBytes).deriveKey(purpose)).toEqual(key.deriveKey(purpose))
    expect(key.deriveKey('another purpose')).not.toEqual(key.deriveKey(purpose))
  })
})

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`the relations cap on ${dialect}`, () => {
    let database: TestDatabase
    beforeAll(async () => {
      database = await createTestDatabase(dialect)
    })
    afterAll(async () => {
      await database?.dispose()
    })

    it('holds under concurrent grants and blocks of one owner: never more than the cap', async () => {
      const bytes = (length: number, fill: number) => new Uint8Array(length).fill(fill)
      const ids: number[] = []
      for (let index = 0; index < 21; index++) {
        ids.push(
          await createAccount(database.db, {
            username: `cap${index}`,
            passwordHash: '$2b$04$placeholderplaceholderplaceholderplaceholderplacehold',
            loginKey: bytes(422, index),
            identity: {
              identityKey: bytes(32, 100 + index),
              signingKey: bytes(32, 150 + index),
              identitySignature: bytes(64, index),
            },
            signedPreKey: { keyId: 1, publicKey: bytes(32, 200 + index), signature: bytes(64, index) },
            oneTimePreKeys: [],
            now: 1_000,
          }),
        )
      }
      const [owner, ...others] = ids as [number, ...number[]]
      const key = RelationsKey.random()
      const cap = 5
      // Twenty requests at once, each for a relation of its own, half grants and half blocks: each
      // counts the owner's relations and inserts, so without a lock they all see room.
      const outcomes = await Promise.all(
        others.map((other, index) =>
          index % 2 === 0
            ? grantPresence(database.db, key, owner, [other], cap).then(
                (outcome) => outcome.granted.length === 1,
              )
            : block(database.db, key, owner, other, cap),
        ),
      )
      expect(await countRelations(database.db, owner)).toBe(cap)
      expect(outcomes.filter(Boolean)).toHaveLength(cap)
    })
  })
}
