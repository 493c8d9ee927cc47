/**
 * Session tokens: 32 random bytes, given to the client only RSA-OAEP-encrypted to its login key and
 * presented back as `Authorization: Bearer <base64url>` (never in a URL, where proxies and logs
 * would keep it). The server stores and looks up only SHA-256(token).
 */
import { createHash, randomBytes } from 'node:crypto'
import { fromBase64Url } from '../../shared/bytes.js'
import type { Db } from '../db/schema.js'
import { findSession, type Session } from '../db/tokens.js'
import { TOKEN_BYTES } from '../limits.js'

export function newSessionToken(): Uint8Array {
  return new Uint8Array(randomBytes(TOKEN_BYTES))
}

export function hashSessionToken(token: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(token).digest())
}

/** Base64url characters of a 32-byte token without padding. */
const TOKEN_TEXT_PATTERN = /^[A-Za-z0-9_-]{43}$/

/**
 * The token from an Authorization header value, or undefined when the header is absent or not
 * exactly "Bearer <43 base64url characters>" encoding 32 bytes.
 */
export function parseBearerToken(header: string | undefined): Uint8Array | undefined {
  if (header === undefined) return undefined
  const match = /^Bearer ([^\s]+)$/i.exec(header.trim())
  const text = match?.[1]
  if (text === undefined || !TOKEN_TEXT_PATTERN.test(text)) return undefined
  try {
    const token = fromBase64Url(text)
    return token.length === TOKEN_BYTES ? token : undefined
  } catch {
    return undefined
  }
}

/** The session a presented token opens at `now`, if any (for HTTP routes and the relay's auth frame). */
export function authenticateToken(db: Db, token: Uint8Array, now: number): Promise<Session | undefined> {
  return findSession(db, hashSessionToken(token), now)
}
