/**
 * What the UIs see of the client core: read-only views of messages and contacts, the connection's
 * state, and the events that carry them. Nothing here is a secret or a stored record; the records
 * behind these views are in records.ts. Importable from chat-client.ts as well.
 */

/**
 * What an entry in a conversation is: a text message, or a notice in its place.
 *   undecryptable  no session opened it; the sender was asked to send it again
 *   unreadable     it decrypted, but its content was malformed (a retry would not help)
 *   unsupported    a kind of message this version cannot display; a later version can
 *   lost           it could not be decrypted, and the sender no longer has it to send again
 *   outdated       it would have started a session from an app too old to bind usernames into the
 *                  key agreement (docs/protocol.md §4.5): refused; the sender must update
 */
export type MessageKind = 'text' | 'undecryptable' | 'unreadable' | 'unsupported' | 'lost' | 'outdated'

/**
 * What both UIs say in place of a message that is a notice (undefined for text), so the PWA, the
 * interactive terminal and script mode say the same thing. `peer` is trusted only as far as the
 * caller's own escaping goes: the terminal strips control characters, the PWA escapes HTML.
 */
export function noticeText(message: Pick<MessageView, 'kind' | 'peer'>): string | undefined {
  const peer = message.peer
  switch (message.kind) {
    case 'text':
      return undefined
    case 'undecryptable':
      return `A message from ${peer} could not be decrypted. Asked ${peer} to send it again.`
    case 'lost':
      return `A message from ${peer} could not be decrypted, and ${peer}'s device no longer has it to send again.`
    case 'unreadable':
      return `A message from ${peer} could not be read: it decrypted, but its content was damaged.`
    case 'unsupported':
      return `${peer} sent a kind of message this version cannot display. Update secure-chat to see it.`
    case 'outdated':
      return `A message from ${peer} could not be decrypted: ${peer}'s app is out of date. ${peer}'s app must be updated, then the message sent again.`
  }
}

export type DeliveryState = 'sending' | 'accepted' | 'delivered' | 'received' | 'failed'
export type ConnectionState = 'offline' | 'connecting' | 'online' | 'logged-out'

export interface MessageView {
  readonly id: string
  readonly peer: string
  readonly direction: 'in' | 'out'
  readonly text: string
  /** The sender's clock when it was written. */
  readonly sentAt: number
  /** When the server accepted it (outgoing) or first stored it (incoming). */
  readonly serverAt: number | undefined
  readonly state: DeliveryState
  /** Position in the conversation (strictly increasing on this device). */
  readonly order: number
  readonly kind: MessageKind
  /** The device it was sent from (theirs for incoming, ours for outgoing); absent: device 1. */
  readonly device?: number
}

/**
 * The time both UIs show for an entry: for what we received, when it reached the server (the
 * sender's clock may be wrong, and this is the order the server kept); for what we wrote, our own
 * clock when we wrote it (the server's acceptance may come much later, after being offline).
 */
export function messageTime(message: {
  readonly direction: 'in' | 'out'
  readonly serverAt?: number | undefined
  readonly sentAt: number
}): number {
  return message.direction === 'in' ? (message.serverAt ?? message.sentAt) : message.sentAt
}

/** The newest entry of a conversation, for the conversation list. */
export interface ConversationPreview {
  readonly id: string
  /** The text, or a notice's sentence. */
  readonly text: string
  readonly direction: 'in' | 'out'
  readonly kind: MessageKind
  /** messageTime of the entry. */
  readonly time: number
}

/** A row of the conversation list: the contact, and the newest entry of the conversation. */
export interface ConversationView extends ContactView {
  readonly preview: ConversationPreview | undefined
}

export interface ContactView {
  readonly username: string
  readonly verified: boolean
  /** A new identity key was seen and not yet acknowledged: sending is blocked until it is. */
  readonly identityChanged: boolean
  readonly unread: number
  readonly lastMessageAt: number | undefined
  readonly online: boolean
  /** We blocked this contact: nothing is sent to or stored from them; the history stays. */
  readonly blocked: boolean
  /** The contact deleted their account: the conversation stays, marked, and sending is refused. */
  readonly accountDeleted: boolean
}

/** What both UIs say in a conversation whose contact deleted their account. */
export function accountDeletedText(peer: string): string {
  return `${peer} deleted their account. This conversation stays here, but nothing more can be sent to it.`
}

export interface ClientEvents extends Record<string, unknown> {
  message: MessageView
  delivery: { peer: string; id: string; state: DeliveryState }
  presence: { username: string; online: boolean }
  'identity-changed': { peer: string }
  /** The server said that this contact deleted their account; the conversation is now marked. */
  'account-deleted': { peer: string }
  /** We blocked or unblocked this contact. */
  blocked: { peer: string; blocked: boolean }
  connection: { state: ConnectionState }
  /**
   * A message arrived that could not be decrypted: a notice took its place in the conversation and
   * the sender was asked to send it again (kind `undecryptable`), or, when the sender's app is too
   * old to bind usernames into a new session, not asked (kind `outdated`: it must update first).
   */
  undecryptable: { peer: string; id: string; reason: string; kind: 'undecryptable' | 'outdated' }
  /** An entry left the conversation (a notice whose message turned out to be a resent receipt). */
  removed: { peer: string; id: string }
  /**
   * Another of our devices changed this contact: read its conversation (its unread count is now
   * `unread`), or verified its key or accepted its change.
   */
  'contact-updated': { peer: string }
  /**
   * Part `part` of `parts` of the history another of our devices sends us (a transfer at link
   * time) is stored: `messages` of it were new here.
   */
  history: { transfer: string; part: number; parts: number; messages: number }
  /** Everything the server had queued for us when we connected is now stored (and acknowledged). */
  'caught-up': { messages: number }
  /** A failure in background work (prekey upkeep, a send the server refused); never a secret. */
  problem: { code: string; message: string; id?: string }
}
