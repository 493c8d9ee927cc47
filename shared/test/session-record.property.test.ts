/**
 * Session records (shared/session-record.ts) under any interleaving: both parties may start a
 * session whenever they like (at the same moment as the other, or again later), messages are
 * delivered in any order, some are lost, records are reloaded from their bytes, and replays are
 * tried. Every delivered message must decrypt exactly once, and a rejected one must leave the record
 * as it was. Real WebCrypto throughout; nothing is mocked.
 */

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../address.js'
import { toHex, utf8Decode, utf8Encode } from '../bytes.js'
import { decodeEnvelope } from '../codec/envelope.js'
import { isProtocolError } from '../errors.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyPair,
  publicPreKey,
} from '../identity.js'
import { MAX_ARCHIVED_SESSIONS } from '../limits.js'
import { acceptSession, encryptMessage, startSession } from '../session.js'
import {
  archiveCurrentSession,
  decryptWithRecord,
  EMPTY_SESSION_RECORD,
  promoteSession,
  type SessionRecord,
} from '../session-record.js'
import { deserializeSessionRecord, serializeSessionRecord } from '../session-serialization.js'
import { ALICE_TO_BOB } from './helpers.js'

type Party = 'alice' | 'bob'
const other = (p: Party): Party => (p === 'alice' ? 'bob' : 'alice')

type Op =
  | { kind: 'send'; from: Party }
  | { kind: 'restart'; who: Party }
  | { kind: 'deliver'; pick: number }
  | { kind: 'drop'; pick: number }
  | { kind: 'replay'; pick: number }
  | { kind: 'reload'; who: Party }

const party = fc.constantFrom<Party>('alice', 'bob')
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('send' as const), from: party }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restart' as const), who: party }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('deliver' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('replay' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reload' as const), who: party }) },
)

interface Peer {
  name: Party
  identity: Identity
  signedPreKey: PreKeyPair
  /** One-time prekeys not yet handed out, and those handed out but not yet used. */
  unclaimed: PreKeyPair[]
  claimed: Map<number, PreKeyPair>
  record: SessionRecord
}

interface InFlight {
  to: Party
  envelope: Uint8Array
  text: string
}

async function makePeer(name: Party, firstPreKeyId: number): Promise<Peer> {
  const identity = await generateIdentity({ extractable: true })
  return {
    name,
    identity,
    signedPreKey: await generateSignedPreKey(identity, DEFAULT_DEVICE_ID, firstPreKeyId, {
      extractable: true,
    }),
    unclaimed: await generateOneTimePreKeys(identity, DEFAULT_DEVICE_ID, firstPreKeyId + 1, 12, {
      extractable: true,
    }),
    claimed: new Map(),
    record: EMPTY_SESSION_RECORD,
  }
}

async function recordBytes(record: SessionRecord): Promise<string> {
  return toHex(await serializeSessionRecord(record))
}

/** `peer` receives an envelope from the other party (the only one who writes to it). */
async function receive(peer: Peer, envelope: Uint8Array) {
  const names = { initiator: other(peer.name), responder: peer.name }
  return decryptWithRecord(peer.record, decodeEnvelope(envelope), async (prekeyMessage) => {
    const header = prekeyMessage.preKey!
    const oneTimePreKey =
      header.oneTimePreKeyId === undefined ? undefined : peer.claimed.get(header.oneTimePreKeyId)
    return acceptSession(
      peer.identity,
      prekeyMessage,
      { signedPreKey: peer.signedPreKey, oneTimePreKey },
      names,
    )
  })
}

