/**
 * The Double Ratchet (Signal's spec, §3), as pure functions over immutable state:
 *
 *   ratchetEncrypt(state, plaintext, …) → { state', headerBytes, ciphertext }
 *   ratchetDecrypt(state, header, …)    → { state', plaintext }
 *
 * A function never mutates its input, so a failed decryption (bad tag, replay, a jump past the
 * limit) leaves the caller holding the untouched old state: "decrypt against a copy, commit only
 * on success" is the shape of the code rather than a discipline.
 *
 * One deliberate difference in the order of work, not in the result: the spec performs both halves
 * of a DH ratchet step on receipt. Here the receiving half runs on receipt and the sending half
 * (new ratchet key, second root step) runs just before the next send. The derived keys are the
 * same, because nothing else touches the root key in between (the peer cannot ratchet again until
 * it has seen our new key), while a forged message costs one DH and no key generation, and the
 * private key we no longer need is dropped at once.
 *
 * What this module does not know: envelopes (the caller encodes the header), sessions, storage.
 */
import { concatBytes, equalBytes, toHex } from '../bytes.js'
import type { RatchetHeader } from '../codec/envelope.js'
import { aesGcmDecrypt, aesGcmEncrypt, type KeyPair, x25519 } from '../crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from '../errors.js'
import { type KeyGeneration, RATCHET_KEY_OPTIONS } from '../key-generation.js'
import { MAX_FORWARD_JUMP, MAX_SKIPPED_MESSAGE_KEYS } from '../limits.js'
import { chainStep, messageKey, rootStep } from './kdf.js'
import { pad, unpad } from './padding.js'

/**
 * How many of the peer's previous ratchet keys are remembered, so that a replayed message from an
 * old chain is reported as a duplicate instead of being mistaken for a new ratchet step.
 */
export const MAX_RETIRED_RATCHET_KEYS = 5

export interface SkippedMessageKey {
  readonly ratchetKey: Uint8Array
  readonly index: number
  readonly seed: Uint8Array
}

export interface RatchetState {
  readonly rootKey: Uint8Array
  /** DHs. Null when a sending step is due (the next send makes a new one). */
  readonly ourRatchetKey: KeyPair | null
  /** CKs. Null when the next send must first perform the sending half of a DH step. */
  readonly sendingChainKey: Uint8Array | null
  /** Ns: messages sent in the current sending chain. */
  readonly sendingIndex: number
  /** PN: messages sent in the previous sending chain. */
  readonly previousSendingLength: number
  /** DHr: the peer's current ratchet key. */
  readonly theirRatchetKey: Uint8Array | null
  /** CKr. */
  readonly receivingChainKey: Uint8Array | null
  /** Nr: the next index expected in the receiving chain. */
  readonly receivingIndex: number
  /** Keys of messages skipped over, oldest first (Map keeps insertion order), keyed by skippedKeyId. */
  readonly skippedKeys: ReadonlyMap<string, SkippedMessageKey>
  /** The peer's earlier ratchet keys, newest last. */
  readonly retiredRatchetKeys: readonly Uint8Array[]
}

export function skippedKeyId(ratchetKey: Uint8Array, index: number): string {
  return `${toHex(ratchetKey)}/${index}`
}

/** Alice's state after X3DH: Bob's signed prekey is her first remote ratchet key. */
export function initiatorRatchetState(
  sharedSecret: Uint8Array,
  remoteSignedPreKey: Uint8Array,
): RatchetState {
  return {
    rootKey: sharedSecret,
    ourRatchetKey: null,
    sendingChainKey: null,
    sendingIndex: 0,
    previousSendingLength: 0,
    theirRatchetKey: remoteSignedPreKey,
    receivingChainKey: null,
    receivingIndex: 0,
    skippedKeys: new Map(),
    retiredRatchetKeys: [],
  }
}

/** Bob's state after X3DH: his signed prekey is his first ratchet key; he receives first. */
export function responderRatchetState(sharedSecret: Uint8Array, signedPreKey: KeyPair): RatchetState {
  return {
    rootKey: sharedSecret,
    ourRatchetKey: signedPreKey,
    sendingChainKey: null,
    sendingIndex: 0,
    previousSendingLength: 0,
    theirRatchetKey: null,
    receivingChainKey: null,
    receivingIndex: 0,
    skippedKeys: new Map(),
    retiredRatchetKeys: [],
  }
}

export interface EncryptResult {
  readonly state: RatchetState
  readonly header: RatchetHeader
  readonly headerBytes: Uint8Array
  readonly ciphertext: Uint8Array
}

