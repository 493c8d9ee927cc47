/**
 * The content types this version knows (docs/protocol.md §7.6), as inbox handlers: a text is
 * stored and confirmed with a receipt, a receipt marks our messages delivered, a retry request is
 * answered, "unavailable" turns a notice into "lost". A message sent again on request (`resendOf`)
 * takes the place of the notice it answers.
 */
import { DEFAULT_DEVICE_ID } from '../address.js'
import {
  answeredResend,
  MAX_RETRY_IDS,
  ReceiptContent,
  RetryContent,
  resendOf,
  TextContent,
  UnavailableContent,
} from './content.js'
import type { ClientContext } from './context.js'
import { addNotice, type ContentHandler, type Delivery, noticeRecord } from './inbox.js'
import { type MessageRecord, messageView } from './records.js'

export interface BuiltInDependencies {
  /** A receipt for `id` is due to `peer` (after this delivery is stored). */
  queueReceipt(peer: string, id: string): void
  /** `peer` asked for these ids again; answered in their queue, after this delivery. */
  answerRetry(peer: string, ids: readonly string[]): void
}

/**
 * A resend that answers a request for an earlier resend (which could not be decrypted either):
 * that resend's notice goes, and no longer counts as unread.
 */
async function removeAnsweredNotice(ctx: ClientContext, delivery: Delivery): Promise<void> {
  const id = answeredResend(delivery.parsed)
  if (id === undefined) return
  const notice = await delivery.loadMessage(id)
  if (notice?.direction !== 'in' || (notice.kind ?? 'text') === 'text') return
  delivery.deleteMessage(id)
  if (notice.order > (delivery.contact.readUpTo ?? Number.NEGATIVE_INFINITY)) {
    delivery.contact = { ...delivery.contact, unread: Math.max(0, delivery.contact.unread - 1) }
  }
  delivery.after.push(() => ctx.events.emit('removed', { peer: delivery.peer, id }))
}

export function builtInHandlers(ctx: ClientContext, deps: BuiltInDependencies): ContentHandler[] {
  const text: ContentHandler<TextContent> = {
    type: 'text',
    schema: TextContent,
    display: (content) => content.text,
    /**
     * Stored; or, sent again on our request, stored in place of the notice it answers (ignored if
     * that message is stored already). In place means at the notice's position while the notice is
     * unread; a notice already read gives way to the message at the end of the conversation,
     * unread, so that nobody (and no script reading unread messages) misses it.
     */
    async handle(delivery, content) {
      const { peer, frame } = delivery
      // The id inside the encryption must match the frame's, or the server rewrote it.
      if (content.id !== frame.id) {
        await addNotice(ctx, delivery, noticeRecord(ctx, peer, frame, 'unreadable'))
        return
      }
      const original = resendOf(delivery.parsed)
      await removeAnsweredNotice(ctx, delivery)
      const replaced = original === undefined ? undefined : await delivery.loadMessage(original)
      if (replaced && (replaced.direction !== 'in' || (replaced.kind ?? 'text') === 'text')) return
      const inPlace =
        replaced !== undefined && replaced.order > (delivery.contact.readUpTo ?? Number.NEGATIVE_INFINITY)
      const received: MessageRecord = {
        id: original ?? content.id,
        peer,
        direction: 'in',
        text: content.text,
        sentAt: content.sentAt,
        serverAt: replaced?.serverAt ?? frame.ts,
        state: 'received',
        order: inPlace ? replaced.order : ctx.nextOrder(),
        ...(frame.device !== undefined ? { device: frame.device } : {}),
      }
      await delivery.putMessage(received)
      if (replaced && !inPlace)
        delivery.after.push(() => ctx.events.emit('removed', { peer, id: received.id }))
      delivery.after.push(() => {
        ctx.events.emit('message', messageView(received))
        deps.queueReceipt(peer, received.id)
      })
      delivery.added = !inPlace
    },
  }

  const receipt: ContentHandler<ReceiptContent> = {
    type: 'receipt',
    schema: ReceiptContent,
    async handle(delivery, content) {
      const { peer } = delivery
      for (const id of content.ids) {
        const message = await delivery.loadMessage(id)
        if (message && message.direction === 'out' && message.state !== 'delivered') {
          await delivery.putMessage({ ...message, state: 'delivered' })
          delivery.after.push(() => ctx.events.emit('delivery', { peer, id, state: 'delivered' }))
        }
      }
      // A receipt sent again on our request: the notice for it has nothing to show and goes.
      await removeAnsweredNotice(ctx, delivery)
      const original = resendOf(delivery.parsed)
      const notice = original === undefined ? undefined : await delivery.loadMessage(original)
      if (original !== undefined && notice?.direction === 'in' && (notice.kind ?? 'text') !== 'text') {
        delivery.deleteMessage(original)
        delivery.after.push(() => ctx.events.emit('removed', { peer, id: original }))
      }
    },
  }

  const retry: ContentHandler<RetryContent> = {
    type: 'retry',
    schema: RetryContent,
    async handle(delivery, content) {
      // Asked of another device of ours, the one that sent those messages and keeps them: only it
      // answers (we would say "unavailable" of what we never sent).
      if ((content.device ?? DEFAULT_DEVICE_ID) !== ctx.deviceId) return
      if (delivery.contact.pendingIdentity) {
        // From keys the user has not accepted yet: answered when (and if) they accept them.
        const waiting = [...new Set([...(delivery.contact.retryRequests ?? []), ...content.ids])]
        delivery.contact = { ...delivery.contact, retryRequests: waiting.slice(-MAX_RETRY_IDS) }
        return
      }
      delivery.after.push(() => deps.answerRetry(delivery.peer, content.ids))
    },
  }

  const unavailable: ContentHandler<UnavailableContent> = {
    type: 'unavailable',
    schema: UnavailableContent,
    async handle(delivery, content) {
      for (const id of content.ids) {
        const notice = await delivery.loadMessage(id)
        if (notice?.direction === 'in' && notice.kind === 'undecryptable') {
          const lost: MessageRecord = { ...notice, kind: 'lost' }
          await delivery.putMessage(lost)
          delivery.after.push(() => ctx.events.emit('message', messageView(lost)))
        }
      }
    },
  }

  return [text, receipt, retry, unavailable] as ContentHandler[]
}
