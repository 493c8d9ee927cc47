/**
 * Schemas of every REST body (requests and responses). Fastify validates requests and serialises
 * responses with them; clients decode responses with `decode`. Binary fields are unpadded base64url.
 */
import {
  MAX_DEVICES_LIMIT,
  MAX_LISTED_ONE_TIME_PREKEY_IDS,
  MAX_PROVISIONING_ANSWER_BYTES,
  MAX_PROVISIONING_MESSAGES_PER_CHANNEL,
  MAX_SEALED_DEVICE_NAME_BYTES,
  ONE_TIME_PREKEY_BATCH,
  PASSWORD_MAX_LENGTH,
  USER_SEARCH_MAX_RESULTS,
  USERNAME_MAX_LENGTH,
} from '../limits.js'
import { LOGIN_SECRET_BYTES } from '../login-secret.js'
import {
  MAX_PROVISIONING_SEALED_BYTES,
  PROVISIONING_CHANNEL_ID_BYTES,
  PROVISIONING_CHANNEL_SECRET_BYTES,
} from '../provisioning.js'
import { USERNAME_PATTERN } from '../username.js'
import { Base64Url, FixedBase64Url, type Static, Type } from './schema.js'

export const API_PREFIX = '/api/v1'

/**
 * Usernames the server sends (in answers and frames): normalised, so they must match the username
 * rule exactly (shared/username.ts). A name with anything else (control characters, escape
 * sequences, bidirectional overrides) is refused before any UI can show it.
 */
export const ServerUsernameField = Type.String({ pattern: USERNAME_PATTERN.source })

/** Usernames on the wire before normalisation (NFKC can shorten them); the server normalises. */
export const UsernameField = Type.String({ minLength: 1, maxLength: USERNAME_MAX_LENGTH * 2 })
/** Sent only by clients of the previous version, and once more by today's to upgrade an account. */
export const PasswordField = Type.String({ minLength: 1, maxLength: PASSWORD_MAX_LENGTH })
/** What a client proves itself with instead of the password (shared/login-secret.ts). */
export const LoginSecretField = FixedBase64Url(LOGIN_SECRET_BYTES, 'login secret: PBKDF2-HMAC-SHA256 output')
/** RSA-OAEP-3072 SubjectPublicKeyInfo DER is 422 bytes; allow some slack for encodings. */
export const LoginKeyField = Base64Url(64, 600, 'RSA-OAEP-3072 SHA-256 public key, SPKI DER')
export const TimestampField = Type.Integer({ minimum: 0, description: 'milliseconds since the Unix epoch' })
export const KeyIdField = Type.Integer({ minimum: 0, maximum: 0xffff_ffff })
/** Devices of an account count from 1 (the one that registered); their ids are signed as uint32. */
export const DeviceIdField = Type.Integer({ minimum: 1, maximum: 0xffff_ffff })

export const PublicIdentityJson = Type.Object(
  {
    identityKey: FixedBase64Url(32, 'X25519 identity key'),
    signingKey: FixedBase64Url(32, 'Ed25519 signing key'),
    identitySignature: FixedBase64Url(64, 'Ed25519 signature over the identity key'),
  },
  { additionalProperties: false },
)
export type PublicIdentityJson = Static<typeof PublicIdentityJson>

export const PreKeyJson = Type.Object(
  {
    keyId: KeyIdField,
    publicKey: FixedBase64Url(32, 'X25519 prekey'),
    signature: FixedBase64Url(64, 'Ed25519 signature over label ‖ [deviceId ‖] keyId ‖ publicKey'),
  },
  { additionalProperties: false },
)
export type PreKeyJson = Static<typeof PreKeyJson>

export const OneTimePreKeysJson = Type.Array(PreKeyJson, { minItems: 1, maxItems: ONE_TIME_PREKEY_BATCH })

export const RegisterRequest = Type.Object(
  {
    username: UsernameField,
    loginSecret: Type.Optional(LoginSecretField),
    /**
     * Registration: refused (a client of the previous version, told to update). Reinstall: only with
     * `loginSecret`, to upgrade an account still on its password (docs/protocol.md §4.1).
     */
    password: Type.Optional(PasswordField),
    loginKey: LoginKeyField,
    identity: PublicIdentityJson,
    signedPreKey: PreKeyJson,
    oneTimePreKeys: OneTimePreKeysJson,
  },
  { additionalProperties: false },
)
export type RegisterRequest = Static<typeof RegisterRequest>

export const RegisterResponse = Type.Object(
  { username: ServerUsernameField },
  { additionalProperties: false },
)
export type RegisterResponse = Static<typeof RegisterResponse>

