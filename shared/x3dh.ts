/**
 * X3DH key agreement (Signal's X3DH spec, §3), with the project's identity layout: the initiator
 * (Alice) fetches a bundle, verifies every signature before any Diffie-Hellman, and derives the
 * shared secret; the responder (Bob) derives the same from the prekey message's header.
 *
 * Pure apart from WebCrypto: no storage, no clock. Key generation comes in through `deps` so
 * known-answer tests can fix the ephemeral key.
 */
import { assertBytes, concatBytes } from './bytes.js'
import { hkdfSha256, x25519 } from './crypto/primitives.js'
import {
  type Identity,
  type PreKeyBundle,
  type PreKeyPair,
  type PublicIdentity,
  verifyPreKeyBundle,
  verifyPublicIdentity,
} from './identity.js'
import { defaultKeyGeneration, type KeyGeneration } from './key-generation.js'
import { X3DH_INFO, X3DH_PREFIX, ZERO_SALT } from './labels.js'

export const SHARED_SECRET_BYTES = 32

export interface X3dhResult {
  /** SK: the Double Ratchet's first root key. */
  readonly sharedSecret: Uint8Array
  /** AD = initiator identityKey ‖ signingKey ‖ responder identityKey ‖ signingKey (128 bytes). */
  readonly associatedData: Uint8Array
}

export interface X3dhInitiation extends X3dhResult {
  readonly ephemeralPublicKey: Uint8Array
  readonly signedPreKeyId: number
  readonly oneTimePreKeyId: number | undefined
  /** The responder's signed prekey: the initiator's first remote ratchet key. */
  readonly remoteSignedPreKey: Uint8Array
}

export function associatedData(initiator: PublicIdentity, responder: PublicIdentity): Uint8Array {
  return concatBytes(initiator.identityKey, initiator.signingKey, responder.identityKey, responder.signingKey)
}

function deriveSharedSecret(dhOutputs: Uint8Array[]): Uint8Array {
  return hkdfSha256(concatBytes(X3DH_PREFIX, ...dhOutputs), ZERO_SALT, X3DH_INFO, SHARED_SECRET_BYTES)
}

export async function x3dhInitiate(
  identity: Identity,
  bundle: PreKeyBundle,
  deps: KeyGeneration = defaultKeyGeneration,
): Promise<X3dhInitiation> {
  // A forged or swapped prekey must fail here, before any secret depends on it.
  await verifyPreKeyBundle(bundle)
  // The ephemeral private key is used here and then dropped, so it never needs to be exportable.
  const ephemeral = await deps.generateKeyPair({ extractable: false })
  const dhs = await Promise.all([
    x25519(identity.agreement.privateKey, bundle.signedPreKey.publicKey),
    x25519(ephemeral.privateKey, bundle.identity.identityKey),
    x25519(ephemeral.privateKey, bundle.signedPreKey.publicKey),
    ...(bundle.oneTimePreKey ? [x25519(ephemeral.privateKey, bundle.oneTimePreKey.publicKey)] : []),
  ])
  return {
    sharedSecret: deriveSharedSecret(dhs),
    associatedData: associatedData(identity.public, bundle.identity),
    ephemeralPublicKey: ephemeral.publicKey,
    signedPreKeyId: bundle.signedPreKey.keyId,
    oneTimePreKeyId: bundle.oneTimePreKey?.keyId,
    remoteSignedPreKey: bundle.signedPreKey.publicKey,
  }
}

export async function x3dhRespond(
  identity: Identity,
  signedPreKey: PreKeyPair,
  oneTimePreKey: PreKeyPair | undefined,
  initiator: PublicIdentity,
  ephemeralPublicKey: Uint8Array,
): Promise<X3dhResult> {
  assertBytes(ephemeralPublicKey, 32, 'ephemeral key')
  await verifyPublicIdentity(initiator)
  const dhs = await Promise.all([
    x25519(signedPreKey.keyPair.privateKey, initiator.identityKey),
    x25519(identity.agreement.privateKey, ephemeralPublicKey),
    x25519(signedPreKey.keyPair.privateKey, ephemeralPublicKey),
    ...(oneTimePreKey ? [x25519(oneTimePreKey.keyPair.privateKey, ephemeralPublicKey)] : []),
  ])
  return { sharedSecret: deriveSharedSecret(dhs), associatedData: associatedData(initiator, identity.public) }
}
