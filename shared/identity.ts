/**
 * A user's long-term keys and their signed prekeys. An identity is three keys made on the client:
 * X25519 for key agreement, Ed25519 to sign the X25519 key and every prekey (WebCrypto has no
 * XEdDSA, so, as in Olm, a separate key signs), and RSA-OAEP-3072 for the server's login tokens
 * (kept separately by the client core; this module covers the two curve keys).
 *
 * This module knows nothing about storage or the network: callers persist what it returns.
 */
import { DEFAULT_DEVICE_ID } from './address.js'
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
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { defaultKeyGeneration, type KeyGeneration } from './key-generation.js'
import {
  DEVICE_ONE_TIME_PREKEY_SIGNATURE_LABEL,
  DEVICE_SIGNED_PREKEY_SIGNATURE_LABEL,
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
  /**
   * Ed25519 signature by the owner's signing key over label ‖ uint32(keyId) ‖ publicKey on device 1,
   * over deviceLabel ‖ uint32(deviceId) ‖ uint32(keyId) ‖ publicKey on the others (`preKeySignedBytes`).
   */
  readonly signature: Uint8Array
}

export interface PreKeyPair {
  readonly keyId: number
  readonly keyPair: KeyPair
  readonly signature: Uint8Array
}

/**
 * What the server hands out to start a session with one device of an account: one signed prekey and
 * at most one one-time prekey of that device.
 */
export interface PreKeyBundle {
  /** The device whose keys these are: their signatures must be for this device (1 … 2^32 − 1). */
  readonly deviceId: number
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

/** The two kinds of prekey, each with its label for device 1 and its label for the devices after it. */
const PREKEY_KINDS = {
  signed: {
    name: 'signed prekey',
    label: SIGNED_PREKEY_SIGNATURE_LABEL,
    deviceLabel: DEVICE_SIGNED_PREKEY_SIGNATURE_LABEL,
  },
  oneTime: {
    name: 'one-time prekey',
    label: ONE_TIME_PREKEY_SIGNATURE_LABEL,
    deviceLabel: DEVICE_ONE_TIME_PREKEY_SIGNATURE_LABEL,
  },
} as const

type PreKeyKind = (typeof PREKEY_KINDS)[keyof typeof PREKEY_KINDS]

/** Device ids count from 1 (the device that registered); they travel as uint32. */
function assertDeviceId(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 0xffff_ffff) {
    const got = typeof value === 'number' ? String(value) : describeValue(value)
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `${name}: expected an integer in 1..4294967295, got ${got}`,
    )
  }
}

/**
 * What a prekey's signature covers (docs/protocol.md §2.2). Device 1 signs label ‖ u32 keyId ‖ key,
 * exactly as before accounts had devices, so every key signed then stays valid. Devices 2 and up
 * sign deviceLabel ‖ u32 deviceId ‖ u32 keyId ‖ key: a key signed for one device fails as any
 * other, so a server (which cannot sign) cannot pass device 1's keys off as a "device 2".
 */
function preKeySignedBytes(
  kind: PreKeyKind,
  deviceId: number,
  keyId: number,
  publicKey: Uint8Array,
): Uint8Array {
  if (deviceId === DEFAULT_DEVICE_ID)
    return concatBytes(kind.label, new ByteWriter(4).u32(keyId).finish(), publicKey)
  return concatBytes(kind.deviceLabel, new ByteWriter(8).u32(deviceId).u32(keyId).finish(), publicKey)
}

async function makePreKey(
  identity: Identity,
  kind: PreKeyKind,
  deviceId: number,
  keyId: number,
  options: KeyOptions,
  keys: KeyGeneration,
): Promise<PreKeyPair> {
  assertDeviceId(deviceId, `${kind.name} device id`)
  assertUint32(keyId, 'prekey id')
  const keyPair = await keys.generateKeyPair(options)
  const signature = await ed25519Sign(
    identity.signing.privateKey,
    preKeySignedBytes(kind, deviceId, keyId, keyPair.publicKey),
  )
  return { keyId, keyPair, signature }
}

/** Makes a signed prekey of device `deviceId` of the identity's account (1: the one that registered). */
export function generateSignedPreKey(
  identity: Identity,
  deviceId: number,
  keyId: number,
  options: KeyOptions = {},
  keys: KeyGeneration = defaultKeyGeneration,
): Promise<PreKeyPair> {
  return makePreKey(identity, PREKEY_KINDS.signed, deviceId, keyId, options, keys)
}

