/**
 * Property tests of sender keys (shared/group/), driven by fast-check: any delivery order, several
 * members interleaved, replays, reloads from serialized records, any single-byte tampering, the
 * forward-jump limit and the bounded skipped-key cache. Every rejection is checked to leave the
 * record exactly as it was (its serialized bytes). Real WebCrypto throughout; nothing is mocked.
 */

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { concatBytes, toHex, utf8Decode, utf8Encode } from '../bytes.js'
import { ed25519Sign } from '../crypto/primitives.js'
import { ProtocolError } from '../errors.js'
import {
  createSenderKey,
  groupDecrypt,
  groupEncrypt,
  processDistribution,
  type SenderKeyRecord,
  senderKeyDistribution,
} from '../group/sender-key.js'
import {
  decodeGroupMessage,
  decodeSenderKeyDistribution,
  encodeSenderKeyDistribution,
} from '../group/sender-key-codec.js'
import { deserializeSenderKeyRecord, serializeSenderKeyRecord } from '../group/sender-key-serialization.js'
import { GROUP_MESSAGE_SIGNATURE_LABEL } from '../labels.js'
import {
  MAX_GROUP_MESSAGE_BYTES,
  MAX_SENDER_KEY_FORWARD_JUMP,
  MAX_SENDER_KEY_RECORD_BYTES,
  MAX_SENDER_KEY_SKIPPED_KEYS,
  MAX_SENDER_KEY_STATES,
} from '../limits.js'
import { chainStep } from '../ratchet/kdf.js'
import { deterministicBytes } from './helpers.js'

const DISTRIBUTION_ID = deterministicBytes('property/distribution-id', 16)

async function snapshot(record: SenderKeyRecord): Promise<string> {
  return toHex(await serializeSenderKeyRecord(record))
}

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  )
}

/** Decrypting must reject with one of `codes` and leave the record's bytes as they were. */
async function expectRejectedUnchanged(record: SenderKeyRecord, message: unknown, codes: string[]) {
  const before = await snapshot(record)
  const error = await errorOf(groupDecrypt(record, message))
  expect(error, 'expected a rejection').toBeInstanceOf(ProtocolError)
  expect(codes).toContain((error as ProtocolError).code)
  expect(await snapshot(record)).toBe(before)
}

/** A member's own sender key and the receiver's record made from its distribution message. */
async function member(): Promise<{ own: SenderKeyRecord; receiver: SenderKeyRecord }> {
  const own = await createSenderKey(DISTRIBUTION_ID, { extractable: true })
  const wire = encodeSenderKeyDistribution(senderKeyDistribution(own))
  return { own, receiver: processDistribution(null, decodeSenderKeyDistribution(wire)) }
}

async function sendAll(own: SenderKeyRecord, texts: string[]) {
  const messages: Uint8Array[] = []
  let record = own
  for (const text of texts) {
    const sent = await groupEncrypt(record, utf8Encode(text))
    record = sent.record
    messages.push(sent.message)
  }
  return { own: record, messages }
}

/** Our own record moved `steps` iterations on without sending (as if it had sent to others). */
function advancedOwn(own: SenderKeyRecord, steps: number): SenderKeyRecord {
  const state = own.states[0]!
  let chainKey = state.chainKey
  for (let i = 0; i < steps; i++) chainKey = chainStep(chainKey).nextChainKey
  return { ...own, states: [{ ...state, iteration: state.iteration + steps, chainKey }] }
}

