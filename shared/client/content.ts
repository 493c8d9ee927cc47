/**
 * What travels inside an encrypted envelope between two clients: a small versioned JSON object,
 * UTF-8 encoded before padding. The server never sees it.
 *
 *   every content  = { "v": 1, "type": <string>, ...fields of that type, "resendOf"?: <message id> }
 *
 * Text messages carry their own id (the same id the WebSocket frame carries in the clear), so a
 * server that rewrites frame ids is caught; receipts tell the sender which messages reached the
 * recipient's device ("delivered"); a retry request asks the sender of messages we could not
 * decrypt to send them again, and "unavailable" answers that their content is gone.
 *
 * Forward compatibility: fields a type does not define are ignored, and a type (or a version) this
 * code does not know is not an error: the inbox stores such a message and shows that this version
 * cannot display it, so a later version can. Only content that is not a JSON object with an integer
 * `v` and a string `type`, or a known type whose fields are wrong, is malformed.
 */
import { utf8Decode, utf8Encode } from '../bytes.js'
import { DeviceIdField, PublicIdentityJson, TimestampField, UsernameField } from '../codec/api.js'
import { MessageIdField } from '../codec/frames.js'
import { decode, matches, type Static, Type } from '../codec/schema.js'
import { ProtocolError, ProtocolErrorCode } from '../errors.js'

export const CONTENT_VERSION = 1
/** Longest message text, in UTF-16 code units; its UTF-8 form stays well inside MAX_PLAINTEXT_BYTES. */
export const MAX_MESSAGE_TEXT_LENGTH = 16_000
/** Message ids one receipt, retry request or "unavailable" answer may name. */
export const MAX_RECEIPT_IDS = 100
export const MAX_RETRY_IDS = 100
/** Longest `type` string we look at (anything longer is malformed rather than a future type). */
const MAX_CONTENT_TYPE_LENGTH = 64

const ResendOf = Type.Optional(MessageIdField)
/**
 * On a resend: the id the recipient asked for when that was not the original's, i.e. an earlier
 * resend it could not decrypt either; its notice goes too.
 */
const Answers = Type.Optional(MessageIdField)

export const TextContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('text'),
  id: MessageIdField,
  text: Type.String({ minLength: 1, maxLength: MAX_MESSAGE_TEXT_LENGTH }),
  sentAt: TimestampField,
  resendOf: ResendOf,
  answers: Answers,
})
export type TextContent = Static<typeof TextContent>

export const ReceiptContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('receipt'),
  ids: Type.Array(MessageIdField, { minItems: 1, maxItems: MAX_RECEIPT_IDS }),
  resendOf: ResendOf,
  answers: Answers,
})
export type ReceiptContent = Static<typeof ReceiptContent>

/**
 * "I could not decrypt these messages of yours: send them again" (sent on a fresh session with
 * the device that sent them). It goes to every device of the account, as every send does; only
 * `device`, the one that sent them and keeps their content, answers. Absent: device 1 (a request
 * from before devices, which reached device 1 alone).
 */
export const RetryContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('retry'),
  ids: Type.Array(MessageIdField, { minItems: 1, maxItems: MAX_RETRY_IDS }),
  device: Type.Optional(DeviceIdField),
})
export type RetryContent = Static<typeof RetryContent>

/** The answer to a retry request for messages whose content the sender no longer keeps. */
export const UnavailableContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('unavailable'),
  ids: Type.Array(MessageIdField, { minItems: 1, maxItems: MAX_RETRY_IDS }),
})
export type UnavailableContent = Static<typeof UnavailableContent>

/**
 * Content that only this account's own devices send each other (docs/protocol.md §13.9), never a
 * contact: a contact's device that gets one shows it as unsupported.
 */

/** What this device sent to `to`, for the account's other devices (Signal's sync "sent" message). */
export const SentCopyContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('sent'),
  to: UsernameField,
  /** The content as `to`'s devices got it; checked against its own type's schema where used. */
  content: Type.Object({ v: Type.Integer(), type: Type.String() }),
})
export type SentCopyContent = Static<typeof SentCopyContent>

/** The conversation with `peer` was read on another of our devices, up to the entry at time `upTo`. */
export const ReadSyncContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('sync.read'),
  peer: UsernameField,
  upTo: TimestampField,
})
export type ReadSyncContent = Static<typeof ReadSyncContent>

/**
 * `peer`'s key `identity` was marked verified (or not) on another of our devices, or, when it was
 * a change waiting to be accepted there, accepted.
 */
export const VerifiedSyncContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('sync.verified'),
  peer: UsernameField,
  identity: PublicIdentityJson,
  verified: Type.Boolean(),
})
export type VerifiedSyncContent = Static<typeof VerifiedSyncContent>

