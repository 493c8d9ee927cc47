/**
 * The conversation history a device sends a device it links (docs/protocol.md §13.10): the
 * messages of every conversation (texts; notices stay where they happened), newest conversation
 * and newest message first until MAX_HISTORY_TRANSFER_BYTES, then cut into parts of at most
 * HISTORY_PART_BYTES of content, oldest first within each conversation. What did not fit is
 * counted, so both devices can say how much stayed behind.
 */
import { directConversation } from '../address.js'
import { utf8Encode } from '../bytes.js'
import { HISTORY_PART_BYTES, MAX_HISTORY_TRANSFER_BYTES } from '../limits.js'
import type { HistoryEntry } from './content.js'
import type { MessageRecord } from './records.js'
import type { SealedStore } from './sealed-store.js'
import type { ClientStore } from './store.js'

/** What one entry adds to a part's JSON besides its own (a comma), and the part's fields. */
const PART_OVERHEAD_BYTES = 256

export interface HistoryPlan {
  readonly parts: HistoryEntry[][]
  readonly messages: number
  /** Messages that did not fit into MAX_HISTORY_TRANSFER_BYTES. */
  readonly leftOut: number
}

/** A stored message as a history entry; undefined for what is not sent along (notices, unsent). */
export function historyEntry(message: MessageRecord): HistoryEntry | undefined {
  if ((message.kind ?? 'text') !== 'text' || message.text.length === 0) return undefined
  // A message still sending (or failed before the server took it) is this device's to finish.
  const state = message.state
  if (message.direction === 'out' && state === 'sending') return undefined
  return {
    peer: message.peer,
    id: message.id,
    direction: message.direction,
    text: message.text,
    sentAt: message.sentAt,
    ...(message.serverAt !== undefined ? { serverAt: message.serverAt } : {}),
    ...(message.direction === 'out' && state !== 'received' && state !== 'sending' ? { state } : {}),
    ...(message.device !== undefined ? { device: message.device } : {}),
  }
}

/** Cuts entries (in order) into parts of at most `partBytes` of JSON each. */
export function cutIntoParts(
  entries: readonly HistoryEntry[],
  partBytes = HISTORY_PART_BYTES,
): HistoryEntry[][] {
  const parts: HistoryEntry[][] = []
  let current: HistoryEntry[] = []
  let size = PART_OVERHEAD_BYTES
  for (const entry of entries) {
    const bytes = utf8Encode(JSON.stringify(entry)).length + 1
    if (current.length > 0 && size + bytes > partBytes) {
      parts.push(current)
      current = []
      size = PART_OVERHEAD_BYTES
    }
    current.push(entry)
    size += bytes
  }
  if (current.length > 0) parts.push(current)
  return parts
}

export async function planHistory(
  records: SealedStore,
  store: ClientStore,
  budget = MAX_HISTORY_TRANSFER_BYTES,
): Promise<HistoryPlan> {
  const contacts = (await records.listContacts()).sort(
    (a, b) => (b.lastMessageAt ?? 0) - (a.lastMessageAt ?? 0),
  )
  const chosen: HistoryEntry[][] = []
  let used = 0
  let messages = 0
  let leftOut = 0
  let full = false
  for (const contact of contacts) {
    const stored = await store.listMessages(directConversation(contact.username), {
      limit: Number.MAX_SAFE_INTEGER,
    })
    const opened = await Promise.all(stored.map((record) => records.openMessage(record.key, record.value)))
    const entries = opened.map(historyEntry).filter((entry) => entry !== undefined)
    const kept: HistoryEntry[] = []
    // Newest first, until the budget is spent; then back in order.
    for (let index = entries.length - 1; index >= 0; index--) {
      const entry = entries[index]!
      const bytes = utf8Encode(JSON.stringify(entry)).length + 1
      if (full || used + bytes > budget) {
        full = true
        leftOut++
        continue
      }
      used += bytes
      kept.push(entry)
    }
    messages += kept.length
    if (kept.length > 0) chosen.push(kept.reverse())
  }
  return { parts: chosen.flatMap((entries) => cutIntoParts(entries)), messages, leftOut }
}
