/**
 * The cryptographic primitives the protocol composes, each behind a thin layer that checks its
 * inputs (type, length) before use. Nothing here is implemented by hand:
 *
 * - X25519, Ed25519, AES-256-GCM and RSA-OAEP come from WebCrypto, so private keys can be
 *   non-extractable `CryptoKey`s and the work runs natively. Where a runtime lacks X25519 or
 *   Ed25519 in WebCrypto (older Safari/Firefox), `@noble/curves` stands in; the probe runs once.
 * - SHA-2, HMAC-SHA256 and HKDF-SHA256 come from `@noble/hashes`, synchronously. Every awaited
 *   WebCrypto call costs a thread-pool round trip (20–70 µs in Node, ~1 µs of actual hashing), and
 *   the ratchet's chain and root steps are pure functions of bytes; keeping them synchronous keeps
 *   the state machine pure and about three times faster. The same vectors (RFC 5869, Wycheproof)
 *   pin these functions, and a test checks them against WebCrypto's HKDF/HMAC.
 */
import { ed25519 as nobleEd25519, x25519 as nobleX25519 } from '@noble/curves/ed25519.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { hmac } from '@noble/hashes/hmac.js'
import { sha256 as nobleSha256, sha512 as nobleSha512 } from '@noble/hashes/sha2.js'
import { assertBytes, equalBytes, fromBase64Url, isAllZero, toBase64Url } from '../bytes.js'
import { ProtocolError, ProtocolErrorCode } from '../errors.js'

const subtle = globalThis.crypto.subtle

/**
 * WebCrypto's typings want ArrayBuffer-backed views; every Uint8Array this module handles is one
 * (we never create SharedArrayBuffers), so this narrowing is safe.
 */
const source = (bytes: Uint8Array): BufferSource => bytes as Uint8Array<ArrayBuffer>

export const X25519_KEY_BYTES = 32
export const ED25519_PUBLIC_KEY_BYTES = 32
export const ED25519_SEED_BYTES = 32
export const ED25519_SIGNATURE_BYTES = 64
export const AES_256_KEY_BYTES = 32
export const AES_GCM_NONCE_BYTES = 12
export const AES_GCM_TAG_BYTES = 16
export const RSA_OAEP_MODULUS_BITS = 3072
/** Largest RSA-OAEP-3072/SHA-256 plaintext: k − 2·hLen − 2 = 384 − 66. */
export const RSA_OAEP_MAX_PLAINTEXT_BYTES = 318

const INSPECT = Symbol.for('nodejs.util.inspect.custom')

/** Private half of a key pair. Opaque: serialises and inspects as "[redacted]" so it cannot leak into logs. */
export class PrivateKeyHandle {
  /** @internal A WebCrypto key, or raw bytes when the runtime fell back to @noble/curves. */
  readonly inner: CryptoKey | Uint8Array

  constructor(
    readonly algorithm: 'X25519' | 'Ed25519',
    inner: CryptoKey | Uint8Array,
  ) {
    this.inner = inner
  }

  /** False when the platform holds the key without a way to read it back (non-extractable CryptoKey). */
  get extractable(): boolean {
    return this.inner instanceof Uint8Array || this.inner.extractable
  }

  toJSON(): string {
    return `[redacted ${this.algorithm} private key]`
  }

  toString(): string {
    return this.toJSON()
  }

  [INSPECT](): string {
    return this.toJSON()
  }
}

export interface KeyPair {
  readonly privateKey: PrivateKeyHandle
  /** Raw 32-byte public key (X25519 u-coordinate or Ed25519 point encoding). */
  readonly publicKey: Uint8Array
}

// --- Capability probe -------------------------------------------------------------------------

let webCryptoCurves: Promise<{ x25519: boolean; ed25519: boolean }> | undefined

/** Which curves this runtime's WebCrypto supports; probed once, the answer cached. */
export function webCryptoCurveSupport(): Promise<{ x25519: boolean; ed25519: boolean }> {
  webCryptoCurves ??= (async () => {
    const probe = async (algorithm: 'X25519' | 'Ed25519', usages: KeyUsage[]) => {
      try {
        await subtle.generateKey({ name: algorithm }, false, usages)
        return true
      } catch {
        return false
      }
    }
    const [x25519, ed25519] = await Promise.all([probe('X25519', ['deriveBits']), probe('Ed25519', ['sign'])])
    return { x25519, ed25519 }
  })()
  return webCryptoCurves
}

