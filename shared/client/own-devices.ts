/**
 * What our other devices send us (docs/protocol.md §13.9): copies of what they sent, which join
 * the conversation they were sent to as our own messages (direction `out`), and what keeps the
 * devices in step, a conversation read (its unread count clears) and a key verified or a change
 * accepted. They come from our own account, on the sessions with our devices.
 *
 * Each changes a conversation other than the one it came from, so it is stored in that
 * conversation's queue and ours, taken in the order every part takes them (the contact's, then
 * our own): the batch is first decrypted on copies of the records, in our queue alone, to learn
 * which conversations it touches, then decrypted again and stored once all of their queues are held.
 */
import { address, DEFAULT_DEVICE_ID, directConversation } from '../address.js'
import { publicIdentityToJson } from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import {
  CONTENT_VERSION,
  type HistoryContent,
  OWN_DEVICE_CONTENT_SCHEMAS,
  type OwnDeviceContent,
  parseContent,
  TextContent,
} from './content.js'
import type { ClientContext } from './context.js'
import { ClientErrorCode, isClientError } from './errors.js'
import { contactDevices } from './fan-out.js'
import { type DeliverFrame, DeviceRecords, decodeEnvelopes } from './inbox.js'
import {
  type ContactRecord,
  identitiesEqual,
  type MessageRecord,
  messageView,
  withPreview,
} from './records.js'
import type { StoreOperation } from './store.js'
import { messageTime } from './views.js'

/** What one delivery from our devices says, once decrypted and checked. */
type Decrypted = { frame: DeliverFrame; content: OwnDeviceContent | undefined }

/** The conversations an own-device content is about. */
function peersOf(content: OwnDeviceContent): string[] {
  switch (content.type) {
    case 'sent':
      return [content.to]
    case 'sync.history':
      return [...new Set(content.entries.map((entry) => entry.peer))]
    default:
      return [content.peer]
  }
}

function readOwnContent(plaintext: Uint8Array): OwnDeviceContent | undefined {
  try {
    const parsed = parseContent(plaintext)
    if (parsed.v !== CONTENT_VERSION || !Object.hasOwn(OWN_DEVICE_CONTENT_SCHEMAS, parsed.type))
      return undefined
    const schema = OWN_DEVICE_CONTENT_SCHEMAS[parsed.type as keyof typeof OWN_DEVICE_CONTENT_SCHEMAS]
    return decode(schema, parsed.value, `${parsed.type} content`) as OwnDeviceContent
  } catch {
    return undefined
  }
}

/**
 * The contact (made if we had none: someone another of our devices wrote to) once `message`, one
 * of ours or of history, is in its conversation: the preview and the time follow; unread does not.
 */
function joined(contact: ContactRecord | undefined, message: MessageRecord): ContactRecord {
  const known = contact ?? { username: message.peer, verified: false, unread: 0 }
  return {
    ...withPreview(known, [message]),
    lastMessageAt: Math.max(known.lastMessageAt ?? 0, messageTime(message)),
  }
}

export class OwnDeviceInbox {
  constructor(
    private readonly ctx: ClientContext,
    /** Our own device `device` wrote: the operation that puts it on the own list, if new. */
    private readonly learnOwnDevice: (device: number) => Promise<StoreOperation | undefined>,
  ) {}

  async receive(frames: readonly DeliverFrame[]): Promise<void> {
    const self = this.ctx.username
    const peers = await this.ctx.peerQueues.run(self, async () => {
      const { results } = await this.decrypt(frames, false)
      return [...new Set(results.flatMap(({ content }) => (content ? peersOf(content) : [])))]
        .filter((peer) => peer !== self)
        .sort()
    })
    // The contacts' queues, then ours: the order every part takes them in.
    const store = () => this.ctx.peerQueues.run(self, () => this.store(frames))
    await peers.reduceRight<() => Promise<void>>(
      (inner, peer) => () => this.ctx.peerQueues.run(peer, inner),
      store,
    )()
  }

