/**
 * The client's own records, as they are before sealing: one per contact, one per message in the
 * history, one per envelope waiting in the outbox. They never leave the device, and reach the store
 * only sealed (sealed-store.ts); the UIs see them through the views in views.ts.
 */
import type { PublicIdentityJson } from '../codec/api.js'
import { Type } from '../codec/schema.js'
import type { ExtraContent, ReceiptContent, TextContent } from './content.js'
import type { ContactView, DeliveryState, MessageKind, MessageView } from './views.js'

/** Checked on every read: a contact record decides whom we trust, so a damaged one must not pass. */
export const ContactRecord = Type.Object({
  username: Type.String(),
  identity: Type.Optional(Type.Unknown()),
  pendingIdentity: Type.Optional(Type.Unknown()),
  verified: Type.Boolean(),
  unread: Type.Integer({ minimum: 0 }),
  lastMessageAt: Type.Optional(Type.Integer()),
  readUpTo: Type.Optional(Type.Number()),
  retryRequests: Type.Optional(Type.Array(Type.String(), { maxItems: 100 })),
  retryPending: Type.Optional(Type.Array(Type.String(), { maxItems: 100 })),
  retryRequestedAt: Type.Optional(Type.Integer()),
})
export interface ContactRecord {
  username: string
  identity?: PublicIdentityJson
  pendingIdentity?: PublicIdentityJson
  verified: boolean
  unread: number
  lastMessageAt?: number
  /** Incoming entries at or before this position were read (markRead); absent: none marked yet. */
  readUpTo?: number
  /**
   * Ids the contact asked us to send again while their identity key had changed and the change was
   * not yet accepted: answered once the user accepts it (never to keys the user has not seen).
   */
  retryRequests?: string[]
  /** Ids of this contact's messages we could not decrypt and have yet to ask them for again. */
  retryPending?: string[]
  /** When we last asked this contact to send again (requests are RETRY_REQUEST_INTERVAL_MS apart). */
  retryRequestedAt?: number
}

export interface MessageRecord {
  id: string
  peer: string
  direction: 'in' | 'out'
  /** The message text; empty for notices. */
  text: string
  sentAt: number
  serverAt?: number
  state: DeliveryState
  order: number
  /** What the entry is; absent in records written before notices existed, which are all text. */
  kind?: MessageKind
  /** Unsupported content: the plaintext (base64url), kept so that a later version can show it. */
  raw?: string
}

export interface OutboxRecord {
  id: string
  peer: string
  envelope: string
  /**
   * Only text appears in history; receipts, retry requests, their answers and resent messages
   * travel through the outbox too.
   */
  kind: 'text' | 'receipt' | 'retry' | 'unavailable' | 'resend' | 'content'
}

/**
 * The content of something we sent, kept sealed for SENT_CONTENT_KEEP_MS so that it can be sent
 * again when the recipient could not decrypt it. Key "<peer>/<id>", order = when it was sent.
 */
export interface SentRecord {
  id: string
  peer: string
  /** A text, a receipt, or content of a type a handler added (sendContent). */
  content: TextContent | ReceiptContent | ExtraContent
  sentAt: number
  /** How often it was sent again on request (at most MAX_RESENDS_PER_MESSAGE). */
  resends: number
}

export function identitiesEqual(
  a: PublicIdentityJson | undefined,
  b: PublicIdentityJson | undefined,
): boolean {
  return (
    a !== undefined && b !== undefined && a.identityKey === b.identityKey && a.signingKey === b.signingKey
  )
}

/** Senders choose message ids, so an id is unique only within its conversation: the key adds the peer. */
export function messageKey(peer: string, id: string): string {
  return `${peer}/${id}`
}

export function messageView(record: MessageRecord): MessageView {
  return {
    id: record.id,
    peer: record.peer,
    direction: record.direction,
    text: record.text,
    sentAt: record.sentAt,
    serverAt: record.serverAt,
    state: record.state,
    order: record.order,
    kind: record.kind ?? 'text',
  }
}

/** `online` comes from the connection's presence updates, which are never stored. */
export function contactView(contact: ContactRecord, online: boolean): ContactView {
  return {
    username: contact.username,
    verified: contact.verified,
    identityChanged: contact.pendingIdentity !== undefined,
    unread: contact.unread,
    lastMessageAt: contact.lastMessageAt,
    online,
  }
}