/** One message of the history a device sends a device it links. */
export const HistoryEntry = Type.Object({
  peer: UsernameField,
  id: MessageIdField,
  direction: Type.Union([Type.Literal('in'), Type.Literal('out')]),
  text: Type.String({ minLength: 1, maxLength: MAX_MESSAGE_TEXT_LENGTH }),
  sentAt: TimestampField,
  serverAt: Type.Optional(TimestampField),
  /** Ours only: how far it got (a message still sending there is not sent again from here). */
  state: Type.Optional(
    Type.Union([Type.Literal('accepted'), Type.Literal('delivered'), Type.Literal('failed')]),
  ),
  device: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffff_ffff })),
})
export type HistoryEntry = Static<typeof HistoryEntry>

/**
 * Part `part` of `parts` of the conversation history another of our devices sends us once we
 * are linked (`transfer` names the whole): stored as it comes, each part on its own.
 */
export const HistoryContent = Type.Object({
  v: Type.Literal(CONTENT_VERSION),
  type: Type.Literal('sync.history'),
  transfer: MessageIdField,
  part: Type.Integer({ minimum: 1, maximum: 100_000 }),
  parts: Type.Integer({ minimum: 1, maximum: 100_000 }),
  entries: Type.Array(HistoryEntry, { maxItems: 10_000 }),
})
export type HistoryContent = Static<typeof HistoryContent>

export type OwnDeviceContent = SentCopyContent | ReadSyncContent | VerifiedSyncContent | HistoryContent

export const OWN_DEVICE_CONTENT_SCHEMAS = {
  sent: SentCopyContent,
  'sync.read': ReadSyncContent,
  'sync.verified': VerifiedSyncContent,
  'sync.history': HistoryContent,
} as const

/** Every content type this version knows, by its `type`. */
export const CONTENT_SCHEMAS = {
  text: TextContent,
  receipt: ReceiptContent,
  retry: RetryContent,
  unavailable: UnavailableContent,
} as const
export type ContentType = keyof typeof CONTENT_SCHEMAS

export type MessageContent = TextContent | ReceiptContent | RetryContent | UnavailableContent

/** Content of a type a content handler adds (ChatClientOptions.contentHandlers), checked by its schema. */
export interface ExtraContent {
  readonly v: typeof CONTENT_VERSION
  readonly type: string
  readonly [field: string]: unknown
}

/** A decrypted plaintext, parsed as far as every version agrees: an object with a version and a type. */
export interface ParsedContent {
  readonly v: number
  readonly type: string
  /** The whole object, not yet checked against the type's schema. */
  readonly value: Record<string, unknown>
}

export function encodeContent(content: MessageContent | ExtraContent | OwnDeviceContent): Uint8Array {
  return utf8Encode(JSON.stringify(content))
}

function malformed(detail: string): ProtocolError {
  return new ProtocolError(
    ProtocolErrorCode.MalformedMessage,
    `message content: expected a JSON object with "v" and "type", got ${detail}`,
  )
}

/** Parses a decrypted plaintext's envelope of fields; throws MalformedMessage when it has none. */
export function parseContent(plaintext: Uint8Array): ParsedContent {
  let parsed: unknown
  try {
    parsed = JSON.parse(utf8Decode(plaintext))
  } catch {
    throw malformed('text that is not JSON')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw malformed('another value')
  const value = parsed as Record<string, unknown>
  if (!Number.isInteger(value.v) || (value.v as number) < 1) throw malformed('no valid "v"')
  if (
    typeof value.type !== 'string' ||
    value.type.length === 0 ||
    value.type.length > MAX_CONTENT_TYPE_LENGTH
  )
    throw malformed('no valid "type"')
  return { v: value.v as number, type: value.type, value }
}

/** True when this version can read content of this version and type. */
export function isKnownContent(parsed: ParsedContent): parsed is ParsedContent & { type: ContentType } {
  return parsed.v === CONTENT_VERSION && Object.hasOwn(CONTENT_SCHEMAS, parsed.type)
}

/** Checks known content against its type's schema; throws MalformedMessage when a field is wrong. */
export function decodeKnownContent(parsed: ParsedContent & { type: ContentType }): MessageContent {
  return decode(CONTENT_SCHEMAS[parsed.type], parsed.value, `${parsed.type} content`) as MessageContent
}

/** Decodes a plaintext this version must know (tests and callers that accept nothing else). */
export function decodeContent(plaintext: Uint8Array): MessageContent {
  const parsed = parseContent(plaintext)
  if (!isKnownContent(parsed)) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `message content: expected a known type of version ${CONTENT_VERSION}, got an unknown type of version ${parsed.v}`,
    )
  }
  return decodeKnownContent(parsed)
}

/** The id of the message a resent content replaces, if it is a resend. */
export function resendOf(parsed: ParsedContent): string | undefined {
  const value = parsed.value.resendOf
  return matches(MessageIdField, value) ? value : undefined
}

/** On a resend, the earlier resend's id the recipient asked for (its notice goes too), if any. */
export function answeredResend(parsed: ParsedContent): string | undefined {
  const value = parsed.value.answers
  return matches(MessageIdField, value) && value !== resendOf(parsed) ? value : undefined
}
