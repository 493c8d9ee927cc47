/**
 * Everything we send: a message is encrypted, stored in the history and in the outbox together
 * with the session it advanced, then sent, now if online or on reconnect, until the server answers
 * `accepted`. Receipts, retry requests and their answers go the same way without entering the
 * history. The content of what we send is kept (the `sent` table) for SENT_CONTENT_KEEP_MS, so it
 * can be sent again when the recipient could not decrypt it.
 *
 * What it does not know: why something is sent (the inbox and the retries part decide), sockets
 * (it sends frames through the context), how sessions are chosen (SessionManager).
 */
import { toBase64Url } from '../bytes.js'
import { FRAME_VERSION, type ServerFrame } from '../codec/frames.js'
import { isProtocolError } from '../errors.js'
import { MAX_SENT_CONTENT_ENTRIES, SENT_CONTENT_KEEP_MS } from '../limits.js'
import { newMessageId } from '../message-id.js'
import type { Contacts } from './contacts.js'
import {
  type ExtraContent,
  encodeContent,
  MAX_RECEIPT_IDS,
  type MessageContent,
  type OwnDeviceContent,
  type ReceiptContent,
  type TextContent,
} from './content.js'
import type { ClientContext } from './context.js'
import { ClientError, ClientErrorCode, isClientError } from './errors.js'
import { FanOut, type FreshSession } from './fan-out.js'
import {
  type ContactRecord,
  conversationOf,
  type MessageRecord,
  messageView,
  type OutboxRecord,
  withPreview,
} from './records.js'
import type { StoreOperation } from './store.js'
import type { MessageView } from './views.js'

/** After the server refuses a send for now (queue full, rate limit), the outbox is tried again after this. */
export const SEND_RETRY_DELAY_MS = 5_000

/**
 * After the server refuses a send because the recipient's queue already holds our share of
 * undelivered messages (E2E_ERR_QUEUE_SHARE_FULL), the outbox is tried again after this: room comes
 * back only when the recipient, who is offline, drains the queue, so retrying every few seconds
 * would only spend frames. A reconnect flushes the outbox sooner anyway.
 */
export const QUEUE_SHARE_RETRY_DELAY_MS = 60_000

/** The contact once we have written to them: our presence is shared with them. */
function sharingPresence(contact: ContactRecord): ContactRecord {
  return contact.presenceShared === false ? { ...contact, presenceShared: true } : contact
}

/**
 * How often one entry may meet `devices.mismatch` before it fails: each answer brings the lists in
 * line, so a second one means the devices changed meanwhile; many mean a server that will not
 * settle, and retrying would never end.
 */
export const MAX_DEVICE_MISMATCHES = 5

export class Outbox {
  private readonly ctx: ClientContext
  private readonly contacts: Contacts
  readonly fanOut: FanOut
  /** Outbox entries sent on this connection and not yet answered. */
  private readonly inFlight = new Set<string>()
  /** Counts connections that closed: a flush stops once the one it started on is gone. */
  private connectionsClosed = 0
  /**
   * The last flush asked for: flushes take turns. Two at once would each unseal an entry and send
   * it when that finishes, so a later entry could overtake an earlier one.
   */
  private flushing: Promise<void> = Promise.resolve()
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  /** When the retry timer fires (ctx.now() time), while it is set. */
  private retryAt = 0
  private readonly pendingReceipts = new Map<string, string[]>()
  /** Receipts taken from pendingReceipts but not yet in the outbox (flush waits for them too). */
  private receiptsBeingWritten = 0

  constructor(ctx: ClientContext, contacts: Contacts) {
    this.ctx = ctx
    this.contacts = contacts
    this.fanOut = new FanOut(ctx, contacts)
  }

  /**
   * The envelopes of `content` for every device of `peer` (or of ours, to oneself) and its sent
   * copy for our other devices, as an outbox entry to commit with the returned operations. Run
   * inside `fanOut.runWithOwn(peer)`.
   */
  private async prepare(
    peer: string,
    contact: ContactRecord | undefined,
    id: string,
    content: MessageContent | ExtraContent | OwnDeviceContent,
    kind: OutboxRecord['kind'],
  ): Promise<{ entry: OutboxRecord; operations: StoreOperation[]; contact: ContactRecord | undefined }> {
    const prepared = await this.prepareMany(peer, contact, [{ id, content, kind }])
    return { entry: prepared.entries[0]!, operations: prepared.operations, contact: prepared.contact }
  }

