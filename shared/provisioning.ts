/**
 * Linking a new device (issue 12, docs/protocol.md §13.6): the cryptography of the one-time
 * provisioning channel, pure and without I/O. The server only relays what is here, and can read
 * none of it. After Signal's ProvisioningCipher (an ephemeral X25519 key shown as a QR code, ECDH →
 * HKDF → AEAD), with one step more: a short check both screens show before the user approves.
 *
 *   link code      = "sc1" ‖ base64url(0x01 ‖ channel id (16) ‖ new device's ephemeral X25519 public key (32))
 *   shared secret  = X25519(own ephemeral private key, other's ephemeral public key)
 *   keys           = HKDF-SHA256(ikm = shared secret, salt = 32 zero bytes,
 *                                info = "secure-chat/v1/link" ‖ 0x00 ‖ E_new ‖ E_existing, 36 bytes)
 *   message key    = keys[0..32];  check = big-endian uint32(keys[32..36]) mod 10^6, as "123 456"
 *   sealed         = 0x01 ‖ nonce (12) ‖ AES-256-GCM(plaintext, AD)
 *   AD             = 0x01 ‖ direction ‖ "secure-chat/v1/link" ‖ 0x00 ‖ E_new ‖ E_existing
 *   direction      = 0x01 existing → new device (the provisioning message),
 *                    0x02 new → existing device (the new device's answer: its name)
 *
 * Both directions share the key, so the direction byte is what keeps a server from reflecting one
 * device's message back to it as the other's: the new device's answer posted on its own side as
 * the provisioning message, or the other way round, fails to open.
 * The new device makes the channel and its key and shows the code (QR, or text to paste). The
 * existing device reads it, makes its own ephemeral key, and sends its public half on the channel;
 * both now derive the same keys and show the check. The user compares the two screens and approves
 * on the existing device, which only then sends the sealed provisioning message (identity keys,
 * account, contacts, a link token). What the check protects: a code that did not come from the
 * user's own new device (pasted from a message, a QR swapped on the way) shows a check no screen
 * of theirs shows; and a server that replaced the existing device's public key on the channel
 * cannot make the new device's check match, since it knows neither device's private key. The
 * check is derived from the shared secret, not from the public keys, so it cannot be ground.
 */
import { assertBytes, ByteReader, ByteWriter, concatBytes, fromBase64Url, toBase64Url } from './bytes.js'
import {
  AES_GCM_NONCE_BYTES,
  AES_GCM_TAG_BYTES,
  aesGcmDecrypt,
  aesGcmEncrypt,
  hkdfSha256,
  type PrivateKeyHandle,
  randomBytes,
  X25519_KEY_BYTES,
  x25519,
} from './crypto/primitives.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { LINK_INFO_LABEL, ZERO_SALT } from './labels.js'
import { MAX_PROVISIONING_ANSWER_BYTES, MAX_PROVISIONING_PLAINTEXT_BYTES } from './limits.js'

export const LINK_CODE_VERSION = 1
/** What every link code starts with: tells a pasted code from any other text at a glance. */
export const LINK_CODE_PREFIX = 'sc1'
/** Bytes of a provisioning channel's id: random, made by the server, used once. */
export const PROVISIONING_CHANNEL_ID_BYTES = 16
/**
 * Bytes of the secret the server gives the new device with its channel: the new device's
 * capability on the channel (the code shows only the id). Random; the server keeps its SHA-256.
 */
export const PROVISIONING_CHANNEL_SECRET_BYTES = 32
export const PROVISIONING_SEALED_VERSION = 1
/** Digits of the check both screens show: one blind guess in a million for whoever is in between. */
export const LINK_CHECK_DIGITS = 6

/** Which way a sealed message goes; each way has its own associated data (the direction byte). */
export type ProvisioningDirection = 'to new device' | 'to existing device'
const DIRECTION_BYTE: Readonly<Record<ProvisioningDirection, number>> = {
  'to new device': 0x01,
  'to existing device': 0x02,
}

const MESSAGE_KEY_BYTES = 32
const CHECK_SOURCE_BYTES = 4
const CODE_BYTES = 1 + PROVISIONING_CHANNEL_ID_BYTES + X25519_KEY_BYTES

