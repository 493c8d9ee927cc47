/**
 * Property tests of the whole session (X3DH + Double Ratchet + envelope), driven by fast-check:
 * any interleaving of sends, any delivery order, drops, replays, reloads from serialized state,
 * and tampering. Real WebCrypto throughout; nothing is mocked.
 */

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../address.js'
import { toHex, utf8Decode, utf8Encode } from '../bytes.js'
import { decodeEnvelope } from '../codec/envelope.js'
import { isProtocolError, ProtocolError } from '../errors.js'
import { generateIdentity, generateOneTimePreKeys, generateSignedPreKey, publicPreKey } from '../identity.js'
import { MAX_FORWARD_JUMP, MAX_SKIPPED_MESSAGE_KEYS } from '../limits.js'
import { acceptSession, decryptMessage, encryptMessage, type Session, startSession } from '../session.js'
import { deserializeSession, serializeSession } from '../session-serialization.js'
import { ALICE_TO_BOB, establishedParties } from './helpers.js'

type Party = 'alice' | 'bob'
const other = (p: Party): Party => (p === 'alice' ? 'bob' : 'alice')

type Op =
  | { kind: 'send'; from: Party; text: string }
  | { kind: 'deliver'; pick: number }
  | { kind: 'drop'; pick: number }
  | { kind: 'replay'; pick: number }
  | { kind: 'reload'; who: Party }

const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      from: fc.constantFrom<Party>('alice', 'bob'),
      text: fc.string({ maxLength: 200 }),
    }),
  },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('deliver' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('replay' as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('reload' as const),
      who: fc.constantFrom<Party>('alice', 'bob'),
    }),
  },
)

interface InFlight {
  to: Party
  envelope: Uint8Array
  text: string
}

async function snapshot(session: Session): Promise<string> {
  return toHex(await serializeSession(session))
}

/** Decrypting must either succeed or reject without touching the session object it was given. */
async function expectRejectedUnchanged(
  session: Session,
  envelope: Uint8Array,
  codes: string[],
): Promise<void> {
  const before = await snapshot(session)
  const error = await decryptMessage(session, envelope).then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error, 'expected a rejection').toBeInstanceOf(ProtocolError)
  expect(codes).toContain((error as ProtocolError).code)
  expect(await snapshot(session)).toBe(before)
}

describe('two parties in any interleaving', () => {
  it('every delivered message decrypts exactly once, replays are rejected, reloads continue', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArbitrary, { minLength: 20, maxLength: 80, size: 'max' }),
        fc.array(fc.nat(), { maxLength: 80, size: 'max' }),
        async (ops, finalOrder) => {
          const alice = await generateIdentity({ extractable: true })
          const bob = await generateIdentity({ extractable: true })
          const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 7, { extractable: true })
          const [oneTimePreKey] = await generateOneTimePreKeys(bob, DEFAULT_DEVICE_ID, 42, 1, {
            extractable: true,
          })
          const sessions: Record<Party, Session | null> = {
            alice: await startSession(
              alice,
              {
                deviceId: DEFAULT_DEVICE_ID,
                identity: bob.public,
                signedPreKey: publicPreKey(signedPreKey),
                oneTimePreKey: publicPreKey(oneTimePreKey!),
              },
              ALICE_TO_BOB,
            ),
            bob: null,
          }
          const inFlight: InFlight[] = []
          const delivered: InFlight[] = []

          const deliver = async (message: InFlight) => {
            const session = sessions[message.to]
            if (session === null) {
              const accepted = await acceptSession(
                bob,
                message.envelope,
                { signedPreKey, oneTimePreKey },
                ALICE_TO_BOB,
              )
              sessions.bob = accepted.session
              expect(utf8Decode(accepted.plaintext)).toBe(message.text)
            } else {
              const result = await decryptMessage(session, message.envelope)
              sessions[message.to] = result.session
              expect(utf8Decode(result.plaintext)).toBe(message.text)
            }
            delivered.push(message)
          }

          for (const op of ops) {
            if (op.kind === 'send') {
              const session = sessions[op.from]
              if (session === null) continue // Bob cannot write before Alice's first message arrives.
              const sent = await encryptMessage(session, utf8Encode(op.text))
              sessions[op.from] = sent.session
              inFlight.push({ to: other(op.from), envelope: sent.envelope, text: op.text })
            } else if (op.kind === 'deliver' && inFlight.length > 0) {
              const [message] = inFlight.splice(op.pick % inFlight.length, 1)
              await deliver(message!)
            } else if (op.kind === 'drop' && inFlight.length > 0) {
              inFlight.splice(op.pick % inFlight.length, 1)
            } else if (op.kind === 'replay' && delivered.length > 0) {
              const message = delivered[op.pick % delivered.length]!
              await expectRejectedUnchanged(sessions[message.to]!, message.envelope, [
                'E2E_ERR_DUPLICATE_MESSAGE',
                'E2E_ERR_DECRYPTION_FAILED',
              ])
            } else if (op.kind === 'reload') {
              const session = sessions[op.who]
              if (session) sessions[op.who] = await deserializeSession(await serializeSession(session))
            }
          }
          // Whatever is still in flight arrives now, in an arbitrary order, and decrypts once.
          for (const pick of finalOrder) {
            if (inFlight.length === 0) break
            const [message] = inFlight.splice(pick % inFlight.length, 1)
            await deliver(message!)
          }
          while (inFlight.length > 0) await deliver(inFlight.shift()!)
        },
      ),
      { numRuns: 60 },
    )
  })
})

