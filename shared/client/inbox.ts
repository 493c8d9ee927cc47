/**
 * Everything we receive: a delivery is decrypted with the session it belongs to, its content read,
 * and the result stored (the session, the message or notice, the contact) in one commit before the
 * delivery is acknowledged. What a content does is decided by a table of content handlers, one per
 * `type`, so a new kind of content plugs in without touching the rest:
 *
 *   - no session opens it: a notice `undecryptable` in its place, and its id kept for a retry request;
 *   - it decrypts but is malformed: a notice `unreadable`;
 *   - its type (or version) has no handler: a notice `unsupported` keeping the plaintext, which a
 *     version with a handler for it shows from the store (`view`);
 *   - otherwise its handler adds what it means to the commit.
 *
 * What it does not know: sockets and acknowledgements (the façade acks what `receive` settled),
 * how retry requests are sent (Retries), how receipts are sent (Outbox).
 */
import { address } from '../address.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import { decodeEnvelope } from '../codec/envelope.js'
import { FRAME_VERSION, type ServerFrame } from '../codec/frames.js'
import { publicIdentityToJson } from '../codec/keys.js'
import { decode, type TSchema } from '../codec/schema.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import { contactSeen } from './contacts.js'
import { CONTENT_VERSION, MAX_RETRY_IDS, type ParsedContent, parseContent } from './content.js'
import type { ClientContext } from './context.js'
import { ClientErrorCode, isClientError } from './errors.js'
import { type ContactRecord, type MessageRecord, messageKey, messageView } from './records.js'
import type { SessionDecryption } from './session-manager.js'
import type { StoreOperation } from './store.js'
import type { MessageKind, MessageView } from './views.js'

export type DeliverFrame = Extract<ServerFrame, { type: 'deliver' }>

/** One delivery being stored: a handler adds to `operations` and `after`, and may change `contact`. */
export interface Delivery {
  readonly peer: string
  readonly frame: DeliverFrame
  readonly parsed: ParsedContent
  /** The contact as it will be stored with this delivery. */
  contact: ContactRecord
  /** Committed together: the session update is already in. */
  readonly operations: StoreOperation[]
  /** Run once the commit succeeded (events, follow-up work). */
  readonly after: (() => void)[]
  /** Set by a handler whose content added an unread entry to the conversation. */
  added: boolean
}

/** What one content `type` (of CONTENT_VERSION) means to a receiver. */
export interface ContentHandler<C = unknown> {
  readonly type: string
  /** The content's schema; fields it does not define are ignored. */
  readonly schema: TSchema
  handle(delivery: Delivery, content: C): Promise<void>
  /** For content that shows in the conversation as text: what it shows. */
  display?(content: C): string
}

/** A notice in place of the message a delivery carried. */
export function noticeRecord(
  ctx: ClientContext,
  peer: string,
  frame: DeliverFrame,
  kind: Exclude<MessageKind, 'text'>,
): MessageRecord {
  return {
    id: frame.id,
    peer,
    direction: 'in',
    text: '',
    sentAt: frame.ts,
    serverAt: frame.ts,
    state: 'received',
    order: ctx.nextOrder(),
    kind,
  }
}

/** Adds a notice to the delivery's commit: a new unread entry, announced once stored. */
export async function addNotice(
  ctx: ClientContext,
  delivery: Delivery,
  notice: MessageRecord,
): Promise<void> {
  delivery.operations.push(await ctx.records.messagePut(notice))
  delivery.after.push(() => ctx.events.emit('message', messageView(notice)))
  delivery.added = true
}

/**
 * Errors that mean the message itself can never be decrypted (malformed, not for a session we
 * hold, tampered, replayed). Anything else is a local failure, and the delivery is not acknowledged.
 */
function isUndecryptable(error: unknown): error is { code: string } {
  if (isProtocolError(error)) return true
  return isClientError(error) && error.code === ClientErrorCode.InvalidState
}

export class Inbox {
  private readonly ctx: ClientContext
  private readonly handlers = new Map<string, ContentHandler>()
  /** Called after a notice for an undecryptable delivery is stored (the retries part asks for it). */
  onUndecryptable: (peer: string, lastRequestedAt: number | undefined) => void = () => {}

  constructor(ctx: ClientContext, handlers: readonly ContentHandler[]) {
    this.ctx = ctx
    for (const handler of handlers) this.handlers.set(handler.type, handler)
  }

  handlerFor(type: string): ContentHandler | undefined {
    return this.handlers.get(type)
  }

  /**
   * Decrypts, reads and stores one delivery, in its sender's queue. Only a failure of our own (the
   * store) and a replay are thrown: the first must not be acknowledged, the second is ignored.
   */
  async receive(frame: DeliverFrame): Promise<void> {
    const peer = frame.from
    await this.ctx.peerQueues.run(peer, () => this.receiveFrom(peer, frame))
  }

