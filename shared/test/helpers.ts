/** Test helpers: deterministic keys for known-answer tests, and two-party session setup. */
import { DEFAULT_DEVICE_ID } from '../address.js'
import { ByteWriter, utf8Encode } from '../bytes.js'
import { decodeEnvelope, UNBOUND_ENVELOPE_VERSION } from '../codec/envelope.js'
import {
  forceCurveFallbackForTests,
  hkdfSha256,
  type KeyOptions,
  x25519KeyPairFromPrivateBytes,
} from '../crypto/primitives.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  identityFromPrivateKeys,
  type PreKeyPair,
  type PublicIdentity,
  publicPreKey,
} from '../identity.js'
import type { KeyGeneration } from '../key-generation.js'
import { responderRatchetState } from '../ratchet/double-ratchet.js'
import { acceptSession, decryptMessage, encryptMessage, type Session, startSession } from '../session.js'
import { identityAssociatedData, type SessionNames, x3dhRespond } from '../x3dh.js'

/** The names the two-party tests bind into their sessions: alice starts, bob answers. */
export const ALICE_TO_BOB: SessionNames = { initiator: 'alice', responder: 'bob' }
export const BOB_TO_ALICE: SessionNames = { initiator: 'bob', responder: 'alice' }

/** The two ways curve operations run: WebCrypto, and the @noble/curves fallback forced on. */
export const curveBackends = [
  { name: 'WebCrypto', force: (): (() => void) => () => {} },
  { name: '@noble/curves fallback', force: forceCurveFallbackForTests },
]

/** Key pairs derived from a label and a counter: the same sequence on every run and runtime. */
export function deterministicKeys(label: string): KeyGeneration & { readonly count: number } {
  let counter = 0
  return {
    get count() {
      return counter
    },
    generateKeyPair(options?: KeyOptions) {
      const info = new ByteWriter().fixed(utf8Encode(label)).u32(counter++).finish()
      return x25519KeyPairFromPrivateBytes(hkdfSha256(utf8Encode('kat-seed'), new Uint8Array(0), info, 32), {
        extractable: true,
        ...options,
      })
    },
  }
}

export function deterministicBytes(label: string, length: number): Uint8Array {
  return hkdfSha256(utf8Encode('kat-seed'), new Uint8Array(0), utf8Encode(label), length)
}

export function deterministicIdentity(name: string): Promise<Identity> {
  return identityFromPrivateKeys(
    deterministicBytes(`${name}/x25519`, 32),
    deterministicBytes(`${name}/ed25519`, 32),
    {
      extractable: true,
    },
  )
}

export interface Parties {
  alice: Identity
  bob: Identity
  signedPreKey: PreKeyPair
  oneTimePreKey: PreKeyPair
  /** Alice's session, after one message to Bob. */
  aliceSession: Session
  bobSession: Session
}

/** Alice starts a session from Bob's bundle and sends one message; Bob accepts it. */
export async function establishedParties(keys?: {
  alice: KeyGeneration
  bob: KeyGeneration
}): Promise<Parties> {
  const [alice, bob] = await Promise.all([
    generateIdentity({ extractable: true }),
    generateIdentity({ extractable: true }),
  ])
  const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 1, { extractable: true }, keys?.bob)
  const [oneTimePreKey] = await generateOneTimePreKeys(
    bob,
    DEFAULT_DEVICE_ID,
    1000,
    1,
    { extractable: true },
    keys?.bob,
  )
  const started = await startSession(
    alice,
    {
      deviceId: DEFAULT_DEVICE_ID,
      identity: bob.public,
      signedPreKey: publicPreKey(signedPreKey),
      oneTimePreKey: publicPreKey(oneTimePreKey!),
    },
    ALICE_TO_BOB,
    keys?.alice,
  )
  const first = await encryptMessage(started, utf8Encode('hello'), keys?.alice)
  const accepted = await acceptSession(bob, first.envelope, { signedPreKey, oneTimePreKey }, ALICE_TO_BOB)
  return {
    alice,
    bob,
    signedPreKey,
    oneTimePreKey: oneTimePreKey!,
    aliceSession: first.session,
    bobSession: accepted.session,
  }
}

/**
 * What a client of the version before usernames were bound made of `session` (one of ours from
 * `startSession`): the same X3DH secret and ratchet, the 128-byte AD of the two identities alone,
 * and version-1 envelopes. Such sessions still come out of storage; the tests use this to make the
 * bytes an old client sends (and its known answers, docs/protocol.md §17).
 */
export function asVersion1Session(
  session: Session,
  initiator: PublicIdentity,
  responder: PublicIdentity,
): Session {
  return {
    ...session,
    version: UNBOUND_ENVELOPE_VERSION,
    associatedData: identityAssociatedData(initiator, responder),
  }
}

/**
 * A responder of the version before usernames were bound accepting a prekey message (today's
 * acceptSession refuses version 1): X3DH, the 128-byte AD, then the first decryption.
 */
export async function acceptAsVersion1(
  identity: Identity,
  input: Uint8Array,
  preKeys: { signedPreKey: PreKeyPair; oneTimePreKey: PreKeyPair | undefined },
): Promise<{ session: Session; plaintext: Uint8Array }> {
  const envelope = decodeEnvelope(input)
  const header = envelope.preKey!
  const agreement = await x3dhRespond(
    identity,
    preKeys.signedPreKey,
    preKeys.oneTimePreKey,
    header.initiator,
    header.ephemeralKey,
    // Names change only AD, which is replaced below: the secret is the same without them.
    ALICE_TO_BOB,
  )
  const session: Session = {
    role: 'responder',
    version: UNBOUND_ENVELOPE_VERSION,
    associatedData: identityAssociatedData(header.initiator, identity.public),
    remoteIdentity: header.initiator,
    baseKey: header.ephemeralKey,
    pendingPreKey: null,
    ratchet: responderRatchetState(agreement.sharedSecret, preKeys.signedPreKey.keyPair),
  }
  return decryptMessage(session, envelope)
}