describe('delivery order', () => {
  it('any order of N messages decrypts each exactly once; replays are rejected; reloads continue', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .integer({ min: 1, max: 24 })
          .chain((count) =>
            fc.tuple(
              fc.constant(count),
              fc.shuffledSubarray([...Array(count).keys()], { minLength: count, maxLength: count }),
              fc.array(fc.nat(), { maxLength: 8 }),
              fc.array(fc.nat(), { maxLength: 4 }),
            ),
          ),
        async ([count, order, replays, reloads]) => {
          const { own, receiver } = await member()
          const texts = Array.from({ length: count }, (_, i) => `message ${i}`)
          const { messages } = await sendAll(own, texts)
          let record = receiver
          const delivered: number[] = []
          for (const [step, index] of order.entries()) {
            const opened = await groupDecrypt(record, messages[index])
            expect(utf8Decode(opened.plaintext)).toBe(texts[index])
            record = opened.record
            delivered.push(index)
            if (reloads.includes(step))
              record = await deserializeSenderKeyRecord(await serializeSenderKeyRecord(record))
            const replay = replays[step]
            if (replay !== undefined) {
              await expectRejectedUnchanged(record, messages[delivered[replay % delivered.length]!], [
                'E2E_ERR_DUPLICATE_MESSAGE',
              ])
            }
          }
          // Every key has been used: none is left waiting, and every message is now a replay.
          expect(record.states[0]!.skippedKeys.size).toBe(0)
          for (const message of messages)
            await expectRejectedUnchanged(record, message, ['E2E_ERR_DUPLICATE_MESSAGE'])
        },
      ),
      { numRuns: 40 },
    )
  })

  it('several members interleaved: each message opens with its sender’s record and no other', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ from: fc.integer({ min: 0, max: 2 }), deliver: fc.nat() }), {
          minLength: 5,
          maxLength: 40,
        }),
        async (ops) => {
          const members = await Promise.all([member(), member(), member()])
          const own = members.map((m) => m.own)
          // The receiver keeps one record per sender device.
          const records = members.map((m) => m.receiver)
          const inFlight: { from: number; message: Uint8Array; text: string }[] = []
          let sent = 0
          const deliver = async (pick: number) => {
            const [item] = inFlight.splice(pick % inFlight.length, 1)
            const { from, message, text } = item!
            const wrong = (from + 1) % 3
            // Another sender's record: its chain id is not there (or, by a 2^-32 chance, the signature fails).
            await expectRejectedUnchanged(records[wrong]!, message, [
              'E2E_ERR_NO_SENDER_KEY',
              'E2E_ERR_BAD_SIGNATURE',
            ])
            const opened = await groupDecrypt(records[from]!, message)
            expect(utf8Decode(opened.plaintext)).toBe(text)
            records[from] = opened.record
          }
          for (const op of ops) {
            const text = `from ${op.from}: ${sent++}`
            const result = await groupEncrypt(own[op.from]!, utf8Encode(text))
            own[op.from] = result.record
            inFlight.push({ from: op.from, message: result.message, text })
            if (op.deliver % 2 === 0) await deliver(op.deliver)
          }
          while (inFlight.length > 0) await deliver(0)
        },
      ),
      { numRuns: 25 },
    )
  })
})

describe('pure functions', () => {
  it('neither encrypting nor a successful decryption changes the record it was given', async () => {
    const { own, receiver } = await member()
    const [ownBefore, receiverBefore] = [await snapshot(own), await snapshot(receiver)]
    const first = await groupEncrypt(own, utf8Encode('one'))
    const second = await groupEncrypt(first.record, utf8Encode('two'))
    expect(await snapshot(own)).toBe(ownBefore)
    const opened = await groupDecrypt(receiver, second.message)
    expect(await snapshot(receiver)).toBe(receiverBefore)
    // The old record is the state before: it opens the same message again, the new one refuses it.
    expect(utf8Decode((await groupDecrypt(receiver, second.message)).plaintext)).toBe('two')
    await expectRejectedUnchanged(opened.record, second.message, ['E2E_ERR_DUPLICATE_MESSAGE'])
    expect(utf8Decode((await groupDecrypt(opened.record, first.message)).plaintext)).toBe('one')
  })
})

describe('tampering', () => {
  it('any single byte changed in a group message is rejected and leaves the record unchanged', async () => {
    const { own, receiver } = await member()
    const { messages } = await sendAll(own, ['first', 'second', 'third'])
    // The receiver has read the first, so the others test both a skipped and a current key.
    const record = (await groupDecrypt(receiver, messages[0])).record
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (which, position, xor) => {
          const genuine = messages[which]!
          const tampered = genuine.slice()
          tampered[position % tampered.length]! ^= xor
          await expectRejectedUnchanged(record, tampered, [
            'E2E_ERR_BAD_SIGNATURE',
            'E2E_ERR_UNSUPPORTED_VERSION',
            'E2E_ERR_INVALID_INPUT',
            'E2E_ERR_NO_SENDER_KEY',
          ])
        },
      ),
      { numRuns: 300 },
    )
    // The genuine messages still open afterwards.
    let current = record
    for (const [i, message] of messages.slice(1).entries()) {
      const opened = await groupDecrypt(current, message)
      expect(utf8Decode(opened.plaintext)).toBe(['second', 'third'][i])
      current = opened.record
    }
  })

  it('a message re-signed by another key, or truncated, or extended, is rejected', async () => {
    const alice = await member()
    const mallory = await member()
    // Mallory holds Alice's chain (she is a member) and forges a message on it with her own signing key.
    const forgedOwn: SenderKeyRecord = {
      ...alice.own,
      states: [{ ...alice.own.states[0]!, signingPrivateKey: mallory.own.states[0]!.signingPrivateKey }],
    }
    const forged = await groupEncrypt(forgedOwn, utf8Encode('not from alice'))
    await expectRejectedUnchanged(alice.receiver, forged.message, ['E2E_ERR_BAD_SIGNATURE'])
    const { messages } = await sendAll(alice.own, ['genuine'])
    const genuine = messages[0]!
    await expectRejectedUnchanged(alice.receiver, genuine.slice(0, genuine.length - 1), [
      'E2E_ERR_MALFORMED_MESSAGE',
    ])
    const extended = new Uint8Array(genuine.length + 1)
    extended.set(genuine)
    await expectRejectedUnchanged(alice.receiver, extended, ['E2E_ERR_MALFORMED_MESSAGE'])
    for (const hostile of [
      undefined,
      null,
      'bytes',
      [1, 2, 3],
      new Uint8Array(0),
      new Uint8Array(MAX_GROUP_MESSAGE_BYTES + 1),
    ]) {
      await expectRejectedUnchanged(alice.receiver, hostile, [
        'E2E_ERR_MALFORMED_MESSAGE',
        'E2E_ERR_TOO_LARGE',
      ])
    }
    expect(utf8Decode((await groupDecrypt(alice.receiver, genuine)).plaintext)).toBe('genuine')
  })
})

