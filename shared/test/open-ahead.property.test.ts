/**
 * Opening ahead (shared/open-ahead.ts) changes when the AES-GCM work happens, never what a batch
 * decrypts to: for any batch of one sender's messages, in any order, with replays, losses,
 * tampered copies and ratchet steps, decrypting with an OpenAhead gives every message the same
 * outcome (the same plaintext, or the same error) and leaves the same record as decrypting without
 * one. Real WebCrypto throughout.
 */

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../address.js'
import { toHex, utf8Encode } from '../bytes.js'
import { decodeEnvelope, type Envelope } from '../codec/envelope.js'
import { isProtocolError } from '../errors.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyPair,
  publicPreKey,
} from '../identity.js'
import { OPEN_AHEAD_WINDOW, OpenAhead } from '../open-ahead.js'
import { acceptSession, decryptMessage, encryptMessage, type Session, startSession } from '../session.js'
import { decryptWithRecord, EMPTY_SESSION_RECORD, type SessionRecord } from '../session-record.js'
import { serializeSessionRecord } from '../session-serialization.js'
import { ALICE_TO_BOB } from './helpers.js'

interface Parties {
  readonly bobIdentity: Identity
  readonly signedPreKey: PreKeyPair
  readonly oneTimePreKey: PreKeyPair
  readonly alice: Identity
}

async function parties(): Promise<Parties> {
  const [alice, bobIdentity] = await Promise.all([generateIdentity(), generateIdentity()])
  const signedPreKey = await generateSignedPreKey(bobIdentity, DEFAULT_DEVICE_ID, 1)
  const [oneTimePreKey] = await generateOneTimePreKeys(bobIdentity, DEFAULT_DEVICE_ID, 1, 1)
  return { alice, bobIdentity, signedPreKey, oneTimePreKey: oneTimePreKey! }
}

/**
 * Alice's messages to Bob, in sending order: `runs[i]` messages, then (between runs) a reply from Bob
 * that Alice reads, so her next run starts a new chain. Bob's replies go through his own session,
 * made from her first message, so the batch is what Bob's record (started from that message)
 * receives.
 */
async function conversation(p: Parties, runs: readonly number[]): Promise<{ envelopes: Uint8Array[] }> {
  const bundle = {
    deviceId: DEFAULT_DEVICE_ID,
    identity: p.bobIdentity.public,
    signedPreKey: publicPreKey(p.signedPreKey),
    oneTimePreKey: publicPreKey(p.oneTimePreKey),
  }
  let alice: Session = await startSession(p.alice, bundle, ALICE_TO_BOB)
  let bob: Session | undefined
  const envelopes: Uint8Array[] = []
  let sent = 0
  for (const [run, count] of runs.entries()) {
    if (run > 0 && bob) {
      const reply = await encryptMessage(bob, utf8Encode('reply'))
      bob = reply.session
      alice = (await decryptMessage(alice, reply.envelope)).session
    }
    for (let i = 0; i < count; i++) {
      const message = await encryptMessage(alice, utf8Encode(`message ${sent++}`))
      alice = message.session
      envelopes.push(message.envelope)
      if (!bob) {
        bob = (
          await acceptSession(
            p.bobIdentity,
            message.envelope,
            {
              signedPreKey: p.signedPreKey,
              oneTimePreKey: p.oneTimePreKey,
            },
            ALICE_TO_BOB,
          )
        ).session
      }
    }
  }
  return { envelopes }
}

type Outcome = { plaintext: string } | { error: string }

/** Decrypts a batch as the inbox does, in order, with or without opening ahead. */
async function decryptBatch(
  p: Parties,
  batch: readonly Uint8Array[],
  withAhead: boolean,
): Promise<{ outcomes: Outcome[]; record: string; ahead: OpenAhead | undefined }> {
  const envelopes: (Envelope | undefined)[] = batch.map((bytes) => {
    try {
      return decodeEnvelope(bytes)
    } catch {
      return undefined
    }
  })
  const ahead = withAhead ? new OpenAhead(envelopes) : undefined
  let record: SessionRecord = EMPTY_SESSION_RECORD
  const outcomes: Outcome[] = []
  for (const [position, bytes] of batch.entries()) {
    try {
      const envelope = envelopes[position] ?? decodeEnvelope(bytes)
      ahead?.prepare(position, record.current)
      const decrypted = await decryptWithRecord(
        record,
        envelope,
        (prekeyMessage) =>
          acceptSession(
            p.bobIdentity,
            prekeyMessage,
            {
              signedPreKey: p.signedPreKey,
              oneTimePreKey: p.oneTimePreKey,
            },
            ALICE_TO_BOB,
          ),
        ahead?.opener,
      )
      record = decrypted.record
      outcomes.push({ plaintext: toHex(decrypted.plaintext) })
    } catch (error) {
      if (!isProtocolError(error)) throw error
      outcomes.push({ error: error.code })
    }
  }
  return { outcomes, record: toHex(await serializeSessionRecord(record)), ahead }
}