/**
 * Forces the @noble/curves fallback (tests use it to exercise the path that runtimes without
 * X25519/Ed25519 in WebCrypto take). Returns a function that restores the probe.
 */
export function forceCurveFallbackForTests(): () => void {
  const previous = webCryptoCurves
  webCryptoCurves = Promise.resolve({ x25519: false, ed25519: false })
  return () => {
    webCryptoCurves = previous
  }
}

export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length)
  // getRandomValues fills at most 65,536 bytes per call.
  for (let offset = 0; offset < length; offset += 65_536) {
    globalThis.crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65_536)))
  }
  return out
}

// --- X25519 -----------------------------------------------------------------------------------

export interface KeyOptions {
  /** Whether the private key may ever be exported (for encrypted storage). Default false. */
  extractable?: boolean
}

export async function generateX25519KeyPair(options: KeyOptions = {}): Promise<KeyPair> {
  if (!(await webCryptoCurveSupport()).x25519) {
    return x25519KeyPairFromPrivateBytes(randomBytes(X25519_KEY_BYTES), options)
  }
  const pair = (await subtle.generateKey({ name: 'X25519' }, options.extractable ?? false, [
    'deriveBits',
  ])) as CryptoKeyPair
  const publicKey = new Uint8Array(await subtle.exportKey('raw', pair.publicKey))
  return { privateKey: new PrivateKeyHandle('X25519', pair.privateKey), publicKey }
}

/**
 * Rebuilds a key pair from a 32-byte X25519 private scalar (storage, fixed test keys). Storage that
 * kept the public half too passes it as `knownPublicKey`, which saves a scalar multiplication per
 * load; it must come from authenticated storage of our own, since it is not checked.
 */
export async function x25519KeyPairFromPrivateBytes(
  privateBytes: Uint8Array,
  options: KeyOptions = {},
  knownPublicKey?: Uint8Array,
): Promise<KeyPair> {
  assertBytes(privateBytes, X25519_KEY_BYTES, 'x25519 private key')
  if (knownPublicKey !== undefined) assertBytes(knownPublicKey, X25519_KEY_BYTES, 'x25519 public key')
  const publicKey = knownPublicKey?.slice() ?? nobleX25519.getPublicKey(privateBytes)
  if (!(await webCryptoCurveSupport()).x25519) {
    return { privateKey: new PrivateKeyHandle('X25519', privateBytes.slice()), publicKey }
  }
  const key = await subtle.importKey(
    'jwk',
    { kty: 'OKP', crv: 'X25519', d: toBase64Url(privateBytes), x: toBase64Url(publicKey) },
    { name: 'X25519' },
    options.extractable ?? false,
    ['deriveBits'],
  )
  return { privateKey: new PrivateKeyHandle('X25519', key), publicKey }
}

/** Exports the raw private scalar; fails for non-extractable keys. Callers encrypt it before storing. */
export async function exportPrivateKeyBytes(privateKey: PrivateKeyHandle): Promise<Uint8Array> {
  if (privateKey.inner instanceof Uint8Array) return privateKey.inner.slice()
  if (!privateKey.inner.extractable) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      `expected an extractable ${privateKey.algorithm} key, got a non-extractable one`,
    )
  }
  const jwk = await subtle.exportKey('jwk', privateKey.inner)
  return fromBase64Url(jwk.d ?? '')
}

/**
 * Imported public keys, by the array they came from. A ratchet uses the peer's key for two DH
 * steps (receiving, then sending), and each import is a thread-pool round trip. The bytes are kept
 * and compared, so an array changed after import is imported afresh.
 */
const importedPublicKeys = new WeakMap<Uint8Array, { bytes: Uint8Array; key: Promise<CryptoKey> }>()

function importX25519PublicKey(publicKey: Uint8Array): Promise<CryptoKey> {
  const cached = importedPublicKeys.get(publicKey)
  if (cached && equalBytes(cached.bytes, publicKey)) return cached.key
  const key = subtle.importKey('raw', source(publicKey), { name: 'X25519' }, true, [])
  importedPublicKeys.set(publicKey, { bytes: publicKey.slice(), key })
  // A failed import is not cached: the next call tries again (and reports the error itself).
  key.catch(() => importedPublicKeys.delete(publicKey))
  return key
}

