/**
 * Safety numbers (Signal's NumericFingerprintGenerator, version 0 layout): each party's half is
 * SHA-512 iterated 5,200 times over version ‖ key ‖ stable id, re-appending the key every round;
 * the first 30 bytes become six 5-digit groups; the two 30-digit halves are sorted and joined into
 * 60 digits, so both sides show the same number. The key we fingerprint is the whole public
 * identity a user is known by: identityKey ‖ signingKey (64 bytes); the stable id is the
 * normalised username.
 *
 * The QR payload carries the two 32-byte fingerprints: version ‖ lower ‖ higher, ordered by
 * comparing the fingerprints byte by byte (which need not be the order of the digit halves), so
 * both sides produce the same payload and a scanner compares it with its own byte for byte.
 */
import { concatBytes, equalBytes, utf8Encode } from './bytes.js'
import { sha512 } from './crypto/primitives.js'
import type { PublicIdentity } from './identity.js'
import { SAFETY_NUMBER_ITERATIONS } from './limits.js'
import { normalizeUsername } from './username.js'

export const SAFETY_NUMBER_VERSION = 0
export const SAFETY_NUMBER_QR_VERSION = 1

export interface SafetyNumberParty {
  readonly username: string
  readonly identity: PublicIdentity
}

function fingerprintKey(identity: PublicIdentity): Uint8Array {
  return concatBytes(identity.identityKey, identity.signingKey)
}

/** The 32 bytes of one party's fingerprint (Signal keeps 32 of the 64 for the QR form). */
export function partyFingerprint(
  party: SafetyNumberParty,
  iterations = SAFETY_NUMBER_ITERATIONS,
): Uint8Array {
  const key = fingerprintKey(party.identity)
  let hash = concatBytes(new Uint8Array([0, SAFETY_NUMBER_VERSION]), key, utf8Encode(party.username))
  for (let i = 0; i < iterations; i++) hash = sha512(concatBytes(hash, key))
  return hash.slice(0, 32)
}

/** Six groups of five digits from the first 30 bytes: each 5-byte chunk, big-endian, mod 100000. */
export function displayDigits(fingerprint: Uint8Array): string {
  let out = ''
  for (let i = 0; i < 30; i += 5) {
    let chunk = 0
    for (let j = 0; j < 5; j++) chunk = chunk * 256 + (fingerprint[i + j] as number)
    out += String(chunk % 100_000).padStart(5, '0')
  }
  return out
}

export interface SafetyNumber {
  /** 60 digits, the same on both sides. */
  readonly digits: string
  /** The digits in twelve groups of five, for display. */
  readonly groups: readonly string[]
  /** Bytes to render as a QR code. */
  readonly qrPayload: Uint8Array
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number)
  }
  return a.length - b.length
}

export function safetyNumber(local: SafetyNumberParty, remote: SafetyNumberParty): SafetyNumber {
  // The stable id is the normalised username, so "Alice" and "alice" give the same number.
  const localFingerprint = partyFingerprint({ ...local, username: normalizeUsername(local.username) })
  const remoteFingerprint = partyFingerprint({ ...remote, username: normalizeUsername(remote.username) })
  const localDigits = displayDigits(localFingerprint)
  const remoteDigits = displayDigits(remoteFingerprint)
  const digits = localDigits <= remoteDigits ? localDigits + remoteDigits : remoteDigits + localDigits
  const [low, high] =
    compareBytes(localFingerprint, remoteFingerprint) <= 0
      ? [localFingerprint, remoteFingerprint]
      : [remoteFingerprint, localFingerprint]
  return {
    digits,
    groups: digits.match(/\d{5}/g) ?? [],
    qrPayload: concatBytes(new Uint8Array([SAFETY_NUMBER_QR_VERSION]), low, high),
  }
}

/** Compares a scanned QR payload with our own computation, in constant time. */
export function qrPayloadMatches(expected: SafetyNumber, scanned: Uint8Array): boolean {
  return equalBytes(expected.qrPayload, scanned)
}
