/**
 * Everything we receive. Deliveries come in batches (what the relay link had buffered): each
 * sender's deliveries are decrypted one after another on that sender's session record in memory
 * (their AES-GCM opened side by side ahead of that, shared/open-ahead.ts), their content read, and
 * the results stored (the record, the messages or notices, the contact) in one commit per sender
 * and batch, one fsync for many messages, before anything is acknowledged. Which deliveries are
 * stored already is read once per batch.
 * What a content does is decided by a table of content handlers, one per `type`, so a new kind of
 * content plugs in without touching the rest:
 *
 *   - no session opens it: a notice `undecryptable` in its place, and its id kept for a retry request;
 *   - it would start a session from an app that binds no usernames: a notice `outdated`, no retry;
 *   - it decrypts but is malformed: a notice `unreadable`;
 *   - its type (or version) has no handler: a notice `unsupported` keeping the plaintext, which a
 *     version with a handler for it shows from the store (`view`);
 *   - otherwise its handler adds what it means to the commit.
 *
 * What it does not know: sockets and acknowledgements (the façade acks what a batch settled), how
 * retry requests are sent (Retries), how receipts are sent (Outbox).
 */
import {
  type Address,
  address,
  type ConversationId,
  DEFAULT_DEVICE_ID,
  directConversation,
} from '../address.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import { decodeEnvelope, type Envelope } from '../codec/envelope.js'
import { FRAME_VERSION, type ServerFrame } from '../codec/frames.js'
import { publicIdentityToJson } from '../codec/keys.js'
import { decode, type TSchema } from '../codec/schema.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import { OpenAhead } from '../open-ahead.js'
import type { RecordDecryption, SessionRecord } from '../session-record.js'
import { contactSeen } from './contacts.js'
import { CONTENT_VERSION, type ParsedContent, parseContent } from './content.js'
import type { ClientContext } from './context.js'
import { ClientErrorCode, isClientError } from './errors.js'
import { withDevice } from './fan-out.js'
import type { OwnDeviceInbox } from './own-devices.js'
import { type ContactRecord, type MessageRecord, messageKey, messageView, withPreview } from './records.js'
import { withRetryPending } from './retries.js'
import type { StoreOperation } from './store.js'
import type { MessageKind, MessageView } from './views.js'

export type DeliverFrame = Extract<ServerFrame, { type: 'deliver' }>

/** One delivery being stored: a handler adds to the commit through it, and may change `contact`. */
export interface Delivery {
  readonly peer: string
  readonly frame: DeliverFrame
  readonly parsed: ParsedContent
  /** The contact as it will be stored with this batch. */
  contact: ContactRecord
  /** A message of this conversation, as this batch leaves it so far (stored, or put before). */
  loadMessage(id: string): Promise<MessageRecord | undefined>
  putMessage(message: MessageRecord): Promise<void>
  deleteMessage(id: string): void
  /** Other operations for the same commit. */
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
    ...(frame.device !== undefined ? { device: frame.device } : {}),
  }
}

/** Adds a notice to the delivery's commit: a new unread entry, announced once stored. */
export async function addNotice(
  ctx: ClientContext,
  delivery: Delivery,
  notice: MessageRecord,
): Promise<void> {
  await delivery.putMessage(notice)
  delivery.after.push(() => ctx.events.emit('message', messageView(notice)))
  delivery.added = true
}

/**
 * Errors that mean the message itself can never be decrypted (malformed, not for a session we
 * hold, tampered, replayed). Anything else is a local failure, and the batch is not acknowledged.
 */
function isUndecryptable(error: unknown): error is { code: string } {
  if (isProtocolError(error)) return true
  return isClientError(error) && error.code === ClientErrorCode.InvalidState
}

/** Each delivery's envelope, decoded (undefined for one that does not decode). */
export function decodeEnvelopes(frames: readonly DeliverFrame[]): (Envelope | undefined)[] {
  return frames.map((frame) => {
    try {
      return decodeEnvelope(fromBase64Url(frame.body))
    } catch {
      return undefined
    }
  })
}

