/**
 * The fuzz campaign (test/fuzz/campaign.ts) at a size that fits the test suite: a couple of
 * thousand REST requests and relay frames mutated from valid ones, before and after
 * authentication, most against a server with raised limits and a tenth against the shipped limits,
 * while two honest users of the real client core write to each other from another address.
 * `npm run fuzz` runs the full campaign (100,000 inputs). FUZZ_SEED=<n> repeats a run.
 */
import { describe, expect, it } from 'vitest'
import { formatReport, phaseFailures, runCampaign } from './fuzz/campaign.js'
import { mutate, mutateBytes, mutateStructure } from './fuzz/mutate.js'
import { Prng, seedFor } from './fuzz/prng.js'

const INPUTS = 2_000
const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))

describe('the seeded generator', () => {
  it('gives the same inputs for the same seed and index, whatever ran before', () => {
    const value = { v: 1, type: 'send', id: 'AAAAAAAAAAAAAAAAAAAAAA', to: 'bob', body: 'AAAA', list: [1, 2] }
    const input = (index: number) => mutate(new Prng(seedFor(7, 0, index)), value).bytes.toString('hex')
    const first = [0, 1, 2, 3].map(input)
    expect([3, 2, 1, 0].map(input).reverse()).toEqual(first)
    expect(new Set(first).size).toBe(first.length)
  })

  it('makes every kind of mutation, nearly always different from the valid value', () => {
    const rng = new Prng(1)
    const value = { username: 'alice', password: 'pw', keys: [{ keyId: 1, publicKey: 'AAAA' }] }
    const valid = JSON.stringify(value)
    const operators = new Set<string>()
    let unchanged = 0
    for (let i = 0; i < 2_000; i++) {
      const mutated = i % 2 === 0 ? mutateStructure(rng, value) : mutateBytes(rng, Buffer.from(valid))
      operators.add(mutated.operator)
      // A hostile number may equal the one it replaces, a tweaked character the one it overwrites.
      if (mutated.operator !== 're-encoded' && mutated.bytes.toString('latin1') === valid) unchanged += 1
    }
    expect(operators.size).toBe(18)
    expect(unchanged).toBeLessThan(40)
  })
})

describe('fuzz campaign against the running server', () => {
  it(`${INPUTS} mutated requests and frames: no 5xx, honest users unaffected, data intact (seed ${seed})`, {
    timeout: 240_000,
  }, async () => {
    const report = await runCampaign({
      seed,
      inputs: INPUTS,
      shippedLimitsShare: 0.1,
      honestMessagesPerPhase: 30,
      concurrency: 8,
    })
    const failures = report.phases.flatMap(phaseFailures)
    expect(failures, `seed ${seed} (FUZZ_SEED=${seed} repeats it)\n${formatReport(report)}`).toEqual([])
    expect(report.inputs).toBe(INPUTS)
    const [raised, shipped] = report.phases
    // The campaign reached every route and both sides of the relay, and the limits answered.
    const kinds = Object.keys(raised!.outcomes)
    for (const route of [
      'register',
      'login',
      'account-password',
      'users-bundle',
      'keys-one-time',
      'logout',
      'blocks',
      'account-delete',
    ]) {
      expect(kinds, `seed ${seed}`).toContain(`rest ${route}`)
    }
    expect(kinds.some((kind) => kind.startsWith('ws-authenticated'))).toBe(true)
    expect(kinds, `seed ${seed}`).toContain('ws-authenticated presence.share')
    expect(kinds.some((kind) => kind.startsWith('ws-unauthenticated'))).toBe(true)
    expect(raised!.httpStatuses['400']).toBeGreaterThan(0)
    expect(raised!.httpStatuses['200']).toBeGreaterThan(0)
    for (const phase of [raised!, shipped!]) {
      expect(phase.honest.received, `seed ${seed}`).toBe(phase.honest.sent)
      expect(phase.integrity.integrityCheck).toBe('ok')
    }
  })
})
