/**
 * Prekeys that cannot be drained cheaply (issue 10, item 4): strangers fetch a victim's prekey
 * bundle over and over, against the real server over TLS, on a clock the test moves (server and
 * client share it). The victim's client runs its prekey upkeep after every round of fetches, as
 * the server's `prekeys.low` would make it do; it stays offline so that nothing else runs it.
 *
 * - With the server's default limits, one-time prekeys leave at ONE_TIME_PREKEY_CLAIMS_PER_TARGET
 *   an hour however many fetch, every other bundle has the signed prekey alone, and the victim's
 *   store grows only by what was handed out.
 * - Against a server that hands out a key on every fetch (an older one, or one with the limits
 *   raised), the client's own cap MAX_LOCAL_ONE_TIME_PREKEYS bounds the store; once the keys handed
 *   out reach ONE_TIME_PREKEY_UNUSED_LIFETIME_MS they are deleted and refills resume.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { BUNDLE_REFETCH_WINDOW_MS, ONE_TIME_PREKEY_CLAIMS_PER_TARGET } from '../server/limits.js'
import { signUp, startServer, type TestServer } from '../server/test/harness.js'
import type { ChatClient } from '../shared/client/chat-client.js'
import { MemoryStore } from '../shared/client/store.js'
import type { PreKeyBundleResponse } from '../shared/codec/api.js'
import {
  MAX_LOCAL_ONE_TIME_PREKEYS,
  ONE_TIME_PREKEY_BATCH,
  ONE_TIME_PREKEY_UNUSED_LIFETIME_MS,
} from '../shared/limits.js'
import { registerClient } from './client-helpers.js'

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

let server: TestServer | undefined
let victim: ChatClient | undefined
afterEach(async () => {
  await victim?.close()
  await server?.close()
  victim = undefined
  server = undefined
})

/** The one-time private keys in the victim's store. */
async function localOneTimePreKeys(store: MemoryStore): Promise<number> {
  return (await store.list('prekeys')).filter((record) => record.key.startsWith('one-time:')).length
}

async function fetchBundle(target: string, token: Uint8Array): Promise<PreKeyBundleResponse> {
  const response = await server!.request(`/api/v1/users/${target}/bundle`, { token })
  expect(response.status).toBe(200)
  return response.body as PreKeyBundleResponse
}

describe('a victim whose bundle is fetched without end', () => {
  it('under the default limits: one-time prekeys leave at the per-target rate, the rest of the bundles have none, the store stays small', async () => {
    let clock = 1_800_000_000_000
    server = await startServer({
      now: () => clock,
      limits: {
        oneTimePreKeyClaimsPerTarget: ONE_TIME_PREKEY_CLAIMS_PER_TARGET,
        bundleRefetchWindowMs: BUNDLE_REFETCH_WINDOW_MS,
      },
    })
    const store = new MemoryStore()
    victim = (await registerClient(server, { store, now: () => clock })).client
    // Enough requesters that the re-fetch window alone (six keys an hour each) would let 36 an hour go.
    const attackers = await Promise.all(Array.from({ length: 6 }, () => signUp(server!)))
    const HOURS = 4
    const STEP = 2 * MINUTE
    const withOneTimePreKey: number[] = []
    let fetches = 0
    let largestStore = 0
    for (let hour = 0; hour < HOURS; hour++) {
      let handedOut = 0
      for (let at = 0; at < HOUR; at += STEP) {
        const bundles = await Promise.all(
          attackers.map((attacker) => fetchBundle(victim!.username, attacker.token)),
        )
        for (const bundle of bundles) {
          fetches++
          if (bundle.oneTimePreKey) handedOut++
          // The signed prekey is always there: anyone can still start a session.
          expect(bundle.signedPreKey).toBeDefined()
        }
        await victim.maintainPreKeys()
        largestStore = Math.max(largestStore, await localOneTimePreKeys(store))
        clock += STEP
      }
      withOneTimePreKey.push(handedOut)
    }
    expect(fetches).toBe(HOURS * (HOUR / STEP) * attackers.length)
    expect(withOneTimePreKey).toEqual(Array(HOURS).fill(ONE_TIME_PREKEY_CLAIMS_PER_TARGET.max))
    // What was handed out stays until used or expired, plus at most one refill on top.
    const handedOut = HOURS * ONE_TIME_PREKEY_CLAIMS_PER_TARGET.max
    expect(largestStore).toBeLessThanOrEqual(handedOut + ONE_TIME_PREKEY_BATCH)
    expect(largestStore).toBeLessThan(MAX_LOCAL_ONE_TIME_PREKEYS)
  })

  it('against a server that hands out a key on every fetch: the client stops at its cap, then prunes what expired and refills', async () => {
    let clock = 1_800_000_000_000
    // The harness's relaxed limits: no per-target limit worth the name, no re-fetch window.
    server = await startServer({ now: () => clock, limits: { tokenLifetimeMs: 365 * DAY } })
    const store = new MemoryStore()
    victim = (await registerClient(server, { store, now: () => clock })).client
    const attacker = await signUp(server)
    const ROUNDS = 45
    const PER_ROUND = 25
    let withOneTimePreKey = 0
    let largestStore = 0
    for (let round = 0; round < ROUNDS; round++) {
      const bundles = await Promise.all(
        Array.from({ length: PER_ROUND }, () => fetchBundle(victim!.username, attacker.token)),
      )
      withOneTimePreKey += bundles.filter((bundle) => bundle.oneTimePreKey).length
      await victim.maintainPreKeys()
      largestStore = Math.max(largestStore, await localOneTimePreKeys(store))
      clock += MINUTE
    }
    // 1,125 fetches in 45 minutes: the client made keys up to its cap and no more, so once those were
    // handed out the bundles came without one.
    expect(largestStore).toBe(MAX_LOCAL_ONE_TIME_PREKEYS)
    expect(withOneTimePreKey).toBe(MAX_LOCAL_ONE_TIME_PREKEYS)
    expect((await victim.preKeyStatus()).oneTimePreKeys).toBe(0)
    expect((await fetchBundle(victim.username, attacker.token)).oneTimePreKey).toBeUndefined()

    // Just before the lifetime of the first keys handed out ends, nothing is deleted.
    clock += ONE_TIME_PREKEY_UNUSED_LIFETIME_MS - ROUNDS * MINUTE - MINUTE
    await victim.maintainPreKeys()
    expect(await localOneTimePreKeys(store)).toBe(MAX_LOCAL_ONE_TIME_PREKEYS)
    // After it, every key handed out and unused is gone, and a refill makes a new batch.
    clock += ROUNDS * MINUTE + MINUTE
    await victim.maintainPreKeys()
    expect(await localOneTimePreKeys(store)).toBe(ONE_TIME_PREKEY_BATCH)
    expect((await victim.preKeyStatus()).oneTimePreKeys).toBe(ONE_TIME_PREKEY_BATCH)
    expect((await fetchBundle(victim.username, attacker.token)).oneTimePreKey).toBeDefined()
  })
})
