/**
 * Credential storage: the login secret of today's clients (shared/login-secret.ts), or the password
 * of an account made before them. The password policy runs on the client now
 * (shared/client/password-policy.ts): the server never sees a password from today's clients.
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

export const PREHASH_LABEL = 'secure-chat/v1/bcrypt-prehash'

export function normalizePassword(password: string): string {
  return password.normalize('NFKC')
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
