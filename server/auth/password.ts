/**
 * Password policy and storage.
 *
 * Policy (OWASP ASVS 5, V6.2): at least 12 characters and at most 256, counted in Unicode code
 * points after NFKC normalisation (so the same passphrase typed on different keyboards matches, as
 * NIST SP 800-63B asks); no composition rules; common and easily guessed passwords refused by
 * zxcvbn-ts (score below 3, with the username as a known input).
 *
 * Storage: bcrypt, cost 12 by default, via its async API (libuv thread pool). bcrypt reads at most
 * 72 bytes and stops at a NUL byte, so a long passphrase would be silently truncated. Instead the
 * password is first pre-hashed: bcrypt(base64(HMAC-SHA256(key = PREHASH_LABEL, NFKC(password)))).
 * The 44-character base64 text is under 72 bytes and contains no NUL, so every byte of the password
 * counts. HMAC under a fixed label rather than bare SHA-256 keeps these hashes unrelated to plain
 * SHA-256 hashes of the same passwords leaked elsewhere ("password shucking").
 */
import { createHmac, randomBytes } from 'node:crypto'
import bcrypt from 'bcrypt'
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../../shared/limits.js'
import { ServerError, ServerErrorCode } from '../errors.js'
import { MIN_PASSWORD_SCORE, passwordScore } from './password-strength.js'

export const PREHASH_LABEL = 'secure-chat/v1/bcrypt-prehash'

export function normalizePassword(password: string): string {
  return password.normalize('NFKC')
}

function weak(message: string): ServerError {
  return new ServerError(ServerErrorCode.WeakPassword, 400, message)
}

/** Throws ServerError(WeakPassword) unless the password meets the policy above. */
export async function checkPasswordPolicy(password: string, userInputs: readonly string[]): Promise<void> {
  const normalized = normalizePassword(password)
  const length = [...normalized].length
  if (length < PASSWORD_MIN_LENGTH) {
    throw weak(`password: expected at least ${PASSWORD_MIN_LENGTH} characters, got ${length}`)
  }
  if (length > PASSWORD_MAX_LENGTH) {
    throw weak(`password: expected at most ${PASSWORD_MAX_LENGTH} characters, got ${length}`)
  }
  const score = await passwordScore(normalized, userInputs)
  if (score < MIN_PASSWORD_SCORE) {
    throw weak(
      `password: expected one that is hard to guess (strength ${MIN_PASSWORD_SCORE} of 4 or more), got strength ${score}; avoid common passwords, names, dates, repeats and keyboard patterns, or use a few random words`,
    )
  }
}

/** The text bcrypt actually hashes (see the module comment). */
export function prehashPassword(password: string): string {
  return createHmac('sha256', PREHASH_LABEL).update(normalizePassword(password), 'utf8').digest('base64')
}

export function hashPassword(password: string, cost: number): Promise<string> {
  return bcrypt.hash(prehashPassword(password), cost)
}

export function verifyPassword(password: string, hash: string): Promise<boolean> {
  return bcrypt.compare(prehashPassword(password), hash)
}

export function passwordHashCost(hash: string): number {
  return bcrypt.getRounds(hash)
}

const dummyHashes = new Map<number, Promise<string>>()

/**
 * A hash of a random password at `cost`: login compares against it when the user does not exist,
 * so an unknown name costs the same bcrypt work as a wrong password and timing reveals nothing.
 */
export function dummyPasswordHash(cost: number): Promise<string> {
  let hash = dummyHashes.get(cost)
  if (!hash) {
    hash = bcrypt.hash(randomBytes(32).toString('base64'), cost)
    dummyHashes.set(cost, hash)
  }
  return hash
}