/** What a link code carries: where to answer, and the key to answer to. */
export interface LinkCode {
  readonly channelId: Uint8Array
  /** The new device's ephemeral X25519 public key. */
  readonly ephemeralPublicKey: Uint8Array
}

export function encodeLinkCode(code: LinkCode): string {
  assertBytes(code.channelId, PROVISIONING_CHANNEL_ID_BYTES, 'link code channel id')
  assertBytes(code.ephemeralPublicKey, X25519_KEY_BYTES, 'link code public key')
  const bytes = new ByteWriter(CODE_BYTES)
    .u8(LINK_CODE_VERSION)
    .fixed(code.channelId)
    .fixed(code.ephemeralPublicKey)
    .finish()
  return `${LINK_CODE_PREFIX}${toBase64Url(bytes)}`
}

/**
 * Reads a link code as a user pasted or a camera read it: surrounding spaces and line breaks (a
 * code wrapped by a terminal or a chat) are ignored; anything else that is not a code is refused.
 */
export function decodeLinkCode(text: string): LinkCode {
  if (typeof text !== 'string') {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `link code: expected text, got ${describeValue(text)}`,
    )
  }
  const compact = text.replace(/\s+/g, '')
  if (!compact.startsWith(LINK_CODE_PREFIX)) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `link code: expected text starting with "${LINK_CODE_PREFIX}", got ${compact.length} characters starting otherwise`,
    )
  }
  let bytes: Uint8Array
  try {
    bytes = fromBase64Url(compact.slice(LINK_CODE_PREFIX.length))
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      'link code: expected base64url after the prefix, got other characters',
      { cause },
    )
  }
  if (bytes.length !== CODE_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `link code: expected ${CODE_BYTES} bytes, got ${bytes.length} (cut short, or not a whole code)`,
    )
  }
  const reader = new ByteReader(bytes, 'link code')
  const version = reader.u8()
  if (version !== LINK_CODE_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `link code: expected version ${LINK_CODE_VERSION}, got ${version} (the other device's app is newer or older)`,
    )
  }
  const channelId = reader.fixed(PROVISIONING_CHANNEL_ID_BYTES)
  const ephemeralPublicKey = reader.fixed(X25519_KEY_BYTES)
  reader.end()
  return { channelId, ephemeralPublicKey }
}

/** What both devices derive once they have each other's ephemeral public key. */
export interface LinkKeys {
  /** AES-256 key of the provisioning message. */
  readonly messageKey: Uint8Array
  /** The check both screens show, as "123 456". */
  readonly check: string
  /** "secure-chat/v1/link" ‖ 0x00 ‖ E_new ‖ E_existing: the HKDF info, bound into every AD. */
  readonly context: Uint8Array
}

/**
 * The keys of one link, on either device: `self` says which one this is (its private key is
 * `ownPrivateKey`, and its public key is the one of the pair named after it). Both devices pass the
 * same two public keys and derive the same keys; a low-order or otherwise unusable public key
 * fails with InvalidKey.
 */
export async function deriveLinkKeys(
  ownPrivateKey: PrivateKeyHandle,
  self: 'new device' | 'existing device',
  keys: { readonly newDevicePublicKey: Uint8Array; readonly existingDevicePublicKey: Uint8Array },
): Promise<LinkKeys> {
  assertBytes(keys.newDevicePublicKey, X25519_KEY_BYTES, 'new device public key')
  assertBytes(keys.existingDevicePublicKey, X25519_KEY_BYTES, 'existing device public key')
  const shared = await x25519(
    ownPrivateKey,
    self === 'new device' ? keys.existingDevicePublicKey : keys.newDevicePublicKey,
  )
  const context = concatBytes(
    LINK_INFO_LABEL,
    new Uint8Array([0]),
    keys.newDevicePublicKey,
    keys.existingDevicePublicKey,
  )
  const derived = hkdfSha256(shared, ZERO_SALT, context, MESSAGE_KEY_BYTES + CHECK_SOURCE_BYTES)
  const checkSource = new DataView(derived.buffer, derived.byteOffset + MESSAGE_KEY_BYTES, CHECK_SOURCE_BYTES)
  const digits = String(checkSource.getUint32(0) % 10 ** LINK_CHECK_DIGITS).padStart(LINK_CHECK_DIGITS, '0')
  return {
    messageKey: derived.slice(0, MESSAGE_KEY_BYTES),
    check: `${digits.slice(0, 3)} ${digits.slice(3)}`,
    context,
  }
}

