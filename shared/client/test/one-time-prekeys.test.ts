/**
 * The one-time prekey plan (one-time-prekeys.ts): which private keys are marked handed out, which
 * are deleted (unused past ONE_TIME_PREKEY_UNUSED_LIFETIME_MS, or beyond MAX_LOCAL_ONE_TIME_PREKEYS),
 * and how many new ones a refill makes.
 */
import { describe, expect, it } from 'vitest'
import {
  MAX_LOCAL_ONE_TIME_PREKEYS,
  ONE_TIME_PREKEY_BATCH,
  ONE_TIME_PREKEY_REFILL_THRESHOLD,
  ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
} from '../../limits.js'
import { type OneTimePreKeyEntry, planOneTimePreKeys } from '../one-time-prekeys.js'

const DAY = 24 * 60 * 60 * 1000
const ids = (first: number, count: number) => Array.from({ length: count }, (_, i) => first + i)

describe('planOneTimePreKeys', () => {
  it('keeps a ledger entry per local key: keys without one are dated now, used keys are forgotten', () => {
    const plan = planOneTimePreKeys({
      ledger: [
        { id: 2, generatedAt: 100 },
        { id: 3, generatedAt: 100 },
      ],
      localIds: [3, 4],
      serverIds: [3, 4],
      serverCount: 2,
      now: 5_000,
    })
    expect(plan.ledger).toEqual([
      { id: 3, generatedAt: 100 },
      { id: 4, generatedAt: 5_000 },
    ])
    expect(plan.deleteIds).toEqual([])
  })

  it('marks keys the server no longer lists as handed out once, and deletes them after the lifetime', () => {
    const start = 1_000_000
    const first = planOneTimePreKeys({
      ledger: ids(1, 20).map((id) => ({ id, generatedAt: start })),
      localIds: ids(1, 20),
      serverIds: ids(6, 15),
      serverCount: 15,
      now: start + DAY,
    })
    expect(first.ledger.filter((entry) => entry.handedOutAt !== undefined)).toEqual(
      ids(1, 5).map((id) => ({ id, generatedAt: start, handedOutAt: start + DAY })),
    )
    expect(first.deleteIds).toEqual([])
    // A day before the lifetime ends: the mark keeps its first time, and nothing is deleted.
    const later = planOneTimePreKeys({
      ledger: first.ledger,
      localIds: ids(1, 20),
      serverIds: ids(7, 14),
      serverCount: 14,
      now: start + ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
    })
    expect(later.deleteIds).toEqual([])
    expect(later.ledger.find((entry) => entry.id === 6)?.handedOutAt).toBe(
      start + ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
    )
    // The lifetime after the first mark: those five go; key 6, marked later, stays.
    const expiry = planOneTimePreKeys({
      ledger: later.ledger,
      localIds: ids(1, 20),
      serverIds: ids(7, 14),
      serverCount: 14,
      now: start + DAY + ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
    })
    expect(expiry.deleteIds).toEqual([1, 2, 3, 4, 5])
    expect(expiry.ledger.map((entry) => entry.id)).toEqual(ids(6, 15))
  })

  it('never deletes a key the server still holds, however old', () => {
    const plan = planOneTimePreKeys({
      ledger: [{ id: 7, generatedAt: 0, handedOutAt: 0 }],
      localIds: [7],
      serverIds: [7],
      serverCount: 1,
      now: 10 * ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
    })
    expect(plan.deleteIds).toEqual([])
    expect(plan.ledger).toEqual([{ id: 7, generatedAt: 0 }])
  })

  it('refills a batch only when the server runs low, and never past the cap', () => {
    const plan = (localCount: number, serverCount: number) =>
      planOneTimePreKeys({
        ledger: [],
        localIds: ids(1, localCount),
        serverIds: ids(localCount - serverCount + 1, serverCount),
        serverCount,
        now: 1,
      }).generate
    expect(plan(100, ONE_TIME_PREKEY_REFILL_THRESHOLD)).toBe(0)
    expect(plan(100, ONE_TIME_PREKEY_REFILL_THRESHOLD - 1)).toBe(ONE_TIME_PREKEY_BATCH)
    expect(plan(MAX_LOCAL_ONE_TIME_PREKEYS - 30, 0)).toBe(30)
    expect(plan(MAX_LOCAL_ONE_TIME_PREKEYS, 0)).toBe(0)
  })

  it('brings a store filled before the cap existed down to it, handed-out keys first, oldest first', () => {
    const localIds = ids(1, 6_000)
    const ledger: OneTimePreKeyEntry[] = localIds.map((id) => ({
      id,
      generatedAt: 0,
      ...(id <= 5_900 ? { handedOutAt: id <= 100 ? 10 : 20 } : {}),
    }))
    const plan = planOneTimePreKeys({
      ledger,
      localIds,
      serverIds: ids(5_901, 100),
      serverCount: 100,
      now: 30,
    })
    expect(plan.ledger).toHaveLength(MAX_LOCAL_ONE_TIME_PREKEYS)
    expect(plan.deleteIds).toEqual(ids(1, 5_000))
    expect(plan.ledger.filter((entry) => entry.handedOutAt === undefined)).toHaveLength(100)
    expect(plan.generate).toBe(0)
  })

  it('without the id list (an older server), takes the highest ids as the ones still held', () => {
    const plan = planOneTimePreKeys({
      ledger: [],
      localIds: ids(2, 10),
      serverIds: undefined,
      serverCount: 4,
      now: 50,
    })
    expect(plan.ledger.filter((entry) => entry.handedOutAt === undefined).map((entry) => entry.id)).toEqual([
      8, 9, 10, 11,
    ])
    expect(plan.ledger.filter((entry) => entry.handedOutAt === 50)).toHaveLength(6)
  })
})
