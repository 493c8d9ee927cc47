/**
 * Where new X25519 key pairs come from. Passed into the protocol functions (as libsignal passes
 * its RNG) so that known-answer tests can fix every key while production uses WebCrypto.
 */
import { generateX25519KeyPair, type KeyOptions, type KeyPair } from './crypto/primitives.js'

export interface KeyGeneration {
  /** Makes a fresh X25519 key pair with the given extractability. */
  generateKeyPair(options?: KeyOptions): Promise<KeyPair>
}

let nextRatchetKey: Promise<KeyPair> | undefined

function prefetchRatchetKey(): Promise<KeyPair> {
  const pending = generateX25519KeyPair(RATCHET_KEY_OPTIONS)
  // Unused until the next call; a failure then surfaces to that caller, not as an unhandled rejection.
  pending.catch(() => undefined)
  return pending
}

/**
 * WebCrypto key generation. Ratchet keys are made extractable (RATCHET_KEY_OPTIONS) because
 * session state is stored (sealed) between runs; the X3DH ephemeral key is not, since it is
 * dropped after use; identity and prekeys follow the caller.
 *
 * Ratchet keys are made one ahead: each call takes the key made during the previous one and
 * starts the next, so a DH ratchet step does not wait for key generation (two thread-pool round
 * trips). The key is fresh randomness all the same: it is used once, by whoever asks first.
 */
export const defaultKeyGeneration: KeyGeneration = {
  generateKeyPair: (options) => {
    if (options?.extractable !== true) return generateX25519KeyPair(options)
    const key = nextRatchetKey ?? prefetchRatchetKey()
    nextRatchetKey = prefetchRatchetKey()
    return key
  },
}

export const RATCHET_KEY_OPTIONS: KeyOptions = { extractable: true }
