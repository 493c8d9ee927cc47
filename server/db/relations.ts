/**
 * Relations between users, kept as the least the server needs (docs/protocol.md §13.4):
 *
 *   presence  the owner lets one other user see their presence and identity changes (the owner's
 *             client grants it for its contacts: `presence.share`);
 *   block     the owner refuses the other user: their sends to the owner are dropped, their presence
 *             subscriptions to the owner answered with nothing, their bundle fetches of the owner's
 *             keys claim no one-time prekey.
 *
 * A row names its owner (so an account's rows go with it, and the per-user cap can be counted) but
 * not the other user: its key is `pair_hash` = HMAC-SHA-256(relations key, label ‖ 0x00 ‖ kind ‖
 * uint64be(owner) ‖ uint64be(other)). The relations key lives outside the database (main.ts keeps
 * it in the data directory), so a copy of the database says how many relations each user has,
 * never with whom; the server answers "may V see O?" by recomputing one hash.
 *
 * Every function takes `db` (or a transaction) first and the key second.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import type { Db } from './schema.js'
import { inTransaction, lockUser } from './transaction.js'

/** Bytes of the relations key (HMAC-SHA-256's block size would allow more; 32 is its output). */
export const RELATIONS_KEY_BYTES = 32

/** The HMAC's domain separation label (before a 0x00 byte), so the key is used for nothing else. */
export const RELATION_HASH_LABEL = 'secure-chat relation v1'

/** The label of keys derived from the relations key for other purposes (`deriveKey`). */
export const DERIVED_KEY_LABEL = 'secure-chat derived key v1'

export type RelationKind = 'presence' | 'block'

const KIND_BYTE: Record<RelationKind, number> = { presence: 1, block: 2 }

/** Rows per statement in bulk deletes and lookups (well below either dialect's parameter limit). */
const CHUNK = 500

/**
 * Hashes remembered per key (about 150 bytes each): the relay screens every send for a block, and
 * an HMAC per message was a third of its cost per message; people write to few others.
 */
export const RELATION_HASH_MEMO_ENTRIES = 65_536

/** The server's secret for relation hashes; never logged (toJSON and inspect redact it). */
export class RelationsKey {
  readonly #bytes: Uint8Array
  /** Hashes computed before, by kind, owner and other; emptied when full. */
  readonly #memo = new Map<string, Buffer>()

  constructor(bytes: Uint8Array) {
    if (!(bytes instanceof Uint8Array) || bytes.length !== RELATIONS_KEY_BYTES) {
      throw new RangeError(
        `relations key: expected ${RELATIONS_KEY_BYTES} bytes, got ${bytes instanceof Uint8Array ? bytes.length : typeof bytes}`,
      )
    }
    this.#bytes = Uint8Array.from(bytes)
  }

  static random(): RelationsKey {
    return new RelationsKey(randomBytes(RELATIONS_KEY_BYTES))
  }

