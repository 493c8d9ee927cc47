/**
 * The Double Ratchet's key derivations (Signal's Double Ratchet spec §5.2, libsignal's constants):
 * root step HKDF(salt = root key, IKM = DH output) → 64 bytes; chain step HMAC(CK, 0x01) for the
 * message key seed and HMAC(CK, 0x02) for the next chain key; the seed expanded by HKDF into a
 * unique AES-256-GCM key and nonce. All synchronous and pure.
 */
import { hkdfSha256, hmacSha256 } from '../crypto/primitives.js'
import {
  CHAIN_KEY_CONSTANT,
  MESSAGE_KEY_INFO,
  MESSAGE_KEY_SEED_CONSTANT,
  ROOT_CHAIN_INFO,
  ZERO_SALT,
} from '../labels.js'

export interface RootStep {
  readonly rootKey: Uint8Array
  readonly chainKey: Uint8Array
}

export function rootStep(rootKey: Uint8Array, dhOutput: Uint8Array): RootStep {
  const okm = hkdfSha256(dhOutput, rootKey, ROOT_CHAIN_INFO, 64)
  return { rootKey: okm.slice(0, 32), chainKey: okm.slice(32, 64) }
}

export interface ChainStep {
  readonly messageKeySeed: Uint8Array
  readonly nextChainKey: Uint8Array
}

/**
 * Steps already taken, by chain key (the array itself, weakly: an entry goes with its key). Opening
 * a backlog ahead (shared/open-ahead.ts) walks the receiving chain once before the decryption walks
 * it again; the second walk then costs no hashing. Chain keys are never modified in place.
 */
const takenSteps = new WeakMap<Uint8Array, ChainStep>()

export function chainStep(chainKey: Uint8Array): ChainStep {
  const taken = takenSteps.get(chainKey)
  if (taken) return taken
  const step = {
    messageKeySeed: hmacSha256(chainKey, MESSAGE_KEY_SEED_CONSTANT),
    nextChainKey: hmacSha256(chainKey, CHAIN_KEY_CONSTANT),
  }
  takenSteps.set(chainKey, step)
  return step
}

export interface MessageKey {
  readonly key: Uint8Array
  readonly nonce: Uint8Array
}

/**
 * 44 bytes of HKDF output: AES-256 key (32) then GCM nonce (12). Each seed is used once. Sender
 * keys (shared/group/sender-key.ts) pass their own `info`, so a group chain and a pairwise chain
 * never expand a seed into the same key.
 */
export function messageKey(seed: Uint8Array, info: Uint8Array = MESSAGE_KEY_INFO): MessageKey {
  const okm = hkdfSha256(seed, ZERO_SALT, info, 44)
  return { key: okm.subarray(0, 32), nonce: okm.subarray(32, 44) }
}