/**
 * X25519 (RFC 7748 §5). Rejects public keys of the wrong length and any result that is all zero,
 * which is what every low-order point (and the twist's small subgroup) produces (§6.1 "check").
 */
export async function x25519(privateKey: PrivateKeyHandle, peerPublicKey: Uint8Array): Promise<Uint8Array> {
  assertBytes(peerPublicKey, X25519_KEY_BYTES, 'x25519 public key')
  if (privateKey.algorithm !== 'X25519') {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `expected an X25519 private key, got ${privateKey.algorithm}`,
    )
  }
  let shared: Uint8Array
  try {
    if (privateKey.inner instanceof Uint8Array) {
      shared = nobleX25519.getSharedSecret(privateKey.inner, peerPublicKey)
    } else {
      const peer = await importX25519PublicKey(peerPublicKey)
      shared = new Uint8Array(
        await subtle.deriveBits({ name: 'X25519', public: peer }, privateKey.inner, 256),
      )
    }
  } catch (cause) {
    // WebCrypto and noble both refuse low-order points themselves; report it under one code.
    throw new ProtocolError(
      ProtocolErrorCode.InvalidKey,
      'expected a valid X25519 public key, got one the platform rejected',
      { cause },
    )
  }
  if (isAllZero(shared)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidKey,
      'expected a non-zero X25519 shared secret, got all zeros (low-order point)',
    )
  }
  return shared
}

// --- Ed25519 ----------------------------------------------------------------------------------

export async function generateEd25519KeyPair(options: KeyOptions = {}): Promise<KeyPair> {
  if (!(await webCryptoCurveSupport()).ed25519) {
    return ed25519KeyPairFromSeed(randomBytes(ED25519_SEED_BYTES), options)
  }
  const pair = (await subtle.generateKey({ name: 'Ed25519' }, options.extractable ?? false, [
    'sign',
    'verify',
  ])) as CryptoKeyPair
  const publicKey = new Uint8Array(await subtle.exportKey('raw', pair.publicKey))
  return { privateKey: new PrivateKeyHandle('Ed25519', pair.privateKey), publicKey }
}

/** Rebuilds an Ed25519 key pair from its 32-byte seed (RFC 8032 private key). */
export async function ed25519KeyPairFromSeed(seed: Uint8Array, options: KeyOptions = {}): Promise<KeyPair> {
  assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed')
  const publicKey = nobleEd25519.getPublicKey(seed)
  if (!(await webCryptoCurveSupport()).ed25519) {
    return { privateKey: new PrivateKeyHandle('Ed25519', seed.slice()), publicKey }
  }
  const key = await subtle.importKey(
    'jwk',
    { kty: 'OKP', crv: 'Ed25519', d: toBase64Url(seed), x: toBase64Url(publicKey) },
    { name: 'Ed25519' },
    options.extractable ?? false,
    ['sign'],
  )
  return { privateKey: new PrivateKeyHandle('Ed25519', key), publicKey }
}

export async function ed25519Sign(privateKey: PrivateKeyHandle, message: Uint8Array): Promise<Uint8Array> {
  assertBytes(message, undefined, 'ed25519 message')
  if (privateKey.algorithm !== 'Ed25519') {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `expected an Ed25519 private key, got ${privateKey.algorithm}`,
    )
  }
  if (privateKey.inner instanceof Uint8Array) return nobleEd25519.sign(message, privateKey.inner)
  return new Uint8Array(await subtle.sign({ name: 'Ed25519' }, privateKey.inner, source(message)))
}

/**
 * Imported Ed25519 public keys, by the array they came from, as for X25519 above: a sender key's
 * signing key verifies every group message of its chain (shared/group/sender-key.ts), and each
 * import is a thread-pool round trip. The bytes are kept and compared, so an array changed after
 * import is imported afresh; a failed import is not kept.
 */
const importedSigningKeys = new WeakMap<Uint8Array, { bytes: Uint8Array; key: Promise<CryptoKey> }>()

function importEd25519PublicKey(publicKey: Uint8Array): Promise<CryptoKey> {
  const cached = importedSigningKeys.get(publicKey)
  if (cached && equalBytes(cached.bytes, publicKey)) return cached.key
  const key = subtle.importKey('raw', source(publicKey), { name: 'Ed25519' }, true, ['verify'])
  importedSigningKeys.set(publicKey, { bytes: publicKey.slice(), key })
  key.catch(() => importedSigningKeys.delete(publicKey))
  return key
}