/** One sending device's session record as a batch leaves it, and the decryptions opened ahead on it. */
export interface DeviceSlot {
  readonly address: Address
  record: SessionRecord
  readonly initial: SessionRecord
  readonly ahead: OpenAhead
}

/**
 * The session records of one account's sending devices in a batch, loaded on first use: each
 * device's deliveries are decrypted in turn on its record, interleaved as they arrived.
 */
export class DeviceRecords {
  private readonly slots = new Map<number, DeviceSlot>()

  constructor(
    private readonly ctx: ClientContext,
    private readonly account: string,
    private readonly frames: readonly DeliverFrame[],
    private readonly envelopes: readonly (Envelope | undefined)[],
  ) {}

  async of(frame: DeliverFrame): Promise<DeviceSlot> {
    const device = frame.device ?? DEFAULT_DEVICE_ID
    let slot = this.slots.get(device)
    if (!slot) {
      const target = address(this.account, device)
      const record = await this.ctx.sessions.record(target)
      // Opened ahead only along this device's deliveries (the others do not continue its chains).
      const mine = this.envelopes.map((envelope, at) =>
        (this.frames[at]!.device ?? DEFAULT_DEVICE_ID) === device ? envelope : undefined,
      )
      slot = { address: target, record, initial: record, ahead: new OpenAhead(mine) }
      this.slots.set(device, slot)
    }
    return slot
  }

  /** The puts of the records the batch changed. */
  async operations(): Promise<StoreOperation[]> {
    const operations: StoreOperation[] = []
    for (const slot of this.slots.values()) {
      if (slot.record !== slot.initial)
        operations.push(await this.ctx.sessions.recordPut(slot.address, slot.record))
    }
    return operations
  }
}

/** One sender's part of a batch: everything it changes, committed together. */
class SenderBatch {
  readonly operations: StoreOperation[] = []
  readonly after: (() => void)[] = []
  /** Messages put (or deleted, undefined) by this batch, by id: later deliveries see them. */
  private readonly messages = new Map<string, MessageRecord | undefined>()
  /** Ids of the batch's deliveries that were stored before it began (read in one go, `prefetch`). */
  private readonly storedBefore = new Set<string>()

  readonly conversation: ConversationId

  constructor(
    private readonly ctx: ClientContext,
    readonly peer: string,
  ) {
    this.conversation = directConversation(peer)
  }

  async loadMessage(id: string): Promise<MessageRecord | undefined> {
    if (this.messages.has(id)) return this.messages.get(id)
    return this.ctx.records.loadMessage(this.conversation, id)
  }

  /**
   * Learns which of the batch's delivery ids the store holds already, in one read: a read per
   * delivery was most of a backlog's cost in IndexedDB (a transaction each).
   */
  async prefetch(ids: readonly string[]): Promise<void> {
    const found = await this.ctx.store.getMany(
      'messages',
      ids.map((id) => messageKey(this.conversation, id)),
    )
    ids.forEach((id, index) => {
      if (found[index] !== undefined) this.storedBefore.add(id)
    })
  }

  /**
   * True when the batch already holds an entry under this delivery's id, or the store did when
   * the batch began (nothing else writes this conversation meanwhile: whatever does, sending
   * included, runs in the peer's queue, as the batch does).
   */
  holds(id: string): boolean {
    if (this.messages.has(id)) return this.messages.get(id) !== undefined
    return this.storedBefore.has(id)
  }

  async putMessage(message: MessageRecord): Promise<void> {
    this.messages.set(message.id, message)
  }

  deleteMessage(id: string): void {
    this.messages.set(id, undefined)
  }

  /** True when the batch changes anything. */
  get changed(): boolean {
    return this.operations.length > 0 || this.messages.size > 0
  }

  /**
   * The batch's operations: the others, then one per message it touched, in its final state. The
   * messages are sealed side by side (each is independent), not one after another.
   */
  async allOperations(): Promise<StoreOperation[]> {
    const messages = await Promise.all(
      [...this.messages].map(
        ([id, message]): Promise<StoreOperation> =>
          message
            ? this.ctx.records.messagePut(message)
            : Promise.resolve({ op: 'delete', table: 'messages', key: messageKey(this.conversation, id) }),
      ),
    )
    return [...this.operations, ...messages]
  }

