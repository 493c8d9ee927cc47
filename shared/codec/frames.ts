/**
 * WebSocket frames: JSON text frames, each an object with `v` (the frame version) and `type`.
 * One schema per frame; `decodeClientFrame`/`decodeServerFrame` accept only known, valid frames.
 * Message bodies are envelopes (codec/envelope.ts) in unpadded base64url: the server relays them
 * without looking inside.
 */
import {
  MAX_DEVICES_LIMIT,
  MAX_ENVELOPE_BYTES,
  MAX_PRESENCE_NAMES_PER_FRAME,
  MESSAGE_ID_BYTES,
} from '../limits.js'
import { DeviceIdField, ServerUsernameField, TimestampField, UsernameField } from './api.js'
import { Base64Url, decode, FixedBase64Url, type Static, type TSchema, Type } from './schema.js'

export const FRAME_VERSION = 1
/** Usernames the server sends are already normalised: the username rule, exactly. */
const ServerUsername = ServerUsernameField
const V = Type.Literal(FRAME_VERSION)

export const MessageIdField = FixedBase64Url(MESSAGE_ID_BYTES, 'client-chosen random message id')
export const EnvelopeField = Base64Url(1, MAX_ENVELOPE_BYTES, 'encrypted envelope')
/** The server's per-recipient queue position; acknowledgements are cumulative over it. */
export const SequenceField = Type.Integer({ minimum: 1 })

// --- Client → server ----------------------------------------------------------------------------

export const AuthFrame = Type.Object(
  { v: V, type: Type.Literal('auth'), token: FixedBase64Url(32, 'session token') },
  { additionalProperties: false },
)
export const SendFrame = Type.Object(
  { v: V, type: Type.Literal('send'), id: MessageIdField, to: UsernameField, body: EnvelopeField },
  { additionalProperties: false },
)
/** One device's envelope in a `send.devices` frame. */
export const DeviceEnvelope = Type.Object(
  { device: DeviceIdField, body: EnvelopeField },
  { additionalProperties: false },
)
export type DeviceEnvelope = Static<typeof DeviceEnvelope>

/**
 * One message to every device of `to` (`messages`, one envelope per device) and to every other
 * device of the sender (`own`, the sent copies), stored all or none (docs/protocol.md §11.2). Each
 * list names each device at most once; the server compares them with the accounts' devices and
 * answers `devices.mismatch` (storing nothing) when they differ. A message to oneself (`to` the
 * sender's own name) has only `messages`, to the other devices.
 */
export const SendDevicesFrame = Type.Object(
  {
    v: V,
    type: Type.Literal('send.devices'),
    id: MessageIdField,
    to: UsernameField,
    messages: Type.Array(DeviceEnvelope, { minItems: 1, maxItems: MAX_DEVICES_LIMIT }),
    own: Type.Array(DeviceEnvelope, { maxItems: MAX_DEVICES_LIMIT - 1 }),
  },
  { additionalProperties: false },
)
export type SendDevicesFrame = Static<typeof SendDevicesFrame>

export const AckFrame = Type.Object(
  { v: V, type: Type.Literal('ack'), upTo: SequenceField },
  { additionalProperties: false },
)
export const SubscribePresenceFrame = Type.Object(
  {
    v: V,
    type: Type.Literal('presence.subscribe'),
    users: Type.Array(UsernameField, { maxItems: MAX_PRESENCE_NAMES_PER_FRAME }),
  },
  { additionalProperties: false },
)

/**
 * Consent: the sender's presence (and identity changes) may go to these users. Clients send it for
 * their contacts; without it nobody else hears the sender's presence (docs/protocol.md §13.4).
 */
export const SharePresenceFrame = Type.Object(
  {
    v: V,
    type: Type.Literal('presence.share'),
    users: Type.Array(UsernameField, { maxItems: MAX_PRESENCE_NAMES_PER_FRAME }),
  },
  { additionalProperties: false },
)

export const ClientFrame = Type.Union([
  AuthFrame,
  SendFrame,
  SendDevicesFrame,
  AckFrame,
  SubscribePresenceFrame,
  SharePresenceFrame,
])
export type ClientFrame = Static<typeof ClientFrame>

// --- Server → client ----------------------------------------------------------------------------