/**
 * Verifies an Ed25519 signature (RFC 8032, cofactorless as in WebCrypto). Malformed keys or
 * signatures return false rather than throwing, so every failure takes the same path.
 */
export async function ed25519Verify(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  assertBytes(publicKey, undefined, 'ed25519 public key')
  assertBytes(message, undefined, 'ed25519 message')
  assertBytes(signature, undefined, 'ed25519 signature')
  if (publicKey.length !== ED25519_PUBLIC_KEY_BYTES || signature.length !== ED25519_SIGNATURE_BYTES)
    return false
  try {
    if (!(await webCryptoCurveSupport()).ed25519) {
      return nobleEd25519.verify(signature, message, publicKey, { zip215: false })
    }
    const key = await importEd25519PublicKey(publicKey)
    return await subtle.verify({ name: 'Ed25519' }, key, source(signature), source(message))
  } catch {
    return false
  }
}

// --- Hashes and KDFs (synchronous; see the note at the top) --------------------------------------

export function sha256(data: Uint8Array): Uint8Array {
  assertBytes(data, undefined, 'sha256 input')
  return nobleSha256(data)
}

export function sha512(data: Uint8Array): Uint8Array {
  assertBytes(data, undefined, 'sha512 input')
  return nobleSha512(data)
}

export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  assertBytes(key, undefined, 'hmac key')
  assertBytes(data, undefined, 'hmac data')
  return hmac(nobleSha256, key, data)
}

/** HKDF-SHA256 (RFC 5869). An empty salt means HashLen zero bytes, as the RFC specifies. */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  assertBytes(ikm, undefined, 'hkdf ikm')
  assertBytes(salt, undefined, 'hkdf salt')
  assertBytes(info, undefined, 'hkdf info')
  if (!Number.isInteger(length) || length < 1 || length > 255 * 32) {
    throw new ProtocolError(ProtocolErrorCode.InvalidInput, `hkdf length: expected 1..8160, got ${length}`)
  }
  return hkdf(nobleSha256, ikm, salt, info, length)
}

// --- AES-256-GCM ------------------------------------------------------------------------------

export async function importAesGcmKey(key: Uint8Array): Promise<CryptoKey> {
  assertBytes(key, undefined, 'aes-gcm key')
  if (key.length !== 16 && key.length !== 32) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `aes-gcm key: expected 16 or 32 bytes, got ${key.length}`,
    )
  }
  return subtle.importKey('raw', source(key), { name: 'AES-GCM' }, false, ['encrypt', 'decrypt'])
}

/** AES-GCM with a 96-bit nonce and 128-bit tag; returns ciphertext ‖ tag. */
export async function aesGcmEncrypt(
  key: Uint8Array | CryptoKey,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  associatedData: Uint8Array,
): Promise<Uint8Array> {
  assertBytes(nonce, AES_GCM_NONCE_BYTES, 'aes-gcm nonce')
  assertBytes(plaintext, undefined, 'aes-gcm plaintext')
  assertBytes(associatedData, undefined, 'aes-gcm associated data')
  const cryptoKey = key instanceof Uint8Array ? await importAesGcmKey(key) : key
  const sealed = await subtle.encrypt(
    { name: 'AES-GCM', iv: source(nonce), additionalData: source(associatedData), tagLength: 128 },
    cryptoKey,
    source(plaintext),
  )
  return new Uint8Array(sealed)
}

/** Opens ciphertext ‖ tag; any failure (wrong key, altered byte) is DecryptionFailed. */
export async function aesGcmDecrypt(
  key: Uint8Array | CryptoKey,
  nonce: Uint8Array,
  sealed: Uint8Array,
  associatedData: Uint8Array,
): Promise<Uint8Array> {
  assertBytes(nonce, AES_GCM_NONCE_BYTES, 'aes-gcm nonce')
  assertBytes(sealed, undefined, 'aes-gcm ciphertext')
  assertBytes(associatedData, undefined, 'aes-gcm associated data')
  if (sealed.length < AES_GCM_TAG_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.DecryptionFailed,
      `expected at least ${AES_GCM_TAG_BYTES} ciphertext bytes, got ${sealed.length}`,
    )
  }
  const cryptoKey = key instanceof Uint8Array ? await importAesGcmKey(key) : key
  try {
    const opened = await subtle.decrypt(
      { name: 'AES-GCM', iv: source(nonce), additionalData: source(associatedData), tagLength: 128 },
      cryptoKey,
      source(sealed),
    )
    return new Uint8Array(opened)
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.DecryptionFailed,
      'expected an authentic ciphertext, got one whose tag did not verify',
      { cause },
    )
  }
}