  /** Like `prepare` for several contents to one peer, encrypted in turn on each session. */
  private async prepareMany(
    peer: string,
    contact: ContactRecord | undefined,
    items: readonly {
      id: string
      content: MessageContent | ExtraContent | OwnDeviceContent
      kind: OutboxRecord['kind']
    }[],
    fresh?: FreshSession,
  ): Promise<{ entries: OutboxRecord[]; operations: StoreOperation[]; contact: ContactRecord | undefined }> {
    const toSelf = peer === this.ctx.username
    const plaintexts = items.map((item) => encodeContent(item.content))
    const copies = items.map((item) => encodeContent({ v: 1, type: 'sent', to: peer, content: item.content }))
    const encrypted = await this.fanOut.encryptSend(peer, contact, plaintexts, copies, fresh ? { fresh } : {})
    return {
      entries: items.map((item, index) => ({
        id: item.id,
        peer,
        kind: item.kind,
        messages: encrypted.items[index]!.messages,
        own: encrypted.items[index]!.own,
        content: toBase64Url(plaintexts[index]!),
        ...(toSelf ? {} : { copy: toBase64Url(copies[index]!) }),
      })),
      operations: encrypted.operations,
      contact: encrypted.contact,
    }
  }

  /** True while receipts are gathered or written: work `flush` waits for. */
  get busy(): boolean {
    return this.pendingReceipts.size > 0 || this.receiptsBeingWritten > 0
  }

  /** The connection closed: what was in flight on it is sent again on the next one. */
  connectionClosed(): void {
    this.inFlight.clear()
    this.connectionsClosed++
  }

  stop(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = undefined
  }

  /**
   * Encrypts a text message to `peer` (on the current session, or a new one from a fresh bundle),
   * stores it with the session, the outbox entry and its kept content in one commit, and sends it.
   */
  async sendText(peer: string, text: string): Promise<MessageView> {
    const message = await this.fanOut.runWithOwn(peer, async () => {
      const sentAt = this.ctx.now()
      const id = toBase64Url(newMessageId(sentAt))
      const contact = await this.contacts.forSending(peer)
      const content: TextContent = { v: 1, type: 'text', id, text, sentAt }
      const prepared = await this.prepare(peer, contact, id, content, 'text')
      const record: MessageRecord = {
        id,
        peer,
        direction: 'out',
        text,
        sentAt,
        state: 'sending',
        order: this.ctx.nextOrder(),
        ...(this.ctx.deviceId !== 1 ? { device: this.ctx.deviceId } : {}),
      }
      await this.ctx.store.commit([
        ...prepared.operations,
        await this.ctx.records.messagePut(record),
        await this.ctx.records.outboxPut(prepared.entry, record.order),
        await this.ctx.records.sentPut({ id, peer, content, sentAt, resends: 0 }),
        await this.ctx.records.contactPut({
          ...withPreview(sharingPresence(prepared.contact ?? contact!), [record]),
          lastMessageAt: sentAt,
        }),
      ])
      // Writing to someone shares our presence with them (docs/protocol.md §13.4).
      if (!contact || contact.presenceShared === false) this.contacts.share([peer])
      if (!contact) this.contacts.subscribe([peer])
      return record
    })
    this.ctx.events.emit('message', messageView(message))
    await this.flush()
    return messageView(message)
  }

  /**
   * Sends content of another type (a content handler's) to `peer`, kept for resending like a text;
   * the handler that knows the type decides what it shows. Returns the frame's id.
   */
  async sendContent(peer: string, content: ExtraContent): Promise<string> {
    const id = await this.fanOut.runWithOwn(peer, async () => {
      const contact = await this.contacts.forSending(peer)
      const sentAt = this.ctx.now()
      const frameId = toBase64Url(newMessageId(sentAt))
      const prepared = await this.prepare(peer, contact, frameId, content, 'content')
      await this.ctx.store.commit([
        ...prepared.operations,
        await this.ctx.records.outboxPut(prepared.entry, this.ctx.nextOrder()),
        await this.ctx.records.sentPut({ id: frameId, peer, content, sentAt, resends: 0 }),
        ...(prepared.contact && prepared.contact !== contact
          ? [await this.ctx.records.contactPut(prepared.contact)]
          : []),
      ])
      return frameId
    })
    await this.flush()
    return id
  }

