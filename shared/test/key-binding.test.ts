/**
 * Keys bound to names (issue 10, item 7; docs/protocol.md §4.4–4.5): both usernames are in every
 * session's AD, so a session relayed between two other names than the two that made it fails (an
 * unknown key-share, X3DH §4.8), and a prekey message from an app that binds no names never starts a
 * session. Real keys and WebCrypto throughout.
 */

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../address.js'
import { utf8Decode, utf8Encode } from '../bytes.js'
import { decodeEnvelope } from '../codec/envelope.js'
import { isProtocolError } from '../errors.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyBundle,
  type PreKeyPair,
  publicPreKey,
} from '../identity.js'
import { acceptSession, decryptMessage, encryptMessage, startSession } from '../session.js'
import { deserializeSession, serializeSession } from '../session-serialization.js'
import { associatedData } from '../x3dh.js'
import { asVersion1Session } from './helpers.js'

interface Party {
  readonly identity: Identity
  readonly signedPreKey: PreKeyPair
  readonly oneTimePreKey: PreKeyPair
  readonly bundle: PreKeyBundle
}

async function party(): Promise<Party> {
  const identity = await generateIdentity({ extractable: true })
  const signedPreKey = await generateSignedPreKey(identity, DEFAULT_DEVICE_ID, 1, { extractable: true })
  const [oneTimePreKey] = await generateOneTimePreKeys(identity, DEFAULT_DEVICE_ID, 10, 1, {
    extractable: true,
  })
  return {
    identity,
    signedPreKey,
    oneTimePreKey: oneTimePreKey!,
    bundle: {
      deviceId: DEFAULT_DEVICE_ID,
      identity: identity.public,
      signedPreKey: publicPreKey(signedPreKey),
      oneTimePreKey: publicPreKey(oneTimePreKey!),
    },
  }
}

function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  )
}

/** `recipient` accepting a prekey message as coming from `from` (the name the server stamped). */
function acceptFrom(recipient: Party, envelope: Uint8Array, from: string, to: string) {
  return acceptSession(
    recipient.identity,
    envelope,
    { signedPreKey: recipient.signedPreKey, oneTimePreKey: recipient.oneTimePreKey },
    { initiator: from, responder: to },
  )
}

describe('usernames bound into the key agreement', () => {
  it('a prekey message relayed to alice as if from eve does not decrypt; from bob, it does', async () => {
    const alice = await party()
    const bob = await party()
    const bobToAlice = await startSession(bob.identity, alice.bundle, {
      initiator: 'bob',
      responder: 'alice',
    })
    const { envelope } = await encryptMessage(bobToAlice, utf8Encode('meet at noon'))
    // Eve (her own name, her own keys) sends bob's envelope on as her own: the server stamps "eve".
    const relayed = await errorOf(acceptFrom(alice, envelope, 'eve', 'alice'))
    expect(isProtocolError(relayed, 'E2E_ERR_DECRYPTION_FAILED')).toBe(true)
    const delivered = await acceptFrom(alice, envelope, 'bob', 'alice')
    expect(utf8Decode(delivered.plaintext)).toBe('meet at noon')
  })

  it("alice's public keys copied under the name eve: bob's session with 'eve' opens for neither name at alice", async () => {
    const alice = await party()
    const bob = await party()
    // The server would now refuse the copy (server/identity-keys.test.ts); made here at the protocol
    // level, as on a server that does not check: eve's bundle is alice's, key for key.
    const eveBundle = alice.bundle
    const bobToEve = await startSession(bob.identity, eveBundle, { initiator: 'bob', responder: 'eve' })
    const { envelope } = await encryptMessage(bobToEve, utf8Encode('for eve'))
    for (const [from, to] of [
      ['bob', 'alice'],
      ['eve', 'alice'],
    ] as const) {
      const error = await errorOf(acceptFrom(alice, envelope, from, to))
      expect(isProtocolError(error, 'E2E_ERR_DECRYPTION_FAILED'), `as from ${from}`).toBe(true)
    }
    // And alice's answers on a session she did make with bob under his name do not open at bob's
    // session with "eve" either: the names differ in both ADs.
    const aliceToBob = await startSession(alice.identity, bob.bundle, {
      initiator: 'alice',
      responder: 'bob',
    })
    const fromAlice = await encryptMessage(aliceToBob, utf8Encode('hello bob'))
    const asEve = await errorOf(acceptFrom(bob, fromAlice.envelope, 'eve', 'bob'))
    expect(isProtocolError(asEve, 'E2E_ERR_DECRYPTION_FAILED')).toBe(true)
  })

  it('any pair of names but the one that made the session fails, in either order', async () => {
    const alice = await party()
    const bob = await party()
    const session = await startSession(bob.identity, alice.bundle, { initiator: 'bob', responder: 'alice' })
    const { envelope } = await encryptMessage(session, utf8Encode('x'))
    const name = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]$/)
    await fc.assert(
      fc.asyncProperty(name, name, async (from, to) => {
        fc.pre(!(from === 'bob' && to === 'alice'))
        const error = await errorOf(acceptFrom(alice, envelope, from, to))
        expect(isProtocolError(error, 'E2E_ERR_DECRYPTION_FAILED')).toBe(true)
      }),
      {
        numRuns: 40,
        examples: [
          ['alice', 'bob'],
          ['eve', 'alice'],
          ['bob', 'eve'],
        ],
      },
    )
  })

  it('the names are length-prefixed: moving a character from one name to the other changes AD', async () => {
    const { identity } = await party()
    const one = associatedData(identity.public, identity.public, { initiator: 'bob', responder: 'alice' })
    const two = associatedData(identity.public, identity.public, { initiator: 'boba', responder: 'lice' })
    expect(one).not.toEqual(two)
  })

  it('refuses names that are not canonical (the AD of one name must be one byte string)', async () => {
    const alice = await party()
    const bob = await party()
    for (const names of [
      { initiator: 'Bob', responder: 'alice' },
      { initiator: 'bob', responder: ' alice' },
      { initiator: 'bob', responder: '' },
    ]) {
      const error = await errorOf(startSession(bob.identity, alice.bundle, names))
      expect(isProtocolError(error, 'E2E_ERR_INVALID_INPUT'), JSON.stringify(names)).toBe(true)
    }
  })
})

