/**
 * Opening a backlog's messages ahead of time, side by side instead of one after another.
 *
 * Each awaited AES-GCM call is a round trip to a crypto thread (Node's thread pool, the browser's
 * WebCrypto thread) that costs far more than the decryption, and a backlog's messages were opened
 * strictly in turn, each waiting for the state the previous one left. Their keys do not depend on
 * each other's decryption, though: the receiving chain gives them in order. So for a run of
 * messages that continue the current session's receiving chain (the common case: a sender's queued
 * messages), `prepare` derives their keys from the state known now and starts their AES-GCM
 * decryptions at once. The decryption proper then runs message after message as always, with every
 * check of the state machine (duplicates, jumps, promotion), and its opener takes a result started
 * here only when the key seed, the ciphertext and the associated data are exactly those it would
 * open with itself, and otherwise opens as usual. Nothing is committed ahead: a result started here
 * is the same computation the decryption would make, and only that decryption uses it.
 *
 * Pure apart from the AES-GCM calls it starts; holds derived message keys only until the batch ends.
 */
import { concatBytes, equalBytes } from './bytes.js'
import type { Envelope } from './codec/envelope.js'
import { type MessageOpener, openMessage } from './ratchet/double-ratchet.js'
import { chainStep } from './ratchet/kdf.js'
import { envelopeMatchesSession, type Session } from './session.js'

/** Messages opened ahead of the one being decrypted, at most. */
export const OPEN_AHEAD_WINDOW = 64

interface Started {
  readonly seed: Uint8Array
  readonly associatedData: Uint8Array
  readonly opened: Promise<Uint8Array>
}

export class OpenAhead {
  /** Decryptions started, by the ciphertext they open (the envelope's own array). */
  private readonly started = new Map<Uint8Array, Started>()
  /** Positions below this were planned already (or found not to continue the chain). */
  private plannedUpTo = 0
  /** Decryptions started here, and how many of them a decryption took (for tests and benches). */
  readonly counts = { started: 0, taken: 0 }

  /** `envelopes`: a batch in the order it will be decrypted (undefined for one that did not decode). */
  constructor(private readonly envelopes: readonly (Envelope | undefined)[]) {}

  /**
   * Before decrypting `envelopes[position]`, with `session` the record's current session: starts
   * opening it and the ones after it that continue that session's receiving chain, unless that
   * was done for this position already.
   */
  prepare(position: number, session: Session | null): void {
    if (position < this.plannedUpTo || session === null) return
    this.plannedUpTo = position + 1
    const { theirRatchetKey, receivingChainKey, receivingIndex } = session.ratchet
    if (theirRatchetKey === null || receivingChainKey === null) return
    let chainKey = receivingChainKey
    let index = receivingIndex
    const end = Math.min(this.envelopes.length, position + OPEN_AHEAD_WINDOW)
    for (let at = position; at < end; at++) {
      const envelope = this.envelopes[at]
      if (
        envelope === undefined ||
        !envelopeMatchesSession(session, envelope) ||
        !equalBytes(envelope.header.ratchetKey, theirRatchetKey)
      ) {
        break
      }
      // An earlier index is a replay the decryption will refuse; a later one, a gap it will skip
      // over (keys stored) that is left to it.
      if (envelope.header.index < index) {
        this.plannedUpTo = at + 1
        continue
      }
      if (envelope.header.index !== index) break
      const step = chainStep(chainKey)
      const associatedData = concatBytes(session.associatedData, envelope.headerBytes)
      const opened = openMessage(step.messageKeySeed, envelope.ciphertext, associatedData)
      // A message that fails to open fails when its decryption asks for it, not here.
      opened.catch(() => {})
      this.started.set(envelope.ciphertext, { seed: step.messageKeySeed, associatedData, opened })
      this.counts.started++
      chainKey = step.nextChainKey
      index++
      this.plannedUpTo = at + 1
    }
  }

  /** The opener to decrypt the batch with. */
  readonly opener: MessageOpener = (seed, ciphertext, associatedData) => {
    const started = this.started.get(ciphertext)
    if (
      started !== undefined &&
      equalBytes(started.seed, seed) &&
      equalBytes(started.associatedData, associatedData)
    ) {
      this.started.delete(ciphertext)
      this.counts.taken++
      return started.opened
    }
    return openMessage(seed, ciphertext, associatedData)
  }
}