  /**
   * Sends content to our other devices alone (a read position, a verification), if we have any:
   * a send to ourselves, which the server fans out to them. Takes the own queue (not from inside it).
   */
  async sendToOwnDevices(
    content: OwnDeviceContent,
    options: { flush?: boolean } = {},
  ): Promise<string | undefined> {
    const self = this.ctx.username
    const sent = await this.ctx.peerQueues.run(self, async () => {
      if ((await this.fanOut.ownDevices()).length === 0) return undefined
      const id = toBase64Url(newMessageId(this.ctx.now()))
      const prepared = await this.prepare(self, undefined, id, content, 'sync')
      await this.ctx.store.commit([
        ...prepared.operations,
        await this.ctx.records.outboxPut(prepared.entry, this.ctx.nextOrder()),
      ])
      return id
    })
    if (sent !== undefined && options.flush !== false) await this.flush()
    return sent
  }

  /**
   * The operations that put `content` in the outbox to every device of `peer` (with its sent copy
   * for our other devices), and keep it when `keep` says so; the caller commits them, in the
   * peer's queue (the own queue is taken here), before it queues anything else to `peer`.
   * `fresh` starts a new session with one of the peer's devices for it (a retry request).
   */
  async queue(
    peer: string,
    content: MessageContent | ExtraContent,
    kind: OutboxRecord['kind'],
    options: { id?: string; keep?: TextContent | ReceiptContent; fresh?: FreshSession } = {},
  ): Promise<StoreOperation[]> {
    const { fresh, ...item } = options
    return this.queueAll(peer, [{ content, kind, ...item }], fresh)
  }

  /** Like `queue` for several contents to one peer: encrypted in turn, one session put each. */
  private async queueAll(
    peer: string,
    items: readonly {
      content: MessageContent | ExtraContent
      kind: OutboxRecord['kind']
      id?: string
      keep?: TextContent | ReceiptContent
    }[],
    fresh?: FreshSession,
  ): Promise<StoreOperation[]> {
    return this.ctx.peerQueues.run(this.ctx.username, async () => {
      const sentAt = this.ctx.now()
      const contact = await this.ctx.records.loadContact(peer)
      const withIds = items.map((item) => ({ ...item, id: item.id ?? toBase64Url(newMessageId(sentAt)) }))
      const prepared = await this.prepareMany(peer, contact, withIds, fresh)
      const operations = [...prepared.operations]
      for (const [index, item] of withIds.entries()) {
        operations.push(await this.ctx.records.outboxPut(prepared.entries[index]!, this.ctx.nextOrder()))
        if (item.keep) {
          operations.push(
            await this.ctx.records.sentPut({ id: item.id, peer, content: item.keep, sentAt, resends: 0 }),
          )
        }
      }
      if (prepared.contact && prepared.contact !== contact) {
        operations.push(await this.ctx.records.contactPut(prepared.contact))
      }
      return operations
    })
  }

  /** Sends every envelope the server has not yet accepted, oldest first, each once per connection. */
  flush(): Promise<void> {
    const turn = this.flushing.then(() => this.flushInOrder())
    this.flushing = turn.catch(() => undefined)
    return turn
  }

  private async flushInOrder(): Promise<void> {
    if (this.ctx.connection() !== 'online') return
    const connection = this.connectionsClosed
    const entries = (await this.ctx.store.list('outbox')).sort((a, b) => (a.order ?? 0) - (b.order ?? 0))
    for (const entry of entries) {
      // The connection closed under this flush: the next one's flush sends the rest, in order. Going
      // on would put later entries on the next connection ahead of those that failed on this one.
      if (this.connectionsClosed !== connection) return
      if (this.inFlight.has(entry.key)) continue
      // Claimed: a later flush on this connection leaves it to its `accepted`.
      this.inFlight.add(entry.key)
      const outbox = await this.ctx.records.openOutbox(entry.key, entry.value)
      // Closed meanwhile (the claim went with the connection).
      if (this.connectionsClosed !== connection) return
      // Entries from before devices: their one envelope, for device 1 as it was then.
      const sent = this.ctx.sendFrame(
        outbox.messages
          ? {
              v: FRAME_VERSION,
              type: 'send.devices',
              id: outbox.id,
              to: outbox.peer,
              messages: outbox.messages,
              own: outbox.own ?? [],
            }
          : { v: FRAME_VERSION, type: 'send', id: outbox.id, to: outbox.peer, body: outbox.envelope! },
      )
      if (!sent) this.inFlight.delete(entry.key)
    }
  }

  /** True while anything waits in the outbox. */
  async pending(): Promise<boolean> {
    return (await this.ctx.store.list('outbox')).length > 0
  }

  async accepted(id: string, serverAt: number): Promise<void> {
    await this.acceptedMany([{ id, ts: serverAt }])
  }