/** What sealing adds: the version byte, the nonce and the tag. */
const SEALING_OVERHEAD_BYTES = 1 + AES_GCM_NONCE_BYTES + AES_GCM_TAG_BYTES

/** The largest sealed provisioning message: what the server's channel may carry at most. */
export const MAX_PROVISIONING_SEALED_BYTES = MAX_PROVISIONING_PLAINTEXT_BYTES + SEALING_OVERHEAD_BYTES

/** The largest plaintext of a new device's answer, so that sealed it fits MAX_PROVISIONING_ANSWER_BYTES. */
export const MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES = MAX_PROVISIONING_ANSWER_BYTES - SEALING_OVERHEAD_BYTES

/** The largest plaintext and sealed message each direction takes (the channel's limits, §13.7). */
const BOUNDS: Readonly<Record<ProvisioningDirection, { plaintext: number; sealed: number }>> = {
  'to new device': { plaintext: MAX_PROVISIONING_PLAINTEXT_BYTES, sealed: MAX_PROVISIONING_SEALED_BYTES },
  'to existing device': {
    plaintext: MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES,
    sealed: MAX_PROVISIONING_ANSWER_BYTES,
  },
}

function associatedData(keys: LinkKeys, direction: ProvisioningDirection): Uint8Array {
  const byte = DIRECTION_BYTE[direction]
  if (byte === undefined) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `provisioning direction: expected "to new device" or "to existing device", got ${describeValue(direction)}`,
    )
  }
  return concatBytes(new Uint8Array([PROVISIONING_SEALED_VERSION, byte]), keys.context)
}

/**
 * Seals a message of this link: the provisioning message ('to new device') or the new device's
 * answer ('to existing device'). `nonce` is for known-answer tests only.
 */
export async function sealProvisioning(
  keys: LinkKeys,
  direction: ProvisioningDirection,
  plaintext: Uint8Array,
  nonce: Uint8Array = randomBytes(AES_GCM_NONCE_BYTES),
): Promise<Uint8Array> {
  const ad = associatedData(keys, direction)
  assertBytes(plaintext, undefined, 'provisioning message')
  const { plaintext: maxBytes } = BOUNDS[direction]
  if (plaintext.length > maxBytes) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `provisioning message ${direction}: expected at most ${maxBytes} bytes, got ${plaintext.length}`,
    )
  }
  const ciphertext = await aesGcmEncrypt(keys.messageKey, nonce, plaintext, ad)
  return concatBytes(new Uint8Array([PROVISIONING_SEALED_VERSION]), nonce, ciphertext)
}

/**
 * Opens a message that came the given way; another link's keys, another order of keys, the other
 * direction (a reflected message) or any altered byte fails with DecryptionFailed.
 */
export async function openProvisioning(
  keys: LinkKeys,
  direction: ProvisioningDirection,
  sealed: Uint8Array,
): Promise<Uint8Array> {
  const ad = associatedData(keys, direction)
  assertBytes(sealed, undefined, 'sealed provisioning message')
  const { sealed: maxBytes } = BOUNDS[direction]
  if (sealed.length > maxBytes) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `sealed provisioning message ${direction}: expected at most ${maxBytes} bytes, got ${sealed.length}`,
    )
  }
  const reader = new ByteReader(sealed, 'sealed provisioning message')
  const version = reader.u8()
  if (version !== PROVISIONING_SEALED_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `sealed provisioning message: expected version ${PROVISIONING_SEALED_VERSION}, got ${version}`,
    )
  }
  const nonce = reader.fixed(AES_GCM_NONCE_BYTES)
  return aesGcmDecrypt(keys.messageKey, nonce, reader.rest(), ad)
}
