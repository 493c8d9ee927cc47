/**
 * Sender keys (docs/protocol.md §19; libsignal's sender_keys.rs and group_cipher.rs), as pure
 * functions over immutable records:
 *
 *   createSenderKey(distributionId)          → our own record (one state, with the signing private key)
 *   senderKeyDistribution(ownRecord)         → what every other member device must receive first
 *   processDistribution(record, distribution) → the receiver's record, with that chain added
 *   groupEncrypt(ownRecord, plaintext)       → { record', message }
 *   groupDecrypt(record, message)            → { record', plaintext }
 *
 * A record belongs to one sender device and one distribution id, and holds up to
 * MAX_SENDER_KEY_STATES chains, newest first (a rotated key is a new chain id). Each chain is the
 * pairwise ratchet's symmetric chain (shared/ratchet/kdf.ts: HMAC 0x01 → message key seed, 0x02 →
 * next chain key) with the seed expanded under a label of its own, and every message is signed by
 * the chain's Ed25519 key, which only the sender holds: other members can read, not forge.
 *
 * Nothing here mutates its input, so a failed decryption (bad signature, unknown chain, replay, a
 * jump past the limit, a bad tag) leaves the caller holding the untouched record.
 *
 * What this module does not know: who is in the group, how distributions travel (the pairwise
 * sessions), when keys rotate, storage. Those are the next steps of issue 13.
 */
import { assertBytes, concatBytes, equalBytes } from '../bytes.js'
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  generateEd25519KeyPair,
  type KeyOptions,
  type PrivateKeyHandle,
  randomBytes,
} from '../crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from '../errors.js'
import { GROUP_MESSAGE_SIGNATURE_LABEL, SENDER_KEY_MESSAGE_KEY_INFO } from '../labels.js'
import { MAX_SENDER_KEY_FORWARD_JUMP, MAX_SENDER_KEY_SKIPPED_KEYS, MAX_SENDER_KEY_STATES } from '../limits.js'
import { chainStep, messageKey } from '../ratchet/kdf.js'
import { pad, unpad } from '../ratchet/padding.js'
import {
  DISTRIBUTION_ID_BYTES,
  decodeGroupMessage,
  encodeGroupMessageHeader,
  GROUP_MESSAGE_VERSION,
  SENDER_CHAIN_KEY_BYTES,
  SENDER_KEY_DISTRIBUTION_VERSION,
  type SenderKeyDistribution,
} from './sender-key-codec.js'

/** The last iteration a chain can reach: iterations are u32 on the wire. */
const LAST_ITERATION = 0xffff_ffff

/** One chain of one sender device. */
export interface SenderKeyState {
  /** The group message version this chain speaks (GROUP_MESSAGE_VERSION). */
  readonly version: number
  readonly chainId: number
  /** The iteration `chainKey` belongs to: the next message key this chain derives. */
  readonly iteration: number
  readonly chainKey: Uint8Array
  /** Verifies every message of the chain. */
  readonly signingPublicKey: Uint8Array
  /** Ours only: signs what we send. Null in every record of another device's chain. */
  readonly signingPrivateKey: PrivateKeyHandle | null
  /**
   * Seeds of message keys derived past but not yet used, by iteration, oldest first (Map keeps
   * insertion order), at most MAX_SENDER_KEY_SKIPPED_KEYS.
   */
  readonly skippedKeys: ReadonlyMap<number, Uint8Array>
}

/** Every chain known of one sender device for one distribution id, newest first. */
export interface SenderKeyRecord {
  readonly distributionId: Uint8Array
  readonly states: readonly SenderKeyState[]
}

export interface CreateSenderKeyOptions extends KeyOptions {
  /**
   * Where the chain id, chain key and signing seed come from (fixed in known-answer tests). Without
   * it the signing key is made by the platform and the rest comes from `randomBytes`.
   */
  readonly random?: (length: number) => Uint8Array
}

function assertDistributionId(distributionId: unknown): asserts distributionId is Uint8Array {
  assertBytes(distributionId, DISTRIBUTION_ID_BYTES, 'distribution id')
}

/**
 * Makes our own sender key for a distribution id: a random chain id and chain key at iteration 0
 * and a new Ed25519 key pair. The private key is non-extractable unless `extractable` is asked
 * for, as with identity keys (shared/identity.ts); a client that stores its record as bytes
 * (serializeSenderKeyRecord) needs it extractable. Rotating is making a new one.
 */
export async function createSenderKey(
  distributionId: Uint8Array,
  options: CreateSenderKeyOptions = {},
): Promise<SenderKeyRecord> {
  assertDistributionId(distributionId)
  const random = options.random ?? randomBytes
  const keyOptions: KeyOptions = { extractable: options.extractable ?? false }
  const signing =
    options.random === undefined
      ? await generateEd25519KeyPair(keyOptions)
      : await ed25519KeyPairFromSeed(random(ED25519_SEED_BYTES), keyOptions)
  const idBytes = random(4)
  const chainId = new DataView(idBytes.buffer, idBytes.byteOffset, 4).getUint32(0)
  const chainKey = random(SENDER_CHAIN_KEY_BYTES)
  assertBytes(chainKey, SENDER_CHAIN_KEY_BYTES, 'chain key')
  return {
    distributionId: distributionId.slice(),
    states: [
      {
        version: GROUP_MESSAGE_VERSION,
        chainId,
        iteration: 0,
        chainKey,
        signingPublicKey: signing.publicKey,
        signingPrivateKey: signing.privateKey,
        skippedKeys: new Map(),
      },
    ],
  }
}