  /**
   * The hash that stands for "`owner` has a relation of `kind` with `other`". The same pair gives
   * the same Buffer, remembered: callers pass it on and never modify it.
   */
  hash(kind: RelationKind, ownerId: number, otherId: number): Buffer {
    const memoKey = `${KIND_BYTE[kind]}:${ownerId}:${otherId}`
    const known = this.#memo.get(memoKey)
    if (known !== undefined) return known
    if (this.#memo.size >= RELATION_HASH_MEMO_ENTRIES) this.#memo.clear()
    const hash = this.#compute(kind, ownerId, otherId)
    this.#memo.set(memoKey, hash)
    return hash
  }

  #compute(kind: RelationKind, ownerId: number, otherId: number): Buffer {
    const input = Buffer.alloc(RELATION_HASH_LABEL.length + 2 + 16)
    let offset = input.write(RELATION_HASH_LABEL, 0, 'latin1')
    input[offset++] = 0
    input[offset++] = KIND_BYTE[kind]
    input.writeBigUInt64BE(BigInt(ownerId), offset)
    input.writeBigUInt64BE(BigInt(otherId), offset + 8)
    return createHmac('sha256', this.#bytes).update(input).digest()
  }

  /**
   * A key for another purpose, derived from this one (HMAC-SHA-256 under it of a label no relation
   * hash input can equal: those start with RELATION_HASH_LABEL). Every node of a cluster holds the
   * same relations key, so they derive the same keys: device proofs (auth/device-proof.ts) issued
   * by one node are taken by the others, and by the same node after a restart.
   */
  deriveKey(purpose: string): Uint8Array {
    return createHmac('sha256', this.#bytes).update(`${DERIVED_KEY_LABEL}\0${purpose}`, 'utf8').digest()
  }

  /** The bytes, for relations-key.ts to write to its file (and nothing else). */
  exportForFile(): Uint8Array {
    return Uint8Array.from(this.#bytes)
  }

  toJSON(): string {
    return '[relations key]'
  }

  [inspect.custom](): string {
    return 'RelationsKey [redacted]'
  }
}

const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')

/** Which of these hashes are stored (one query per CHUNK). */
async function storedHashes(db: Db, hashes: readonly Uint8Array[]): Promise<Set<string>> {
  const found = new Set<string>()
  for (let start = 0; start < hashes.length; start += CHUNK) {
    const rows = await db
      .selectFrom('relations')
      .select('pair_hash')
      .where('pair_hash', 'in', hashes.slice(start, start + CHUNK))
      .execute()
    for (const row of rows) found.add(hex(row.pair_hash))
  }
  return found
}

/** How many relations `ownerId` keeps (both kinds), for the per-user cap. */
export async function countRelations(db: Db, ownerId: number): Promise<number> {
  const row = await db
    .selectFrom('relations')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('owner_id', '=', ownerId)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

export interface GrantOutcome {
  /** Viewers granted by this call (not before): a pending subscription of theirs may now be answered. */
  readonly granted: number[]
  /** Viewers left out because the owner is at the cap. */
  readonly ignored: number
}

/**
 * `ownerId` lets each of `viewerIds` see their presence. Grants already stored stay; beyond
 * `maxRelations` rows for the owner, the rest are ignored.
 */
export async function grantPresence(
  db: Db,
  key: RelationsKey,
  ownerId: number,
  viewerIds: readonly number[],
  maxRelations: number,
): Promise<GrantOutcome> {
  const viewers = [...new Set(viewerIds)].filter((id) => id !== ownerId)
  if (viewers.length === 0) return { granted: [], ignored: 0 }
  const hashes = viewers.map((viewer) => key.hash('presence', ownerId, viewer))
  const stored = await storedHashes(db, hashes)
  const fresh = viewers.flatMap((viewer, index) =>
    stored.has(hex(hashes[index]!)) ? [] : [{ viewer, hash: hashes[index]! }],
  )
  if (fresh.length === 0) return { granted: [], ignored: 0 }
  return inTransaction(db, async (trx) => {
    // The owner's row lock: two grants (or a grant and a block) of one owner counting at once in
    // PostgreSQL would each see room and together pass the cap.
    await lockUser(trx, ownerId)
    const room = Math.max(0, maxRelations - (await countRelations(trx, ownerId)))
    const taken = fresh.slice(0, room)
    const granted: number[] = []
    for (let start = 0; start < taken.length; start += CHUNK) {
      const chunk = taken.slice(start, start + CHUNK)
      const inserted = await trx
        .insertInto('relations')
        .values(chunk.map(({ hash }) => ({ pair_hash: hash, owner_id: ownerId, kind: 'presence' as const })))
        .onConflict((conflict) => conflict.column('pair_hash').doNothing())
        .returning('pair_hash')
        .execute()
      const insertedHex = new Set(inserted.map((row) => hex(row.pair_hash)))
      for (const { viewer, hash } of chunk) if (insertedHex.has(hex(hash))) granted.push(viewer)
    }
    return { granted, ignored: fresh.length - taken.length }
  })
}

/** The owners among `ownerIds` whose presence `viewerId` may see: granted, and not blocked. */
export async function presenceVisibleTo(
  db: Db,
  key: RelationsKey,
  ownerIds: readonly number[],
  viewerId: number,
): Promise<Set<number>> {
  const owners = [...new Set(ownerIds)]
  const visible = new Set<number>()
  // Everyone may watch themselves (their other devices' connections).
  const others = owners.filter((owner) => {
    if (owner === viewerId) visible.add(owner)
    return owner !== viewerId
  })
  if (others.length === 0) return visible
  const grants = others.map((owner) => key.hash('presence', owner, viewerId))
  const blocks = others.map((owner) => key.hash('block', owner, viewerId))
  const stored = await storedHashes(db, [...grants, ...blocks])
  others.forEach((owner, index) => {
    if (stored.has(hex(grants[index]!)) && !stored.has(hex(blocks[index]!))) visible.add(owner)
  })
  return visible
}

/** Whether `ownerId` blocked `otherId`. */
export async function isBlocked(
  db: Db,
  key: RelationsKey,
  ownerId: number,
  otherId: number,
): Promise<boolean> {
  return (await storedHashes(db, [key.hash('block', ownerId, otherId)])).size > 0
}

/** For each (recipient, sender) pair: whether the recipient blocked the sender (one lookup per chunk). */
export async function blockedPairs(
  db: Db,
  key: RelationsKey,
  pairs: readonly { readonly ownerId: number; readonly otherId: number }[],
): Promise<boolean[]> {
  // A batch holds many sends of one conversation: each pair is looked up once.
  const hashes = pairs.map(({ ownerId, otherId }) => key.hash('block', ownerId, otherId))
  const stored = await storedHashes(db, [...new Set(hashes)])
  return hashes.map((hash) => stored.has(hex(hash)))
}

/**
 * `ownerId` blocks `otherId`: the block is stored and the presence grant, if any, removed. Returns
 * false (and stores nothing) when the owner is at `maxRelations` and the block is new.
 */
export async function block(
  db: Db,
  key: RelationsKey,
  ownerId: number,
  otherId: number,
  maxRelations: number,
): Promise<boolean> {
  const blockHash = key.hash('block', ownerId, otherId)
  const presenceHash = key.hash('presence', ownerId, otherId)
  return inTransaction(db, async (trx) => {
    // As in grantPresence: counted under the owner's row lock, taken first (before any relations
    // row), so that a grant and a block of one owner always lock in the same order.
    await lockUser(trx, ownerId)
    await trx.deleteFrom('relations').where('pair_hash', '=', presenceHash).execute()
    if ((await storedHashes(trx, [blockHash])).size > 0) return true
    if ((await countRelations(trx, ownerId)) >= maxRelations) return false
    await trx
      .insertInto('relations')
      .values({ pair_hash: blockHash, owner_id: ownerId, kind: 'block' })
      .onConflict((conflict) => conflict.column('pair_hash').doNothing())
      .execute()
    return true
  })
}

/** `ownerId` no longer blocks `otherId` (presence stays withheld until the owner's client shares it). */
export async function unblock(db: Db, key: RelationsKey, ownerId: number, otherId: number): Promise<void> {
  await db
    .deleteFrom('relations')
    .where('pair_hash', '=', key.hash('block', ownerId, otherId))
    .execute()
}

/**
 * Every relation row that concerns `userId`: those they own, and those other users keep with them
 * (found by recomputing the hashes for every owner that has relations). For account deletion; run
 * it in the deletion's transaction, before the user row goes.
 */
export async function deleteRelationsOf(db: Db, key: RelationsKey, userId: number): Promise<void> {
  await db.deleteFrom('relations').where('owner_id', '=', userId).execute()
  const owners = await db.selectFrom('relations').select('owner_id').distinct().execute()
  const hashes = owners.flatMap(({ owner_id }) => [
    key.hash('presence', owner_id, userId),
    key.hash('block', owner_id, userId),
  ])
  for (let start = 0; start < hashes.length; start += CHUNK) {
    await db
      .deleteFrom('relations')
      .where('pair_hash', 'in', hashes.slice(start, start + CHUNK))
      .execute()
  }
}