/** The decrypted `LoginChallengeResponse.challenge`: proves the device holds the login key. */
export const DeviceProofField = FixedBase64Url(32, 'device proof: the decrypted login challenge')

/**
 * What proves the account: the fields /login takes, and /account/delete with them (the one place
 * both requests get their credential from). `loginSecret` alone from today's clients; `password`
 * alone from clients of the previous version (accepted while the account is still on its
 * password); both once, to upgrade an account.
 */
export const CredentialFields = {
  username: UsernameField,
  loginSecret: Type.Optional(LoginSecretField),
  password: Type.Optional(PasswordField),
}

export const LoginRequest = Type.Object(
  {
    ...CredentialFields,
    deviceProof: Type.Optional(DeviceProofField),
    /**
     * The device logging in (default 1, the device that registered): the token is that device's,
     * encrypted to its login key. A removed device is refused with E2E_ERR_DEVICE_REMOVED.
     */
    device: Type.Optional(DeviceIdField),
  },
  { additionalProperties: false },
)
export type LoginRequest = Static<typeof LoginRequest>

/** POST /account/password: the current credential (as for /login) and the new login secret. */
export const ChangePasswordRequest = Type.Object(
  {
    loginSecret: LoginSecretField,
    password: Type.Optional(PasswordField),
    newLoginSecret: LoginSecretField,
    /** End every other session of the account (their sockets close). */
    endOtherSessions: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
)
export type ChangePasswordRequest = Static<typeof ChangePasswordRequest>

export const ChangePasswordResponse = Type.Object(
  { endedSessions: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
)
export type ChangePasswordResponse = Static<typeof ChangePasswordResponse>

/**
 * POST /account/delete, besides the session token: the account's own name (what the user typed to
 * confirm) and the proof that /login takes. The login secret is required (no client of the
 * previous version deletes); `password` beside it only for an account still on its password.
 */
export const DeleteAccountRequest = Type.Object(
  { ...CredentialFields, loginSecret: LoginSecretField },
  { additionalProperties: false },
)
export type DeleteAccountRequest = Static<typeof DeleteAccountRequest>

export const LoginChallengeRequest = Type.Object(
  {
    username: UsernameField,
    /** Whose login key the challenge is encrypted to (default 1, the device that registered). */
    device: Type.Optional(DeviceIdField),
  },
  { additionalProperties: false },
)
export type LoginChallengeRequest = Static<typeof LoginChallengeRequest>

export const LoginChallengeResponse = Type.Object(
  {
    /** RSA-OAEP(SHA-256) encryption of a 32-byte device proof under the user's login key. */
    challenge: Base64Url(384, 384),
  },
  { additionalProperties: false },
)
export type LoginChallengeResponse = Static<typeof LoginChallengeResponse>

export const LoginResponse = Type.Object(
  {
    username: ServerUsernameField,
    /** RSA-OAEP(SHA-256) encryption of the 32-byte session token under the user's login key. */
    encryptedToken: Base64Url(384, 384),
    expiresAt: TimestampField,
  },
  { additionalProperties: false },
)
export type LoginResponse = Static<typeof LoginResponse>

export const PreKeyBundleResponse = Type.Object(
  {
    username: ServerUsernameField,
    /** The device whose keys these are; absent from a server that knows only device 1. */
    deviceId: Type.Optional(DeviceIdField),
    identity: PublicIdentityJson,
    signedPreKey: PreKeyJson,
    oneTimePreKey: Type.Optional(PreKeyJson),
  },
  { additionalProperties: false },
)
export type PreKeyBundleResponse = Static<typeof PreKeyBundleResponse>

export const IdentityResponse = Type.Object(
  { username: ServerUsernameField, identity: PublicIdentityJson },
  { additionalProperties: false },
)
export type IdentityResponse = Static<typeof IdentityResponse>

export const UploadOneTimePreKeysRequest = Type.Object(
  { oneTimePreKeys: OneTimePreKeysJson },
  { additionalProperties: false },
)
export type UploadOneTimePreKeysRequest = Static<typeof UploadOneTimePreKeysRequest>

export const RotateSignedPreKeyRequest = Type.Object(
  { signedPreKey: PreKeyJson },
  { additionalProperties: false },
)
export type RotateSignedPreKeyRequest = Static<typeof RotateSignedPreKeyRequest>

export const PreKeyStatusResponse = Type.Object(
  {
    oneTimePreKeys: Type.Integer({ minimum: 0 }),
    signedPreKeyId: KeyIdField,
    signedPreKeyCreatedAt: TimestampField,
  },
  { additionalProperties: false },
)
export type PreKeyStatusResponse = Static<typeof PreKeyStatusResponse>

/**
 * GET /keys/one-time: the ids of the caller's one-time prekeys the server still holds (not yet
 * handed out), lowest first. A separate route rather than a field of PreKeyStatusResponse, whose
 * schema refuses unknown fields: clients that predate it never ask, so they keep working.
 */
export const OneTimePreKeyIdsResponse = Type.Object(
  { keyIds: Type.Array(KeyIdField, { maxItems: MAX_LISTED_ONE_TIME_PREKEY_IDS }) },
  { additionalProperties: false },
)
export type OneTimePreKeyIdsResponse = Static<typeof OneTimePreKeyIdsResponse>

export const UserSearchResponse = Type.Object(
  {
    users: Type.Array(Type.Object({ username: ServerUsernameField }, { additionalProperties: false }), {
      maxItems: USER_SEARCH_MAX_RESULTS,
    }),
  },
  { additionalProperties: false },
)
export type UserSearchResponse = Static<typeof UserSearchResponse>

// --- Provisioning channels: linking a device (docs/protocol.md §13.7) ------------------------------

export const ProvisioningChannelIdField = FixedBase64Url(
  PROVISIONING_CHANNEL_ID_BYTES,
  'provisioning channel id, as in the link code',
)

/** POST /provisioning: the new device's channel. */
export const ProvisioningChannelResponse = Type.Object(
  {
    channelId: ProvisioningChannelIdField,
    /** The new device's capability on the channel, sent as `Authorization: Bearer`; shown to nobody. */
    channelSecret: FixedBase64Url(PROVISIONING_CHANNEL_SECRET_BYTES, 'provisioning channel secret'),
    /** The server's time when the channel (and the link code) expires. */
    expiresAt: TimestampField,
  },
  { additionalProperties: false },
)
export type ProvisioningChannelResponse = Static<typeof ProvisioningChannelResponse>

/**
 * POST /provisioning/:channelId/new, from the existing device: its ephemeral public key, then the
 * sealed provisioning message (shared/provisioning.ts); opaque to the server.
 */
export const ProvisioningMessageRequest = Type.Object(
  { message: Base64Url(1, MAX_PROVISIONING_SEALED_BYTES, 'opaque bytes for the new device') },
  { additionalProperties: false },
)
export type ProvisioningMessageRequest = Static<typeof ProvisioningMessageRequest>

/** POST /provisioning/:channelId/existing, from the new device: a small sealed message (its name). */
export const ProvisioningAnswerRequest = Type.Object(
  { message: Base64Url(1, MAX_PROVISIONING_ANSWER_BYTES, 'opaque bytes for the existing device') },
  { additionalProperties: false },
)
export type ProvisioningAnswerRequest = Static<typeof ProvisioningAnswerRequest>

/** A message's position in its channel: 1, 2, 3, … across both sides. */
export const ProvisioningPositionField = Type.Integer({
  minimum: 1,
  maximum: MAX_PROVISIONING_MESSAGES_PER_CHANNEL,
})

export const ProvisioningPostResponse = Type.Object(
  { position: ProvisioningPositionField },
  { additionalProperties: false },
)
export type ProvisioningPostResponse = Static<typeof ProvisioningPostResponse>

/** Path parameter of /provisioning/:channelId routes. */
export const ProvisioningChannelParams = Type.Object(
  { channelId: ProvisioningChannelIdField },
  { additionalProperties: false },
)
export type ProvisioningChannelParams = Static<typeof ProvisioningChannelParams>

/** GET /provisioning/:channelId/(new|existing)?after=: the messages after this position (default 0). */
export const ProvisioningReadQuery = Type.Object(
  { after: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_PROVISIONING_MESSAGES_PER_CHANNEL })) },
  { additionalProperties: false },
)
export type ProvisioningReadQuery = Static<typeof ProvisioningReadQuery>