function ownState(record: SenderKeyRecord): SenderKeyState & { signingPrivateKey: PrivateKeyHandle } {
  const state = record.states[0]
  if (state === undefined || state.signingPrivateKey === null) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      'expected our own sender key (a record whose newest chain holds its signing key), got another device’s',
    )
  }
  return state as SenderKeyState & { signingPrivateKey: PrivateKeyHandle }
}

/**
 * The distribution message of our current chain: its chain key at the current iteration, so the
 * receiver reads what we send from now on and nothing sent before (a device that joins later gets
 * no earlier messages).
 */
export function senderKeyDistribution(ownRecord: SenderKeyRecord): SenderKeyDistribution {
  const state = ownState(ownRecord)
  return {
    version: SENDER_KEY_DISTRIBUTION_VERSION,
    distributionId: ownRecord.distributionId.slice(),
    chainId: state.chainId,
    iteration: state.iteration,
    chainKey: state.chainKey.slice(),
    signingKey: state.signingPublicKey.slice(),
  }
}

/** An empty record for a sender device, to which distributions are added. */
export function emptySenderKeyRecord(distributionId: Uint8Array): SenderKeyRecord {
  assertDistributionId(distributionId)
  return { distributionId: distributionId.slice(), states: [] }
}

/**
 * Adds a sender's chain to our record of that sender device (null: we have none yet). A chain we
 * already hold with the same signing key is kept as it is, moved to the front: a distribution
 * replayed later cannot rewind the chain and so make old messages decrypt again. A chain id we
 * hold with another signing key is replaced. At most MAX_SENDER_KEY_STATES chains are kept, the
 * oldest dropped.
 *
 * The caller must have received `distribution` over the pairwise session of the device whose
 * record this is: that is what makes the chain that device's.
 */