/**
 * Encrypts one message. `encodeHeader` turns the ratchet header into the envelope's header bytes,
 * which are authenticated together with `associatedData`.
 */
export async function ratchetEncrypt(
  state: RatchetState,
  plaintext: Uint8Array,
  associatedData: Uint8Array,
  encodeHeader: (header: RatchetHeader) => Uint8Array,
  deps: KeyGeneration,
): Promise<EncryptResult> {
  const padded = pad(plaintext)
  let next = state
  if (next.sendingChainKey === null || next.ourRatchetKey === null) next = await sendingStep(next, deps)
  const { messageKeySeed, nextChainKey } = chainStep(next.sendingChainKey!)
  const header: RatchetHeader = {
    ratchetKey: next.ourRatchetKey!.publicKey,
    previousChainLength: next.previousSendingLength,
    index: next.sendingIndex,
  }
  const headerBytes = encodeHeader(header)
  const { key, nonce } = messageKey(messageKeySeed)
  const ciphertext = await aesGcmEncrypt(key, nonce, padded, concatBytes(associatedData, headerBytes))
  return {
    state: { ...next, sendingChainKey: nextChainKey, sendingIndex: next.sendingIndex + 1 },
    header,
    headerBytes,
    ciphertext,
  }
}

/** The sending half of a DH ratchet step: a new ratchet key and a new sending chain. */
async function sendingStep(state: RatchetState, deps: KeyGeneration): Promise<RatchetState> {
  if (state.theirRatchetKey === null) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      'expected a session that has received a message, got one that cannot send yet',
    )
  }
  const ourRatchetKey = await deps.generateKeyPair(RATCHET_KEY_OPTIONS)
  const { rootKey, chainKey } = rootStep(
    state.rootKey,
    await x25519(ourRatchetKey.privateKey, state.theirRatchetKey),
  )
  return {
    ...state,
    rootKey,
    ourRatchetKey,
    sendingChainKey: chainKey,
    previousSendingLength: state.sendingIndex,
    sendingIndex: 0,
  }
}

export interface DecryptResult {
  readonly state: RatchetState
  readonly plaintext: Uint8Array
}

/** Walks a chain from `index` to `target`, collecting the skipped keys; returns the key at `target`. */
function advanceChain(
  chainKey: Uint8Array,
  ratchetKey: Uint8Array,
  index: number,
  target: number,
  skipped: SkippedMessageKey[],
): { seed: Uint8Array; nextChainKey: Uint8Array } {
  let current = chainKey
  for (let i = index; i < target; i++) {
    const step = chainStep(current)
    skipped.push({ ratchetKey, index: i, seed: step.messageKeySeed })
    current = step.nextChainKey
  }
  const step = chainStep(current)
  return { seed: step.messageKeySeed, nextChainKey: step.nextChainKey }
}

function checkJump(from: number, to: number, what: string): void {
  if (to - from > MAX_FORWARD_JUMP) {
    throw new ProtocolError(
      ProtocolErrorCode.TooManySkippedMessages,
      `${what}: expected a jump of at most ${MAX_FORWARD_JUMP} messages, got ${to - from}`,
    )
  }
}

function withSkipped(
  current: ReadonlyMap<string, SkippedMessageKey>,
  added: SkippedMessageKey[],
  removedId?: string,
): ReadonlyMap<string, SkippedMessageKey> {
  if (added.length === 0 && removedId === undefined) return current
  const next = new Map(current)
  if (removedId !== undefined) next.delete(removedId)
  for (const entry of added) next.set(skippedKeyId(entry.ratchetKey, entry.index), entry)
  // Oldest first out: Map iteration follows insertion order.
  for (const id of next.keys()) {
    if (next.size <= MAX_SKIPPED_MESSAGE_KEYS) break
    next.delete(id)
  }
  return next
}

async function openWith(
  opener: MessageOpener,
  seed: Uint8Array,
  ciphertext: Uint8Array,
  associatedData: Uint8Array,
  headerBytes: Uint8Array,
): Promise<Uint8Array> {
  return unpad(await opener(seed, ciphertext, concatBytes(associatedData, headerBytes)))
}

/**
 * The AES-GCM half of opening one message: the key and nonce from `seed`, and `associatedData` is
 * the session's associated data followed by the header bytes. A decryption may be given another
 * opener (shared/open-ahead.ts answers from work it started earlier); any opener must give exactly
 * what this one gives for the same arguments.
 */
