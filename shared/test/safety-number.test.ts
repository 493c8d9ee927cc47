import { describe, expect, it } from 'vitest'
import { generateIdentity } from '../identity.js'
import { displayDigits, qrPayloadMatches, safetyNumber } from '../safety-number.js'

describe('safety numbers', () => {
  it('are 60 digits in twelve groups, equal on both sides, and the QR payloads match', async () => {
    const [alice, bob] = await Promise.all([generateIdentity(), generateIdentity()])
    const fromAlice = safetyNumber(
      { username: 'alice', identity: alice.public },
      { username: 'bob', identity: bob.public },
    )
    const fromBob = safetyNumber(
      { username: 'bob', identity: bob.public },
      { username: 'alice', identity: alice.public },
    )
    expect(fromAlice.digits).toMatch(/^\d{60}$/)
    expect(fromAlice.groups).toHaveLength(12)
    expect(fromAlice.groups.join('')).toBe(fromAlice.digits)
    expect(fromBob.digits).toBe(fromAlice.digits)
    expect(qrPayloadMatches(fromAlice, fromBob.qrPayload)).toBe(true)
    expect(fromAlice.qrPayload).toHaveLength(65)
  })

  it('change when either identity key, either signing key or a username changes', async () => {
    const [alice, bob, mallory] = await Promise.all([
      generateIdentity(),
      generateIdentity(),
      generateIdentity(),
    ])
    const base = safetyNumber(
      { username: 'alice', identity: alice.public },
      { username: 'bob', identity: bob.public },
    )
    const variants = [
      safetyNumber(
        { username: 'alice', identity: alice.public },
        { username: 'bob', identity: mallory.public },
      ),
      safetyNumber(
        { username: 'alice', identity: mallory.public },
        { username: 'bob', identity: bob.public },
      ),
      safetyNumber(
        { username: 'alice', identity: alice.public },
        { username: 'bob', identity: { ...bob.public, signingKey: mallory.public.signingKey } },
      ),
      safetyNumber(
        { username: 'alice', identity: alice.public },
        { username: 'bobby', identity: bob.public },
      ),
    ]
    for (const variant of variants) {
      expect(variant.digits).not.toBe(base.digits)
      expect(qrPayloadMatches(base, variant.qrPayload)).toBe(false)
    }
  })

  it('turns each 5-byte chunk into a 5-digit group (big-endian, mod 100000)', () => {
    const fingerprint = new Uint8Array(32)
    fingerprint.set([0, 0, 0, 0x30, 0x39]) // 12345
    fingerprint.set([0xff, 0xff, 0xff, 0xff, 0xff], 5) // 2^40 - 1 = 1099511627775 → 27775
    expect(displayDigits(fingerprint)).toBe(`1234527775${'00000'.repeat(4)}`)
  })
})
