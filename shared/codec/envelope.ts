/**
 * The binary envelope that carries one encrypted message between two clients (the server sees it
 * only as opaque bytes). Parsed in a fixed order — version, type, fields, ciphertext — and every
 * byte before the ciphertext is authenticated as AEAD associated data.
 *
 *   envelope      = version(1) ‖ type(1) ‖ [prekey header, if type = 2] ‖ ratchet header ‖ ciphertext
 *   version       = the session's (session.ts): 2 when both usernames are bound into its AD, 1 for
 *                   sessions made before that; the layout is the same for both
 *   prekey header = identityKey(32) ‖ signingKey(32) ‖ identitySignature(64) ‖ ephemeralKey(32)
 *                   ‖ signedPreKeyId(u32) ‖ hasOneTimePreKey(u8: 0|1) ‖ oneTimePreKeyId(u32, 0 if absent)
 *   ratchet header = ratchetKey(32) ‖ previousChainLength(u32) ‖ index(u32)
 *   ciphertext    = AES-256-GCM(padded plaintext) ‖ tag(16); length = 160·k + 16, k ≥ 1
 *
 * Integers are big-endian.
 */
import { assertBytes, ByteReader, ByteWriter } from '../bytes.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from '../errors.js'
import type { PublicIdentity } from '../identity.js'
import { MAX_ENVELOPE_BYTES, PADDING_BLOCK_BYTES } from '../limits.js'

/** The version of envelopes of sessions made now (usernames bound into AD, docs/protocol.md §4.4). */
export const ENVELOPE_VERSION = 2
/**
 * The version of envelopes of sessions made before usernames were bound: still read and written on
 * sessions established then, so those keep working; never the start of a new session (session.ts).
 */
export const UNBOUND_ENVELOPE_VERSION = 1
export type EnvelopeVersion = typeof UNBOUND_ENVELOPE_VERSION | typeof ENVELOPE_VERSION
export const EnvelopeType = { Message: 1, PreKeyMessage: 2 } as const
export type EnvelopeType = (typeof EnvelopeType)[keyof typeof EnvelopeType]

const AEAD_TAG_BYTES = 16

export interface RatchetHeader {
  readonly ratchetKey: Uint8Array
  readonly previousChainLength: number
  readonly index: number
}

export interface PreKeyHeader {
  readonly initiator: PublicIdentity
  readonly ephemeralKey: Uint8Array
  readonly signedPreKeyId: number
  readonly oneTimePreKeyId: number | undefined
}

export interface Envelope {
  readonly version: EnvelopeVersion
  readonly type: EnvelopeType
  readonly preKey: PreKeyHeader | undefined
  readonly header: RatchetHeader
  /** Every byte before the ciphertext, exactly as received: the AEAD's associated data suffix. */
  readonly headerBytes: Uint8Array
  readonly ciphertext: Uint8Array
}

export function encodeEnvelopeHeader(
  version: EnvelopeVersion,
  preKey: PreKeyHeader | undefined,
  header: RatchetHeader,
): Uint8Array {
  const writer = new ByteWriter(preKey ? 211 : 42)
  writer.u8(version).u8(preKey ? EnvelopeType.PreKeyMessage : EnvelopeType.Message)
  if (preKey) {
    writer
      .fixed(preKey.initiator.identityKey)
      .fixed(preKey.initiator.signingKey)
      .fixed(preKey.initiator.identitySignature)
      .fixed(preKey.ephemeralKey)
      .u32(preKey.signedPreKeyId)
      .u8(preKey.oneTimePreKeyId === undefined ? 0 : 1)
      .u32(preKey.oneTimePreKeyId ?? 0)
  }
  return writer.fixed(header.ratchetKey).u32(header.previousChainLength).u32(header.index).finish()
}

/** Decodes an envelope from untrusted bytes; throws ProtocolError (MalformedMessage and friends). */
export function decodeEnvelope(input: unknown): Envelope {
  if (!(input instanceof Uint8Array)) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `envelope: expected bytes, got ${describeValue(input)}`,
    )
  }
  if (input.length > MAX_ENVELOPE_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `envelope: expected at most ${MAX_ENVELOPE_BYTES} bytes, got ${input.length}`,
    )
  }
  const reader = new ByteReader(input, 'envelope')
  const version = reader.u8()
  if (version !== ENVELOPE_VERSION && version !== UNBOUND_ENVELOPE_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `envelope: expected version ${UNBOUND_ENVELOPE_VERSION} or ${ENVELOPE_VERSION}, got ${version}`,
    )
  }
  const type = reader.u8()
  let preKey: PreKeyHeader | undefined
  if (type === EnvelopeType.PreKeyMessage) {
    const identityKey = reader.fixed(32)
    const signingKey = reader.fixed(32)
    const identitySignature = reader.fixed(64)
    const ephemeralKey = reader.fixed(32)
    const signedPreKeyId = reader.u32()
    const hasOneTimePreKey = reader.u8()
    const oneTimePreKeyId = reader.u32()
    if (hasOneTimePreKey > 1) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `envelope: expected one-time prekey flag 0 or 1, got ${hasOneTimePreKey}`,
      )
    }
    if (hasOneTimePreKey === 0 && oneTimePreKeyId !== 0) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `envelope: expected one-time prekey id 0 without the flag, got ${oneTimePreKeyId}`,
      )
    }
    preKey = {
      initiator: { identityKey, signingKey, identitySignature },
      ephemeralKey,
      signedPreKeyId,
      oneTimePreKeyId: hasOneTimePreKey ? oneTimePreKeyId : undefined,
    }
  } else if (type !== EnvelopeType.Message) {
    throw new ProtocolError(ProtocolErrorCode.MalformedMessage, `envelope: expected type 1 or 2, got ${type}`)
  }
  const header: RatchetHeader = {
    ratchetKey: reader.fixed(32),
    previousChainLength: reader.u32(),
    index: reader.u32(),
  }
  const headerLength = input.length - reader.remaining
  const ciphertext = reader.rest()
  const bodyLength = ciphertext.length - AEAD_TAG_BYTES
  if (bodyLength < PADDING_BLOCK_BYTES || bodyLength % PADDING_BLOCK_BYTES !== 0) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `envelope: expected ciphertext of 160·k + 16 bytes, got ${ciphertext.length}`,
    )
  }
  return { version, type, preKey, header, headerBytes: input.slice(0, headerLength), ciphertext }
}

export function encodeEnvelope(headerBytes: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  assertBytes(headerBytes, undefined, 'envelope header')
  assertBytes(ciphertext, undefined, 'envelope ciphertext')
  const out = new Uint8Array(headerBytes.length + ciphertext.length)
  out.set(headerBytes)
  out.set(ciphertext, headerBytes.length)
  return out
}
