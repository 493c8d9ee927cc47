/**
 * Client frames from untrusted bytes. Every frame goes through shared/codec/frames.ts
 * `decodeClientFrame` (JSON.parse, then the frame's schema) — except a `send` frame in exactly the
 * form clients produce with JSON.stringify({ v, type, id, to, body }), which the relay gets tens of
 * thousands of times a second: that one is recognised byte by byte here, without building the
 * intermediate strings and objects. The fast path accepts only input whose meaning is certain — the
 * five keys in that order, no white space, no escapes, the id of 22 base64url characters, a
 * normalised username, a body of base64url within the schema's length bounds — so for anything it
 * accepts, the schema would produce the same frame (parse.test.ts checks this on random input);
 * anything else takes the general path.
 */
import { type ClientFrame, decodeClientFrame, FRAME_VERSION } from '../../shared/codec/frames.js'
import { base64UrlLength } from '../../shared/codec/schema.js'
import { MAX_ENVELOPE_BYTES, MESSAGE_ID_BYTES } from '../../shared/limits.js'
import { USERNAME_PATTERN } from '../../shared/username.js'

const PREFIX = Buffer.from(`{"v":${FRAME_VERSION},"type":"send","id":"`)
const TO = Buffer.from('","to":"')
const BODY = Buffer.from('","body":"')
const ID_LENGTH = base64UrlLength(MESSAGE_ID_BYTES)
const BODY_MIN = base64UrlLength(1)
const BODY_MAX = base64UrlLength(MAX_ENVELOPE_BYTES)
/** A normalised username is at most 32 characters. */
const NAME_MAX = 32

const BASE64URL = new Uint8Array(256)
for (const char of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
  BASE64URL[char.charCodeAt(0)] = 1
const NAME = new Uint8Array(256)
for (const char of 'abcdefghijklmnopqrstuvwxyz0123456789._-') NAME[char.charCodeAt(0)] = 1

const QUOTE = 0x22
const CLOSE_BRACE = 0x7d

function matchesAt(data: Buffer, offset: number, expected: Buffer): boolean {
  if (offset + expected.length > data.length) return false
  for (let i = 0; i < expected.length; i++) if (data[offset + i] !== expected[i]) return false
  return true
}

/**
 * A send frame as the relay keeps it: `body` is the base64url text as it arrived (ASCII bytes, on
 * the fast path a view into the received frame), so that it is copied into the `deliver` frame
 * rather than held as a string and re-encoded.
 */
export interface SendRequest {
  readonly v: typeof FRAME_VERSION
  readonly type: 'send'
  readonly id: string
  readonly to: string
  readonly body: Buffer
}

/** One device's envelope of a `send.devices` frame, its body as base64url bytes (see SendRequest). */
export interface DeviceEnvelopeRequest {
  readonly device: number
  readonly body: Buffer
}

/** A `send.devices` frame as the relay keeps it: every body as base64url bytes. */
export interface DeviceSendRequest {
  readonly v: typeof FRAME_VERSION
  readonly type: 'send.devices'
  readonly id: string
  readonly to: string
  readonly messages: readonly DeviceEnvelopeRequest[]
  readonly own: readonly DeviceEnvelopeRequest[]
}

/** A validated client frame, with a send's bodies as bytes (see SendRequest). */
export type RelayClientFrame =
  | Exclude<ClientFrame, { type: 'send' | 'send.devices' }>
  | SendRequest
  | DeviceSendRequest

/** The canonical send frame's fields, or undefined when `data` is not in exactly that form. */
export function parseCanonicalSend(data: Buffer): SendRequest | undefined {
  if (!matchesAt(data, 0, PREFIX)) return undefined
  let offset = PREFIX.length
  const idStart = offset
  const idEnd = idStart + ID_LENGTH
  if (idEnd > data.length) return undefined
  for (; offset < idEnd; offset++) if (BASE64URL[data[offset]!] !== 1) return undefined
  if (!matchesAt(data, offset, TO)) return undefined
  offset += TO.length
  const toStart = offset
  const toLimit = Math.min(data.length, toStart + NAME_MAX + 1)
  while (offset < toLimit && NAME[data[offset]!] === 1) offset++
  const toEnd = offset
  if (!matchesAt(data, offset, BODY)) return undefined
  offset += BODY.length
  const bodyStart = offset
  // The body runs to the closing quote, which must be followed by the closing brace and nothing.
  const bodyEnd = data.length - 2
  if (bodyEnd - bodyStart < BODY_MIN || bodyEnd - bodyStart > BODY_MAX) return undefined
  if (data[bodyEnd] !== QUOTE || data[bodyEnd + 1] !== CLOSE_BRACE) return undefined
  for (; offset < bodyEnd; offset++) if (BASE64URL[data[offset]!] !== 1) return undefined
  const to = data.toString('latin1', toStart, toEnd)
  if (!USERNAME_PATTERN.test(to)) return undefined
  return {
    v: FRAME_VERSION,
    type: 'send',
    id: data.toString('latin1', idStart, idEnd),
    to,
    body: data.subarray(bodyStart, bodyEnd),
  }
}

/** A validated client frame, or a thrown ProtocolError / SyntaxError saying what is wrong. */
export function parseClientFrame(data: Buffer): RelayClientFrame {
  const fast = parseCanonicalSend(data)
  if (fast) return fast
  const frame = decodeClientFrame(JSON.parse(data.toString('utf8')))
  // The schema allows only base64url characters in a body, so latin1 gives its bytes exactly.
  if (frame.type === 'send') return { ...frame, body: Buffer.from(frame.body, 'latin1') }
  if (frame.type === 'send.devices') {
    const bytes = (envelope: { device: number; body: string }) => ({
      device: envelope.device,
      body: Buffer.from(envelope.body, 'latin1'),
    })
    return { ...frame, messages: frame.messages.map(bytes), own: frame.own.map(bytes) }
  }
  return frame
}
