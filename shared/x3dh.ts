/**
 * X3DH key agreement (Signal's X3DH spec, §3), with the project's identity layout: the initiator
 * (Alice) fetches a bundle, verifies every signature before any Diffie-Hellman, and derives the
 * shared secret; the responder (Bob) derives the same from the prekey message's header.
 *
 * Pure apart from WebCrypto: no storage, no clock. Key generation comes in through `deps` so
 * known-answer tests can fix the ephemeral key.
 */
import { assertBytes, ByteWriter, concatBytes, utf8Encode } from './bytes.js'
import { hkdfSha256, x25519 } from './crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from './errors.js'
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
import { USERNAME_PATTERN } from './username.js'

export const SHARED_SECRET_BYTES = 32
/** The identity part of AD: both parties' identity and signing keys. */
export const IDENTITY_AD_BYTES = 128

/**
 * Who the key agreement is between, by canonical username (shared/username.ts): the initiator
 * knows its own name and the one it fetched the bundle of; the responder its own and the sender the
 * server stamped on the delivery. Bound into AD so that a session relayed between other names
 * than the two that made it fails (an unknown key-share, X3DH §4.8).
 */
export interface SessionNames {
  readonly initiator: string
  readonly responder: string
}

export interface X3dhResult {
  /** SK: the Double Ratchet's first root key. */
  readonly sharedSecret: Uint8Array
  /**
   * AD = initiator identityKey ‖ signingKey ‖ responder identityKey ‖ signingKey (128 bytes)
   * ‖ u8(length) ‖ initiator username ‖ u8(length) ‖ responder username.
   */
  readonly associatedData: Uint8Array
}

export interface X3dhInitiation extends X3dhResult {
  readonly ephemeralPublicKey: Uint8Array
  readonly signedPreKeyId: number
  readonly oneTimePreKeyId: number | undefined
  /** The responder's signed prekey: the initiator's first remote ratchet key. */
  readonly remoteSignedPreKey: Uint8Array
}

/** Version 1's AD (sessions made before usernames were bound): the two identities alone. */
export function identityAssociatedData(initiator: PublicIdentity, responder: PublicIdentity): Uint8Array {
  return concatBytes(initiator.identityKey, initiator.signingKey, responder.identityKey, responder.signingKey)
}

function nameBytes(name: string, role: string): Uint8Array {
  // Only the canonical form: two spellings of one name must not make two different ADs, and
  // anything else is a caller's mistake (the codec refuses other names from the server).
  if (typeof name !== 'string' || !USERNAME_PATTERN.test(name)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `${role} username: expected a canonical username, got ${typeof name === 'string' ? `string(${name.length})` : typeof name}`,
    )
  }
  return utf8Encode(name)
}

/**
 * AD of a session of version 2 (docs/protocol.md §4.4): the two identities, then both usernames,
 * each prefixed by its length in bytes, initiator first (X3DH §3.3 leaves room for exactly this).
 */
export function associatedData(
  initiator: PublicIdentity,
  responder: PublicIdentity,
  names: SessionNames,
): Uint8Array {
  const initiatorName = nameBytes(names.initiator, 'initiator')
  const responderName = nameBytes(names.responder, 'responder')
  const writer = new ByteWriter(IDENTITY_AD_BYTES + 2 + initiatorName.length + responderName.length)
  writer.fixed(identityAssociatedData(initiator, responder))
  writer.u8(initiatorName.length).fixed(initiatorName)
  writer.u8(responderName.length).fixed(responderName)
  return writer.finish()
}

function deriveSharedSecret(dhOutputs: Uint8Array[]): Uint8Array {
  return hkdfSha256(concatBytes(X3DH_PREFIX, ...dhOutputs), ZERO_SALT, X3DH_INFO, SHARED_SECRET_BYTES)
}

export async function x3dhInitiate(
  identity: Identity,
  bundle: PreKeyBundle,
  names: SessionNames,
  deps: KeyGeneration = defaultKeyGeneration,
): Promise<X3dhInitiation> {
  // A forged or swapped prekey must fail here, before any secret depends on it.
  await verifyPreKeyBundle(bundle, names.responder)
  const ad = associatedData(identity.public, bundle.identity, names)
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
    associatedData: ad,
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
  names: SessionNames,
): Promise<X3dhResult> {
  assertBytes(ephemeralPublicKey, 32, 'ephemeral key')
  await verifyPublicIdentity(initiator)
  const ad = associatedData(initiator, identity.public, names)
  const dhs = await Promise.all([
    x25519(signedPreKey.keyPair.privateKey, initiator.identityKey),
    x25519(identity.agreement.privateKey, ephemeralPublicKey),
    x25519(signedPreKey.keyPair.privateKey, ephemeralPublicKey),
    ...(oneTimePreKey ? [x25519(oneTimePreKey.keyPair.privateKey, ephemeralPublicKey)] : []),
  ])
  return { sharedSecret: deriveSharedSecret(dhs), associatedData: ad }
}
