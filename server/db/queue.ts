/**
 * The durable offline queue the relay builds on. A message is a row of `messages` from the moment
 * the sender is told "accepted" until its recipient acknowledges it or it expires. `seq` is its
 * position in that recipient's queue (1, 2, 3, … per recipient; queue_positions keeps the last one
 * given out), never reused, so "everything up to N" always means the same rows, and the numbers a
 * recipient sees count only their own messages, not the server's traffic.
 *
 * A cumulative acknowledgement (by sequence number) deletes the acknowledged rows and leaves, per
 * message, a tombstone in `message_tombstones` with only what idempotency needs: the sender, the
 * client's message id and the original expiry. No recipient, no delivery time, no body.
 *
 * Idempotency: (client_id, sender_id) is UNIQUE among queued rows and among tombstones, and a send
 * is checked against both, so a retried send finds the stored message, queued or delivered, for as
 * long as the message would have lived (limits.ts MESSAGE_TTL_MS) and nothing is stored or
 * delivered twice.
 *
 * Two layers: the repository functions below (Kysely, any dialect, `db` or `trx` first) and the
 * QueueRepository the relay uses, which applies one batch of acknowledgements and sends per
 * transaction (group commit) and enforces the depth limits: each recipient's whole queue, and each
 * sender's share of it, so that no one sender can fill someone's queue for everyone else. The
 * depths and positions are read from the tables inside the batch's transaction, never kept in
 * memory between batches, so several processes may write one database (PostgreSQL: each batch first
 * takes an advisory lock per recipient, so two batches cannot both take the last room or the same
 * position). KyselyQueueRepository implements it for every dialect; db/queue-sqlite.ts is a faster
 * one for SQLite with cached prepared statements. Both pass the same tests (queue.test.ts).
 */
import { sql } from 'kysely'
import type { Db, SqlDialect } from './schema.js'

export interface NewMessage {
  readonly recipientId: number
  readonly senderId: number
  /** The sender's random 16-byte message id. */
  readonly clientId: Uint8Array
  readonly body: Uint8Array
  readonly now: number
  readonly expiresAt: number
}

export interface QueuedMessage {
  readonly seq: number
  readonly clientId: Uint8Array
  readonly sender: string
  readonly body: Uint8Array
  readonly createdAt: number
}

/** Recipients per query in `lastPositions` (well under any driver's bound-parameter limit). */
const POSITIONS_CHUNK = 1_000

/**
 * The last sequence number given out in each of these recipients' queues (absent: none yet). A
 * message and its position are committed together, so every row up to it is visible once it is.
 */
export async function lastPositions(db: Db, recipientIds: readonly number[]): Promise<Map<number, number>> {
  const positions = new Map<number, number>()
  for (let start = 0; start < recipientIds.length; start += POSITIONS_CHUNK) {
    const rows = await db
      .selectFrom('queue_positions')
      .select(['recipient_id', 'last_seq'])
      .where('recipient_id', 'in', recipientIds.slice(start, start + POSITIONS_CHUNK))
      .execute()
    for (const row of rows) positions.set(Number(row.recipient_id), Number(row.last_seq))
  }
  return positions
}

/** Up to `limit` queued, unexpired messages for a recipient with seq > `afterSeq`, in queue order. */
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

/** How many messages and envelope bytes wait for a recipient (what the depth limits count). */
export interface QueueDepth {
  count: number
  bytes: number
}

/** SQL for the byte length of a blob/bytea column in either dialect. */
function byteLength(dialect: SqlDialect, column: string) {
  return dialect === 'postgres'
    ? sql<number>`octet_length(${sql.ref(column)})`
    : sql<number>`length(${sql.ref(column)})`
}

/**
 * A cumulative acknowledgement: the recipient's queued messages with seq ≤ `upToSeq` leave the
 * queue, each leaving a tombstone (sender, client id, expiry) for idempotency.
 */
