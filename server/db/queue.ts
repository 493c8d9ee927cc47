/**
 * The durable offline queue the relay builds on. A message is a row from the moment the sender is
 * told "accepted" until the recipient acknowledges it (cumulatively, by sequence number) or it
 * expires. `seq` is never reused, so "everything up to N" always means the same rows.
 *
 * Idempotency: (sender_id, client_id) is UNIQUE, so a retried send finds the stored row instead of
 * adding a second one. Once the recipient has acknowledged (and so deleted) a message, a late retry
 * would be stored again; clients deduplicate by message id for that case.
 */
import type { Db } from './schema.js'

export interface NewMessage {
  readonly recipientId: number
  readonly senderId: number
  /** The sender's random 16-byte message id. */
  readonly clientId: Uint8Array
  readonly body: Uint8Array
  readonly now: number
  readonly expiresAt: number
}

export interface EnqueueResult {
  readonly seq: number
  /** When the server first accepted the message (the original time for a duplicate). */
  readonly createdAt: number
  /** True when this (sender, client id) was already queued and nothing new was stored. */
  readonly duplicate: boolean
}

/** Stores a message unless the same sender already queued the same client id. */
export async function enqueueMessage(db: Db, message: NewMessage): Promise<EnqueueResult> {
  const inserted = await db
    .insertInto('messages')
    .values({
      recipient_id: message.recipientId,
      sender_id: message.senderId,
      client_id: message.clientId,
      body: message.body,
      created_at: message.now,
      expires_at: message.expiresAt,
    })
    .onConflict((conflict) => conflict.columns(['sender_id', 'client_id']).doNothing())
    .returning(['seq', 'created_at'])
    .executeTakeFirst()
  if (inserted) return { seq: inserted.seq, createdAt: inserted.created_at, duplicate: false }
  const existing = await db
    .selectFrom('messages')
    .select(['seq', 'created_at'])
    .where('sender_id', '=', message.senderId)
    .where('client_id', '=', message.clientId)
    .executeTakeFirstOrThrow()
  return { seq: existing.seq, createdAt: existing.created_at, duplicate: true }
}

export interface QueuedMessage {
  readonly seq: number
  readonly clientId: Uint8Array
  readonly sender: string
  readonly body: Uint8Array
  readonly createdAt: number
}

/** Up to `limit` unexpired messages for a recipient with seq > `afterSeq`, in queue order. */
export async function fetchQueued(
  db: Db,
  recipientId: number,
  afterSeq: number,
  limit: number,
  now: number,
): Promise<QueuedMessage[]> {
  const rows = await db
    .selectFrom('messages')
    .innerJoin('users', 'users.id', 'messages.sender_id')
    .select(['messages.seq', 'messages.client_id', 'users.username', 'messages.body', 'messages.created_at'])
    .where('messages.recipient_id', '=', recipientId)
    .where('messages.seq', '>', afterSeq)
    .where('messages.expires_at', '>', now)
    .orderBy('messages.seq')
    .limit(limit)
    .execute()
  return rows.map((row) => ({
    seq: row.seq,
    clientId: row.client_id,
    sender: row.username,
    body: row.body,
    createdAt: row.created_at,
  }))
}

/** Deletes a recipient's messages with seq ≤ `upToSeq` (a cumulative acknowledgement). */
export async function deleteQueuedUpTo(db: Db, recipientId: number, upToSeq: number): Promise<number> {
  const result = await db
    .deleteFrom('messages')
    .where('recipient_id', '=', recipientId)
    .where('seq', '<=', upToSeq)
    .executeTakeFirst()
  return Number(result.numDeletedRows)
}

/** Messages waiting for a recipient (expired ones included until purged: they still take space). */
export async function countQueued(db: Db, recipientId: number): Promise<number> {
  const row = await db
    .selectFrom('messages')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('recipient_id', '=', recipientId)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/** Deletes up to `limit` messages expired at `now` (in batches, so no purge holds locks for long). */
export async function purgeExpiredMessages(db: Db, now: number, limit = 10_000): Promise<number> {
  const expired = db.selectFrom('messages').select('seq').where('expires_at', '<=', now).limit(limit)
  const result = await db.deleteFrom('messages').where('seq', 'in', expired).executeTakeFirst()
  return Number(result.numDeletedRows)
}
