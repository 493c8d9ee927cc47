/**
 * Sealing client state at rest (identity exports, sessions, messages). A storage key is a
 * non-extractable AES-256-GCM CryptoKey derived from the user's password, so a copied database file
 * reveals nothing without the password:
 *
 *   storage key = PBKDF2-HMAC-SHA256(password (NFKC, UTF-8), salt (16 random bytes),
 *                                    iterations (≥ 600,000, OWASP 2023), 256 bits)
 *   parameters v1 = 0x01 ‖ iterations (u32) ‖ salt (16)      — stored in the clear beside the data
 *   sealed v1   = 0x01 ‖ nonce (12 random bytes) ‖ AES-256-GCM(plaintext, AD) ‖ tag
 *   AD          = 0x01 (the version byte) ‖ "secure-chat/v1/at-rest" ‖ 0x00 ‖ UTF-8(context)
 *
 * `context` names what is sealed (e.g. "session:bob"), so a sealed record moved to another slot
 * of the database fails to open instead of being accepted as something else.
 */
import { assertBytes, ByteReader, ByteWriter, concatBytes, utf8Encode } from './bytes.js'
import { aesGcmDecrypt, aesGcmEncrypt, randomBytes } from './crypto/primitives.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { AT_REST_AD_LABEL } from './labels.js'

export const SEALED_VERSION = 1
export const STORAGE_KEY_SALT_BYTES = 16
/** OWASP Password Storage Cheat Sheet (2023) figure for PBKDF2-HMAC-SHA256. */
export const STORAGE_KEY_MIN_ITERATIONS = 600_000

const subtle = globalThis.crypto.subtle

export interface StorageKeyParameters {
  readonly salt: Uint8Array
  readonly iterations: number
}

export function newStorageKeyParameters(iterations = STORAGE_KEY_MIN_ITERATIONS): StorageKeyParameters {
  return { salt: randomBytes(STORAGE_KEY_SALT_BYTES), iterations }
}

/**
 * Derives the storage key from a password. `minimumIterations` exists so tests can run quickly;
 * production callers leave it at the default and it refuses anything weaker.
 */
export async function deriveStorageKey(
  password: string,
  parameters: StorageKeyParameters,
  minimumIterations = STORAGE_KEY_MIN_ITERATIONS,
): Promise<CryptoKey> {
  if (typeof password !== 'string' || password.length === 0) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `password: expected a non-empty string, got ${describeValue(password)}`,
    )
  }
  assertBytes(parameters.salt, STORAGE_KEY_SALT_BYTES, 'storage key salt')
  if (!Number.isInteger(parameters.iterations) || parameters.iterations < minimumIterations) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `storage key: expected at least ${minimumIterations} iterations, got ${parameters.iterations}`,
    )
  }
  const material = await subtle.importKey(
    'raw',
    utf8Encode(password.normalize('NFKC')) as Uint8Array<ArrayBuffer>,
    'PBKDF2',
    false,
    ['deriveKey'],
  )
  return subtle.deriveKey(
    {
      name: 'PBKDF2',
      hash: 'SHA-256',
      salt: parameters.salt as Uint8Array<ArrayBuffer>,
      iterations: parameters.iterations,
    },
    material,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  )
}

function sealedAssociatedData(context: string): Uint8Array {
  return concatBytes(
    new Uint8Array([SEALED_VERSION]),
    AT_REST_AD_LABEL,
    new Uint8Array([0]),
    utf8Encode(context),
  )
}

export const STORAGE_KEY_PARAMETERS_VERSION = 1

/** The parameters a client stores (unencrypted) so it can derive the same key at the next unlock. */
export function encodeStorageKeyParameters(parameters: StorageKeyParameters): Uint8Array {
  return new ByteWriter(21)
    .u8(STORAGE_KEY_PARAMETERS_VERSION)
    .u32(parameters.iterations)
    .fixed(parameters.salt)
    .finish()
}

export function decodeStorageKeyParameters(bytes: Uint8Array): StorageKeyParameters {
  assertBytes(bytes, undefined, 'storage key parameters')
  const reader = new ByteReader(bytes, 'storage key parameters')
  const version = reader.u8()
  if (version !== STORAGE_KEY_PARAMETERS_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `storage key parameters: expected version ${STORAGE_KEY_PARAMETERS_VERSION}, got ${version}`,
    )
  }
  const iterations = reader.u32()
  const salt = reader.fixed(STORAGE_KEY_SALT_BYTES)
  reader.end()
  return { iterations, salt }
}

export async function seal(
  storageKey: CryptoKey,
  plaintext: Uint8Array,
  context: string,
): Promise<Uint8Array> {
  const nonce = randomBytes(12)
  const ciphertext = await aesGcmEncrypt(storageKey, nonce, plaintext, sealedAssociatedData(context))
  return concatBytes(new Uint8Array([SEALED_VERSION]), nonce, ciphertext)
}

/** Opens a sealed record; a wrong key (wrong password), another context or any altered byte fails. */
export async function open(storageKey: CryptoKey, sealed: Uint8Array, context: string): Promise<Uint8Array> {
  assertBytes(sealed, undefined, 'sealed record')
  const reader = new ByteReader(sealed, 'sealed record')
  const version = reader.u8()
  if (version !== SEALED_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sealed record: expected version ${SEALED_VERSION}, got ${version}`,
    )
  }
  const nonce = reader.fixed(12)
  return aesGcmDecrypt(storageKey, nonce, reader.rest(), sealedAssociatedData(context))
}