export async function acknowledgeUpTo(db: Db, recipientId: number, upToSeq: number): Promise<void> {
  await db
    .insertInto('message_tombstones')
    .columns(['client_id', 'sender_id', 'expires_at'])
    .expression((eb) =>
      eb
        .selectFrom('messages')
        .select(['client_id', 'sender_id', 'expires_at'])
        .where('recipient_id', '=', recipientId)
        .where('seq', '<=', upToSeq),
    )
    .onConflict((conflict) => conflict.columns(['client_id', 'sender_id']).doNothing())
    .execute()
  await db
    .deleteFrom('messages')
    .where('recipient_id', '=', recipientId)
    .where('seq', '<=', upToSeq)
    .execute()
}

/**
 * Queued messages for a recipient. With `now`, only those still deliverable (unexpired); without,
 * every queued row, expired ones included until purged (they still take space).
 */
export async function countQueued(db: Db, recipientId: number, now?: number): Promise<number> {
  let query = db
    .selectFrom('messages')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('recipient_id', '=', recipientId)
  if (now !== undefined) query = query.where('expires_at', '>', now)
  const row = await query.executeTakeFirstOrThrow()
  return Number(row.count)
}

/**
 * Rows in every recipient's queue (expired ones included until purged), counting no further than
 * `bound`: the scan stops there, so the cost is bounded whatever the backlog (server/metrics.ts).
 */