describe('tampering', () => {
  it('any single bit flipped in an envelope is rejected and the genuine message still decrypts', async () => {
    const parties = await establishedParties()
    let alice = parties.aliceSession
    const envelopes: Uint8Array[] = []
    for (let i = 0; i < 3; i++) {
      const sent = await encryptMessage(alice, utf8Encode(`message ${i}`))
      alice = sent.session
      envelopes.push(sent.envelope)
    }
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 }),
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        async (which, position, bit) => {
          const genuine = envelopes[which]!
          const tampered = genuine.slice()
          const index = position % tampered.length
          tampered[index]! ^= 1 << bit
          const before = await snapshot(parties.bobSession)
          const error = await decryptMessage(parties.bobSession, tampered).then(
            () => undefined,
            (e: unknown) => e,
          )
          expect(isProtocolError(error), `byte ${index} bit ${bit}`).toBe(true)
          expect(await snapshot(parties.bobSession)).toBe(before)
          const genuineResult = await decryptMessage(parties.bobSession, genuine)
          expect(utf8Decode(genuineResult.plaintext)).toBe(`message ${which}`)
        },
      ),
      { numRuns: 150 },
    )
  })

  it('a bit flipped in the prekey message before the session exists is rejected', async () => {
    const alice = await generateIdentity({ extractable: true })
    const bob = await generateIdentity({ extractable: true })
    const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 1, { extractable: true })
    const [oneTimePreKey] = await generateOneTimePreKeys(bob, DEFAULT_DEVICE_ID, 5, 1, { extractable: true })
    const session = await startSession(
      alice,
      {
        deviceId: DEFAULT_DEVICE_ID,
        identity: bob.public,
        signedPreKey: publicPreKey(signedPreKey),
        oneTimePreKey: publicPreKey(oneTimePreKey!),
      },
      ALICE_TO_BOB,
    )
    const { envelope } = await encryptMessage(session, utf8Encode('first'))
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.integer({ min: 0, max: 7 }), async (position, bit) => {
        const tampered = envelope.slice()
        tampered[position % tampered.length]! ^= 1 << bit
        const error = await acceptSession(bob, tampered, { signedPreKey, oneTimePreKey }, ALICE_TO_BOB).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(isProtocolError(error)).toBe(true)
      }),
      { numRuns: 120 },
    )
    const accepted = await acceptSession(bob, envelope, { signedPreKey, oneTimePreKey }, ALICE_TO_BOB)
    expect(utf8Decode(accepted.plaintext)).toBe('first')
  })

  it('changed associated data is rejected', async () => {
    const parties = await establishedParties()
    const sent = await encryptMessage(parties.aliceSession, utf8Encode('bound to both identities'))
    const ad = parties.bobSession.associatedData.slice()
    ad[5]! ^= 0x10
    const error = await decryptMessage({ ...parties.bobSession, associatedData: ad }, sent.envelope).catch(
      (e: unknown) => e,
    )
    expect(isProtocolError(error, 'E2E_ERR_DECRYPTION_FAILED')).toBe(true)
    expect(utf8Decode((await decryptMessage(parties.bobSession, sent.envelope)).plaintext)).toBe(
      'bound to both identities',
    )
  })
})