  /**
   * Decrypts the batch on the records as they are, in memory: the content of each that opened, and
   * the operations that would store what the decryptions changed (the first pass drops them).
   * `report`: say what did not open as a problem (once, on the pass that stores).
   */
  private async decrypt(
    frames: readonly DeliverFrame[],
    report: boolean,
  ): Promise<{ results: Decrypted[]; operations: StoreOperation[] }> {
    const envelopes = decodeEnvelopes(frames)
    const records = new DeviceRecords(this.ctx, this.ctx.username, frames, envelopes)
    const results: Decrypted[] = []
    const operations: StoreOperation[] = []
    for (const [position, frame] of frames.entries()) {
      const envelope = envelopes[position]
      const slot = await records.of(frame)
      if (!envelope) continue
      try {
        slot.ahead.prepare(position, slot.record.current)
        const decrypted = await this.ctx.sessions.decryptWith(
          slot.address,
          slot.record,
          envelope,
          slot.ahead.opener,
        )
        slot.record = decrypted.record
        if (decrypted.usedOneTimePreKeyId !== undefined) {
          operations.push({
            op: 'delete',
            table: 'prekeys',
            key: `one-time:${decrypted.usedOneTimePreKeyId}`,
          })
        }
        results.push({ frame, content: readOwnContent(decrypted.plaintext) })
      } catch (error) {
        // A replay is nothing new; anything else from our own devices that does not open is lost
        // to this device (there is no conversation to put a notice in) and said as a problem.
        if (isProtocolError(error, ProtocolErrorCode.DuplicateMessage)) continue
        // As for a contact's (inbox.ts): a session or prekey we no longer hold is the message's
        // fault too; anything else (the store) is ours, and nothing of the batch is acknowledged.
        if (!isProtocolError(error) && !isClientError(error, ClientErrorCode.InvalidState)) throw error
        if (report) this.ctx.report(error)
      }
    }
    operations.push(...(await records.operations()))
    return { results, operations }
  }

  /** In the queues of every conversation the batch touches and ours: decrypted and stored. */
  private async store(frames: readonly DeliverFrame[]): Promise<void> {
    const decrypted = await this.decrypt(frames, true)
    const operations: StoreOperation[] = [...decrypted.operations]
    const contacts = new Map<string, ContactRecord>()
    const messages: MessageRecord[] = []
    const updated = new Set<string>()
    const devices = new Set<number>()
    const history: { transfer: string; part: number; parts: number; messages: number }[] = []
    const fromHistory = new Set<MessageRecord>()
    const contact = async (peer: string) => contacts.get(peer) ?? (await this.ctx.records.loadContact(peer))

    for (const { frame, content } of decrypted.results) {
      devices.add(frame.device ?? DEFAULT_DEVICE_ID)
      if (!content) continue
      if (content.type === 'sync.history') {
        const before = messages.length
        const stored = await this.storeHistory(content, messages, contact, contacts)
        for (const message of messages.slice(before)) fromHistory.add(message)
        history.push({
          transfer: content.transfer,
          part: content.part,
          parts: content.parts,
          messages: stored,
        })
        for (const entry of content.entries) updated.add(entry.peer)
        continue
      }
      const peer = peersOf(content)[0]!
      if (peer === this.ctx.username) continue
      switch (content.type) {
        case 'sent': {
          // Only texts join the history; a copy of a receipt or a retry says nothing to show.
          if (content.content.type !== 'text') break
          let text: TextContent
          try {
            text = decode(TextContent, content.content, 'text content')
          } catch {
            break
          }
          // The id inside the encryption must be the frame's, or the server rewrote it.
          if (text.id !== frame.id) break
          // A resend (answering the contact's retry request) is the original again: kept under the
          // original's id, so it shows once, and only if that copy never arrived here.
          const id = text.resendOf ?? text.id
          if (messages.some((m) => m.peer === peer && m.id === id)) break
          if (await this.ctx.records.loadMessage(directConversation(peer), id)) break
          const message: MessageRecord = {
            id,
            peer,
            direction: 'out',
            text: text.text,
            sentAt: text.sentAt,
            serverAt: frame.ts,
            state: 'accepted',
            order: this.ctx.nextOrder(),
            ...(frame.device !== undefined ? { device: frame.device } : {}),
          }
          messages.push(message)
          contacts.set(peer, joined(await contact(peer), message))
          break
        }
        case 'sync.read': {
          const known = await contact(peer)
          if (!known || known.unread === 0) break
          contacts.set(peer, await this.readUpTo(known, content.upTo))
          updated.add(peer)
          break
        }
        case 'sync.verified': {
          const known = await contact(peer)
          if (!known) break
          if (known.pendingIdentity && identitiesEqual(known.pendingIdentity, content.identity)) {
            // Accepted there: the new key is trusted here too; sessions with the old one go.
            const { retryRequests: _answeredThere, ...settled } = known
            contacts.set(peer, {
              ...settled,
              identity: content.identity,
              pendingIdentity: undefined,
              verified: content.verified,
            })
            for (const device of contactDevices(known)) {
              operations.push(
                await this.ctx.sessions.retain(address(peer, device), (session) =>
                  identitiesEqual(publicIdentityToJson(session.remoteIdentity), content.identity),
                ),
              )
            }
            updated.add(peer)
          } else if (!known.pendingIdentity && identitiesEqual(known.identity, content.identity)) {
            contacts.set(peer, { ...known, verified: content.verified })
            updated.add(peer)
          }
          // Another key than the one we trust: this device has not seen it, and nothing changes.
          break
        }
      }
    }
    for (const device of devices) {
      const learned = await this.learnOwnDevice(device)
      if (learned) operations.push(learned)
    }
    for (const message of messages) operations.push(await this.ctx.records.messagePut(message))
    for (const record of contacts.values()) operations.push(await this.ctx.records.contactPut(record))
    if (operations.length > 0) await this.ctx.store.commit(operations)
    // What a history transfer brought is announced by its part (`history`, `contact-updated`), not
    // as messages one by one: they are not new, and a UI must not notify of each.
    for (const message of messages) {
      if (!fromHistory.has(message)) this.ctx.events.emit('message', messageView(message))
    }
    for (const peer of updated) this.ctx.events.emit('contact-updated', { peer })
    for (const part of history) this.ctx.events.emit('history', part)
  }