describe('forward jumps and skipped keys', () => {
  it('a jump beyond MAX_SENDER_KEY_FORWARD_JUMP is refused without change; the limit itself is accepted and its cache is bounded', async () => {
    const { own, receiver } = await member()
    const far = await groupEncrypt(advancedOwn(own, MAX_SENDER_KEY_FORWARD_JUMP + 1), utf8Encode('too far'))
    expect(decodeGroupMessage(far.message).iteration).toBe(MAX_SENDER_KEY_FORWARD_JUMP + 1)
    await expectRejectedUnchanged(receiver, far.message, ['E2E_ERR_TOO_MANY_SKIPPED'])

    const early = await sendAll(
      advancedOwn(own, MAX_SENDER_KEY_FORWARD_JUMP - MAX_SENDER_KEY_SKIPPED_KEYS - 1),
      ['dropped'],
    )
    const lastSkipped = await sendAll(advancedOwn(own, MAX_SENDER_KEY_FORWARD_JUMP - 1), ['kept'])
    const atLimit = await groupEncrypt(
      advancedOwn(own, MAX_SENDER_KEY_FORWARD_JUMP),
      utf8Encode('at the limit'),
    )
    const opened = await groupDecrypt(receiver, atLimit.message)
    expect(utf8Decode(opened.plaintext)).toBe('at the limit')
    const state = opened.record.states[0]!
    expect(state.iteration).toBe(MAX_SENDER_KEY_FORWARD_JUMP + 1)
    expect(state.skippedKeys.size).toBe(MAX_SENDER_KEY_SKIPPED_KEYS)
    // The newest skipped keys are kept, the older ones were never stored.
    expect(utf8Decode((await groupDecrypt(opened.record, lastSkipped.messages[0])).plaintext)).toBe('kept')
    await expectRejectedUnchanged(opened.record, early.messages[0], ['E2E_ERR_DUPLICATE_MESSAGE'])
    // And now the one that was too far is within reach.
    expect(utf8Decode((await groupDecrypt(opened.record, far.message)).plaintext)).toBe('too far')
    // A record full of skipped keys stays within its size limit and loads again.
    const bytes = await serializeSenderKeyRecord(opened.record)
    expect(bytes.length).toBeLessThanOrEqual(MAX_SENDER_KEY_RECORD_BYTES)
    expect(await snapshot(await deserializeSenderKeyRecord(bytes))).toBe(toHex(bytes))
  })

  it('the last u32 iteration, which no sender sends, is refused unchanged; a chain at it refuses to send', async () => {
    const { own } = await member()
    const last = 0xffff_ffff
    const at = (iteration: number): SenderKeyRecord => ({
      ...own,
      states: [{ ...own.states[0]!, iteration }],
    })
    await expect(groupEncrypt(at(last), utf8Encode('x'))).rejects.toMatchObject({
      code: 'E2E_ERR_INVALID_STATE',
    })
    const receiver = processDistribution(null, senderKeyDistribution(at(last - 1)))
    // The chain's owner (the only one who can sign on it) signs a message claiming the last iteration.
    const { message } = await groupEncrypt(at(last - 1), utf8Encode('x'))
    const signed = message.slice(0, message.length - 64)
    new DataView(signed.buffer).setUint32(21, last)
    const signature = await ed25519Sign(
      own.states[0]!.signingPrivateKey!,
      concatBytes(GROUP_MESSAGE_SIGNATURE_LABEL, signed),
    )
    await expectRejectedUnchanged(receiver, concatBytes(signed, signature), ['E2E_ERR_MALFORMED_MESSAGE'])
    // The one before it is the last a chain carries.
    const opened = await groupDecrypt(receiver, message)
    expect(opened.record.states[0]!.iteration).toBe(last)
    expect(
      await snapshot(await deserializeSenderKeyRecord(await serializeSenderKeyRecord(opened.record))),
    ).toBe(await snapshot(opened.record))
  })

  it('skipped keys of several gaps stay within MAX_SENDER_KEY_SKIPPED_KEYS, oldest dropped first', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 900 }), { minLength: 1, maxLength: 6 }),
        async (gaps) => {
          const { own, receiver } = await member()
          let record = receiver
          let iteration = 0
          let expectedSkipped: number[] = []
          for (const gap of gaps) {
            iteration += gap
            const sent = await groupEncrypt(advancedOwn(own, iteration), utf8Encode(`after ${gap}`))
            const skippedNow = Array.from({ length: gap }, (_, i) => iteration - gap + i)
            expectedSkipped = [...expectedSkipped, ...skippedNow].slice(-MAX_SENDER_KEY_SKIPPED_KEYS)
            record = (await groupDecrypt(record, sent.message)).record
            iteration += 1
            expect([...record.states[0]!.skippedKeys.keys()]).toEqual(expectedSkipped)
          }
        },
      ),
      { numRuns: 20 },
    )
  })
})

