/**
 * Relay events (relay-bus.ts) as the text that travels on a network bus (redis-bus.ts), and back.
 *
 * One message is JSON: `{"v":1,"from":"<node id>","event":{…}}`, the event with its fields as in
 * relay-bus.ts, except that byte arrays (`copy.body`, `tokenHash`) are unpadded base64url strings.
 * `from` names the publishing process, so that it can ignore its own events coming back (it handed
 * them to its own listeners when it published them).
 *
 * What comes off the network is parsed from `unknown` through one schema before anything else
 * looks at it: a message that is not JSON, not a known event, or carries a field out of bounds is
 * refused with a ProtocolError (the bus logs and drops it). Every field has bounds, so no message
 * can make a listener handle more than a real event would.
 */
import { DeviceIdField, ServerUsernameField, TimestampField } from '../../shared/codec/api.js'
import { MessageIdField, SequenceField } from '../../shared/codec/frames.js'
import { Base64Url, decode, FixedBase64Url, type Static, Type } from '../../shared/codec/schema.js'
import { ProtocolError, ProtocolErrorCode } from '../../shared/errors.js'
import { MAX_FRAME_BYTES } from '../limits.js'
import type { RelayEvent } from './relay-bus.js'

export const BUS_MESSAGE_VERSION = 1

/** Node ids are random base64url (redis-bus.ts makes 12 bytes); the bound only keeps junk out. */
const NodeIdField = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' })
/** User and device ids are positive integers (PostgreSQL bigserial, devices from 1). */
const IdField = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
const AddressField = Type.Object({ userId: IdField, deviceId: IdField }, { additionalProperties: false })
/** A SHA-256 hash of a session token. */
const TokenHashField = FixedBase64Url(32, 'SHA-256 of a session token')
/** A committed envelope as its send frame carried it: base64url text, at most a frame's size. */
const CopyBodyField = Base64Url(1, MAX_FRAME_BYTES, 'the base64url text of the envelope, as bytes')

const strict = { additionalProperties: false } as const

/** A socket's cluster id (cluster-presence.ts): a node id, a dot, a counter. */
const SocketIdField = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}\\.[0-9]{1,16}$' })

const BusEvent = Type.Union([
  Type.Object(
    {
      kind: Type.Literal('message.committed'),
      address: AddressField,
      seq: SequenceField,
      copy: Type.Optional(
        Type.Object(
          {
            id: MessageIdField,
            sender: ServerUsernameField,
            // Absent for device 1, so nodes of the version before devices read the events of this one.
            senderDevice: Type.Optional(DeviceIdField),
            body: CopyBodyField,
            createdAt: TimestampField,
          },
          strict,
        ),
      ),
    },
    strict,
  ),
  Type.Object(
    {
      kind: Type.Literal('presence.changed'),
      address: AddressField,
      username: ServerUsernameField,
      online: Type.Boolean(),
    },
    strict,
  ),
  Type.Object(
    {
      kind: Type.Literal('session.revoked'),
      address: AddressField,
      tokenHash: TokenHashField,
      reason: Type.Optional(Type.Literal('device-removed')),
    },
    strict,
  ),
  Type.Object(
    { kind: Type.Literal('identity.changed'), address: AddressField, username: ServerUsernameField },
    strict,
  ),
  Type.Object(
    { kind: Type.Literal('account.deleted'), address: AddressField, username: ServerUsernameField },
    strict,
  ),
  Type.Object({ kind: Type.Literal('prekeys.served'), address: AddressField }, strict),
  Type.Object(
    { kind: Type.Literal('connection.displaced'), address: AddressField, socketId: SocketIdField },
    strict,
  ),
  Type.Object(
    {
      kind: Type.Literal('presence.granted'),
      address: AddressField,
      ownerId: IdField,
      username: ServerUsernameField,
    },
    strict,
  ),
  Type.Object(
    {
      kind: Type.Literal('presence.revoked'),
      address: AddressField,
      viewerId: IdField,
      username: ServerUsernameField,
    },
    strict,
  ),
])

export const BusMessage = Type.Object(
  {
    v: Type.Literal(BUS_MESSAGE_VERSION),
    from: NodeIdField,
    /** When the publishing node sent it (its clock): the receiver's lag metric. */
    at: Type.Optional(TimestampField),
    event: BusEvent,
  },
  strict,
)
type BusEventJson = Static<typeof BusEvent>

/**
 * The largest message `encodeBusMessage` makes (a copy of the largest body, base64url once more,
 * and the fields around it); anything longer off the network is refused before JSON.parse.
 */
export const MAX_BUS_MESSAGE_CHARS = Math.ceil((MAX_FRAME_BYTES * 4) / 3) + 4096

function bytesToText(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url')
}

export function encodeBusMessage(from: string, event: RelayEvent, at: number = Date.now()): string {
  let wire: BusEventJson
  switch (event.kind) {
    case 'message.committed': {
      const { copy } = event
      wire = {
        kind: event.kind,
        address: { userId: event.address.userId, deviceId: event.address.deviceId },
        seq: event.seq,
        ...(copy
          ? {
              copy: {
                id: copy.id,
                sender: copy.sender,
                ...(copy.senderDevice !== undefined && copy.senderDevice !== 1
                  ? { senderDevice: copy.senderDevice }
                  : {}),
                body: bytesToText(copy.body),
                createdAt: copy.createdAt,
              },
            }
          : {}),
      }
      break
    }
    case 'session.revoked':
      wire = {
        kind: event.kind,
        address: { userId: event.address.userId, deviceId: event.address.deviceId },
        tokenHash: bytesToText(event.tokenHash),
        ...(event.reason ? { reason: event.reason } : {}),
      }
      break
    default:
      // The other events are numbers, strings and booleans already; the address is copied so that
      // nothing beyond its two fields rides along.
      wire = { ...event, address: { userId: event.address.userId, deviceId: event.address.deviceId } }
  }
  return JSON.stringify({ v: BUS_MESSAGE_VERSION, from, at, event: wire })
}

/** The publishing node and the event, or a ProtocolError (MalformedMessage) for anything else. */
export function decodeBusMessage(text: string): { from: string; at: number | undefined; event: RelayEvent } {
  if (text.length > MAX_BUS_MESSAGE_CHARS) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `bus message: expected at most ${MAX_BUS_MESSAGE_CHARS} characters, got ${text.length}`,
    )
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      'bus message: expected JSON, got text that does not parse',
    )
  }
  const message = decode(BusMessage, value, 'bus message')
  const wire = message.event
  let event: RelayEvent
  switch (wire.kind) {
    case 'message.committed': {
      const { copy } = wire
      event = {
        kind: wire.kind,
        address: wire.address,
        seq: wire.seq,
        ...(copy ? { copy: { ...copy, body: Buffer.from(copy.body, 'base64url') } } : {}),
      }
      break
    }
    case 'session.revoked':
      event = {
        kind: wire.kind,
        address: wire.address,
        tokenHash: Buffer.from(wire.tokenHash, 'base64url'),
        ...(wire.reason ? { reason: wire.reason } : {}),
      }
      break
    default:
      event = wire
  }
  return { from: message.from, at: message.at, event }
}