export const ReadyFrame = Type.Object(
  { v: V, type: Type.Literal('ready'), username: ServerUsername, queued: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
)
export const AcceptedFrame = Type.Object(
  { v: V, type: Type.Literal('accepted'), id: MessageIdField, ts: TimestampField },
  { additionalProperties: false },
)
export const DeliverFrame = Type.Object(
  {
    v: V,
    type: Type.Literal('deliver'),
    seq: SequenceField,
    id: MessageIdField,
    from: ServerUsername,
    /** The sending device, when it is not device 1 (so clients before devices see what they knew). */
    device: Type.Optional(DeviceIdField),
    body: EnvelopeField,
    ts: TimestampField,
  },
  { additionalProperties: false },
)
const DeviceIdList = Type.Array(DeviceIdField, { maxItems: MAX_DEVICES_LIMIT })
/** How a list of devices in a send differs from the account's devices. */
export const DeviceListDifference = Type.Object(
  {
    /** Devices of the account the send has no envelope for: fetch their bundles, add envelopes. */
    missing: DeviceIdList,
    /** Ids the send names that the account never had: drop their envelopes and sessions. */
    extra: DeviceIdList,
    /** Ids the send names of devices since removed: drop their envelopes, archive their sessions. */
    stale: DeviceIdList,
  },
  { additionalProperties: false },
)
export type DeviceListDifference = Static<typeof DeviceListDifference>

/**
 * The answer to a `send.devices` whose device lists differ from the accounts' devices: nothing of
 * it was stored. `recipient` is about `to`'s devices, `own` about the sender's other devices.
 */
export const DevicesMismatchFrame = Type.Object(
  {
    v: V,
    type: Type.Literal('devices.mismatch'),
    id: MessageIdField,
    recipient: DeviceListDifference,
    own: DeviceListDifference,
  },
  { additionalProperties: false },
)
export type DevicesMismatchFrame = Static<typeof DevicesMismatchFrame>

export const PresenceFrame = Type.Object(
  { v: V, type: Type.Literal('presence'), username: ServerUsername, online: Type.Boolean() },
  { additionalProperties: false },
)
export const PreKeysLowFrame = Type.Object(
  { v: V, type: Type.Literal('prekeys.low'), remaining: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
)
export const IdentityChangedFrame = Type.Object(
  { v: V, type: Type.Literal('identity.changed'), username: ServerUsername },
  { additionalProperties: false },
)
export const ErrorFrame = Type.Object(
  {
    v: V,
    type: Type.Literal('error'),
    code: Type.String({ maxLength: 64 }),
    message: Type.String({ maxLength: 1024 }),
    /** The client message id the error refers to, when it refers to one. */
    id: Type.Optional(MessageIdField),
  },
  { additionalProperties: false },
)

export const ServerFrame = Type.Union([
  ReadyFrame,
  AcceptedFrame,
  DeliverFrame,
  DevicesMismatchFrame,
  PresenceFrame,
  PreKeysLowFrame,
  IdentityChangedFrame,
  ErrorFrame,
])
export type ServerFrame = Static<typeof ServerFrame>

const CLIENT_FRAMES: Record<string, TSchema> = {
  auth: AuthFrame,
  send: SendFrame,
  'send.devices': SendDevicesFrame,
  ack: AckFrame,
  'presence.subscribe': SubscribePresenceFrame,
  'presence.share': SharePresenceFrame,
}
const SERVER_FRAMES: Record<string, TSchema> = {
  ready: ReadyFrame,
  accepted: AcceptedFrame,
  deliver: DeliverFrame,
  'devices.mismatch': DevicesMismatchFrame,
  presence: PresenceFrame,
  'prekeys.low': PreKeysLowFrame,
  'identity.changed': IdentityChangedFrame,
  error: ErrorFrame,
}

/**
 * Dispatching on `type` first gives a precise error ("send: /to …") instead of the union's
 * "matches none of 4", and validates against one schema instead of trying each.
 */
function decodeFrame<T>(table: Record<string, TSchema>, union: TSchema, value: unknown, side: string): T {
  const type =
    typeof value === 'object' && value !== null && 'type' in value && typeof value.type === 'string'
      ? value.type
      : undefined
  const schema = type !== undefined && Object.hasOwn(table, type) ? table[type] : undefined
  return decode(schema ?? union, value, schema ? `${type} frame` : `${side} frame`) as T
}

export function decodeClientFrame(value: unknown): ClientFrame {
  return decodeFrame<ClientFrame>(CLIENT_FRAMES, ClientFrame, value, 'client')
}

export function decodeServerFrame(value: unknown): ServerFrame {
  return decodeFrame<ServerFrame>(SERVER_FRAMES, ServerFrame, value, 'server')
}