describe('distribution and records', () => {
  it('a replayed distribution does not rewind the chain; rotations keep MAX_SENDER_KEY_STATES chains, newest first', async () => {
    const { own, receiver } = await member()
    const distribution = senderKeyDistribution(own)
    const { messages } = await sendAll(own, ['one'])
    let record = (await groupDecrypt(receiver, messages[0])).record
    record = processDistribution(record, distribution)
    await expectRejectedUnchanged(record, messages[0], ['E2E_ERR_DUPLICATE_MESSAGE'])

    // Each rotation is a new sender key (a new chain id); old chains keep decrypting until dropped.
    const rotations: { own: SenderKeyRecord; message: Uint8Array }[] = []
    for (let i = 0; i < MAX_SENDER_KEY_STATES; i++) {
      const next = await createSenderKey(DISTRIBUTION_ID, { extractable: true })
      record = processDistribution(record, senderKeyDistribution(next))
      rotations.push({ own: next, message: (await groupEncrypt(next, utf8Encode(`rotation ${i}`))).message })
    }
    expect(record.states.map((state) => state.chainId)).toEqual(
      rotations.map((rotation) => rotation.own.states[0]!.chainId).reverse(),
    )
    const oldest = await groupEncrypt((await sendAll(own, ['one'])).own, utf8Encode('on the first chain'))
    await expectRejectedUnchanged(record, oldest.message, ['E2E_ERR_NO_SENDER_KEY'])
    for (const [i, rotation] of rotations.entries()) {
      expect(utf8Decode((await groupDecrypt(record, rotation.message)).plaintext)).toBe(`rotation ${i}`)
    }
  })

  it('a receiver cannot send; a chain id met with another signing key replaces the old chain', async () => {
    const { own, receiver } = await member()
    await expect(groupEncrypt(receiver, utf8Encode('x'))).rejects.toMatchObject({
      code: 'E2E_ERR_INVALID_STATE',
    })
    const impostor = await createSenderKey(DISTRIBUTION_ID)
    const sameChain = { ...senderKeyDistribution(impostor), chainId: own.states[0]!.chainId }
    const replaced = processDistribution(receiver, sameChain)
    expect(replaced.states).toHaveLength(1)
    expect(toHex(replaced.states[0]!.signingPublicKey)).toBe(toHex(impostor.states[0]!.signingPublicKey))
    const otherGroup = { ...senderKeyDistribution(own), distributionId: deterministicBytes('other', 16) }
    expect(() => processDistribution(receiver, otherGroup)).toThrow(
      expect.objectContaining({ code: 'E2E_ERR_INVALID_INPUT' }),
    )
  })

  it('distribution messages are decoded strictly', () => {
    return createSenderKey(DISTRIBUTION_ID).then((own) => {
      const wire = encodeSenderKeyDistribution(senderKeyDistribution(own))
      expect(wire).toHaveLength(89)
      const wrongVersion = wire.slice()
      wrongVersion[0] = 2
      expect(() => decodeSenderKeyDistribution(wrongVersion)).toThrow(
        expect.objectContaining({ code: 'E2E_ERR_UNSUPPORTED_VERSION' }),
      )
      const extended = new Uint8Array(90)
      extended.set(wire)
      for (const bad of [wire.slice(0, 88), extended, 'wire', undefined]) {
        expect(() => decodeSenderKeyDistribution(bad)).toThrow(
          expect.objectContaining({ code: 'E2E_ERR_MALFORMED_MESSAGE' }),
        )
      }
    })
  })

  it('records are decoded strictly and our own needs an extractable signing key to be stored', async () => {
    const { own, receiver } = await member()
    const { messages } = await sendAll(own, ['a', 'b'])
    const record = (await groupDecrypt(receiver, messages[1])).record
    const bytes = await serializeSenderKeyRecord(record)
    const codeOf = async (input: Uint8Array) =>
      ((await errorOf(deserializeSenderKeyRecord(input))) as ProtocolError | undefined)?.code
    const wrongVersion = bytes.slice()
    wrongVersion[0] = 9
    expect(await codeOf(wrongVersion)).toBe('E2E_ERR_UNSUPPORTED_VERSION')
    const trailing = new Uint8Array(bytes.length + 1)
    trailing.set(bytes)
    expect(await codeOf(trailing)).toBe('E2E_ERR_MALFORMED_MESSAGE')
    expect(await codeOf(bytes.slice(0, bytes.length - 1))).toBe('E2E_ERR_MALFORMED_MESSAGE')
    expect(await codeOf(new Uint8Array(MAX_SENDER_KEY_RECORD_BYTES + 1))).toBe('E2E_ERR_TOO_LARGE')
    // Head 18, then the state: version 1, chain id 4, iteration 4, keys 64, flag 1, count 4, entries.
    const skippedAt = 18 + 1 + 4 + 4 + 64 + 1 + 4
    const futureSkipped = bytes.slice()
    futureSkipped[skippedAt + 3] = 5 // a skipped iteration at or past the chain's iteration (2)
    expect(await codeOf(futureSkipped)).toBe('E2E_ERR_MALFORMED_MESSAGE')
    const badFlag = bytes.slice()
    badFlag[18 + 1 + 4 + 4 + 64] = 2
    expect(await codeOf(badFlag)).toBe('E2E_ERR_MALFORMED_MESSAGE')
    const twoSame = await serializeSenderKeyRecord({
      ...record,
      states: [record.states[0]!, record.states[0]!],
    })
    expect(await codeOf(twoSame)).toBe('E2E_ERR_MALFORMED_MESSAGE')
    // Our own record: the seed must match the public key stored beside it.
    const ownBytes = await serializeSenderKeyRecord(own)
    const wrongSeed = ownBytes.slice()
    wrongSeed[18 + 1 + 4 + 4 + 64 + 1]! ^= 1
    expect(await codeOf(wrongSeed)).toBe('E2E_ERR_MALFORMED_MESSAGE')
    const nonExtractable = await createSenderKey(DISTRIBUTION_ID)
    expect(nonExtractable.states[0]!.signingPrivateKey!.extractable).toBe(false)
    await expect(serializeSenderKeyRecord(nonExtractable)).rejects.toMatchObject({
      code: 'E2E_ERR_INVALID_STATE',
    })
    // A key never shows in logs: the private half redacts itself.
    expect(JSON.stringify(own.states[0]!.signingPrivateKey)).toContain('redacted')
  })
})

