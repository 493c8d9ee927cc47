/**
 * What travels inside an encrypted envelope between two clients: a small versioned JSON object.
 * The server never sees it. Text messages carry their own id (the same id the WebSocket frame
 * carries in the clear), so a server that rewrites frame ids is caught; receipts tell the sender
 * which messages reached the recipient's device ("delivered").
 */
import { utf8Decode, utf8Encode } from '../bytes.js'
import { TimestampField } from '../codec/api.js'
import { MessageIdField } from '../codec/frames.js'
import { decode, type Static, Type } from '../codec/schema.js'

export const CONTENT_VERSION = 1
/** Longest message text, in UTF-16 code units; its UTF-8 form stays well inside MAX_PLAINTEXT_BYTES. */
export const MAX_MESSAGE_TEXT_LENGTH = 16_000
/** Message ids one receipt may confirm. */
export const MAX_RECEIPT_IDS = 100

export const TextContent = Type.Object(
  {
    v: Type.Literal(CONTENT_VERSION),
    type: Type.Literal('text'),
    id: MessageIdField,
    text: Type.String({ minLength: 1, maxLength: MAX_MESSAGE_TEXT_LENGTH }),
    sentAt: TimestampField,
  },
  { additionalProperties: false },
)
export type TextContent = Static<typeof TextContent>

export const ReceiptContent = Type.Object(
  {
    v: Type.Literal(CONTENT_VERSION),
    type: Type.Literal('receipt'),
    ids: Type.Array(MessageIdField, { minItems: 1, maxItems: MAX_RECEIPT_IDS }),
  },
  { additionalProperties: false },
)
export type ReceiptContent = Static<typeof ReceiptContent>

export const MessageContent = Type.Union([TextContent, ReceiptContent])
export type MessageContent = Static<typeof MessageContent>

export function encodeContent(content: MessageContent): Uint8Array {
  return utf8Encode(JSON.stringify(content))
}

/** Decodes a decrypted plaintext; throws ProtocolError(MalformedMessage) for anything unexpected. */
export function decodeContent(plaintext: Uint8Array): MessageContent {
  let parsed: unknown
  try {
    parsed = JSON.parse(utf8Decode(plaintext))
  } catch {
    parsed = undefined
  }
  return decode(MessageContent, parsed, 'message content')
}