/** The messages for the reading side after the position asked for, oldest first; maybe none. */
export const ProvisioningMessagesResponse = Type.Object(
  {
    messages: Type.Array(
      Type.Object(
        {
          position: ProvisioningPositionField,
          message: Base64Url(1, MAX_PROVISIONING_SEALED_BYTES, 'opaque bytes from the other device'),
        },
        { additionalProperties: false },
      ),
      { maxItems: MAX_PROVISIONING_MESSAGES_PER_CHANNEL },
    ),
    expiresAt: TimestampField,
  },
  { additionalProperties: false },
)
export type ProvisioningMessagesResponse = Static<typeof ProvisioningMessagesResponse>

export const ErrorResponse = Type.Object(
  { error: Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: false }) },
  { additionalProperties: false },
)
export type ErrorResponse = Static<typeof ErrorResponse>

// --- Request parts and small responses the server's routes declare --------------------------------

/** Path parameters of /users/:username/… routes (normalised by the server). */
export const UsernameParams = Type.Object({ username: UsernameField }, { additionalProperties: false })
export type UsernameParams = Static<typeof UsernameParams>

/** Query of GET /users?query=…: a username prefix, normalised like a username by the server. */
export const UserSearchQuery = Type.Object(
  { query: Type.String({ minLength: 1, maxLength: USERNAME_MAX_LENGTH * 2 }) },
  { additionalProperties: false },
)
export type UserSearchQuery = Static<typeof UserSearchQuery>