export function processDistribution(
  record: SenderKeyRecord | null,
  distribution: SenderKeyDistribution,
): SenderKeyRecord {
  assertDistributionId(distribution.distributionId)
  assertBytes(distribution.chainKey, SENDER_CHAIN_KEY_BYTES, 'chain key')
  assertBytes(distribution.signingKey, ED25519_PUBLIC_KEY_BYTES, 'signing key')
  if (distribution.version !== SENDER_KEY_DISTRIBUTION_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sender key distribution: expected version ${SENDER_KEY_DISTRIBUTION_VERSION}, got ${distribution.version}`,
    )
  }
  const current = record ?? emptySenderKeyRecord(distribution.distributionId)
  if (!equalBytes(current.distributionId, distribution.distributionId)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      'expected a distribution for this record’s distribution id, got one for another',
    )
  }
  const same = current.states.find(
    (state) =>
      state.chainId === distribution.chainId && equalBytes(state.signingPublicKey, distribution.signingKey),
  )
  const state: SenderKeyState = same ?? {
    version: GROUP_MESSAGE_VERSION,
    chainId: distribution.chainId,
    iteration: distribution.iteration,
    chainKey: distribution.chainKey.slice(),
    signingPublicKey: distribution.signingKey.slice(),
    signingPrivateKey: null,
    skippedKeys: new Map(),
  }
  const others = current.states.filter((existing) => existing.chainId !== distribution.chainId)
  return {
    distributionId: current.distributionId,
    states: [state, ...others].slice(0, MAX_SENDER_KEY_STATES),
  }
}

export interface GroupEncryptResult {
  readonly record: SenderKeyRecord
  /** The group message: one ciphertext for every member device. */
  readonly message: Uint8Array
}

function replaceState(record: SenderKeyRecord, index: number, state: SenderKeyState): SenderKeyRecord {
  const states = record.states.slice()
  states[index] = state
  return { distributionId: record.distributionId, states }
}

/** Encrypts one group message with our newest chain, signs it, and steps the chain. */
export async function groupEncrypt(
  ownRecord: SenderKeyRecord,
  plaintext: Uint8Array,
): Promise<GroupEncryptResult> {
  assertBytes(plaintext, undefined, 'plaintext')
  const state = ownState(ownRecord)
  if (state.iteration === LAST_ITERATION) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      `expected a sender chain below iteration ${LAST_ITERATION}, got one at its end (rotate the sender key)`,
    )
  }
  const padded = pad(plaintext)
  const { messageKeySeed, nextChainKey } = chainStep(state.chainKey)
  const headerBytes = encodeGroupMessageHeader({
    version: state.version,
    distributionId: ownRecord.distributionId,
    chainId: state.chainId,
    iteration: state.iteration,
  })
  const { key, nonce } = messageKey(messageKeySeed, SENDER_KEY_MESSAGE_KEY_INFO)
  const ciphertext = await aesGcmEncrypt(key, nonce, padded, headerBytes)
  const signedBytes = concatBytes(headerBytes, ciphertext)
  const signature = await ed25519Sign(
    state.signingPrivateKey,
    concatBytes(GROUP_MESSAGE_SIGNATURE_LABEL, signedBytes),
  )
  return {
    record: replaceState(ownRecord, 0, { ...state, iteration: state.iteration + 1, chainKey: nextChainKey }),
    message: concatBytes(signedBytes, signature),
  }
}

export interface GroupDecryptResult {
  readonly record: SenderKeyRecord
  readonly plaintext: Uint8Array
}

/** The message key seed for `iteration` and the state after using it; throws before any change. */
function takeSeed(state: SenderKeyState, iteration: number): { seed: Uint8Array; state: SenderKeyState } {
  if (iteration === LAST_ITERATION) {
    // groupEncrypt never sends it, and the chain after it could not be stored (iterations are u32).
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `group message iteration: expected below ${LAST_ITERATION}, got ${iteration}`,
    )
  }
  if (iteration < state.iteration) {
    const seed = state.skippedKeys.get(iteration)
    if (seed === undefined) {
      throw new ProtocolError(
        ProtocolErrorCode.DuplicateMessage,
        `expected iteration ≥ ${state.iteration} or a skipped one, got ${iteration} (already received, or its key is gone)`,
      )
    }
    const skippedKeys = new Map(state.skippedKeys)
    skippedKeys.delete(iteration)
    return { seed, state: { ...state, skippedKeys } }
  }
  const jump = iteration - state.iteration
  if (jump > MAX_SENDER_KEY_FORWARD_JUMP) {
    throw new ProtocolError(
      ProtocolErrorCode.TooManySkippedMessages,
      `group message iteration: expected a jump of at most ${MAX_SENDER_KEY_FORWARD_JUMP}, got ${jump}`,
    )
  }
  const skippedKeys = new Map(state.skippedKeys)
  // Only the newest MAX_SENDER_KEY_SKIPPED_KEYS of a long jump could survive the trim below.
  const keepFrom = iteration - MAX_SENDER_KEY_SKIPPED_KEYS
  let chainKey = state.chainKey
  for (let i = state.iteration; i < iteration; i++) {
    const step = chainStep(chainKey)
    if (i >= keepFrom) skippedKeys.set(i, step.messageKeySeed)
    chainKey = step.nextChainKey
  }
  // Oldest first out: Map iteration follows insertion order.
  for (const key of skippedKeys.keys()) {
    if (skippedKeys.size <= MAX_SENDER_KEY_SKIPPED_KEYS) break
    skippedKeys.delete(key)
  }
  const step = chainStep(chainKey)
  return {
    seed: step.messageKeySeed,
    state: { ...state, iteration: iteration + 1, chainKey: step.nextChainKey, skippedKeys },
  }
}

/**
 * Decrypts a group message from the sender device whose record this is. In order: the layout
 * (decodeGroupMessage), the distribution id, the chain (E2E_ERR_NO_SENDER_KEY when we hold none
 * of that id: ask the sender for its key again), the signature (E2E_ERR_BAD_SIGNATURE, checked
 * before any chain work), the iteration (E2E_ERR_DUPLICATE_MESSAGE, E2E_ERR_TOO_MANY_SKIPPED), then
 * the AEAD and the padding. Returns a new record; the one given is never changed.
 */
export async function groupDecrypt(record: SenderKeyRecord, input: unknown): Promise<GroupDecryptResult> {
  const message = decodeGroupMessage(input)
  if (!equalBytes(message.distributionId, record.distributionId)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      'expected a group message of this record’s distribution id, got one of another',
    )
  }
  const index = record.states.findIndex((state) => state.chainId === message.chainId)
  const state = record.states[index]
  if (state === undefined) {
    throw new ProtocolError(
      ProtocolErrorCode.NoSenderKey,
      `expected a group message on a chain we hold, got chain ${message.chainId} (ask the sender for its sender key again)`,
    )
  }
  if (message.version !== state.version) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `group message: expected version ${state.version} of this chain, got ${message.version}`,
    )
  }
  const authentic = await ed25519Verify(
    state.signingPublicKey,
    concatBytes(GROUP_MESSAGE_SIGNATURE_LABEL, message.signedBytes),
    message.signature,
  )
  if (!authentic) {
    throw new ProtocolError(
      ProtocolErrorCode.BadSignature,
      'expected a group message signed by its chain’s signing key, got a signature that does not verify',
    )
  }
  const taken = takeSeed(state, message.iteration)
  const { key, nonce } = messageKey(taken.seed, SENDER_KEY_MESSAGE_KEY_INFO)
  const plaintext = unpad(await aesGcmDecrypt(key, nonce, message.ciphertext, message.headerBytes))
  return { record: replaceState(record, index, taken.state), plaintext }
}
