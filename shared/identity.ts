/**
 * A user's long-term keys and their signed prekeys. An identity is three keys made on the client:
 * X25519 for key agreement, Ed25519 to sign the X25519 key and every prekey (WebCrypto has no
 * XEdDSA, so, as in Olm, a separate key signs), and RSA-OAEP-3072 for the server's login tokens
 * (kept separately by the client core; this module covers the two curve keys).
 *
 * This module knows nothing about storage or the network: callers persist what it returns.
 */
import { assertBytes, assertUint32, ByteReader, ByteWriter, concatBytes } from './bytes.js'
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  exportPrivateKeyBytes,
  generateEd25519KeyPair,
  generateX25519KeyPair,
  type KeyOptions,
  type KeyPair,
  x25519KeyPairFromPrivateBytes,
} from './crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from './errors.js'
import { defaultKeyGeneration, type KeyGeneration } from './key-generation.js'
import {
  IDENTITY_SIGNATURE_LABEL,
  ONE_TIME_PREKEY_SIGNATURE_LABEL,
  SIGNED_PREKEY_SIGNATURE_LABEL,
} from './labels.js'
import { ONE_TIME_PREKEY_BATCH } from './limits.js'

/** What everybody may know about a user: the two public keys and the binding signature. */
export interface PublicIdentity {
  /** X25519 identity key (32 bytes). */
  readonly identityKey: Uint8Array
  /** Ed25519 signing key (32 bytes). */
  readonly signingKey: Uint8Array
  /** Ed25519 signature by `signingKey` over IDENTITY_SIGNATURE_LABEL ‖ identityKey (64 bytes). */
  readonly identitySignature: Uint8Array
}

export interface Identity {
  readonly agreement: KeyPair
  readonly signing: KeyPair
  readonly public: PublicIdentity
}

export interface PublicPreKey {
  readonly keyId: number
  readonly publicKey: Uint8Array
  /** Ed25519 signature by the owner's signing key over label ‖ uint32(keyId) ‖ publicKey. */
  readonly signature: Uint8Array
}

export interface PreKeyPair {
  readonly keyId: number
  readonly keyPair: KeyPair
  readonly signature: Uint8Array
}

/** What the server hands out to start a session: one signed prekey and at most one one-time prekey. */
export interface PreKeyBundle {
  readonly identity: PublicIdentity
  readonly signedPreKey: PublicPreKey
  readonly oneTimePreKey?: PublicPreKey | undefined
}

export async function generateIdentity(options: KeyOptions = {}): Promise<Identity> {
  const [agreement, signing] = await Promise.all([
    generateX25519KeyPair(options),
    generateEd25519KeyPair(options),
  ])
  return assembleIdentity(agreement, signing)
}

/** Rebuilds an identity from its private keys (fixed test keys; storage uses importIdentity). */
export async function identityFromPrivateKeys(
  agreementPrivate: Uint8Array,
  signingSeed: Uint8Array,
  options: KeyOptions = {},
): Promise<Identity> {
  const [agreement, signing] = await Promise.all([
    x25519KeyPairFromPrivateBytes(agreementPrivate, options),
    ed25519KeyPairFromSeed(signingSeed, options),
  ])
  return assembleIdentity(agreement, signing)
}

async function assembleIdentity(agreement: KeyPair, signing: KeyPair): Promise<Identity> {
  const identitySignature = await ed25519Sign(
    signing.privateKey,
    concatBytes(IDENTITY_SIGNATURE_LABEL, agreement.publicKey),
  )
  return {
    agreement,
    signing,
    public: { identityKey: agreement.publicKey, signingKey: signing.publicKey, identitySignature },
  }
}

/** Checks that the signing key vouches for the identity key. Throws BadSignature otherwise. */
export async function verifyPublicIdentity(identity: PublicIdentity): Promise<void> {
  assertBytes(identity.identityKey, 32, 'identity key')
  assertBytes(identity.signingKey, 32, 'signing key')
  assertBytes(identity.identitySignature, 64, 'identity signature')
  const ok = await ed25519Verify(
    identity.signingKey,
    concatBytes(IDENTITY_SIGNATURE_LABEL, identity.identityKey),
    identity.identitySignature,
  )
  if (!ok) {
    throw new ProtocolError(
      ProtocolErrorCode.BadSignature,
      'expected a signing key that signed the identity key, got a bad signature',
    )
  }
}

function preKeySignedBytes(label: Uint8Array, keyId: number, publicKey: Uint8Array): Uint8Array {
  return concatBytes(label, new ByteWriter(4).u32(keyId).finish(), publicKey)
}

async function makePreKey(
  identity: Identity,
  label: Uint8Array,
  keyId: number,
  options: KeyOptions,
  keys: KeyGeneration,
): Promise<PreKeyPair> {
  assertUint32(keyId, 'prekey id')
  const keyPair = await keys.generateKeyPair(options)
  const signature = await ed25519Sign(
    identity.signing.privateKey,
    preKeySignedBytes(label, keyId, keyPair.publicKey),
  )
  return { keyId, keyPair, signature }
}

export function generateSignedPreKey(
  identity: Identity,
  keyId: number,
  options: KeyOptions = {},
  keys: KeyGeneration = defaultKeyGeneration,
): Promise<PreKeyPair> {
  return makePreKey(identity, SIGNED_PREKEY_SIGNATURE_LABEL, keyId, options, keys)
}