export const HealthResponse = Type.Object({ status: Type.Literal('ok') }, { additionalProperties: false })
export type HealthResponse = Static<typeof HealthResponse>

// --- Devices (issue 12; docs/protocol.md §13.8) ---------------------------------------------------

/** A device's name, sealed by the account's devices: opaque bytes to the server. */
export const SealedDeviceNameField = Base64Url(1, MAX_SEALED_DEVICE_NAME_BYTES, 'sealed device name')
export const LinkTokenField = FixedBase64Url(32, 'link token: single use, from POST /devices/link-token')

/** GET /devices: the session's account's devices (not removed), by id. */
export const DevicesResponse = Type.Object(
  {
    devices: Type.Array(
      Type.Object(
        {
          id: DeviceIdField,
          name: Type.Optional(SealedDeviceNameField),
          createdAt: TimestampField,
          lastSeenAt: TimestampField,
          /** The device the request came from. */
          current: Type.Boolean(),
        },
        { additionalProperties: false },
      ),
      { maxItems: MAX_DEVICES_LIMIT },
    ),
  },
  { additionalProperties: false },
)
export type DevicesResponse = Static<typeof DevicesResponse>

/** Query of GET /users/:username/bundle: which device's keys (default 1). */
export const BundleQuery = Type.Object(
  { device: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,9}$' })) },
  { additionalProperties: false },
)
export type BundleQuery = Static<typeof BundleQuery>

/** Path parameters of /devices/:id. */
export const DeviceParams = Type.Object(
  { id: Type.String({ pattern: '^[1-9][0-9]{0,9}$' }) },
  { additionalProperties: false },
)
export type DeviceParams = Static<typeof DeviceParams>

/** PUT /devices/current/name: the session's device's new sealed name (absent: none). */
export const RenameDeviceRequest = Type.Object(
  { name: Type.Optional(SealedDeviceNameField) },
  { additionalProperties: false },
)
export type RenameDeviceRequest = Static<typeof RenameDeviceRequest>

/**
 * POST /devices/link-token: a single-use token the approving device puts in the provisioning
 * message, and the id it reserves for the new device (which signs its prekeys for it).
 */
export const LinkTokenResponse = Type.Object(
  { linkToken: LinkTokenField, deviceId: DeviceIdField, expiresAt: TimestampField },
  { additionalProperties: false },
)
export type LinkTokenResponse = Static<typeof LinkTokenResponse>

/**
 * POST /devices: a new device adds itself to the account of its link token, with its own login key
 * and prekeys, signed by the account's identity key for the device id the token reserved.
 */
export const AddDeviceRequest = Type.Object(
  {
    linkToken: LinkTokenField,
    /** The id the link token reserved, which the prekeys are signed for. */
    deviceId: DeviceIdField,
    loginKey: LoginKeyField,
    signedPreKey: PreKeyJson,
    oneTimePreKeys: OneTimePreKeysJson,
    name: Type.Optional(SealedDeviceNameField),
  },
  { additionalProperties: false },
)
export type AddDeviceRequest = Static<typeof AddDeviceRequest>

/** The added device's id and its first session (as /login answers). */
export const AddDeviceResponse = Type.Object(
  {
    username: ServerUsernameField,
    deviceId: DeviceIdField,
    encryptedToken: Base64Url(384, 384),
    expiresAt: TimestampField,
  },
  { additionalProperties: false },
)
export type AddDeviceResponse = Static<typeof AddDeviceResponse>

/** GET /users/:username/devices: the ids of that account's devices, each with a queue of its own. */
export const UserDevicesResponse = Type.Object(
  { devices: Type.Array(DeviceIdField, { maxItems: MAX_DEVICES_LIMIT }) },
  { additionalProperties: false },
)
export type UserDevicesResponse = Static<typeof UserDevicesResponse>
