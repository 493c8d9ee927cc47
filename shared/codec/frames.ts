/**
 * WebSocket frames: JSON text frames, each an object with `v` (the frame version) and `type`.
 * One schema per frame; `decodeClientFrame`/`decodeServerFrame` accept only known, valid frames.
 * Message bodies are envelopes (codec/envelope.ts) in unpadded base64url: the server relays them
 * without looking inside.
 */
import { MAX_ENVELOPE_BYTES, MAX_PRESENCE_NAMES_PER_FRAME, MESSAGE_ID_BYTES } from '../limits.js'
import { ServerUsernameField, TimestampField, UsernameField } from './api.js'
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
    body: EnvelopeField,
    ts: TimestampField,
  },
  { additionalProperties: false },
)
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
  PresenceFrame,
  PreKeysLowFrame,
  IdentityChangedFrame,
  ErrorFrame,
])
export type ServerFrame = Static<typeof ServerFrame>

const CLIENT_FRAMES: Record<string, TSchema> = {
  auth: AuthFrame,
  send: SendFrame,
  ack: AckFrame,
  'presence.subscribe': SubscribePresenceFrame,
  'presence.share': SharePresenceFrame,
}
const SERVER_FRAMES: Record<string, TSchema> = {
  ready: ReadyFrame,
  accepted: AcceptedFrame,
  deliver: DeliverFrame,
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
