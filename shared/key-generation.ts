/**
 * Where new X25519 key pairs come from. Passed into the protocol functions (as libsignal passes
 * its RNG) so that known-answer tests can fix every key while production uses WebCrypto.
 */
import { generateX25519KeyPair, type KeyOptions, type KeyPair } from './crypto/primitives.js'

export interface KeyGeneration {
  /** Makes a fresh X25519 key pair with the given extractability. */
  generateKeyPair(options?: KeyOptions): Promise<KeyPair>
}

/**
 * WebCrypto key generation. Ratchet keys are made extractable (RATCHET_KEY_OPTIONS) because
 * session state is stored (sealed) between runs; the X3DH ephemeral key is not, since it is
 * dropped after use; identity and prekeys follow the caller.
 */
export const defaultKeyGeneration: KeyGeneration = {
  generateKeyPair: (options) => generateX25519KeyPair(options),
}

export const RATCHET_KEY_OPTIONS: KeyOptions = { extractable: true }
