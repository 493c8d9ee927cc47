/**
 * The client's own records, as they are before sealing: one per contact, one per message in the
 * history, one per envelope waiting in the outbox. They never leave the device, and reach the store
 * only sealed (sealed-store.ts); the UIs see them through the views in views.ts.
 */
import { type ConversationId, directConversation } from '../address.js'
import type { PublicIdentityJson } from '../codec/api.js'
import { Type } from '../codec/schema.js'
import { MAX_DEVICES_LIMIT } from '../limits.js'
import type { ExtraContent, ReceiptContent, TextContent } from './content.js'
import type { DeviceBody } from './fan-out.js'
import {
  type ContactView,
  type DeliveryState,
  type MessageKind,
  type MessageView,
  messageTime,
} from './views.js'

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
  retryPendingFrom: Type.Optional(
    Type.Array(
      Type.Object({
        device: Type.Integer({ minimum: 1, maximum: 0xffff_ffff }),
        ids: Type.Array(Type.String(), { minItems: 1, maxItems: 100 }),
      }),
      { maxItems: MAX_DEVICES_LIMIT },
    ),
  ),
  retryRequestedAt: Type.Optional(Type.Integer()),
  deletedAt: Type.Optional(Type.Number()),
  presenceShared: Type.Optional(Type.Boolean()),
  blocked: Type.Optional(Type.Boolean()),
  devices: Type.Optional(
    Type.Array(Type.Integer({ minimum: 1, maximum: 0xffff_ffff }), {
      minItems: 1,
      maxItems: MAX_DEVICES_LIMIT,
    }),
  ),
  preview: Type.Optional(
    Type.Object({
      id: Type.String(),
      text: Type.String(),
      direction: Type.Union([Type.Literal('in'), Type.Literal('out')]),
      kind: Type.String(),
      time: Type.Number(),
      order: Type.Number(),
    }),
  ),
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
  /**
   * Ids of this contact's messages from their device 1 we could not decrypt and have yet to ask
   * for again: records from before devices. Read as device 1's part of `retryPendingFrom`, and
   * written there from now on.
   */
  retryPending?: string[]
  /** Ids of this contact's messages we could not decrypt and have yet to ask for again, by sending device. */
  retryPendingFrom?: { device: number; ids: string[] }[]
  /** When we last asked this contact to send again (requests are RETRY_REQUEST_INTERVAL_MS apart). */
  retryRequestedAt?: number
  /**
   * When we learned that the contact deleted their account (the server said
   * E2E_ERR_ACCOUNT_DELETED). The conversation stays, marked; sending to it is refused. Absent in
   * every record written before deletion existed, which is what it means there: not deleted.
   */
  deletedAt?: number
  /**
   * Whether our presence is shared with this contact (`presence.share`). False for someone who
   * only wrote to us, until we answer or add them; absent means shared (every contact of a
   * version before this field was added or written to, and shared as before).
   */
  presenceShared?: boolean
  /**
   * We blocked this contact: the server drops their messages and hides our presence from them,
   * and we neither send to them nor store what still arrives. The conversation stays, marked.
   */
  blocked?: boolean
  /**
   * The contact's devices we send to, ascending (docs/protocol.md §13.9): corrected by the
   * server's `devices.mismatch` answers and by deliveries from a device not on it. Absent in
   * records from before devices, which is what it meant there: device 1 alone.
   */
  devices?: number[]
  /**
   * The conversation's newest entry, kept here so the conversation list needs no history read per
   * contact (absent in records written before it was kept: computed from the history then).
   */
  preview?: StoredPreview
}

/** The newest entry of a conversation: its first line, shortened (notices keep no text). */
export interface StoredPreview {
  id: string
  text: string
  direction: 'in' | 'out'
  kind: string
  time: number
  order: number
}

/** Longest preview text kept, in UTF-16 code units (the lists show a line of it). */
export const PREVIEW_TEXT_LENGTH = 120

/**
 * The contact with `messages` (entries this change puts in its conversation) taken into its
 * preview: the newest of them, if it is at least as new as the preview's entry, or the preview's
 * own entry changed in place. `removed` ids drop a preview that showed one of them.
 */
export function withPreview(
  contact: ContactRecord,
  messages: readonly MessageRecord[],
  removed: readonly string[] = [],
): ContactRecord {
  let preview = contact.preview && removed.includes(contact.preview.id) ? undefined : contact.preview
  for (const message of messages) {
    if (preview && message.id !== preview.id && message.order < preview.order) continue
    preview = {
      id: message.id,
      text:
        (message.kind ?? 'text') === 'text'
          ? message.text.split('\n', 1)[0]!.slice(0, PREVIEW_TEXT_LENGTH)
          : '',
      direction: message.direction,
      kind: message.kind ?? 'text',
      time: messageTime(message),
      order: message.order,
    }
  }
  const { preview: _old, ...rest } = contact
  return preview ? { ...rest, preview } : rest
}

export interface MessageRecord {
  id: string
  /** The other account of the direct conversation the entry is in (conversationOf). */
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
  /**
   * The device it was sent from: the contact's (incoming) or ours (outgoing, also when another of
   * our devices sent it). Absent in records from before devices: device 1.
   */
  device?: number
}

export interface OutboxRecord {
  id: string
  peer: string
  /** Entries from before devices: the one envelope, for the recipient's device 1 (sent as `send`). */
  envelope?: string
  /** One envelope per device of the recipient (`send.devices`, docs/protocol.md §13.9). */
  messages?: DeviceBody[]
  /** A sent copy per other device of ours. */
  own?: DeviceBody[]
  /**
   * The plaintext (base64url) and its sent copy's: encrypted again for devices the server says
   * the lists miss. Entries from before devices have neither.
   */
  content?: string
  copy?: string
  /** How often the server answered that the lists did not match (a bound on retries). */
  mismatches?: number
  /**
   * Only text appears in history; receipts, retry requests, their answers, resent messages and
   * what our devices tell each other (`sync`) travel through the outbox too.
   */
  kind: 'text' | 'receipt' | 'retry' | 'unavailable' | 'resend' | 'content' | 'sync'
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
  /**
   * Set on the entry kept under a resend's frame id: the original's id. A request for the resend
   * (the recipient could not decrypt it either) is answered from the original's entry.
   */
  resendOf?: string
}

export function identitiesEqual(
  a: PublicIdentityJson | undefined,
  b: PublicIdentityJson | undefined,
): boolean {
  return (
    a !== undefined && b !== undefined && a.identityKey === b.identityKey && a.signingKey === b.signingKey
  )
}

/**
 * Senders choose message ids, so an id is unique only within its conversation: the key adds the
 * conversation ("<conversation id>/<message id>"; for a direct conversation, "<peer>/<id>").
 */
export function messageKey(conversation: ConversationId, id: string): string {
  return `${conversation}/${id}`
}

/** The conversation an entry (a message, an outbox or sent entry) belongs to. */
export function conversationOf(entry: { readonly peer: string }): ConversationId {
  return directConversation(entry.peer)
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
    ...(record.device !== undefined ? { device: record.device } : {}),
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
    online: online && !contact.blocked,
    blocked: contact.blocked === true,
    accountDeleted: contact.deletedAt !== undefined,
  }
}