// --- RSA-OAEP (login tokens) ------------------------------------------------------------------

export interface RsaOaepKeyPair {
  readonly privateKey: CryptoKey
  /** SubjectPublicKeyInfo DER, the form the server stores. */
  readonly publicKeySpki: Uint8Array
}

const RSA_OAEP_SHA256 = { name: 'RSA-OAEP', hash: 'SHA-256' } as const

export async function generateRsaOaepKeyPair(options: KeyOptions = {}): Promise<RsaOaepKeyPair> {
  const pair = (await subtle.generateKey(
    {
      ...RSA_OAEP_SHA256,
      modulusLength: RSA_OAEP_MODULUS_BITS,
      publicExponent: new Uint8Array([1, 0, 1]),
    },
    options.extractable ?? false,
    ['encrypt', 'decrypt'],
  )) as CryptoKeyPair
  const publicKeySpki = new Uint8Array(await subtle.exportKey('spki', pair.publicKey))
  return { privateKey: pair.privateKey, publicKeySpki }
}

/**
 * Imports and checks an RSA-OAEP public key: SPKI DER, SHA-256, and exactly the modulus size the
 * protocol fixes (so nobody registers a weak key).
 */
export async function importRsaOaepPublicKey(spki: Uint8Array): Promise<CryptoKey> {
  assertBytes(spki, undefined, 'rsa public key')
  let key: CryptoKey
  try {
    key = await subtle.importKey('spki', source(spki), RSA_OAEP_SHA256, true, ['encrypt'])
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidKey,
      'expected an RSA SubjectPublicKeyInfo, got bytes that do not parse',
      { cause },
    )
  }
  const algorithm = key.algorithm as RsaHashedKeyAlgorithm
  if (algorithm.modulusLength !== RSA_OAEP_MODULUS_BITS) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidKey,
      `expected a ${RSA_OAEP_MODULUS_BITS}-bit RSA key, got ${algorithm.modulusLength} bits`,
    )
  }
  const exponent = algorithm.publicExponent
  if (!(exponent.length === 3 && exponent[0] === 1 && exponent[1] === 0 && exponent[2] === 1)) {
    throw new ProtocolError(ProtocolErrorCode.InvalidKey, 'expected RSA public exponent 65537, got another')
  }
  return key
}

export async function rsaOaepEncrypt(publicKey: CryptoKey, plaintext: Uint8Array): Promise<Uint8Array> {
  assertBytes(plaintext, undefined, 'rsa plaintext')
  return new Uint8Array(await subtle.encrypt(RSA_OAEP_SHA256, publicKey, source(plaintext)))
}

export async function rsaOaepDecrypt(privateKey: CryptoKey, ciphertext: Uint8Array): Promise<Uint8Array> {
  assertBytes(ciphertext, undefined, 'rsa ciphertext')
  try {
    return new Uint8Array(await subtle.decrypt(RSA_OAEP_SHA256, privateKey, source(ciphertext)))
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.DecryptionFailed,
      'expected an RSA-OAEP ciphertext for this key, got one that does not decrypt',
      { cause },
    )
  }
}

/** PKCS#8 export of an extractable RSA private key, for encrypted storage (terminal client). */
export async function exportRsaPrivateKeyPkcs8(privateKey: CryptoKey): Promise<Uint8Array> {
  if (!privateKey.extractable) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      'expected an extractable RSA key, got a non-extractable one',
    )
  }
  return new Uint8Array(await subtle.exportKey('pkcs8', privateKey))
}

export async function importRsaPrivateKeyPkcs8(
  pkcs8: Uint8Array,
  options: KeyOptions = {},
): Promise<CryptoKey> {
  assertBytes(pkcs8, undefined, 'rsa private key')
  try {
    return await subtle.importKey('pkcs8', source(pkcs8), RSA_OAEP_SHA256, options.extractable ?? false, [
      'decrypt',
    ])
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidKey,
      'expected an RSA PKCS#8 private key, got bytes that do not parse',
      { cause },
    )
  }
}