describe('adjacent versions', () => {
  it("a prekey message from an app without the binding (version 1) is refused: the sender's app must be updated", async () => {
    const alice = await party()
    const bob = await party()
    const made = await startSession(bob.identity, alice.bundle, { initiator: 'bob', responder: 'alice' })
    const old = asVersion1Session(made, bob.identity.public, alice.identity.public)
    const { envelope } = await encryptMessage(old, utf8Encode('from an old app'))
    expect(envelope[0]).toBe(1)
    const error = await errorOf(acceptFrom(alice, envelope, 'bob', 'alice'))
    expect(isProtocolError(error, 'E2E_ERR_OUTDATED_SENDER')).toBe(true)
    expect((error as Error).message).toMatch(/must be updated/)
  })

  it('a version-2 prekey message passed off as version 1 is refused, and cannot be opened as one', async () => {
    const alice = await party()
    const bob = await party()
    const made = await startSession(bob.identity, alice.bundle, { initiator: 'bob', responder: 'alice' })
    const { envelope } = await encryptMessage(made, utf8Encode('bound'))
    const downgraded = envelope.slice()
    downgraded[0] = 1
    const error = await errorOf(acceptFrom(alice, downgraded, 'bob', 'alice'))
    expect(isProtocolError(error, 'E2E_ERR_OUTDATED_SENDER')).toBe(true)
  })

  it('on an established session, an envelope of the other version is refused (the version is the session’s)', async () => {
    const alice = await party()
    const bob = await party()
    const made = await startSession(bob.identity, alice.bundle, { initiator: 'bob', responder: 'alice' })
    const first = await encryptMessage(made, utf8Encode('one'))
    const accepted = await acceptFrom(alice, first.envelope, 'bob', 'alice')
    const reply = await encryptMessage(accepted.session, utf8Encode('two'))
    expect(decodeEnvelope(reply.envelope).version).toBe(2)
    const relabelled = reply.envelope.slice()
    relabelled[0] = 1
    const error = await errorOf(decryptMessage(first.session, relabelled))
    expect(isProtocolError(error, 'E2E_ERR_INVALID_STATE')).toBe(true)
    expect(utf8Decode((await decryptMessage(first.session, reply.envelope)).plaintext)).toBe('two')
  })
})

describe('session format 3', () => {
  it('keeps the version and the AD as derived, and refuses a version or AD length that do not fit', async () => {
    const alice = await party()
    const bob = await party()
    const made = await startSession(bob.identity, alice.bundle, { initiator: 'bob', responder: 'alice' })
    const bytes = await serializeSession(made)
    expect([bytes[0], bytes[2], bytes[3]]).toEqual([3, 2, made.associatedData.length])
    const loaded = await deserializeSession(bytes)
    expect({ version: loaded.version, ad: loaded.associatedData }).toEqual({
      version: 2,
      ad: made.associatedData,
    })
    const old = await deserializeSession(
      await serializeSession(asVersion1Session(made, bob.identity.public, alice.identity.public)),
    )
    expect({ version: old.version, length: old.associatedData.length }).toEqual({ version: 1, length: 128 })
    for (const [offset, value] of [
      [2, 1], // version 1 with a 138-byte AD
      [2, 0],
      [2, 3],
      [3, 128], // version 2 with the AD of version 1
      [3, 255],
    ] as const) {
      const tampered = bytes.slice()
      tampered[offset] = value
      const error = await errorOf(deserializeSession(tampered))
      expect(isProtocolError(error, 'E2E_ERR_MALFORMED_MESSAGE'), `byte ${offset} = ${value}`).toBe(true)
    }
  })
})
