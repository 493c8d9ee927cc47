/** Test helpers: deterministic keys for known-answer tests, and two-party session setup. */
import { ByteWriter, utf8Encode } from '../bytes.js'
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
  publicPreKey,
} from '../identity.js'
import type { KeyGeneration } from '../key-generation.js'
import { acceptSession, encryptMessage, type Session, startSession } from '../session.js'

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
  const signedPreKey = await generateSignedPreKey(bob, 1, { extractable: true }, keys?.bob)
  const [oneTimePreKey] = await generateOneTimePreKeys(bob, 1000, 1, { extractable: true }, keys?.bob)
  const started = await startSession(
    alice,
    {
      identity: bob.public,
      signedPreKey: publicPreKey(signedPreKey),
      oneTimePreKey: publicPreKey(oneTimePreKey!),
    },
    keys?.alice,
  )
  const first = await encryptMessage(started, utf8Encode('hello'), keys?.alice)
  const accepted = await acceptSession(bob, first.envelope, { signedPreKey, oneTimePreKey })
  return {
    alice,
    bob,
    signedPreKey,
    oneTimePreKey: oneTimePreKey!,
    aliceSession: first.session,
    bobSession: accepted.session,
  }
}
