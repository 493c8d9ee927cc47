/**
 * Device names (docs/protocol.md §13.8): what a user calls each of the account's devices, sealed so
 * that the server, which stores them, reads none of them. The key comes from the identity private
 * keys, which every device of the account holds (they travel in the provisioning message) and
 * nobody else does; the device id is bound in, so a server cannot show one device's name on
 * another (and have the user remove the wrong one).
 *
 *   name key  = HKDF-SHA256(ikm = X25519 identity private key (32) ‖ Ed25519 seed (32),
 *                           salt = 32 zero bytes, info = "secure-chat/v1/device-name", L = 32)
 *   sealed    = 0x01 ‖ nonce (12) ‖ AES-256-GCM(name key, nonce, UTF-8 name, AD)
 *   AD        = 0x01 ‖ "secure-chat/v1/device-name" ‖ u32(device id)
 *
 * A name is 1 to MAX_DEVICE_NAME_LENGTH code points after trimming, without control characters,
 * line or paragraph separators or bidirectional controls: it is shown as one line in lists.
 */
import { assertBytes, ByteReader, ByteWriter, concatBytes, utf8Decode, utf8Encode } from './bytes.js'
import {
  AES_GCM_NONCE_BYTES,
  aesGcmDecrypt,
  aesGcmEncrypt,
  hkdfSha256,
  randomBytes,
} from './crypto/primitives.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { IDENTITY_EXPORT_VERSION } from './identity.js'
import { DEVICE_NAME_LABEL, ZERO_SALT } from './labels.js'
import { MAX_DEVICE_NAME_LENGTH, MAX_SEALED_DEVICE_NAME_BYTES } from './limits.js'

export const SEALED_DEVICE_NAME_VERSION = 1

const IDENTITY_EXPORT_BYTES = 129
const NAME_KEY_BYTES = 32

/** Characters a name may not hold: C0 and C1 controls, line and paragraph separators, bidi controls. */
const FORBIDDEN_IN_NAMES = /[\p{Cc}\u2028\u2029\u202A-\u202E\u2066-\u2069]/u

/**
 * The name trimmed, or InvalidInput saying which rule it breaks. Never echoes the name itself.
 */
export function checkDeviceName(name: unknown): string {
  if (typeof name !== 'string') {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `device name: expected text, got ${describeValue(name)}`,
    )
  }
  const trimmed = name.trim()
  const length = [...trimmed].length
  if (length < 1 || length > MAX_DEVICE_NAME_LENGTH) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `device name: expected 1 to ${MAX_DEVICE_NAME_LENGTH} characters, got ${length}`,
    )
  }
  if (FORBIDDEN_IN_NAMES.test(trimmed)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      'device name: expected one line of text, got control, separator or bidirectional characters',
    )
  }
  return trimmed
}

/** The account's device-name key, from its identity export (§2.5), which holds the private keys. */
export function deviceNameKey(identityExport: Uint8Array): Uint8Array {
  assertBytes(identityExport, IDENTITY_EXPORT_BYTES, 'identity export')
  if (identityExport[0] !== IDENTITY_EXPORT_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `identity export: expected version ${IDENTITY_EXPORT_VERSION}, got ${identityExport[0]}`,
    )
  }
  return hkdfSha256(identityExport.subarray(1, 65), ZERO_SALT, DEVICE_NAME_LABEL, NAME_KEY_BYTES)
}

function associatedData(deviceId: number): Uint8Array {
  if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > 0xffff_ffff) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `device id: expected an integer from 1 to 4294967295, got ${deviceId}`,
    )
  }
  return new ByteWriter(64).u8(SEALED_DEVICE_NAME_VERSION).fixed(DEVICE_NAME_LABEL).u32(deviceId).finish()
}

/** Seals `name` (checked first) as device `deviceId`'s; `nonce` is for known-answer tests only. */
export async function sealDeviceName(
  key: Uint8Array,
  deviceId: number,
  name: string,
  nonce: Uint8Array = randomBytes(AES_GCM_NONCE_BYTES),
): Promise<Uint8Array> {
  assertBytes(key, NAME_KEY_BYTES, 'device name key')
  const ad = associatedData(deviceId)
  const ciphertext = await aesGcmEncrypt(key, nonce, utf8Encode(checkDeviceName(name)), ad)
  return concatBytes(new Uint8Array([SEALED_DEVICE_NAME_VERSION]), nonce, ciphertext)
}

/**
 * Opens device `deviceId`'s sealed name. Another device's name, another account's key or any
 * altered byte fails with DecryptionFailed; a name that opens but breaks the rules (sealed by a
 * faulty device) with MalformedMessage.
 */
export async function openDeviceName(key: Uint8Array, deviceId: number, sealed: Uint8Array): Promise<string> {
  assertBytes(key, NAME_KEY_BYTES, 'device name key')
  const ad = associatedData(deviceId)
  assertBytes(sealed, undefined, 'sealed device name')
  if (sealed.length > MAX_SEALED_DEVICE_NAME_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `sealed device name: expected at most ${MAX_SEALED_DEVICE_NAME_BYTES} bytes, got ${sealed.length}`,
    )
  }
  const reader = new ByteReader(sealed, 'sealed device name')
  const version = reader.u8()
  if (version !== SEALED_DEVICE_NAME_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sealed device name: expected version ${SEALED_DEVICE_NAME_VERSION}, got ${version}`,
    )
  }
  const nonce = reader.fixed(AES_GCM_NONCE_BYTES)
  const name = utf8Decode(await aesGcmDecrypt(key, nonce, reader.rest(), ad))
  try {
    return checkDeviceName(name)
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `sealed device name: ${(cause as Error).message}`,
      { cause },
    )
  }
}
