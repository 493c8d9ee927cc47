/**
 * Versioned bytes for sender-key records, for the clients' stores (which seal them at rest: these
 * bytes hold chain keys and, in our own record, the signing key). Fields in a fixed order;
 * integers big-endian; optional fields behind a 0/1 byte (docs/protocol.md §19.5).
 *
 *   record v1 = version(1) = 1 ‖ distributionId(16) ‖ stateCount(u8, ≤ MAX_SENDER_KEY_STATES)
 *               ‖ state*   newest first
 *   state     = messageVersion(1) ‖ chainId(u32) ‖ iteration(u32) ‖ chainKey(32)
 *               ‖ signingPublicKey(32) ‖ opt(signing seed(32))
 *               ‖ skippedCount(u32, ≤ MAX_SENDER_KEY_SKIPPED_KEYS)
 *               ‖ (iteration(u32) ‖ seed(32))*   oldest first
 *
 * Decoding is strict: a record larger than MAX_SENDER_KEY_RECORD_BYTES is refused before parsing;
 * a repeated chain id, a skipped iteration at or past its chain's iteration or repeated, a seed
 * whose public key is not the one stored, or trailing bytes are malformed.
 */
import { assertBytes, ByteReader, ByteWriter, equalBytes } from '../bytes.js'
import { ed25519KeyPairFromSeed, exportPrivateKeyBytes } from '../crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from '../errors.js'
import { MAX_SENDER_KEY_RECORD_BYTES, MAX_SENDER_KEY_SKIPPED_KEYS, MAX_SENDER_KEY_STATES } from '../limits.js'
import type { SenderKeyRecord, SenderKeyState } from './sender-key.js'
import { DISTRIBUTION_ID_BYTES, GROUP_MESSAGE_VERSION, SENDER_CHAIN_KEY_BYTES } from './sender-key-codec.js'

/** The sender-key record format this code writes and reads. */
export const SENDER_KEY_RECORD_SERIALIZATION_VERSION = 1

function malformed(message: string): ProtocolError {
  return new ProtocolError(ProtocolErrorCode.MalformedMessage, `sender key record: ${message}`)
}

/**
 * Serializes a record. Our own record's signing key is exported: it must have been made
 * extractable (createSenderKey's `extractable`), else this fails with E2E_ERR_INVALID_STATE.
 */
export async function serializeSenderKeyRecord(record: SenderKeyRecord): Promise<Uint8Array> {
  assertBytes(record.distributionId, DISTRIBUTION_ID_BYTES, 'distribution id')
  if (record.states.length > MAX_SENDER_KEY_STATES) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `sender key record: expected at most ${MAX_SENDER_KEY_STATES} states, got ${record.states.length}`,
    )
  }
  const seeds = await Promise.all(
    record.states.map((state) =>
      state.signingPrivateKey === null ? null : exportPrivateKeyBytes(state.signingPrivateKey),
    ),
  )
  const writer = new ByteWriter(256)
  writer.u8(SENDER_KEY_RECORD_SERIALIZATION_VERSION).fixed(record.distributionId).u8(record.states.length)
  record.states.forEach((state, i) => {
    writer.u8(state.version).u32(state.chainId).u32(state.iteration)
    writer.fixed(state.chainKey).fixed(state.signingPublicKey)
    const seed = seeds[i]
    if (seed === null || seed === undefined) writer.u8(0)
    else writer.u8(1).fixed(seed)
    writer.u32(state.skippedKeys.size)
    for (const [iteration, skippedSeed] of state.skippedKeys) writer.u32(iteration).fixed(skippedSeed)
  })
  return writer.finish()
}

async function readState(reader: ByteReader): Promise<SenderKeyState> {
  const version = reader.u8()
  if (version !== GROUP_MESSAGE_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sender key record: expected message version ${GROUP_MESSAGE_VERSION}, got ${version}`,
    )
  }
  const chainId = reader.u32()
  const iteration = reader.u32()
  const chainKey = reader.fixed(SENDER_CHAIN_KEY_BYTES)
  const signingPublicKey = reader.fixed(32)
  const flag = reader.u8()
  if (flag > 1) throw malformed(`expected flag 0 or 1, got ${flag}`)
  const seed = flag === 1 ? reader.fixed(32) : null
  const skippedCount = reader.u32()
  if (skippedCount > MAX_SENDER_KEY_SKIPPED_KEYS) {
    throw malformed(`expected at most ${MAX_SENDER_KEY_SKIPPED_KEYS} skipped keys, got ${skippedCount}`)
  }
  const skippedKeys = new Map<number, Uint8Array>()
  for (let i = 0; i < skippedCount; i++) {
    const skipped = reader.u32()
    if (skipped >= iteration || skippedKeys.has(skipped)) {
      throw malformed(`expected distinct skipped iterations below ${iteration}, got ${skipped}`)
    }
    skippedKeys.set(skipped, reader.fixed(32))
  }
  let signingPrivateKey: SenderKeyState['signingPrivateKey'] = null
  if (seed !== null) {
    const pair = await ed25519KeyPairFromSeed(seed, { extractable: true })
    if (!equalBytes(pair.publicKey, signingPublicKey)) {
      throw malformed('expected the signing seed of the stored public key, got another')
    }
    signingPrivateKey = pair.privateKey
  }
  return { version, chainId, iteration, chainKey, signingPublicKey, signingPrivateKey, skippedKeys }
}

export async function deserializeSenderKeyRecord(bytes: Uint8Array): Promise<SenderKeyRecord> {
  assertBytes(bytes, undefined, 'sender key record')
  if (bytes.length > MAX_SENDER_KEY_RECORD_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `sender key record: expected at most ${MAX_SENDER_KEY_RECORD_BYTES} bytes, got ${bytes.length}`,
    )
  }
  const reader = new ByteReader(bytes, 'sender key record')
  const version = reader.u8()
  if (version !== SENDER_KEY_RECORD_SERIALIZATION_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sender key record: expected version ${SENDER_KEY_RECORD_SERIALIZATION_VERSION}, got ${version}`,
    )
  }
  const distributionId = reader.fixed(DISTRIBUTION_ID_BYTES)
  const stateCount = reader.u8()
  if (stateCount > MAX_SENDER_KEY_STATES) {
    throw malformed(`expected at most ${MAX_SENDER_KEY_STATES} states, got ${stateCount}`)
  }
  const states: SenderKeyState[] = []
  for (let i = 0; i < stateCount; i++) {
    const state = await readState(reader)
    if (states.some((other) => other.chainId === state.chainId)) {
      throw malformed(`expected distinct chain ids, got ${state.chainId} twice`)
    }
    states.push(state)
  }
  reader.end()
  return { distributionId, states }
}