export async function countAllQueued(db: Db, bound: number): Promise<number> {
  const row = await db
    .selectFrom((eb) => eb.selectFrom('messages').select('seq').limit(bound).as('bounded'))
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/** A recipient's queue depth in total and per sender (what the depth limits count). */
export interface RecipientDepth {
  readonly total: QueueDepth
  readonly bySender: Map<number, QueueDepth>
}

/**
 * Queue depths (messages and bytes, expired ones included until purged) of several recipients, in
 * total and per sender, in one query.
 */
export async function queueDepths(
  db: Db,
  dialect: SqlDialect,
  recipientIds: readonly number[],
): Promise<Map<number, RecipientDepth>> {
  const depths = new Map<number, RecipientDepth>(
    recipientIds.map((id) => [id, { total: { count: 0, bytes: 0 }, bySender: new Map() }]),
  )
  if (recipientIds.length === 0) return depths
  const rows = await db
    .selectFrom('messages')
    .select((eb) => [
      'recipient_id',
      'sender_id',
      eb.fn.countAll<number>().as('count'),
      eb.fn.coalesce(eb.fn.sum<number>(byteLength(dialect, 'body')), sql<number>`0`).as('bytes'),
    ])
    .where('recipient_id', 'in', recipientIds)
    .groupBy(['recipient_id', 'sender_id'])
    .execute()
  for (const row of rows) {
    const depth = depths.get(row.recipient_id)!
    const count = Number(row.count)
    const bytes = Number(row.bytes)
    depth.bySender.set(row.sender_id, { count, bytes })
    depth.total.count += count
    depth.total.bytes += bytes
  }
  return depths
}

/**
 * Deletes up to `limit` queued messages and up to `limit` tombstones expired at `now` (in batches,
 * so no purge holds locks for long); returns how many rows went.
 */
export async function purgeExpiredMessages(db: Db, now: number, limit = 10_000): Promise<number> {
  const messages = await sql`delete from messages where (recipient_id, seq) in
    (select recipient_id, seq from messages where expires_at <= ${now} limit ${limit})`.execute(db)
  const tombstones = await sql`delete from message_tombstones where (client_id, sender_id) in
    (select client_id, sender_id from message_tombstones where expires_at <= ${now} limit ${limit})`.execute(
    db,
  )
  return Number(messages.numAffectedRows ?? 0) + Number(tombstones.numAffectedRows ?? 0)
}

// --- The relay's interface: group commit with depth limits ----------------------------------------

export interface QueueLimits {
  /** Queued (undelivered) messages per recipient at most. */
  readonly maxMessages: number
  /** Queued envelope bytes per recipient at most. */
  readonly maxBytes: number
  /** Queued messages from one sender to one recipient at most (the sender's share). */
  readonly maxMessagesPerSender: number
  /** Queued envelope bytes from one sender to one recipient at most. */
  readonly maxBytesPerSender: number
}

/** Which limit refuses one more message of `bytes` from `sender`, if any (both implementations). */
export function refusal(
  limits: QueueLimits,
  total: QueueDepth,
  sender: QueueDepth,
  bytes: number,
): 'share-full' | 'full' | undefined {
  // The sender's own share first: when it is full, the sender's undelivered messages are the cause.
  if (sender.count >= limits.maxMessagesPerSender || sender.bytes + bytes > limits.maxBytesPerSender)
    return 'share-full'
  if (total.count >= limits.maxMessages || total.bytes + bytes > limits.maxBytes) return 'full'
  return undefined
}

export type SendOutcome =
  | { readonly kind: 'stored'; readonly seq: number; readonly createdAt: number }
  /** Already stored by an earlier send (or earlier in this batch): nothing new was stored. */
  | {
      readonly kind: 'duplicate'
      readonly seq: number
      readonly createdAt: number
      readonly delivered: boolean
    }
  /** The recipient's queue is at a depth limit: nothing was stored. */
  | { readonly kind: 'full' }
  /** This sender's share of the recipient's queue is at its limit: nothing was stored. */
  | { readonly kind: 'share-full' }

export interface QueueBatch {
  /** Cumulative acknowledgements, recipient id → highest seq acknowledged; applied before the sends. */
  readonly acks: ReadonlyMap<number, number>
  /** Sends in arrival order; they get increasing sequence numbers in this order. */
  readonly sends: readonly NewMessage[]
  /** The time acknowledgements are stamped with. */
  readonly now: number
}

/**
 * What the relay needs from storage. Calls to `commit` and `purgeExpired` run one at a time, in
 * call order. Nothing about the queue is kept in memory between calls, so other processes may
 * write the same database meanwhile.
 */
export interface QueueRepository {
  readonly dialect: SqlDialect
  /** Applies a batch in one transaction and returns one outcome per send, in order. All or nothing. */
  commit(batch: QueueBatch): Promise<SendOutcome[]>
  fetch(recipientId: number, afterSeq: number, limit: number, now: number): Promise<QueuedMessage[]>
  /** Deliverable (unexpired) queued messages for a recipient. */
  countQueued(recipientId: number, now: number): Promise<number>
  /** Deletes every row expired at `now` (in batches of `batchSize`); returns how many. */
  purgeExpired(now: number, batchSize: number): Promise<number>
  /** Releases what the repository holds (the SQLite fast path's thread); the database stays open. */
  close(): Promise<void>
}

/** Runs tasks one after another in call order; a failure does not stop the ones after it. */
export class SerialRunner {
  private tail: Promise<unknown> = Promise.resolve()

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task)
    this.tail = result.catch(() => {})
    return result
  }
}

const keyOf = (senderId: number, clientId: Uint8Array) =>
  `${senderId}:${Buffer.from(clientId.buffer, clientId.byteOffset, clientId.byteLength).toString('hex')}`

/** First key of the PostgreSQL advisory locks the queue takes per recipient (any fixed int4). */
const QUEUE_LOCK_NAMESPACE = 0x5143 // "QC"

/** Rows per multi-row INSERT (PostgreSQL allows 65,535 parameters; each row takes 6). */
const INSERT_CHUNK = 1_000

/** The queue through Kysely: any dialect, a few statements per batch (multi-row insert). */
export class KyselyQueueRepository implements QueueRepository {
  private readonly serial = new SerialRunner()

  constructor(
    private readonly db: Db,
    readonly dialect: SqlDialect,
    private readonly limits: QueueLimits,
  ) {}

  commit(batch: QueueBatch): Promise<SendOutcome[]> {
    return this.serial.run(() => this.db.transaction().execute((trx) => this.apply(trx, batch)))
  }