  /**
   * The server accepted these sends: their outbox entries go, and messages shown as sending become
   * accepted, in one commit (a backlog's receipts come back as a run of `accepted` frames).
   */
  async acceptedMany(frames: readonly { readonly id: string; readonly ts: number }[]): Promise<void> {
    const operations: StoreOperation[] = []
    const updated: MessageRecord[] = []
    const seen = new Set<string>()
    for (const { id, ts } of frames) {
      this.inFlight.delete(id)
      if (seen.has(id)) continue
      seen.add(id)
      const outbox = await this.ctx.records.loadOutbox(id)
      if (!outbox) continue
      operations.push({ op: 'delete', table: 'outbox', key: id })
      if (outbox.kind !== 'text') continue
      const message = await this.ctx.records.loadMessage(conversationOf(outbox), id)
      if (message && message.state === 'sending') {
        const accepted: MessageRecord = { ...message, state: 'accepted', serverAt: ts }
        updated.push(accepted)
        operations.push(await this.ctx.records.messagePut(accepted))
      }
    }
    if (operations.length === 0) return
    await this.ctx.store.commit(operations)
    for (const message of updated) {
      this.ctx.events.emit('delivery', { peer: message.peer, id: message.id, state: 'accepted' })
    }
  }

  /**
   * The server answered that the send `frame.id` names other devices than the accounts have
   * (nothing of it was stored): the entry gets envelopes for the missing devices and loses those
   * of the gone ones, and is sent again with the same id. An entry that cannot be brought in line
   * (a device whose keys its account did not sign, too many answers in a row) fails, and the
   * `problem` event says why.
   */
  async devicesMismatch(frame: Extract<ServerFrame, { type: 'devices.mismatch' }>): Promise<void> {
    const stored = await this.ctx.store.get('outbox', frame.id)
    if (!stored) {
      this.inFlight.delete(frame.id)
      return
    }
    const peer = (await this.ctx.records.openOutbox(frame.id, stored.value)).peer
    let failure: unknown
    let retry = false
    await this.fanOut.runWithOwn(peer, async () => {
      const record = await this.ctx.store.get('outbox', frame.id)
      if (!record) return
      const entry = await this.ctx.records.openOutbox(frame.id, record.value)
      if ((entry.mismatches ?? 0) >= MAX_DEVICE_MISMATCHES) {
        failure = new ClientError(
          ClientErrorCode.InvalidState,
          `expected the server's device lists to settle, got ${MAX_DEVICE_MISMATCHES} different answers in a row for message ${frame.id}`,
        )
        return
      }
      try {
        await this.ctx.store.commit(
          await this.fanOut.reconcile(
            entry,
            record.order ?? this.ctx.nextOrder(),
            frame.recipient,
            frame.own,
          ),
        )
      } catch (error) {
        // A local failure (the store) is not the message's: it stays for the next connection; so
        // does a bundle that could not be fetched for now.
        if (!isClientError(error) && !isProtocolError(error)) throw error
        if (isClientError(error, ClientErrorCode.Network)) {
          retry = true
          return
        }
        failure = error
      }
    })
    // Claimed until here: a flush meanwhile would send the entry as it was before this answer,
    // and the server would answer that again.
    this.inFlight.delete(frame.id)
    if (failure !== undefined) {
      await this.fail(frame.id)
      this.ctx.report(failure)
      return
    }
    if (retry) {
      this.retryLater(SEND_RETRY_DELAY_MS)
      return
    }
    await this.flush()
  }

  /** The server refused the send `frame.id` names: for good (no such user) or for now (limits). */
  async refused(frame: Extract<ServerFrame, { type: 'error' }> & { id: string }): Promise<void> {
    this.inFlight.delete(frame.id)
    if (frame.code === 'E2E_ERR_USER_NOT_FOUND') {
      // A recipient that does not exist will not appear on a retry: give up on that message.
      await this.fail(frame.id)
    } else if (frame.code === 'E2E_ERR_ACCOUNT_DELETED') {
      // Nor will one who deleted their account; the conversation is marked so the UIs say so.
      const peer = await this.fail(frame.id)
      if (peer !== undefined) await this.contacts.markDeleted(peer)
    } else {
      // Refused for now (queue full, our share of it full, rate limit): the envelope stays in the
      // outbox and the message stays "sending"; the whole outbox is tried again after the shortest
      // delay any refusal asked for.
      const delay =
        frame.code === 'E2E_ERR_QUEUE_SHARE_FULL' ? QUEUE_SHARE_RETRY_DELAY_MS : SEND_RETRY_DELAY_MS
      this.retryLater(delay)
    }
  }