/** Makes `count` one-time prekeys of device `deviceId`, with consecutive ids from `firstKeyId`. */
export function generateOneTimePreKeys(
  identity: Identity,
  deviceId: number,
  firstKeyId: number,
  count: number,
  options: KeyOptions = {},
  keys: KeyGeneration = defaultKeyGeneration,
): Promise<PreKeyPair[]> {
  assertDeviceId(deviceId, 'one-time prekey device id')
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
      makePreKey(identity, PREKEY_KINDS.oneTime, deviceId, firstKeyId + i, options, keys),
    ),
  )
}

export function publicPreKey(preKey: PreKeyPair): PublicPreKey {
  return { keyId: preKey.keyId, publicKey: preKey.keyPair.publicKey, signature: preKey.signature }
}

/** Checks the shape (throwing InvalidInput) and answers whether the signature is for this device. */
async function preKeySignatureHolds(
  signingKey: Uint8Array,
  kind: PreKeyKind,
  deviceId: number,
  preKey: PublicPreKey,
): Promise<boolean> {
  assertDeviceId(deviceId, `${kind.name} device id`)
  assertUint32(preKey.keyId, `${kind.name} id`)
  assertBytes(preKey.publicKey, 32, `${kind.name} public key`)
  assertBytes(preKey.signature, 64, `${kind.name} signature`)
  return ed25519Verify(
    signingKey,
    preKeySignedBytes(kind, deviceId, preKey.keyId, preKey.publicKey),
    preKey.signature,
  )
}

async function verifyPreKey(
  signingKey: Uint8Array,
  kind: PreKeyKind,
  deviceId: number,
  preKey: PublicPreKey,
): Promise<void> {
  if (!(await preKeySignatureHolds(signingKey, kind, deviceId, preKey))) {
    throw new ProtocolError(
      ProtocolErrorCode.BadSignature,
      `expected a ${kind.name} of device ${deviceId} signed by the identity's signing key, got a bad signature`,
    )
  }
}

/** Checks that `preKey` is a signed prekey of device `deviceId`, signed by `signingKey`. */
export function verifySignedPreKey(
  signingKey: Uint8Array,
  deviceId: number,
  preKey: PublicPreKey,
): Promise<void> {
  return verifyPreKey(signingKey, PREKEY_KINDS.signed, deviceId, preKey)
}

/** Checks that `preKey` is a one-time prekey of device `deviceId`, signed by `signingKey`. */
export function verifyOneTimePreKey(
  signingKey: Uint8Array,
  deviceId: number,
  preKey: PublicPreKey,
): Promise<void> {
  return verifyPreKey(signingKey, PREKEY_KINDS.oneTime, deviceId, preKey)
}

/**
 * Verifies every signature in a bundle of `owner`'s device `bundle.deviceId`; runs before any
 * Diffie-Hellman with its keys. A prekey that fails is refused with a message a UI can show as it
 * is: it names the account and the device, and what it may mean.
 */
export async function verifyPreKeyBundle(bundle: PreKeyBundle, owner: string): Promise<void> {
  assertDeviceId(bundle.deviceId, `${owner}'s bundle device id`)
  await verifyPublicIdentity(bundle.identity)
  const preKeys: [PreKeyKind, PublicPreKey][] = [[PREKEY_KINDS.signed, bundle.signedPreKey]]
  if (bundle.oneTimePreKey) preKeys.push([PREKEY_KINDS.oneTime, bundle.oneTimePreKey])
  for (const [kind, preKey] of preKeys) {
    if (await preKeySignatureHolds(bundle.identity.signingKey, kind, bundle.deviceId, preKey)) continue
    // Device 1 always exists, so a bad signature there is a replaced key; any other may be a
    // device the server made up.
    const meaning =
      bundle.deviceId === DEFAULT_DEVICE_ID
        ? 'the server may have replaced it'
        : `the server may have added a device ${owner} did not link`
    throw new ProtocolError(
      ProtocolErrorCode.BadSignature,
      `${owner}'s device ${bundle.deviceId}: its ${kind.name} is not signed by ${owner}'s identity key; ${meaning}`,
    )
  }
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
