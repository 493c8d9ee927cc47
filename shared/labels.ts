/**
 * Every domain-separation label the protocol feeds into a KDF or a signature. Changing any of these
 * changes the wire format: the known-answer tests pin them, and docs/protocol.md lists them.
 */
import { utf8Encode } from './bytes.js'

/** HKDF info for the X3DH shared secret. */
export const X3DH_INFO = utf8Encode('secure-chat/v1/x3dh')
/** HKDF info for a root-chain step (libsignal: "WhisperRatchet"). */
export const ROOT_CHAIN_INFO = utf8Encode('secure-chat/v1/ratchet')
/** HKDF info expanding a message key seed into an AES-256-GCM key and nonce. */
export const MESSAGE_KEY_INFO = utf8Encode('secure-chat/v1/message-key')
/** HKDF info expanding a sender key's message key seed (group messages, shared/group/sender-key.ts). */
export const SENDER_KEY_MESSAGE_KEY_INFO = utf8Encode('secure-chat/v1/sender-key-message-key')
/** Prefix of what a group message's Ed25519 signature covers (the message bytes before it). */
export const GROUP_MESSAGE_SIGNATURE_LABEL = utf8Encode('secure-chat/v1/group-message')
/** Ed25519 signature prefixes: what is signed is the label followed by the key (and its id). */
export const IDENTITY_SIGNATURE_LABEL = utf8Encode('secure-chat/v1/identity-key')
export const SIGNED_PREKEY_SIGNATURE_LABEL = utf8Encode('secure-chat/v1/signed-prekey')
export const ONE_TIME_PREKEY_SIGNATURE_LABEL = utf8Encode('secure-chat/v1/one-time-prekey')
/**
 * The same for the prekeys of devices 2 and up, which sign label ‖ u32 deviceId ‖ u32 keyId ‖ key:
 * the device is signed so that a server cannot present one device's keys as another. Device 1
 * keeps the labels above, so every key signed before there were devices stays valid.
 */
export const DEVICE_SIGNED_PREKEY_SIGNATURE_LABEL = utf8Encode('secure-chat/v1/device-signed-prekey')
export const DEVICE_ONE_TIME_PREKEY_SIGNATURE_LABEL = utf8Encode('secure-chat/v1/device-one-time-prekey')
/** Associated-data prefix of records sealed at rest (at-rest.ts); separates them from every other AEAD use. */
export const AT_REST_AD_LABEL = utf8Encode('secure-chat/v1/at-rest')

/** Chain-step constants (libsignal and Olm use exactly these single bytes). */
export const MESSAGE_KEY_SEED_CONSTANT = new Uint8Array([0x01])
export const CHAIN_KEY_CONSTANT = new Uint8Array([0x02])

/** X3DH "F": 32 0xFF bytes prepended to the DH outputs (X3DH §2.2, for curve25519). */
export const X3DH_PREFIX = new Uint8Array(32).fill(0xff)
/** The HKDF salt used where the spec asks for "zero-filled, hash length". */
export const ZERO_SALT = new Uint8Array(32)

/** HKDF info prefix and AD label of the device-link channel (provisioning.ts). */
export const LINK_INFO_LABEL = utf8Encode('secure-chat/v1/link')

/**
 * HKDF info of the key that seals device names (device-name.ts), derived from the identity private
 * keys that only the account's devices hold, and the label in the sealed name's associated data.
 */
export const DEVICE_NAME_LABEL = utf8Encode('secure-chat/v1/device-name')

/** SHA-256 input prefix of an account's login-secret salt (login-secret.ts). */
export const LOGIN_SECRET_SALT_LABEL = utf8Encode('secure-chat/v1/login-salt')