/** Makes `count` one-time prekeys with consecutive ids starting at `firstKeyId`. */
export function generateOneTimePreKeys(
  identity: Identity,
  firstKeyId: number,
  count: number,
  options: KeyOptions = {},
  keys: KeyGeneration = defaultKeyGeneration,
): Promise<PreKeyPair[]> {
  assertUint32(firstKeyId, 'first prekey id')
  if (!Number.isInteger(count) || count < 1 || count > ONE_TIME_PREKEY_BATCH) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `prekey count: expected 1..${ONE_TIME_PREKEY_BATCH}, got ${count}`,
    )
  }
  assertUint32(firstKeyId + count - 1, 'last prekey id')
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      makePreKey(identity, ONE_TIME_PREKEY_SIGNATURE_LABEL, firstKeyId + i, options, keys),
    ),
  )
}

export function publicPreKey(preKey: PreKeyPair): PublicPreKey {
  return { keyId: preKey.keyId, publicKey: preKey.keyPair.publicKey, signature: preKey.signature }
}

async function verifyPreKey(
  signingKey: Uint8Array,
  label: Uint8Array,
  preKey: PublicPreKey,
  what: string,
): Promise<void> {
  assertUint32(preKey.keyId, `${what} id`)
  assertBytes(preKey.publicKey, 32, `${what} public key`)
  assertBytes(preKey.signature, 64, `${what} signature`)
  const ok = await ed25519Verify(
    signingKey,
    preKeySignedBytes(label, preKey.keyId, preKey.publicKey),
    preKey.signature,
  )
  if (!ok) {
    throw new ProtocolError(
      ProtocolErrorCode.BadSignature,
      `expected a ${what} signed by the identity's signing key, got a bad signature`,
    )
  }
}

export function verifySignedPreKey(signingKey: Uint8Array, preKey: PublicPreKey): Promise<void> {
  return verifyPreKey(signingKey, SIGNED_PREKEY_SIGNATURE_LABEL, preKey, 'signed prekey')
}

export function verifyOneTimePreKey(signingKey: Uint8Array, preKey: PublicPreKey): Promise<void> {
  return verifyPreKey(signingKey, ONE_TIME_PREKEY_SIGNATURE_LABEL, preKey, 'one-time prekey')
}

/** Verifies every signature in a bundle; runs before any Diffie-Hellman with its keys. */
export async function verifyPreKeyBundle(bundle: PreKeyBundle): Promise<void> {
  await verifyPublicIdentity(bundle.identity)
  await verifySignedPreKey(bundle.identity.signingKey, bundle.signedPreKey)
  if (bundle.oneTimePreKey) await verifyOneTimePreKey(bundle.identity.signingKey, bundle.oneTimePreKey)
}

// --- Export format ------------------------------------------------------------------------------
//
// Identity and prekey private keys leave WebCrypto only where the platform cannot keep a
// non-extractable key across restarts (the terminal client). The bytes below are plaintext key
// material: callers must seal them (see at-rest.ts) before they touch a disk.
//
//   identity export v1 = 0x01 ‖ x25519 private (32) ‖ ed25519 seed (32) ‖ identitySignature (64)
//   prekey export v1   = 0x01 ‖ uint32 keyId ‖ x25519 private (32) ‖ signature (64)

export const IDENTITY_EXPORT_VERSION = 1
export const PREKEY_EXPORT_VERSION = 1

export async function exportIdentity(identity: Identity): Promise<Uint8Array> {
  const [agreement, signing] = await Promise.all([
    exportPrivateKeyBytes(identity.agreement.privateKey),
    exportPrivateKeyBytes(identity.signing.privateKey),
  ])
  return new ByteWriter(129)
    .u8(IDENTITY_EXPORT_VERSION)
    .fixed(agreement)
    .fixed(signing)
    .fixed(identity.public.identitySignature)
    .finish()
}

export async function importIdentity(bytes: Uint8Array, options: KeyOptions = {}): Promise<Identity> {
  assertBytes(bytes, undefined, 'identity export')
  const reader = new ByteReader(bytes, 'identity export')
  const version = reader.u8()
  if (version !== IDENTITY_EXPORT_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `identity export: expected version ${IDENTITY_EXPORT_VERSION}, got ${version}`,
    )
  }
  const agreementPrivate = reader.fixed(32)
  const signingSeed = reader.fixed(32)
  const identitySignature = reader.fixed(64)
  reader.end()
  const [agreement, signing] = await Promise.all([
    x25519KeyPairFromPrivateBytes(agreementPrivate, options),
    ed25519KeyPairFromSeed(signingSeed, options),
  ])
  const identity: Identity = {
    agreement,
    signing,
    public: { identityKey: agreement.publicKey, signingKey: signing.publicKey, identitySignature },
  }
  await verifyPublicIdentity(identity.public)
  return identity
}

export async function exportPreKey(preKey: PreKeyPair): Promise<Uint8Array> {
  const privateBytes = await exportPrivateKeyBytes(preKey.keyPair.privateKey)
  return new ByteWriter(101)
    .u8(PREKEY_EXPORT_VERSION)
    .u32(preKey.keyId)
    .fixed(privateBytes)
    .fixed(preKey.signature)
    .finish()
}

export async function importPreKey(bytes: Uint8Array, options: KeyOptions = {}): Promise<PreKeyPair> {
  assertBytes(bytes, undefined, 'prekey export')
  const reader = new ByteReader(bytes, 'prekey export')
  const version = reader.u8()
  if (version !== PREKEY_EXPORT_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `prekey export: expected version ${PREKEY_EXPORT_VERSION}, got ${version}`,
    )
  }
  const keyId = reader.u32()
  const privateBytes = reader.fixed(32)
  const signature = reader.fixed(64)
  reader.end()
  return { keyId, keyPair: await x25519KeyPairFromPrivateBytes(privateBytes, options), signature }
}