  private retryLater(delay: number): void {
    const at = this.ctx.now() + delay
    if (this.retryTimer) {
      if (this.retryAt <= at) return
      clearTimeout(this.retryTimer)
    }
    this.retryAt = at
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      this.flush().catch((error: unknown) => this.ctx.report(error))
    }, delay)
  }

  /** Gives up on the outbox entry `id` (its message, if any, is marked failed); returns its peer. */
  private async fail(id: string): Promise<string | undefined> {
    const outbox = await this.ctx.records.loadOutbox(id)
    if (!outbox) return undefined
    const operations: StoreOperation[] = [{ op: 'delete', table: 'outbox', key: id }]
    const message = await this.ctx.records.loadMessage(conversationOf(outbox), id)
    if (message) operations.push(await this.ctx.records.messagePut({ ...message, state: 'failed' }))
    await this.ctx.store.commit(operations)
    if (message) this.ctx.events.emit('delivery', { peer: outbox.peer, id, state: 'failed' })
    return outbox.peer
  }

  /** A receipt for `id` from `peer` is due: gathered with the others of a burst into one. */
  queueReceipt(peer: string, id: string): void {
    const ids = this.pendingReceipts.get(peer) ?? []
    ids.push(id)
    this.pendingReceipts.set(peer, ids)
    if (ids.length === 1) {
      setTimeout(() => {
        this.sendReceipts(peer).catch((error: unknown) => this.ctx.report(error))
      }, 0)
    }
  }

  /** Writes every receipt still gathering into the outbox now (before the store closes). */
  async writePendingReceipts(): Promise<void> {
    await Promise.all([...this.pendingReceipts.keys()].map((peer) => this.sendReceipts(peer)))
  }

  private async sendReceipts(peer: string): Promise<void> {
    const ids = this.pendingReceipts.get(peer) ?? []
    // Written already (by writePendingReceipts, when the client closed before this timer fired).
    if (ids.length === 0) return
    this.pendingReceipts.delete(peer)
    this.receiptsBeingWritten++
    try {
      await this.ctx.peerQueues.run(peer, async () => {
        const contact = await this.ctx.records.loadContact(peer)
        // No receipts to a contact whose key changed until the user has seen the warning.
        if (!contact || contact.pendingIdentity) return
        // A burst's receipts (MAX_RECEIPT_IDS ids each), encrypted in turn, in one commit.
        const contents: ReceiptContent[] = []
        for (let start = 0; start < ids.length; start += MAX_RECEIPT_IDS) {
          contents.push({ v: 1, type: 'receipt', ids: ids.slice(start, start + MAX_RECEIPT_IDS) })
        }
        await this.ctx.store.commit(
          await this.queueAll(
            peer,
            contents.map((content) => ({ content, kind: 'receipt' as const, keep: content })),
          ),
        )
      })
    } finally {
      this.receiptsBeingWritten--
    }
    await this.flush()
  }

  /** Deletes kept content older than SENT_CONTENT_KEEP_MS, and the oldest beyond MAX_SENT_CONTENT_ENTRIES. */
  async pruneSentContent(): Promise<void> {
    const entries = (await this.ctx.store.list('sent')).sort((a, b) => (b.order ?? 0) - (a.order ?? 0))
    const cutoff = this.ctx.now() - SENT_CONTENT_KEEP_MS
    const stale = entries.filter((entry, i) => i >= MAX_SENT_CONTENT_ENTRIES || (entry.order ?? 0) < cutoff)
    if (stale.length === 0) return
    await this.ctx.store.commit(
      stale.map((entry): StoreOperation => ({ op: 'delete', table: 'sent', key: entry.key })),
    )
  }

  /**
   * Resolves once the server has accepted everything in the outbox and nothing more is being
   * written (`busy` also covers the other parts' work), e.g. before a script exits; rejects after
   * `timeoutMs`.
   */
  async drain(timeoutMs: number, busy: () => boolean): Promise<void> {
    const deadline = this.ctx.now() + timeoutMs
    await this.flush()
    while ((await this.pending()) || this.busy || busy()) {
      if (this.ctx.connection() !== 'online') {
        throw new ClientError(
          ClientErrorCode.Network,
          `expected to be online to flush the outbox, got ${this.ctx.connection()}`,
        )
      }
      if (this.ctx.now() > deadline) {
        throw new ClientError(
          ClientErrorCode.Network,
          `expected the server to accept every message within ${timeoutMs} ms, got no answer`,
        )
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 50)
        const stop = this.ctx.events.on('delivery', done)
        function done() {
          clearTimeout(timer)
          stop()
          resolve()
        }
      })
    }
  }
}
