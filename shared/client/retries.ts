/**
 * Recovering messages that no session could decrypt (docs/protocol.md §8.6), both ways:
 *
 *   - asking: the ids waiting in a contact's record, by the device that sent them, go to that
 *     device in a `retry` content naming it, on a fresh session with it (the send goes to every
 *     device of the contact, as every send does), at most once per RETRY_REQUEST_INTERVAL_MS per
 *     contact;
 *   - answering: a contact's `retry` naming this device is answered with each kept content sent
 *     again (`resendOf`), or `unavailable` for what is gone; one naming another device of ours is
 *     not ours to answer (that device sent those messages and keeps them). A message is sent again
 *     at most MAX_RESENDS_PER_MESSAGE times, and at most MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR
 *     requests per contact are answered.
 *
 * What it does not know: how a failure is noticed or shown (the inbox stores the notice and the
 * id to ask for), how envelopes are sent (the outbox).
 */
import { DEFAULT_DEVICE_ID, directConversation } from '../address.js'
import { toBase64Url } from '../bytes.js'
import {
  MAX_DEVICES_LIMIT,
  MAX_RESENDS_PER_MESSAGE,
  MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR,
  RETRY_REQUEST_INTERVAL_MS,
  SENT_CONTENT_KEEP_MS,
} from '../limits.js'
import { newMessageId } from '../message-id.js'
import type { Contacts } from './contacts.js'
import {
  type ExtraContent,
  MAX_RETRY_IDS,
  type MessageContent,
  type RetryContent,
  type TextContent,
} from './content.js'
import type { ClientContext } from './context.js'
import { isClientError } from './errors.js'
import type { Outbox } from './outbox.js'
import type { ContactRecord, MessageRecord } from './records.js'

const HOUR_MS = 60 * 60 * 1000

/** One device's messages that did not open here, to ask that device for again. */
export interface PendingRetry {
  readonly device: number
  readonly ids: readonly string[]
}

/**
 * What a contact's record holds to ask for again, by the device that sent it, in device order: a
 * record from before devices keeps its ids in `retryPending`, which were device 1's.
 */
export function pendingRetries(contact: ContactRecord): PendingRetry[] {
  const byDevice = new Map<number, string[]>()
  if (contact.retryPending?.length) byDevice.set(DEFAULT_DEVICE_ID, [...contact.retryPending])
  for (const { device, ids } of contact.retryPendingFrom ?? [])
    byDevice.set(device, [...(byDevice.get(device) ?? []), ...ids])
  return [...byDevice]
    .sort(([a], [b]) => a - b)
    .map(([device, ids]) => ({ device, ids: [...new Set(ids)].slice(-MAX_RETRY_IDS) }))
}

/** The contact with `pending` as what is left to ask for (in the current field only). */
export function withPendingRetries(contact: ContactRecord, pending: readonly PendingRetry[]): ContactRecord {
  const { retryPending: _legacy, retryPendingFrom: _before, ...rest } = contact
  const left = pending
    .filter((entry) => entry.ids.length > 0)
    .slice(0, MAX_DEVICES_LIMIT)
    .map((entry) => ({ device: entry.device, ids: [...entry.ids] }))
  return left.length > 0 ? { ...rest, retryPendingFrom: left } : rest
}

/** The contact with message `id` from their device `device` added to what we ask for again. */
export function withRetryPending(contact: ContactRecord, device: number, id: string): ContactRecord {
  const pending = pendingRetries(contact)
  const known = pending.find((entry) => entry.device === device)
  if (known?.ids.includes(id)) return contact
  const updated = known
    ? pending.map((entry) =>
        entry === known ? { device, ids: [...entry.ids, id].slice(-MAX_RETRY_IDS) } : entry,
      )
    : [...pending, { device, ids: [id] }]
  return withPendingRetries(contact, updated)
}

export class Retries {
  private readonly ctx: ClientContext
  private readonly contacts: Contacts
  private readonly outbox: Outbox
  /** Requests waiting for their contact's interval to pass (one timer per contact). */
  private readonly timers = new Map<string, { timer: ReturnType<typeof setTimeout>; dueNow: boolean }>()
  /**
   * Requests due now (or whose interval is over) and answers to requests, not yet written to the
   * outbox: `flush` waits for them, so a script that flushes before it exits does not leave them.
   */
  private due = 0
  /** When each contact's recent requests were answered. */
  private readonly answered = new Map<string, number[]>()

  constructor(ctx: ClientContext, contacts: Contacts, outbox: Outbox) {
    this.ctx = ctx
    this.contacts = contacts
    this.outbox = outbox
  }

  get busy(): boolean {
    return this.due > 0
  }

  stop(): void {
    for (const { timer, dueNow } of this.timers.values()) {
      clearTimeout(timer)
      // It will not run: `resume` schedules it again on the next connection.
      if (dueNow) this.due--
    }
    this.timers.clear()
  }

  /** Asks every contact for what is waiting in their record (after connecting). */
  async resume(): Promise<void> {
    for (const contact of await this.ctx.records.listContacts()) {
      if (pendingRetries(contact).length > 0) this.schedule(contact.username, contact.retryRequestedAt)
    }
  }