  /** The contact with this batch's entries in its conversation preview. */
  previewed(contact: ContactRecord): ContactRecord {
    const put: MessageRecord[] = []
    const removed: string[] = []
    for (const [id, message] of this.messages) {
      if (message) put.push(message)
      else removed.push(id)
    }
    return withPreview(contact, put, removed)
  }
}

export class Inbox {
  private readonly ctx: ClientContext
  private readonly handlers = new Map<string, ContentHandler>()
  /** Called after a notice for an undecryptable delivery is stored (the retries part asks for it). */
  onUndecryptable: (peer: string, lastRequestedAt: number | undefined) => void = () => {}

  constructor(
    ctx: ClientContext,
    handlers: readonly ContentHandler[],
    private readonly ownDevices: OwnDeviceInbox,
  ) {
    this.ctx = ctx
    for (const handler of handlers) this.handlers.set(handler.type, handler)
  }

  handlerFor(type: string): ContentHandler | undefined {
    return this.handlers.get(type)
  }

  /**
   * Decrypts, reads and stores a batch of deliveries, each sender's in its queue and in one commit.
   * A failure of our own (the store) is thrown, and then none of the batch may be acknowledged;
   * replays are skipped.
   */
  async receive(frames: readonly DeliverFrame[]): Promise<void> {
    // Runs of deliveries from our other devices (sent copies, what they tell us) and from others,
    // in the order they arrived: a copy of what we sent before a contact answered comes first.
    let start = 0
    while (start < frames.length) {
      const own = frames[start]!.from === this.ctx.username
      let end = start + 1
      while (end < frames.length && (frames[end]!.from === this.ctx.username) === own) end++
      const run = frames.slice(start, end)
      if (own) await this.ownDevices.receive(run)
      else await this.receiveFromContacts(run)
      start = end
    }
  }

  private async receiveFromContacts(frames: readonly DeliverFrame[]): Promise<void> {
    const bySender = new Map<string, DeliverFrame[]>()
    for (const frame of frames) {
      const list = bySender.get(frame.from)
      if (list) list.push(frame)
      else bySender.set(frame.from, [frame])
    }
    for (const [peer, deliveries] of bySender) {
      await this.ctx.peerQueues.run(peer, () => this.receiveFrom(peer, deliveries))
    }
  }