  private async apply(trx: Db, batch: QueueBatch): Promise<SendOutcome[]> {
    for (const [recipientId, upTo] of batch.acks) await acknowledgeUpTo(trx, recipientId, upTo)
    const { sends } = batch
    const outcomes: (SendOutcome | undefined)[] = new Array(sends.length)
    if (sends.length === 0) return []

    const recipients = [...new Set(sends.map((send) => send.recipientId))].sort((a, b) => a - b)
    if (this.dialect === 'postgres') {
      // Another process's batch for the same recipient waits here until this one commits, so both
      // cannot read the same depth or position. In ascending order: no deadlock.
      await sql`select pg_advisory_xact_lock(${QUEUE_LOCK_NAMESPACE}, (r % 2147483647)::int)
        from unnest(${recipients}::bigint[]) with ordinality as locks(r, n) order by n`.execute(trx)
    }

    // Messages stored before this batch, queued or acknowledged (tombstones), make their sends
    // duplicates.
    const existing = new Map<string, { seq: number; createdAt: number; delivered: boolean }>()
    for (let start = 0; start < sends.length; start += INSERT_CHUNK) {
      const chunk = sends.slice(start, start + INSERT_CHUNK)
      const { queued, delivered } = await this.storedBefore(trx, chunk)
      for (const row of queued) {
        existing.set(keyOf(row.sender_id, row.client_id), {
          seq: row.seq,
          createdAt: row.created_at,
          delivered: false,
        })
      }
      for (const row of delivered) {
        const key = keyOf(row.sender_id, row.client_id)
        const send = chunk.find((candidate) => keyOf(candidate.senderId, candidate.clientId) === key)!
        // The tombstone keeps no time of its own: the acceptance time is its expiry less the lifetime.
        existing.set(key, {
          seq: 0,
          createdAt: row.expires_at - (send.expiresAt - send.now),
          delivered: true,
        })
      }
    }

    const depths = await queueDepths(trx, this.dialect, recipients)
    const positions = new Map<number, number>(recipients.map((id) => [id, 0]))
    const stored = await trx
      .selectFrom('queue_positions')
      .select(['recipient_id', 'last_seq'])
      .where('recipient_id', 'in', recipients)
      .execute()
    for (const row of stored) positions.set(row.recipient_id, Number(row.last_seq))
    const moved = new Set<number>()

    const firstInBatch = new Map<string, number>()
    const toInsert: { index: number; seq: number }[] = []
    for (const [index, send] of sends.entries()) {
      const key = keyOf(send.senderId, send.clientId)
      const found = existing.get(key)
      if (found) {
        outcomes[index] = { kind: 'duplicate', ...found }
        continue
      }
      if (firstInBatch.has(key)) continue // resolved below
      const depth = depths.get(send.recipientId)!
      let share = depth.bySender.get(send.senderId)
      if (!share) {
        share = { count: 0, bytes: 0 }
        depth.bySender.set(send.senderId, share)
      }
      const refused = refusal(this.limits, depth.total, share, send.body.length)
      if (refused) {
        outcomes[index] = { kind: refused }
        continue
      }
      for (const counted of [depth.total, share]) {
        counted.count += 1
        counted.bytes += send.body.length
      }
      const seq = positions.get(send.recipientId)! + 1
      positions.set(send.recipientId, seq)
      moved.add(send.recipientId)
      firstInBatch.set(key, index)
      toInsert.push({ index, seq })
      outcomes[index] = { kind: 'stored', seq, createdAt: send.now }
    }

    for (let start = 0; start < toInsert.length; start += INSERT_CHUNK) {
      const chunk = toInsert.slice(start, start + INSERT_CHUNK)
      await trx
        .insertInto('messages')
        .values(
          chunk.map(({ index, seq }) => {
            const send = sends[index]!
            return {
              recipient_id: send.recipientId,
              seq,
              sender_id: send.senderId,
              client_id: send.clientId,
              body: send.body,
              created_at: send.now,
              expires_at: send.expiresAt,
            }
          }),
        )
        .execute()
    }
    if (moved.size > 0) {
      await trx
        .insertInto('queue_positions')
        .values([...moved].map((id) => ({ recipient_id: id, last_seq: positions.get(id)! })))
        .onConflict((conflict) =>
          conflict.column('recipient_id').doUpdateSet((eb) => ({ last_seq: eb.ref('excluded.last_seq') })),
        )
        .execute()
    }

    // Later sends of an id first sent earlier in this batch are its duplicates.
    for (const [index, send] of sends.entries()) {
      if (outcomes[index]) continue
      const first = outcomes[firstInBatch.get(keyOf(send.senderId, send.clientId))!]
      if (first?.kind !== 'stored')
        throw new Error('queue batch: expected the first send of an id to be stored')
      outcomes[index] = { kind: 'duplicate', seq: first.seq, createdAt: first.createdAt, delivered: false }
    }
    return outcomes as SendOutcome[]
  }