export type MessageOpener = (
  seed: Uint8Array,
  ciphertext: Uint8Array,
  associatedData: Uint8Array,
) => Promise<Uint8Array>

export const openMessage: MessageOpener = (seed, ciphertext, associatedData) => {
  const { key, nonce } = messageKey(seed)
  return aesGcmDecrypt(key, nonce, ciphertext, associatedData)
}

export async function ratchetDecrypt(
  state: RatchetState,
  header: RatchetHeader,
  headerBytes: Uint8Array,
  ciphertext: Uint8Array,
  associatedData: Uint8Array,
  opener: MessageOpener = openMessage,
): Promise<DecryptResult> {
  const open = (seed: Uint8Array) => openWith(opener, seed, ciphertext, associatedData, headerBytes)
  // 1. A message we skipped earlier: its key is waiting; using it removes it (no second use).
  const id = skippedKeyId(header.ratchetKey, header.index)
  const waiting = state.skippedKeys.get(id)
  if (waiting) {
    const plaintext = await open(waiting.seed)
    return { state: { ...state, skippedKeys: withSkipped(state.skippedKeys, [], id) }, plaintext }
  }

  // 2. The current receiving chain.
  if (
    state.theirRatchetKey !== null &&
    state.receivingChainKey !== null &&
    equalBytes(header.ratchetKey, state.theirRatchetKey)
  ) {
    if (header.index < state.receivingIndex) {
      throw new ProtocolError(
        ProtocolErrorCode.DuplicateMessage,
        `expected message index ≥ ${state.receivingIndex}, got ${header.index} (already received)`,
      )
    }
    checkJump(state.receivingIndex, header.index, 'message index')
    const skipped: SkippedMessageKey[] = []
    const { seed, nextChainKey } = advanceChain(
      state.receivingChainKey,
      header.ratchetKey,
      state.receivingIndex,
      header.index,
      skipped,
    )
    const plaintext = await open(seed)
    return {
      state: {
        ...state,
        receivingChainKey: nextChainKey,
        receivingIndex: header.index + 1,
        skippedKeys: withSkipped(state.skippedKeys, skipped),
      },
      plaintext,
    }
  }

  // 3. A new ratchet key from the peer: the receiving half of a DH ratchet step.
  if (state.retiredRatchetKeys.some((key) => equalBytes(key, header.ratchetKey))) {
    throw new ProtocolError(
      ProtocolErrorCode.DuplicateMessage,
      'expected a message from a current chain, got one from a finished chain whose key is gone',
    )
  }
  if (state.ourRatchetKey === null) {
    throw new ProtocolError(
      ProtocolErrorCode.DecryptionFailed,
      'expected a ratchet key this session answered, got an unknown one',
    )
  }
  const skipped: SkippedMessageKey[] = []
  if (
    state.receivingChainKey !== null &&
    state.theirRatchetKey !== null &&
    header.previousChainLength > state.receivingIndex
  ) {
    checkJump(state.receivingIndex, header.previousChainLength, 'previous chain length')
    let chainKey = state.receivingChainKey
    for (let i = state.receivingIndex; i < header.previousChainLength; i++) {
      const step = chainStep(chainKey)
      skipped.push({ ratchetKey: state.theirRatchetKey, index: i, seed: step.messageKeySeed })
      chainKey = step.nextChainKey
    }
  }
  // One message may not make us skip more than MAX_FORWARD_JUMP keys in total, across both chains.
  checkJump(0, skipped.length + header.index, 'previous chain length plus message index')
  const { rootKey, chainKey } = rootStep(
    state.rootKey,
    await x25519(state.ourRatchetKey.privateKey, header.ratchetKey),
  )
  const { seed, nextChainKey } = advanceChain(chainKey, header.ratchetKey, 0, header.index, skipped)
  const plaintext = await open(seed)
  const retired =
    state.theirRatchetKey === null
      ? state.retiredRatchetKeys
      : [...state.retiredRatchetKeys, state.theirRatchetKey]
  return {
    state: {
      ...state,
      rootKey,
      theirRatchetKey: header.ratchetKey,
      receivingChainKey: nextChainKey,
      receivingIndex: header.index + 1,
      ourRatchetKey: null,
      sendingChainKey: null,
      skippedKeys: withSkipped(state.skippedKeys, skipped),
      retiredRatchetKeys: retired.slice(-MAX_RETIRED_RATCHET_KEYS),
    },
    plaintext,
  }
}