describe('skipped message keys and their limits', () => {
  it('a jump beyond MAX_FORWARD_JUMP is rejected without damage; the limit itself is accepted', async () => {
    const parties = await establishedParties()
    let alice = parties.aliceSession
    const envelopes: Uint8Array[] = []
    for (let i = 0; i < MAX_FORWARD_JUMP + 2; i++) {
      const sent = await encryptMessage(alice, utf8Encode(`n${i}`))
      alice = sent.session
      envelopes.push(sent.envelope)
    }
    // Bob has received index 0; envelopes[i] carries index i + 1.
    const last = envelopes[MAX_FORWARD_JUMP + 1]!
    expect(decodeEnvelope(last).header.index - parties.bobSession.ratchet.receivingIndex).toBe(
      MAX_FORWARD_JUMP + 1,
    )
    await expectRejectedUnchanged(parties.bobSession, last, ['E2E_ERR_TOO_MANY_SKIPPED'])

    let bob = (await decryptMessage(parties.bobSession, envelopes[MAX_FORWARD_JUMP]!)).session
    expect(bob.ratchet.skippedKeys.size).toBe(MAX_FORWARD_JUMP)
    // The skipped ones still open, each exactly once.
    const early = await decryptMessage(bob, envelopes[0]!)
    expect(utf8Decode(early.plaintext)).toBe('n0')
    bob = early.session
    await expectRejectedUnchanged(bob, envelopes[0]!, ['E2E_ERR_DUPLICATE_MESSAGE'])
    const next = await decryptMessage(bob, last)
    expect(utf8Decode(next.plaintext)).toBe(`n${MAX_FORWARD_JUMP + 1}`)
  })

  it('keeps at most MAX_SKIPPED_MESSAGE_KEYS, dropping the oldest', async () => {
    const parties = await establishedParties()
    let alice = parties.aliceSession
    let bob = parties.bobSession
    const firstGap: Uint8Array[] = []
    // Two chains, each with a gap, so the second gap pushes the first one's oldest keys out.
    for (let round = 0; round < 2; round++) {
      const gap: Uint8Array[] = []
      for (let i = 0; i < MAX_SKIPPED_MESSAGE_KEYS * 0.75; i++) {
        const sent = await encryptMessage(alice, utf8Encode(`r${round}-${i}`))
        alice = sent.session
        gap.push(sent.envelope)
      }
      if (round === 0) firstGap.push(...gap)
      const final = await encryptMessage(alice, utf8Encode('end of gap'))
      alice = final.session
      bob = (await decryptMessage(bob, final.envelope)).session
      const reply = await encryptMessage(bob, utf8Encode('ack'))
      bob = reply.session
      alice = (await decryptMessage(alice, reply.envelope)).session
    }
    expect(bob.ratchet.skippedKeys.size).toBe(MAX_SKIPPED_MESSAGE_KEYS)
    await expectRejectedUnchanged(bob, firstGap[0]!, [
      'E2E_ERR_DUPLICATE_MESSAGE',
      'E2E_ERR_DECRYPTION_FAILED',
    ])
    const newest = firstGap[firstGap.length - 1]!
    expect(utf8Decode((await decryptMessage(bob, newest)).plaintext)).toBe(`r0-${firstGap.length - 1}`)
  })
})

describe('the forward-jump limit counts both chains', () => {
  it('a new chain whose previous-chain tail plus index exceed MAX_FORWARD_JUMP is refused', async () => {
    const parties = await establishedParties()
    let alice = parties.aliceSession
    let bob = parties.bobSession
    // Alice sends over half the limit in her current chain, none of which reaches Bob...
    const half = MAX_FORWARD_JUMP / 2
    for (let i = 0; i < half + 1; i++) alice = (await encryptMessage(alice, utf8Encode('lost'))).session
    // ...Bob's reply makes her ratchet, and she sends over half the limit again in the new chain.
    const reply = await encryptMessage(bob, utf8Encode('reply'))
    bob = reply.session
    alice = (await decryptMessage(alice, reply.envelope)).session
    let envelope: Uint8Array = new Uint8Array()
    for (let i = 0; i < half + 1; i++) {
      const sent = await encryptMessage(alice, utf8Encode(`new ${i}`))
      alice = sent.session
      envelope = sent.envelope
    }
    // Each chain alone is within the limit; together they are not.
    await expectRejectedUnchanged(bob, envelope, ['E2E_ERR_TOO_MANY_SKIPPED'])
  })
})

describe('session state', () => {
  it('every message uses a fresh key: equal plaintexts give unrelated ciphertexts', async () => {
    const parties = await establishedParties()
    let alice = parties.aliceSession
    const seen = new Set<string>()
    for (let i = 0; i < 20; i++) {
      const sent = await encryptMessage(alice, utf8Encode('same words'))
      alice = sent.session
      const ciphertext = toHex(decodeEnvelope(sent.envelope).ciphertext)
      expect(seen.has(ciphertext)).toBe(false)
      seen.add(ciphertext)
    }
  })

  it('a serialized session refuses unknown versions and trailing bytes', async () => {
    const parties = await establishedParties()
    const bytes = await serializeSession(parties.bobSession)
    const wrongVersion = bytes.slice()
    wrongVersion[0] = 99
    await expect(deserializeSession(wrongVersion)).rejects.toMatchObject({
      code: 'E2E_ERR_UNSUPPORTED_VERSION',
    })
    const trailing = new Uint8Array(bytes.length + 1)
    trailing.set(bytes)
    await expect(deserializeSession(trailing)).rejects.toMatchObject({ code: 'E2E_ERR_MALFORMED_MESSAGE' })
    await expect(deserializeSession(bytes.slice(0, bytes.length - 1))).rejects.toMatchObject({
      code: 'E2E_ERR_MALFORMED_MESSAGE',
    })
  })
})