  /**
   * One part of a history transfer: each message not stored yet joins its conversation at the
   * place its time gives it (before what arrived since the link), read, and the contact's preview
   * follows. How many it added.
   */
  private async storeHistory(
    content: HistoryContent,
    messages: MessageRecord[],
    contact: (peer: string) => Promise<ContactRecord | undefined>,
    contacts: Map<string, ContactRecord>,
  ): Promise<number> {
    let added = 0
    for (const [index, entry] of content.entries.entries()) {
      if (entry.peer === this.ctx.username) continue
      if (messages.some((m) => m.peer === entry.peer && m.id === entry.id)) continue
      if (await this.ctx.records.loadMessage(directConversation(entry.peer), entry.id)) continue
      const message: MessageRecord = {
        id: entry.id,
        peer: entry.peer,
        direction: entry.direction,
        text: entry.text,
        sentAt: entry.sentAt,
        ...(entry.serverAt !== undefined ? { serverAt: entry.serverAt } : {}),
        state: entry.direction === 'in' ? 'received' : (entry.state ?? 'accepted'),
        // Its time, and a fraction that keeps the transfer's entries apart: it sorts among the
        // conversation's entries by when it was written, before anything that arrived since.
        order: messageTime(entry) + ((content.part * 10_000 + index) % 1_000_000) / 1_000_000,
        ...(entry.device !== undefined ? { device: entry.device } : {}),
      }
      messages.push(message)
      added++
      contacts.set(entry.peer, joined(await contact(entry.peer), message))
    }
    return added
  }

  /** The contact with its conversation read up to the entry at time `upTo` (another device's). */
  private async readUpTo(contact: ContactRecord, upTo: number): Promise<ContactRecord> {
    // Only the newest `unread` incoming entries can still be unread.
    const recent = await this.ctx.store.listMessages(directConversation(contact.username), {
      limit: Math.max(contact.unread * 2, 50),
    })
    const opened = await Promise.all(
      recent.map((record) => this.ctx.records.openMessage(record.key, record.value)),
    )
    const readBefore = contact.readUpTo ?? Number.NEGATIVE_INFINITY
    let readUpTo = contact.readUpTo
    let unread = 0
    for (const message of opened) {
      if (message.direction !== 'in' || message.order <= readBefore) continue
      if (messageTime(message) <= upTo) readUpTo = Math.max(readUpTo ?? message.order, message.order)
      else unread++
    }
    return {
      ...contact,
      unread: Math.min(contact.unread, unread),
      ...(readUpTo !== undefined ? { readUpTo } : {}),
    }
  }
}