  /**
   * The queued messages and the tombstones of acknowledged ones among these sends' (sender, id)
   * pairs. PostgreSQL joins the pairs as two arrays (one plan, the unique index probed per pair);
   * an OR of a thousand pairs took it about 50 ms to plan and run per 500, twice per batch, which
   * held a PostgreSQL node near 2,500 messages a second. SQLite takes the OR as it is.
   */
  private async storedBefore(trx: Db, chunk: readonly NewMessage[]) {
    if (this.dialect === 'postgres') {
      const senders = chunk.map((send) => send.senderId)
      const ids = chunk.map((send) => Buffer.from(send.clientId))
      const queued = await sql<{ seq: number; sender_id: number; client_id: Uint8Array; created_at: number }>`
        select m.seq, m.sender_id, m.client_id, m.created_at from messages m
        join unnest(${senders}::bigint[], ${ids}::bytea[]) as k(sender_id, client_id)
          on m.client_id = k.client_id and m.sender_id = k.sender_id`.execute(trx)
      const delivered = await sql<{ sender_id: number; client_id: Uint8Array; expires_at: number }>`
        select t.sender_id, t.client_id, t.expires_at from message_tombstones t
        join unnest(${senders}::bigint[], ${ids}::bytea[]) as k(sender_id, client_id)
          on t.client_id = k.client_id and t.sender_id = k.sender_id`.execute(trx)
      return { queued: queued.rows, delivered: delivered.rows }
    }
    const queued = await trx
      .selectFrom('messages')
      .select(['seq', 'sender_id', 'client_id', 'created_at'])
      .where((eb) =>
        eb.or(
          chunk.map((send) =>
            eb.and([eb('sender_id', '=', send.senderId), eb('client_id', '=', send.clientId)]),
          ),
        ),
      )
      .execute()
    const delivered = await trx
      .selectFrom('message_tombstones')
      .select(['sender_id', 'client_id', 'expires_at'])
      .where((eb) =>
        eb.or(
          chunk.map((send) =>
            eb.and([eb('sender_id', '=', send.senderId), eb('client_id', '=', send.clientId)]),
          ),
        ),
      )
      .execute()
    return { queued, delivered }
  }

  fetch(recipientId: number, afterSeq: number, limit: number, now: number): Promise<QueuedMessage[]> {
    return fetchQueued(this.db, recipientId, afterSeq, limit, now)
  }

  countQueued(recipientId: number, now: number): Promise<number> {
    return countQueued(this.db, recipientId, now)
  }

  async close(): Promise<void> {}

  purgeExpired(now: number, batchSize: number): Promise<number> {
    return this.serial.run(async () => {
      let total = 0
      for (;;) {
        const deleted = await purgeExpiredMessages(this.db, now, batchSize)
        total += deleted
        if (deleted < batchSize) return total
      }
    })
  }
}
