/**
 * The login secret: what a client sends the server instead of the password (docs/protocol.md §4.1).
 *
 *   salt         = SHA-256("secure-chat/v1/login-salt" ‖ 0x00 ‖ UTF-8(canonical username))
 *   login secret = PBKDF2-HMAC-SHA256(UTF-8(NFKC(password)), salt, 600,000 iterations, 256 bits)
 *   on the wire  = base64url, no padding (43 characters)
 *
 * The local store's key is PBKDF2 of the same password under a different salt (16 random bytes kept
 * beside the store, at-rest.ts), so the two keys are independent: the server, a log or a
 * TLS-terminating proxy that sees the login secret learns nothing that opens a copied store, short
 * of guessing the password at 600,000 PBKDF2 iterations a guess (the cost a copied store already
 * imposes). The salt is a function of the name, not a stored random value, so a client can derive
 * the secret before it has asked the server anything, and a server cannot hand a client a salt of
 * its choosing.
 *
 * The iteration count is part of the format (credential "login-secret-v1"): changing it would need
 * a new credential kind and an upgrade on log-in, as the move from passwords was.
 */
import { concatBytes, toBase64Url, utf8Encode } from './bytes.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { LOGIN_SECRET_SALT_LABEL } from './labels.js'

/** OWASP Password Storage Cheat Sheet (2023) figure for PBKDF2-HMAC-SHA256, as for the store key. */
export const LOGIN_SECRET_ITERATIONS = 600_000
export const LOGIN_SECRET_BYTES = 32

const subtle = globalThis.crypto.subtle

/** The per-account salt (see the module comment); `username` must already be canonical. */
export async function loginSecretSalt(username: string): Promise<Uint8Array> {
  const input = concatBytes(LOGIN_SECRET_SALT_LABEL, new Uint8Array([0]), utf8Encode(username))
  return new Uint8Array(await subtle.digest('SHA-256', input as Uint8Array<ArrayBuffer>))
}

/**
 * The login secret of `password` for the account `username` (canonical form), base64url.
 * `iterations` exists so tests can run quickly; production callers leave the default.
 */
export async function deriveLoginSecret(
  password: string,
  username: string,
  iterations = LOGIN_SECRET_ITERATIONS,
): Promise<string> {
  if (typeof password !== 'string' || password.length === 0) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `password: expected a non-empty string, got ${describeValue(password)}`,
    )
  }
  if (!Number.isSafeInteger(iterations) || iterations < 1) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `login secret: expected a positive iteration count, got ${iterations}`,
    )
  }
  const material = await subtle.importKey(
    'raw',
    utf8Encode(password.normalize('NFKC')) as Uint8Array<ArrayBuffer>,
    'PBKDF2',
    false,
    ['deriveBits'],
  )
  const bits = await subtle.deriveBits(
    {
      name: 'PBKDF2',
      hash: 'SHA-256',
      salt: (await loginSecretSalt(username)) as Uint8Array<ArrayBuffer>,
      iterations,
    },
    material,
    LOGIN_SECRET_BYTES * 8,
  )
  return toBase64Url(new Uint8Array(bits))
}