  /**
   * Asks `peer` for the ids in their record: at once if we have not asked within
   * RETRY_REQUEST_INTERVAL_MS, else when that is over, with whatever failed meanwhile.
   */
  schedule(peer: string, lastRequestedAt: number | undefined): void {
    if (this.timers.has(peer)) return
    const delay =
      lastRequestedAt === undefined
        ? 0
        : Math.max(0, lastRequestedAt + RETRY_REQUEST_INTERVAL_MS - this.ctx.now())
    // A request due now is work `flush` waits for; one due later is not (it is stored) until its
    // interval is over.
    const dueNow = delay === 0
    if (dueNow) this.due++
    const timer = setTimeout(() => {
      this.timers.delete(peer)
      if (!dueNow) this.due++
      this.ctx.peerQueues
        .run(peer, () => this.request(peer))
        .catch((error: unknown) => this.ctx.report(error))
        .finally(() => {
          this.due--
        })
    }, delay)
    ;(timer as { unref?: () => void }).unref?.()
    this.timers.set(peer, { timer, dueNow })
  }

  private async request(peer: string): Promise<void> {
    const contact = await this.ctx.records.loadContact(peer)
    const pending = contact ? pendingRetries(contact) : []
    // Never to keys the user has not accepted: the ids wait until they are.
    if (!contact || pending.length === 0 || contact.pendingIdentity) return
    const last = contact.retryRequestedAt
    if (last !== undefined && last + RETRY_REQUEST_INTERVAL_MS > this.ctx.now()) {
      this.schedule(peer, last)
      return
    }
    if (this.ctx.connection() !== 'online') return
    // One request for each device whose messages did not open, on a fresh session with it.
    let current = contact
    let left = pending
    for (const ask of pending) {
      let fresh: Awaited<ReturnType<Contacts['fetchBundle']>>
      try {
        fresh = await this.contacts.fetchBundle(peer, current, ask.device)
      } catch (error) {
        if (isClientError(error) && error.serverCode === 'E2E_ERR_DEVICE_NOT_FOUND') {
          // Removed since: nobody keeps what it sent any more, and its notices stay as they are.
          left = left.filter((other) => other !== ask)
          current = withPendingRetries(current, left)
          await this.ctx.store.commit([await this.ctx.records.contactPut(current)])
          continue
        }
        // Offline, or the peer's key changed: the ids stay stored for the next connection.
        this.ctx.report(error)
        break
      }
      const now = this.ctx.now()
      const request: RetryContent = { v: 1, type: 'retry', ids: [...ask.ids], device: ask.device }
      const operations = await this.outbox.queue(peer, request, 'retry', {
        fresh: { device: ask.device, bundle: fresh.bundle },
      })
      left = left.filter((other) => other !== ask)
      current = withPendingRetries({ ...fresh.contact, retryRequestedAt: now }, left)
      await this.ctx.store.commit([...operations, await this.ctx.records.contactPut(current)])
    }
    await this.outbox.flush()
  }

  /** Answers `peer`'s request later, in their queue (behind the delivery that carried it). */
  answerLater(peer: string, ids: readonly string[]): void {
    this.due++
    this.ctx.peerQueues
      .run(peer, () => this.answer(peer, ids))
      .catch((error: unknown) => this.ctx.report(error))
      .finally(() => {
        this.due--
      })
  }

  /**
   * In `peer`'s queue: sends each message again on the current session (the fresh one their request
   * started), or tells them it is gone and marks our own copy failed.
   */
  async answer(peer: string, ids: readonly string[]): Promise<void> {
    const now = this.ctx.now()
    const recent = (this.answered.get(peer) ?? []).filter((at) => at > now - HOUR_MS)
    if (recent.length >= MAX_RETRY_REQUESTS_ANSWERED_PER_HOUR) return
    this.answered.set(peer, [...recent, now])
    const contact = await this.ctx.records.loadContact(peer)
    if (!contact || contact.pendingIdentity) return
    const unavailable: string[] = []
    const failed: MessageRecord[] = []
    const conversation = directConversation(peer)
    for (const id of ids) {
      let sent = await this.ctx.records.loadSent(conversation, id)
      // A resend they could not decrypt either: answered from the original's entry (its count).
      const original = sent?.resendOf ?? id
      if (sent?.resendOf !== undefined) sent = await this.ctx.records.loadSent(conversation, sent.resendOf)
      if (sent && sent.resends >= MAX_RESENDS_PER_MESSAGE) continue
      if (!sent || sent.sentAt < now - SENT_CONTENT_KEEP_MS) {
        unavailable.push(id)
        const message = await this.ctx.records.loadMessage(conversation, original)
        if (message?.direction === 'out' && message.state !== 'failed')
          failed.push({ ...message, state: 'failed' })
        continue
      }
      const frameId = toBase64Url(newMessageId(now))
      // A text carries its frame's id inside (§7.6): the resend's own; the original is resendOf.
      const answers = original !== id ? { answers: id } : {}
      const content: MessageContent | ExtraContent =
        sent.content.type === 'text'
          ? { ...(sent.content as TextContent), id: frameId, resendOf: original, ...answers }
          : { ...sent.content, resendOf: original, ...answers }
      // Each encryption advances the record, so each is committed (with its envelope) before the next.
      // The resend's id is kept as another name of the original, should they ask for it in turn.
      await this.ctx.store.commit([
        ...(await this.outbox.queue(peer, content, 'resend', { id: frameId })),
        await this.ctx.records.sentPut({ ...sent, resends: sent.resends + 1 }),
        await this.ctx.records.sentPut({
          ...sent,
          id: frameId,
          resends: sent.resends + 1,
          resendOf: original,
        }),
      ])
    }
    if (unavailable.length > 0) {
      await this.ctx.store.commit([
        ...(await this.outbox.queue(peer, { v: 1, type: 'unavailable', ids: unavailable }, 'unavailable')),
        ...(await Promise.all(failed.map((message) => this.ctx.records.messagePut(message)))),
      ])
    }
    for (const message of failed) this.ctx.events.emit('delivery', { peer, id: message.id, state: 'failed' })
    await this.outbox.flush()
  }
}
