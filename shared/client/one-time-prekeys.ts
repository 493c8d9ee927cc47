/**
 * Which one-time private keys the client keeps (issue 10, item 4). Each one-time prekey has an entry
 * in a ledger kept sealed beside the keys (prekeys table, key `one-time-ledger`): when it was made,
 * and when this client first saw that the server no longer holds it (handed out to some peer).
 * A handed-out key that no prekey message has used is deleted ONE_TIME_PREKEY_UNUSED_LIFETIME_MS
 * after that, and the client never keeps more than MAX_LOCAL_ONE_TIME_PREKEYS, so a drain of the
 * account's keys (bundle fetches by strangers) cannot grow the local store without bound.
 *
 * The server says which ids it still holds (GET /keys/one-time). An older server has no such route:
 * then the ids are inferred from the count it reports, since servers hand out the lowest id first
 * (docs/protocol.md §3.3), so the `count` highest local ids are the ones still there.
 *
 * Pure: the caller reads the store and the server, and commits what the plan says in one batch.
 * What it does not know: the store, the server, key generation.
 */
import { Type } from '../codec/schema.js'
import {
  MAX_LISTED_ONE_TIME_PREKEY_IDS,
  MAX_LOCAL_ONE_TIME_PREKEYS,
  ONE_TIME_PREKEY_BATCH,
  ONE_TIME_PREKEY_REFILL_THRESHOLD,
  ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
} from '../limits.js'

/** Key of the ledger in the prekeys table (sealed with context "prekey:one-time-ledger"). */
export const ONE_TIME_PREKEY_LEDGER_KEY = 'one-time-ledger'

export interface OneTimePreKeyEntry {
  readonly id: number
  /** When the key was made, or, for keys made before the ledger existed, when it was first seen. */
  readonly generatedAt: number
  /** When this client first saw the server no longer holding it; absent while the server holds it. */
  readonly handedOutAt?: number
}

const Time = Type.Integer({ minimum: 0 })

/** Checked on every read. Handed-out keys are capped, held ones bounded by what servers list. */
export const OneTimePreKeyLedger = Type.Object({
  v: Type.Literal(1),
  keys: Type.Array(
    Type.Object({
      id: Type.Integer({ minimum: 0, maximum: 0xffff_ffff }),
      generatedAt: Time,
      handedOutAt: Type.Optional(Time),
    }),
    { maxItems: MAX_LOCAL_ONE_TIME_PREKEYS + MAX_LISTED_ONE_TIME_PREKEY_IDS },
  ),
})
export interface OneTimePreKeyLedger {
  readonly v: 1
  readonly keys: readonly OneTimePreKeyEntry[]
}

export interface OneTimePreKeyFacts {
  /** The ledger as stored (empty when none is stored yet). */
  readonly ledger: readonly OneTimePreKeyEntry[]
  /** Ids of the one-time private keys in the store now. */
  readonly localIds: readonly number[]
  /** Ids the server still holds (GET /keys/one-time), or undefined from a server without the route. */
  readonly serverIds: readonly number[] | undefined
  /** How many one-time prekeys the server holds (GET /keys/status). */
  readonly serverCount: number
  readonly now: number
}

export interface OneTimePreKeyPlan {
  /** The ledger to store: one entry per key kept (new keys are added by the caller as it makes them). */
  readonly ledger: OneTimePreKeyEntry[]
  /** Private keys to delete: handed out and unused past their lifetime, or beyond the cap. */
  readonly deleteIds: number[]
  /** How many new keys to make and upload (0 when the server holds enough or the cap is reached). */
  readonly generate: number
}

export function planOneTimePreKeys(facts: OneTimePreKeyFacts): OneTimePreKeyPlan {
  const { now } = facts
  const local = new Set(facts.localIds)
  const known = new Map<number, OneTimePreKeyEntry>()
  // Entries whose key is gone were used by a prekey message (or deleted earlier): forgotten.
  for (const entry of facts.ledger) if (local.has(entry.id)) known.set(entry.id, entry)
  for (const id of local) if (!known.has(id)) known.set(id, { id, generatedAt: now })

  const held =
    facts.serverIds !== undefined
      ? new Set(facts.serverIds)
      : new Set([...local].sort((a, b) => b - a).slice(0, facts.serverCount))
  const entries = [...known.values()].map((entry): OneTimePreKeyEntry => {
    if (held.has(entry.id)) return { id: entry.id, generatedAt: entry.generatedAt }
    return entry.handedOutAt === undefined ? { ...entry, handedOutAt: now } : entry
  })

  const expired = (entry: OneTimePreKeyEntry) =>
    entry.handedOutAt !== undefined && now - entry.handedOutAt >= ONE_TIME_PREKEY_UNUSED_LIFETIME_MS
  const deleteIds = entries.filter(expired).map((entry) => entry.id)
  let kept = entries.filter((entry) => !expired(entry))
  if (kept.length > MAX_LOCAL_ONE_TIME_PREKEYS) {
    // Over the cap (a store filled before it existed): handed-out keys go, longest handed out first;
    // among equal times the lowest id, which the server handed out first. Held keys always stay.
    const excess = kept
      .filter((entry) => entry.handedOutAt !== undefined)
      .sort((a, b) => a.handedOutAt! - b.handedOutAt! || a.id - b.id)
      .slice(0, kept.length - MAX_LOCAL_ONE_TIME_PREKEYS)
    const gone = new Set(excess.map((entry) => entry.id))
    deleteIds.push(...gone)
    kept = kept.filter((entry) => !gone.has(entry.id))
  }

  const generate =
    facts.serverCount < ONE_TIME_PREKEY_REFILL_THRESHOLD
      ? Math.max(0, Math.min(ONE_TIME_PREKEY_BATCH, MAX_LOCAL_ONE_TIME_PREKEYS - kept.length))
      : 0
  return { ledger: kept.sort((a, b) => a.id - b.id), deleteIds: deleteIds.sort((a, b) => a - b), generate }
}