/** A copy of an envelope with one byte of its ciphertext (the tail: tag or body) flipped. */
function tampered(envelope: Uint8Array, at: number): Uint8Array {
  const copy = envelope.slice()
  const index = copy.length - 1 - (at % 16)
  copy[index] = copy[index]! ^ 0x01
  return copy
}

type Change =
  | { kind: 'drop'; pick: number }
  | { kind: 'replay'; pick: number; to: number }
  | { kind: 'tamper'; pick: number; byte: number }
  | { kind: 'swap'; pick: number }

const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ kind: fc.constant('drop' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('replay' as const), pick: fc.nat(), to: fc.nat() }),
  fc.record({ kind: fc.constant('tamper' as const), pick: fc.nat(), byte: fc.nat() }),
  fc.record({ kind: fc.constant('swap' as const), pick: fc.nat() }),
)

function applyChanges(envelopes: readonly Uint8Array[], changes: readonly Change[]): Uint8Array[] {
  const batch = [...envelopes]
  for (const c of changes) {
    if (batch.length < 2) break
    const at = c.pick % batch.length
    if (c.kind === 'drop' && at > 0) batch.splice(at, 1)
    else if (c.kind === 'replay') batch.splice(c.to % (batch.length + 1), 0, batch[at]!)
    else if (c.kind === 'tamper') batch.splice(at + 1, 0, tampered(batch[at]!, c.byte))
    else if (c.kind === 'swap' && at + 1 < batch.length) {
      ;[batch[at], batch[at + 1]] = [batch[at + 1]!, batch[at]!]
    }
  }
  return batch
}

describe('opening ahead', () => {
  it('opens a run of queued messages ahead, and every message takes the result started for it', async () => {
    const p = await parties()
    const { envelopes } = await conversation(p, [3 * OPEN_AHEAD_WINDOW + 5])
    const plain = await decryptBatch(p, envelopes, false)
    const ahead = await decryptBatch(p, envelopes, true)
    expect(ahead.outcomes).toEqual(plain.outcomes)
    expect(ahead.record).toBe(plain.record)
    expect(plain.outcomes.every((outcome) => 'plaintext' in outcome)).toBe(true)
    // The first message starts the session; every later one was opened ahead and taken.
    expect(ahead.ahead!.counts).toEqual({ started: envelopes.length - 1, taken: envelopes.length - 1 })
  })

  it('gives what decrypting without it gives, for any order, replays, losses, tampering and ratchet steps', async () => {
    const p = await parties()
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 4 }),
        fc.array(change, { maxLength: 8 }),
        async (runs, changes) => {
          const { envelopes } = await conversation(p, runs)
          const batch = applyChanges(envelopes, changes)
          const plain = await decryptBatch(p, batch, false)
          const ahead = await decryptBatch(p, batch, true)
          expect(ahead.outcomes).toEqual(plain.outcomes)
          expect(ahead.record).toBe(plain.record)
          // Whatever was started and not taken was for a message whose decryption never asked.
          expect(ahead.ahead!.counts.taken).toBeLessThanOrEqual(ahead.ahead!.counts.started)
        },
      ),
      { numRuns: 60 },
    )
  })

  it('does not hand a tampered copy the result started for the original', async () => {
    const p = await parties()
    const { envelopes } = await conversation(p, [4])
    // A tampered copy of message 2 at its position: its own array, so the start for the original
    // (a different ciphertext) is not used for it, and it fails as it would without OpenAhead.
    const batch = [envelopes[0]!, envelopes[1]!, tampered(envelopes[2]!, 3), envelopes[2]!, envelopes[3]!]
    const plain = await decryptBatch(p, batch, false)
    const ahead = await decryptBatch(p, batch, true)
    expect(ahead.outcomes).toEqual(plain.outcomes)
    expect(ahead.outcomes.map((outcome) => ('error' in outcome ? outcome.error : 'ok'))).toEqual([
      'ok',
      'ok',
      'E2E_ERR_DECRYPTION_FAILED',
      'ok',
      'ok',
    ])
  })
})