  private async receiveFrom(peer: string, frames: readonly DeliverFrame[]): Promise<void> {
    const batch = new SenderBatch(this.ctx, peer)
    const stored = await this.ctx.records.loadContact(peer)
    // Blocked: what was queued before the block (the server drops what comes after) is acknowledged
    // and forgotten, unread; the conversation keeps what it had.
    if (stored?.blocked) return
    // Someone who wrote first: their presence is shown if they share it, ours is not shared with
    // them until we answer or add them (docs/protocol.md §13.4).
    let contact: ContactRecord = stored ?? {
      username: peer,
      verified: false,
      unread: 0,
      presenceShared: false,
    }
    let identityChanged = false
    let undecryptable = false
    await batch.prefetch(frames.map((frame) => frame.id))
    const envelopes = decodeEnvelopes(frames)
    // Each of the sender's devices has its own session record, decrypted on in turn.
    const records = new DeviceRecords(this.ctx, peer, frames, envelopes)
    for (const [position, frame] of frames.entries()) {
      // Stored already (our acknowledgement was lost), or twice in this batch: nothing changes.
      if (batch.holds(frame.id)) continue
      let decrypted: RecordDecryption
      const slot = await records.of(frame)
      try {
        // One that did not decode is decoded again, for its error.
        const envelope = envelopes[position] ?? decodeEnvelope(fromBase64Url(frame.body))
        slot.ahead.prepare(position, slot.record.current)
        decrypted = await this.ctx.sessions.decryptWith(
          slot.address,
          slot.record,
          envelope,
          slot.ahead.opener,
        )
      } catch (error) {
        if (!isUndecryptable(error)) throw error
        // A replay of a message a session already opened: nothing else happens.
        if (isProtocolError(error, ProtocolErrorCode.DuplicateMessage)) continue
        // The first message of a session from an app that binds no usernames (docs/protocol.md
        // §4.5): no retry request, since the fresh session it would go on is one that app cannot
        // read, and its answer would be refused the same way. The notice says what to do instead.
        const outdated = isProtocolError(error, ProtocolErrorCode.OutdatedSender)
        const kind = outdated ? 'outdated' : 'undecryptable'
        const notice = noticeRecord(this.ctx, peer, frame, kind)
        await batch.putMessage(notice)
        contact = {
          ...contact,
          unread: contact.unread + 1,
          lastMessageAt: Math.max(contact.lastMessageAt ?? 0, frame.ts),
        }
        if (!outdated) contact = withRetryPending(contact, frame.device ?? DEFAULT_DEVICE_ID, frame.id)
        batch.after.push(() => {
          this.ctx.events.emit('message', messageView(notice))
          this.ctx.events.emit('undecryptable', { peer, id: frame.id, reason: error.code, kind })
        })
        undecryptable ||= !outdated
        continue
      }
      slot.record = decrypted.record
      // A device we did not know of wrote: we answer it too from now on.
      contact = withDevice(contact, slot.address.device)
      if (decrypted.usedOneTimePreKeyId !== undefined) {
        batch.operations.push({
          op: 'delete',
          table: 'prekeys',
          key: `one-time:${decrypted.usedOneTimePreKeyId}`,
        })
      }
      const seen = contactSeen(contact, peer, publicIdentityToJson(decrypted.session.remoteIdentity))
      identityChanged ||= seen.identityChanged
      contact = await this.read(batch, frame, decrypted.plaintext, seen.contact)
    }
    const changedRecords = await records.operations()
    if (!batch.changed && changedRecords.length === 0) return
    const operations = [...(await batch.allOperations()), ...changedRecords]
    contact = batch.previewed(contact)
    operations.push(await this.ctx.records.contactPut(contact))
    await this.ctx.store.commit(operations)

    if (!stored) this.ctx.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users: [peer] })
    if (identityChanged) this.ctx.events.emit('identity-changed', { peer })
    for (const step of batch.after) step()
    if (undecryptable) this.onUndecryptable(peer, contact.retryRequestedAt)
  }

  /** Reads one decrypted delivery's content and has its handler (or a notice) add to the batch. */
  private async read(
    batch: SenderBatch,
    frame: DeliverFrame,
    plaintext: Uint8Array,
    contact: ContactRecord,
  ): Promise<ContactRecord> {
    let parsed: ParsedContent
    let notice: MessageRecord | undefined
    let handler: ContentHandler | undefined
    let content: unknown
    try {
      parsed = parseContent(plaintext)
      handler = parsed.v === CONTENT_VERSION ? this.handlers.get(parsed.type) : undefined
      if (!handler) {
        notice = { ...noticeRecord(this.ctx, batch.peer, frame, 'unsupported'), raw: toBase64Url(plaintext) }
      } else {
        content = decode(handler.schema, parsed.value, `${parsed.type} content`)
      }
    } catch (error) {
      if (!isProtocolError(error)) throw error
      parsed = { v: 0, type: '', value: {} }
      notice = noticeRecord(this.ctx, batch.peer, frame, 'unreadable')
    }
    const delivery: Delivery = {
      peer: batch.peer,
      frame,
      parsed,
      contact,
      loadMessage: (id) => batch.loadMessage(id),
      putMessage: (message) => batch.putMessage(message),
      deleteMessage: (id) => batch.deleteMessage(id),
      operations: batch.operations,
      after: batch.after,
      added: false,
    }
    if (notice) await addNotice(this.ctx, delivery, notice)
    else await handler!.handle(delivery, content)
    if (!delivery.added) return delivery.contact
    return {
      ...delivery.contact,
      unread: delivery.contact.unread + 1,
      lastMessageAt: Math.max(delivery.contact.lastMessageAt ?? 0, frame.ts),
    }
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