describe('hostile bytes', () => {
  const onlyProtocolErrors = async (run: () => unknown) => {
    const error = await errorOf(Promise.resolve().then(run))
    if (error !== undefined) expect(error).toBeInstanceOf(ProtocolError)
  }

  it('any bytes given to the decoders either decode or fail with a ProtocolError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), async (bytes) => {
        await onlyProtocolErrors(() => decodeGroupMessage(bytes))
        await onlyProtocolErrors(() => decodeSenderKeyDistribution(bytes))
        await onlyProtocolErrors(() => deserializeSenderKeyRecord(bytes))
      }),
      { numRuns: 300 },
    )
  })

  it('a stored record with any byte changed loads as some record or fails with a ProtocolError', async () => {
    const { own, receiver } = await member()
    const { messages } = await sendAll(own, ['a', 'b', 'c'])
    const received = (await groupDecrypt(receiver, messages[2])).record
    const stored = [await serializeSenderKeyRecord(received), await serializeSenderKeyRecord(own)]
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 1 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (which, position, xor) => {
          const bytes = stored[which]!.slice()
          bytes[position % bytes.length]! ^= xor
          await onlyProtocolErrors(() => deserializeSenderKeyRecord(bytes))
        },
      ),
      { numRuns: 200 },
    )
  })
})