  private async receiveFrom(peer: string, frame: DeliverFrame): Promise<void> {
    // Stored already (our acknowledgement was lost): acknowledge again, change nothing.
    if (await this.ctx.store.get('messages', messageKey(peer, frame.id))) return
    let decrypted: SessionDecryption
    try {
      decrypted = await this.ctx.sessions.decrypt(address(peer), decodeEnvelope(fromBase64Url(frame.body)))
    } catch (error) {
      if (!isUndecryptable(error) || isProtocolError(error, ProtocolErrorCode.DuplicateMessage)) throw error
      const contact = await this.storeUndecryptable(peer, frame)
      this.ctx.events.emit('undecryptable', { peer, id: frame.id, reason: error.code })
      this.onUndecryptable(peer, contact.retryRequestedAt)
      return
    }
    const seen = contactSeen(
      await this.ctx.records.loadContact(peer),
      peer,
      publicIdentityToJson(decrypted.remoteIdentity),
    )
    const delivery = await this.read(peer, frame, decrypted, seen.contact)
    if (delivery.added) {
      delivery.contact = {
        ...delivery.contact,
        unread: delivery.contact.unread + 1,
        lastMessageAt: Math.max(delivery.contact.lastMessageAt ?? 0, frame.ts),
      }
    }
    delivery.operations.push(await this.ctx.records.contactPut(delivery.contact))
    await this.ctx.store.commit(delivery.operations)
    if (seen.newContact) this.ctx.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [peer] })
    if (seen.identityChanged) this.ctx.events.emit('identity-changed', { peer })
    for (const step of delivery.after) step()
  }

  /** Reads a decrypted delivery's content and has its handler (or a notice) add to the commit. */
  private async read(
    peer: string,
    frame: DeliverFrame,
    decrypted: SessionDecryption,
    contact: ContactRecord,
  ): Promise<Delivery> {
    const operations = [...decrypted.operations]
    const after: (() => void)[] = []
    let parsed: ParsedContent
    try {
      parsed = parseContent(decrypted.plaintext)
    } catch (error) {
      if (!isProtocolError(error)) throw error
      const notice = this.notice(peer, frame, 'unreadable')
      return this.withNotice(
        { peer, frame, parsed: { v: 0, type: '', value: {} }, contact, operations, after, added: false },
        notice,
      )
    }
    const delivery: Delivery = { peer, frame, parsed, contact, operations, after, added: false }
    const handler = parsed.v === CONTENT_VERSION ? this.handlers.get(parsed.type) : undefined
    if (!handler) {
      return this.withNotice(delivery, {
        ...this.notice(peer, frame, 'unsupported'),
        raw: toBase64Url(decrypted.plaintext),
      })
    }
    let content: unknown
    try {
      content = decode(handler.schema, parsed.value, `${parsed.type} content`)
    } catch (error) {
      if (!isProtocolError(error)) throw error
      return this.withNotice(delivery, this.notice(peer, frame, 'unreadable'))
    }
    await handler.handle(delivery, content)
    return delivery
  }

  private async withNotice(delivery: Delivery, notice: MessageRecord): Promise<Delivery> {
    await addNotice(this.ctx, delivery, notice)
    return delivery
  }

  private notice(peer: string, frame: DeliverFrame, kind: Exclude<MessageKind, 'text'>): MessageRecord {
    return noticeRecord(this.ctx, peer, frame, kind)
  }

  /**
   * Stores a notice for a delivery that no session opened, and its id among those to ask the peer
   * for again (with the contact, if it is a new one). Returns the contact as stored.
   */
  private async storeUndecryptable(peer: string, frame: DeliverFrame): Promise<ContactRecord> {
    const notice = this.notice(peer, frame, 'undecryptable')
    const contact = await this.ctx.records.loadContact(peer)
    const updated: ContactRecord = {
      ...(contact ?? { username: peer, verified: false, unread: 0 }),
      unread: (contact?.unread ?? 0) + 1,
      lastMessageAt: Math.max(contact?.lastMessageAt ?? 0, frame.ts),
      retryPending: [...(contact?.retryPending ?? []), frame.id].slice(-MAX_RETRY_IDS),
    }
    await this.ctx.store.commit([
      await this.ctx.records.messagePut(notice),
      await this.ctx.records.contactPut(updated),
    ])
    if (!contact) this.ctx.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [peer] })
    this.ctx.events.emit('message', messageView(notice))
    return updated
  }

  /**
   * A stored entry as the UIs see it. Content an older version kept as unsupported shows as text
   * once a handler for its type can display it.
   */
  view(record: MessageRecord): MessageView {
    if (record.kind === 'unsupported' && record.raw !== undefined) {
      const shown = this.display(fromBase64Url(record.raw))
      if (shown !== undefined) return { ...messageView(record), kind: 'text', text: shown }
    }
    return messageView(record)
  }

  private display(plaintext: Uint8Array): string | undefined {
    try {
      const parsed = parseContent(plaintext)
      const handler = parsed.v === CONTENT_VERSION ? this.handlers.get(parsed.type) : undefined
      if (!handler?.display) return undefined
      return handler.display(decode(handler.schema, parsed.value, `${parsed.type} content`))
    } catch {
      return undefined
    }
  }
}