describe('session records in any interleaving', () => {
  it('sessions started at any moment by either side: every delivered message decrypts exactly once', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArbitrary, { minLength: 20, maxLength: 70, size: 'max' }),
        fc.array(fc.nat(), { maxLength: 70, size: 'max' }),
        async (ops, finalOrder) => {
          const peers: Record<Party, Peer> = {
            alice: await makePeer('alice', 1),
            bob: await makePeer('bob', 100),
          }
          const inFlight: InFlight[] = []
          const delivered: InFlight[] = []
          let counter = 0

          const deliver = async (message: InFlight) => {
            const peer = peers[message.to]
            const result = await receive(peer, message.envelope)
            expect(utf8Decode(result.plaintext)).toBe(message.text)
            if (result.usedOneTimePreKeyId !== undefined) peer.claimed.delete(result.usedOneTimePreKeyId)
            peer.record = result.record
            expect(peer.record.current).toBe(result.session)
            delivered.push(message)
          }

          for (const op of ops) {
            if (op.kind === 'send') {
              const sender = peers[op.from]
              if (!sender.record.current) {
                // No session to send on: fetch the other's bundle and start one, as the client does.
                const recipient = peers[other(op.from)]
                const oneTimePreKey = recipient.unclaimed.shift()
                if (oneTimePreKey) recipient.claimed.set(oneTimePreKey.keyId, oneTimePreKey)
                const session = await startSession(
                  sender.identity,
                  {
                    deviceId: DEFAULT_DEVICE_ID,
                    identity: recipient.identity.public,
                    signedPreKey: publicPreKey(recipient.signedPreKey),
                    ...(oneTimePreKey ? { oneTimePreKey: publicPreKey(oneTimePreKey) } : {}),
                  },
                  { initiator: op.from, responder: other(op.from) },
                )
                sender.record = promoteSession(sender.record, session)
              }
              const text = `${op.from} ${counter++}`
              const sent = await encryptMessage(sender.record.current!, utf8Encode(text))
              sender.record = { ...sender.record, current: sent.session }
              inFlight.push({ to: other(op.from), envelope: sent.envelope, text })
            } else if (op.kind === 'restart') {
              // As after a retry request: the next send starts a fresh session.
              peers[op.who].record = archiveCurrentSession(peers[op.who].record)
            } else if (op.kind === 'deliver' && inFlight.length > 0) {
              const [message] = inFlight.splice(op.pick % inFlight.length, 1)
              await deliver(message!)
            } else if (op.kind === 'drop' && inFlight.length > 0) {
              inFlight.splice(op.pick % inFlight.length, 1)
            } else if (op.kind === 'replay' && delivered.length > 0) {
              const message = delivered[op.pick % delivered.length]!
              const peer = peers[message.to]
              const before = await recordBytes(peer.record)
              const error = await receive(peer, message.envelope).then(
                () => undefined,
                (e: unknown) => e,
              )
              expect(isProtocolError(error), `replay of "${message.text}" must be refused`).toBe(true)
              expect(await recordBytes(peer.record)).toBe(before)
            } else if (op.kind === 'reload') {
              const peer = peers[op.who]
              peer.record = await deserializeSessionRecord(await serializeSessionRecord(peer.record))
            }
          }
          for (const pick of finalOrder) {
            if (inFlight.length === 0) break
            const [message] = inFlight.splice(pick % inFlight.length, 1)
            await deliver(message!)
          }
          while (inFlight.length > 0) await deliver(inFlight.shift()!)
        },
      ),
      { numRuns: 40 },
    )
  })

  it('crossed first messages: both keep both sessions and converge on one', async () => {
    const alice = await makePeer('alice', 1)
    const bob = await makePeer('bob', 100)
    const start = async (from: Peer, to: Peer) => {
      const oneTimePreKey = to.unclaimed.shift()!
      to.claimed.set(oneTimePreKey.keyId, oneTimePreKey)
      return startSession(
        from.identity,
        {
          deviceId: DEFAULT_DEVICE_ID,
          identity: to.identity.public,
          signedPreKey: publicPreKey(to.signedPreKey),
          oneTimePreKey: publicPreKey(oneTimePreKey),
        },
        { initiator: from.name, responder: to.name },
      )
    }
    const send = async (from: Peer, text: string) => {
      const sent = await encryptMessage(from.record.current!, utf8Encode(text))
      from.record = { ...from.record, current: sent.session }
      return sent.envelope
    }
    alice.record = promoteSession(alice.record, await start(alice, bob))
    bob.record = promoteSession(bob.record, await start(bob, alice))
    const a1 = await send(alice, 'a1')
    const b1 = await send(bob, 'b1')
    for (const [peer, envelope, text] of [
      [bob, a1, 'a1'],
      [alice, b1, 'b1'],
    ] as const) {
      const result = await receive(peer, envelope)
      expect(utf8Decode(result.plaintext)).toBe(text)
      expect(result.newSession).toBe(true)
      peer.record = result.record
      expect(peer.record.archived).toHaveLength(1)
    }
    // Each now sends on the session the other started; both still hold their own, so it decrypts.
    for (let round = 0; round < 5; round++) {
      const a = await send(alice, `a${round}`)
      const b = await send(bob, `b${round}`)
      const atBob = await receive(bob, a)
      const atAlice = await receive(alice, b)
      expect(utf8Decode(atBob.plaintext)).toBe(`a${round}`)
      expect(utf8Decode(atAlice.plaintext)).toBe(`b${round}`)
      bob.record = atBob.record
      alice.record = atAlice.record
    }
    // Once one side answers without crossing, both send on the same session from then on.
    const atBob = await receive(bob, await send(alice, 'settle'))
    bob.record = atBob.record
    const atAlice = await receive(alice, await send(bob, 'settled'))
    alice.record = atAlice.record
    expect(alice.record.current!.baseKey).toEqual(bob.record.current!.baseKey)
  })

  it('keeps at most MAX_ARCHIVED_SESSIONS, dropping the oldest', async () => {
    const alice = await generateIdentity({ extractable: true })
    const bob = await generateIdentity({ extractable: true })
    const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 1, { extractable: true })
    let record = EMPTY_SESSION_RECORD
    const first = await startSession(
      alice,
      {
        deviceId: DEFAULT_DEVICE_ID,
        identity: bob.public,
        signedPreKey: publicPreKey(signedPreKey),
      },
      ALICE_TO_BOB,
    )
    record = promoteSession(record, first)
    for (let i = 0; i < MAX_ARCHIVED_SESSIONS + 1; i++) {
      record = promoteSession(
        record,
        await startSession(
          alice,
          { deviceId: DEFAULT_DEVICE_ID, identity: bob.public, signedPreKey: publicPreKey(signedPreKey) },
          ALICE_TO_BOB,
        ),
      )
    }
    expect(record.archived).toHaveLength(MAX_ARCHIVED_SESSIONS)
    expect(record.archived.includes(first)).toBe(false)
    const reloaded = await deserializeSessionRecord(await serializeSessionRecord(record))
    expect(reloaded.archived).toHaveLength(MAX_ARCHIVED_SESSIONS)
    expect(reloaded.current!.baseKey).toEqual(record.current!.baseKey)
  })

  it('a record refuses unknown versions, too many archived sessions and trailing bytes', async () => {
    const bytes = await serializeSessionRecord(EMPTY_SESSION_RECORD)
    const wrongVersion = bytes.slice()
    wrongVersion[0] = 9
    await expect(deserializeSessionRecord(wrongVersion)).rejects.toMatchObject({
      code: 'E2E_ERR_UNSUPPORTED_VERSION',
    })
    const tooMany = bytes.slice()
    tooMany[2] = MAX_ARCHIVED_SESSIONS + 1
    await expect(deserializeSessionRecord(tooMany)).rejects.toMatchObject({
      code: 'E2E_ERR_MALFORMED_MESSAGE',
    })
    const trailing = new Uint8Array(bytes.length + 1)
    trailing.set(bytes)
    await expect(deserializeSessionRecord(trailing)).rejects.toMatchObject({
      code: 'E2E_ERR_MALFORMED_MESSAGE',
    })
  })
})
