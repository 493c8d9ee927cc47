/**
 * The wire formats of sender keys (docs/protocol.md §19): the distribution message, which a
 * member sends each other member device inside the pairwise sessions, and the group message, which
 * the server fans out. Both are parsed from untrusted bytes in a fixed order (version, fields, the
 * rest), with exact lengths; integers are big-endian.
 *
 *   distribution  = version(1) = 1 ‖ distributionId(16) ‖ chainId(u32) ‖ iteration(u32)
 *                   ‖ chainKey(32) ‖ signingKey(32)                                   89 bytes
 *   group message = version(1) = 1 ‖ distributionId(16) ‖ chainId(u32) ‖ iteration(u32)   header, 25 bytes
 *                   ‖ ciphertext (AES-256-GCM of the padded plaintext ‖ tag: 160·k + 16, k ≥ 1)
 *                   ‖ signature(64)   Ed25519 over GROUP_MESSAGE_SIGNATURE_LABEL ‖ every byte before it
 *
 * What this module does not know: keys, chains, records (shared/group/sender-key.ts).
 */
import { assertBytes, assertUint32, ByteReader, ByteWriter } from '../bytes.js'
import { AES_GCM_TAG_BYTES, ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES } from '../crypto/primitives.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from '../errors.js'
import { MAX_GROUP_MESSAGE_BYTES, PADDING_BLOCK_BYTES } from '../limits.js'

/** First byte of a sender-key distribution message. */
export const SENDER_KEY_DISTRIBUTION_VERSION = 1
/** First byte of a group message; also the message version a sender-key state is made for. */
export const GROUP_MESSAGE_VERSION = 1
/** A group's distribution id: random, chosen by whoever makes the group's sender keys (a UUID's size). */
export const DISTRIBUTION_ID_BYTES = 16
/** Bytes of a chain key. */
export const SENDER_CHAIN_KEY_BYTES = 32
/** Length of an encoded distribution message. */
export const SENDER_KEY_DISTRIBUTION_BYTES = 1 + DISTRIBUTION_ID_BYTES + 4 + 4 + SENDER_CHAIN_KEY_BYTES + 32
/** Length of a group message's header (the AEAD's associated data). */
export const GROUP_MESSAGE_HEADER_BYTES = 1 + DISTRIBUTION_ID_BYTES + 4 + 4

export interface SenderKeyDistribution {
  readonly version: number
  readonly distributionId: Uint8Array
  readonly chainId: number
  /** The iteration `chainKey` belongs to: the first message the receiver can read. */
  readonly iteration: number
  readonly chainKey: Uint8Array
  /** Ed25519 public key that signs every message of the chain. */
  readonly signingKey: Uint8Array
}

export interface GroupMessageHeader {
  readonly version: number
  readonly distributionId: Uint8Array
  readonly chainId: number
  readonly iteration: number
}

export interface GroupMessage extends GroupMessageHeader {
  /** The header's bytes exactly as received: the AEAD's associated data. */
  readonly headerBytes: Uint8Array
  readonly ciphertext: Uint8Array
  /** Every byte before the signature, exactly as received: what the signature covers (after the label). */
  readonly signedBytes: Uint8Array
  readonly signature: Uint8Array
}

function expectBytes(input: unknown, what: string): asserts input is Uint8Array {
  if (!(input instanceof Uint8Array)) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `${what}: expected bytes, got ${describeValue(input)}`,
    )
  }
}

export function encodeSenderKeyDistribution(distribution: SenderKeyDistribution): Uint8Array {
  assertBytes(distribution.distributionId, DISTRIBUTION_ID_BYTES, 'distribution id')
  assertUint32(distribution.chainId, 'chain id')
  assertUint32(distribution.iteration, 'iteration')
  assertBytes(distribution.chainKey, SENDER_CHAIN_KEY_BYTES, 'chain key')
  assertBytes(distribution.signingKey, ED25519_PUBLIC_KEY_BYTES, 'signing key')
  return new ByteWriter(SENDER_KEY_DISTRIBUTION_BYTES)
    .u8(distribution.version)
    .fixed(distribution.distributionId)
    .u32(distribution.chainId)
    .u32(distribution.iteration)
    .fixed(distribution.chainKey)
    .fixed(distribution.signingKey)
    .finish()
}

/** Decodes a distribution message from untrusted bytes (the plaintext of a pairwise message). */
export function decodeSenderKeyDistribution(input: unknown): SenderKeyDistribution {
  expectBytes(input, 'sender key distribution')
  const reader = new ByteReader(input, 'sender key distribution')
  const version = reader.u8()
  if (version !== SENDER_KEY_DISTRIBUTION_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sender key distribution: expected version ${SENDER_KEY_DISTRIBUTION_VERSION}, got ${version}`,
    )
  }
  const distribution: SenderKeyDistribution = {
    version,
    distributionId: reader.fixed(DISTRIBUTION_ID_BYTES),
    chainId: reader.u32(),
    iteration: reader.u32(),
    chainKey: reader.fixed(SENDER_CHAIN_KEY_BYTES),
    signingKey: reader.fixed(ED25519_PUBLIC_KEY_BYTES),
  }
  reader.end()
  return distribution
}

export function encodeGroupMessageHeader(header: GroupMessageHeader): Uint8Array {
  assertBytes(header.distributionId, DISTRIBUTION_ID_BYTES, 'distribution id')
  return new ByteWriter(GROUP_MESSAGE_HEADER_BYTES)
    .u8(header.version)
    .fixed(header.distributionId)
    .u32(header.chainId)
    .u32(header.iteration)
    .finish()
}

/**
 * Decodes a group message from untrusted bytes. Checks the layout only: the signature, the chain
 * and the ciphertext are checked by groupDecrypt.
 */
export function decodeGroupMessage(input: unknown): GroupMessage {
  expectBytes(input, 'group message')
  if (input.length > MAX_GROUP_MESSAGE_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `group message: expected at most ${MAX_GROUP_MESSAGE_BYTES} bytes, got ${input.length}`,
    )
  }
  const reader = new ByteReader(input, 'group message')
  const version = reader.u8()
  if (version !== GROUP_MESSAGE_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `group message: expected version ${GROUP_MESSAGE_VERSION}, got ${version}`,
    )
  }
  const distributionId = reader.fixed(DISTRIBUTION_ID_BYTES)
  const chainId = reader.u32()
  const iteration = reader.u32()
  const ciphertextLength = reader.remaining - ED25519_SIGNATURE_BYTES
  const bodyLength = ciphertextLength - AES_GCM_TAG_BYTES
  if (bodyLength < PADDING_BLOCK_BYTES || bodyLength % PADDING_BLOCK_BYTES !== 0) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `group message: expected ciphertext of 160·k + 16 bytes and a 64-byte signature, got ${reader.remaining} bytes after the header`,
    )
  }
  const ciphertext = reader.fixed(ciphertextLength)
  const signature = reader.fixed(ED25519_SIGNATURE_BYTES)
  reader.end()
  return {
    version,
    distributionId,
    chainId,
    iteration,
    headerBytes: input.slice(0, GROUP_MESSAGE_HEADER_BYTES),
    ciphertext,
    signedBytes: input.slice(0, input.length - ED25519_SIGNATURE_BYTES),
    signature,
  }
}
