/**
 * The durable offline queue the relay builds on. Every device of an account has its own queue
 * (keyed by the recipient's user and device). A message is a row of `messages` from the moment
 * the sender is told "accepted" until that device acknowledges it or it expires. `seq` is its
 * position in that device's queue (1, 2, 3, … per device; queue_positions keeps the last one given
 * out), never reused, so "everything up to N" always means the same rows, and the numbers a device
 * sees count only its own messages, not the server's traffic.
 *
 * A cumulative acknowledgement (by sequence number) deletes the acknowledged rows and leaves, per
 * message, a tombstone in `message_tombstones` with only what idempotency needs: the id, the
 * sending device, the receiving device's id and whether it was the sender's own (a sent copy), and
 * the original expiry. No recipient, no delivery time, no body.
 *
 * Idempotency is per (sending device, client id, receiving device): UNIQUE among queued rows, and
 * among tombstones (where the receiving account is only "the other one" or "the sender's own"); a send is checked against both, so a retried send finds the
 * stored message, queued or delivered, for as long as the message would have lived (limits.ts
 * MESSAGE_TTL_MS) and nothing is stored or delivered twice. One id goes to every device of a send,
 * so a retry that also reaches a device added since is stored for that device alone.
 *
 * Two layers: the repository functions below (Kysely, any dialect, `db` or `trx` first) and the
 * QueueRepository the relay uses, which applies one batch of acknowledgements and sends per
 * transaction (group commit) and enforces the depth limits: each device queue as a whole, and each
 * sending account's share of it, so that no one sender can fill someone's queue for everyone else.
 * The depths and positions are read from the tables inside the batch's transaction, never kept in
 * memory between batches, so several processes may write one database (PostgreSQL: each batch first
 * takes an advisory lock per device queue, so two batches cannot both take the last room or the
 * same position). KyselyQueueRepository implements it for every dialect; db/queue-sqlite.ts is a
 * faster one for SQLite with cached prepared statements. Both pass the same tests (queue.test.ts).
 */
import { sql } from 'kysely'
import type { DeviceAddress } from './devices.js'
import type { Db, SqlDialect } from './schema.js'

export interface NewMessage {
  readonly recipientId: number
  readonly recipientDevice: number
  readonly senderId: number
  readonly senderDevice: number
  /** The sender's random 16-byte message id (the same for every device of one send). */
  readonly clientId: Uint8Array
  readonly body: Uint8Array
  readonly now: number
  readonly expiresAt: number
}

export interface QueuedMessage {
  readonly seq: number
  readonly clientId: Uint8Array
  readonly sender: string
  readonly senderDevice: number
  readonly body: Uint8Array
  readonly createdAt: number
}

/** A cumulative acknowledgement of one device's queue. */
export interface QueueAck {
  readonly recipientId: number
  readonly recipientDevice: number
  readonly upTo: number
}

/** One name per queue (a device's), for maps. */
export function queueKey(userId: number, deviceId: number): string {
  return `${userId}.${deviceId}`
}

/**
 * What a tombstone keeps of a copy's destination: its device id and whether it was one of the
 * sender's own devices (a sent copy), never the recipient. One send goes to one other account and
 * the sender's own devices, so these tell its copies apart (migration 2026-12-03-08-devices).
 */
function toSelf(message: { readonly senderId: number; readonly recipientId: number }): 0 | 1 {
  return message.senderId === message.recipientId ? 1 : 0
}

/** Queues per query in `lastPositions` (well under any driver's bound-parameter limit). */
const POSITIONS_CHUNK = 500

/**
 * `(recipient_id, recipient_device)` is one of these devices. PostgreSQL gets the pairs as two
 * arrays (one plan whatever their number: an OR of hundreds of pairs costs it tens of ms to plan,
 * see `storedBefore`); SQLite a list of row values.
 */
function isOneOf(dialect: SqlDialect, recipients: readonly DeviceAddress[]) {
  if (dialect === 'postgres') {
    return sql<boolean>`(recipient_id, recipient_device) in (select * from unnest(${recipients.map(
      (recipient) => recipient.userId,
    )}::bigint[], ${recipients.map((recipient) => recipient.deviceId)}::bigint[]))`
  }
  return sql<boolean>`(recipient_id, recipient_device) in (values ${sql.join(
    recipients.map((recipient) => sql`(${recipient.userId}, ${recipient.deviceId})`),
  )})`
}

/**
 * The last sequence number given out in each of these devices' queues (by `queueKey`; absent:
 * none yet). A message and its position are committed together, so every row up to it is visible
 * once it is.
 */
export async function lastPositions(
  db: Db,
  dialect: SqlDialect,
  recipients: readonly DeviceAddress[],
): Promise<Map<string, number>> {
  const positions = new Map<string, number>()
  for (let start = 0; start < recipients.length; start += POSITIONS_CHUNK) {
    const chunk = recipients.slice(start, start + POSITIONS_CHUNK)
    const rows = await db
      .selectFrom('queue_positions')
      .select(['recipient_id', 'recipient_device', 'last_seq'])
      .where(isOneOf(dialect, chunk))
      .execute()
    for (const row of rows) {
      positions.set(queueKey(Number(row.recipient_id), Number(row.recipient_device)), Number(row.last_seq))
    }
  }
  return positions
}

/** Up to `limit` queued, unexpired messages for a device with seq > `afterSeq`, in queue order. */
export async function fetchQueued(
  db: Db,
  recipient: DeviceAddress,
  afterSeq: number,
  limit: number,
  now: number,
): Promise<QueuedMessage[]> {
  const rows = await db
    .selectFrom('messages')
    .innerJoin('users', 'users.id', 'messages.sender_id')
    .select([
      'messages.seq',
      'messages.client_id',
      'users.username',
      'messages.sender_device',
      'messages.body',
      'messages.created_at',
    ])
    .where('messages.recipient_id', '=', recipient.userId)
    .where('messages.recipient_device', '=', recipient.deviceId)
    .where('messages.seq', '>', afterSeq)
    .where('messages.expires_at', '>', now)
    .orderBy('messages.seq')
    .limit(limit)
    .execute()
  return rows.map((row) => ({
    seq: row.seq,
    clientId: row.client_id,
    sender: row.username,
    senderDevice: Number(row.sender_device),
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
 * A cumulative acknowledgement: the device's queued messages with seq ≤ `upToSeq` leave the
 * queue, each leaving a tombstone (id, sending device, receiving device, sent copy or not, expiry)
 * for idempotency.
 */
export async function acknowledgeUpTo(db: Db, recipient: DeviceAddress, upToSeq: number): Promise<void> {
  await db
    .insertInto('message_tombstones')
    .columns(['client_id', 'sender_id', 'sender_device', 'recipient_device', 'to_self', 'expires_at'])
    .expression((eb) =>
      eb
        .selectFrom('messages')
        .select((inner) => [
          'client_id',
          'sender_id',
          'sender_device',
          'recipient_device',
          inner
            .case()
            .when('sender_id', '=', inner.ref('recipient_id'))
            .then(sql.lit(1))
            .else(sql.lit(0))
            .end()
            .as('to_self'),
          'expires_at',
        ])
        .where('recipient_id', '=', recipient.userId)
        .where('recipient_device', '=', recipient.deviceId)
        .where('seq', '<=', upToSeq),
    )
    .onConflict((conflict) =>
      conflict
        .columns(['client_id', 'sender_id', 'sender_device', 'recipient_device', 'to_self'])
        .doNothing(),
    )
    .execute()
  await db
    .deleteFrom('messages')
    .where('recipient_id', '=', recipient.userId)
    .where('recipient_device', '=', recipient.deviceId)
    .where('seq', '<=', upToSeq)
    .execute()
}

/**
 * Queued messages for a device. With `now`, only those still deliverable (unexpired); without,
 * every queued row, expired ones included until purged (they still take space).
 */
export async function countQueued(db: Db, recipient: DeviceAddress, now?: number): Promise<number> {
  let query = db
    .selectFrom('messages')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('recipient_id', '=', recipient.userId)
    .where('recipient_device', '=', recipient.deviceId)
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

/** A device queue's depth in total and per sending account (what the depth limits count). */
export interface RecipientDepth {
  readonly total: QueueDepth
  readonly bySender: Map<number, QueueDepth>
}

/**
 * Queue depths (messages and bytes, expired ones included until purged) of several devices' queues
 * (by `queueKey`), in total and per sending account, in one query.
 */
export async function queueDepths(
  db: Db,
  dialect: SqlDialect,
  recipients: readonly DeviceAddress[],
): Promise<Map<string, RecipientDepth>> {
  const depths = new Map<string, RecipientDepth>(
    recipients.map((recipient) => [
      queueKey(recipient.userId, recipient.deviceId),
      { total: { count: 0, bytes: 0 }, bySender: new Map() },
    ]),
  )
  if (recipients.length === 0) return depths
  const rows = await db
    .selectFrom('messages')
    .select((eb) => [
      'recipient_id',
      'recipient_device',
      'sender_id',
      eb.fn.countAll<number>().as('count'),
      eb.fn.coalesce(eb.fn.sum<number>(byteLength(dialect, 'body')), sql<number>`0`).as('bytes'),
    ])
    .where(isOneOf(dialect, recipients))
    .groupBy(['recipient_id', 'recipient_device', 'sender_id'])
    .execute()
  for (const row of rows) {
    const depth = depths.get(queueKey(Number(row.recipient_id), Number(row.recipient_device)))!
    const count = Number(row.count)
    const bytes = Number(row.bytes)
    depth.bySender.set(Number(row.sender_id), { count, bytes })
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
  const messages = await sql`delete from messages where (recipient_id, recipient_device, seq) in
    (select recipient_id, recipient_device, seq from messages where expires_at <= ${now} limit ${limit})`.execute(
    db,
  )
  const tombstones = await sql`delete from message_tombstones
    where (client_id, sender_id, sender_device, recipient_device, to_self) in
    (select client_id, sender_id, sender_device, recipient_device, to_self from message_tombstones
     where expires_at <= ${now} limit ${limit})`.execute(db)
  return Number(messages.numAffectedRows ?? 0) + Number(tombstones.numAffectedRows ?? 0)
}

// --- The relay's interface: group commit with depth limits ----------------------------------------

export interface QueueLimits {
  /** Queued (undelivered) messages per device queue at most. */
  readonly maxMessages: number
  /** Queued envelope bytes per device queue at most. */
  readonly maxBytes: number
  /** Queued messages from one sending account (any of its devices) in one device queue at most. */
  readonly maxMessagesPerSender: number
  /** Queued envelope bytes from one sending account in one device queue at most. */
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
  /** Cumulative acknowledgements, at most one per device queue; applied before the sends. */
  readonly acks: readonly QueueAck[]
  /** Sends in arrival order; they get increasing sequence numbers in this order. */
  readonly sends: readonly NewMessage[]
  /**
   * The sizes of consecutive runs of `sends` stored all or none (one message to several devices,
   * docs/protocol.md §13.2): when one of a run is refused, every send of it gets that refusal and
   * none is stored. They sum to `sends.length`; absent, every send stands alone.
   */
  readonly groups?: readonly number[]
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
  fetch(recipient: DeviceAddress, afterSeq: number, limit: number, now: number): Promise<QueuedMessage[]>
  /** Deliverable (unexpired) queued messages for a device. */
  countQueued(recipient: DeviceAddress, now: number): Promise<number>
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

/** One name per (sender device, client id, recipient device): what idempotency is per. */
const keyOf = (
  senderId: number,
  senderDevice: number,
  clientId: Uint8Array,
  recipientId: number,
  recipientDevice: number,
) =>
  `${senderId}.${senderDevice}>${recipientId}.${recipientDevice}:${Buffer.from(clientId.buffer, clientId.byteOffset, clientId.byteLength).toString('hex')}`
const sendKey = (send: NewMessage) =>
  keyOf(send.senderId, send.senderDevice, send.clientId, send.recipientId, send.recipientDevice)

/** The PostgreSQL advisory lock key of a device's queue (collisions only serialise two queues). */
const lockKeyOf = (recipient: DeviceAddress) => (recipient.userId * 64 + recipient.deviceId) % 2147483647

/** First key of the PostgreSQL advisory locks the queue takes per recipient (any fixed int4). */
const QUEUE_LOCK_NAMESPACE = 0x5143 // "QC"

/** Rows per multi-row INSERT (PostgreSQL allows 65,535 parameters; each row takes at most 9). */
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
    for (const ack of batch.acks) {
      await acknowledgeUpTo(trx, { userId: ack.recipientId, deviceId: ack.recipientDevice }, ack.upTo)
    }
    const { sends } = batch
    const outcomes: (SendOutcome | undefined)[] = new Array(sends.length)
    if (sends.length === 0) return []

    const recipientsByKey = new Map<string, DeviceAddress>()
    for (const send of sends) {
      const key = queueKey(send.recipientId, send.recipientDevice)
      if (!recipientsByKey.has(key)) {
        recipientsByKey.set(key, { userId: send.recipientId, deviceId: send.recipientDevice })
      }
    }
    const recipients = [...recipientsByKey.values()]
    if (this.dialect === 'postgres') {
      // Another process's batch for the same queue waits here until this one commits, so both
      // cannot read the same depth or position. In ascending order: no deadlock.
      const locks = [...new Set(recipients.map(lockKeyOf))].sort((a, b) => a - b)
      await sql`select pg_advisory_xact_lock(${QUEUE_LOCK_NAMESPACE}, r::int)
        from unnest(${locks}::bigint[]) with ordinality as locks(r, n) order by n`.execute(trx)
    }

    // Messages stored before this batch, queued or acknowledged (tombstones), make their sends
    // duplicates.
    const existing = new Map<string, { seq: number; createdAt: number; delivered: boolean }>()
    for (let start = 0; start < sends.length; start += INSERT_CHUNK) {
      const chunk = sends.slice(start, start + INSERT_CHUNK)
      const { queued, delivered } = await this.storedBefore(trx, chunk)
      for (const row of queued) {
        existing.set(
          keyOf(row.sender_id, row.sender_device, row.client_id, row.recipient_id, row.recipient_device),
          { seq: row.seq, createdAt: row.created_at, delivered: false },
        )
      }
      for (const send of chunk) {
        const key = sendKey(send)
        if (existing.has(key)) continue
        const tombstone = delivered.get(key)
        // The tombstone keeps no time of its own: the acceptance time is its expiry less the lifetime.
        if (tombstone !== undefined) {
          existing.set(key, {
            seq: 0,
            createdAt: tombstone - (send.expiresAt - send.now),
            delivered: true,
          })
        }
      }
    }

    const depths = await queueDepths(trx, this.dialect, recipients)
    const positions = new Map<string, number>([...recipientsByKey.keys()].map((key) => [key, 0]))
    for (const [key, last] of await lastPositions(trx, this.dialect, recipients)) positions.set(key, last)
    const moved = new Set<string>()

    const firstInBatch = new Map<string, number>()
    const toInsert: { index: number; seq: number }[] = []
    let groupStart = 0
    for (const size of batch.groups ?? sends.map(() => 1)) {
      // What this group changed, to undo when one of its sends is refused: all or none.
      const undo: {
        index: number
        key: string
        queue: string
        share: { count: number; bytes: number }
        total: { count: number; bytes: number }
        bytes: number
      }[] = []
      let refusedAs: 'full' | 'share-full' | undefined
      for (let index = groupStart; index < groupStart + size; index++) {
        const send = sends[index]!
        const key = sendKey(send)
        const found = existing.get(key)
        if (found) {
          outcomes[index] = { kind: 'duplicate', ...found }
          continue
        }
        if (firstInBatch.has(key)) continue // resolved below
        const queue = queueKey(send.recipientId, send.recipientDevice)
        const depth = depths.get(queue)!
        let share = depth.bySender.get(send.senderId)
        if (!share) {
          share = { count: 0, bytes: 0 }
          depth.bySender.set(send.senderId, share)
        }
        const refused = refusal(this.limits, depth.total, share, send.body.length)
        if (refused) {
          refusedAs = refused
          break
        }
        for (const counted of [depth.total, share]) {
          counted.count += 1
          counted.bytes += send.body.length
        }
        const seq = positions.get(queue)! + 1
        positions.set(queue, seq)
        firstInBatch.set(key, index)
        toInsert.push({ index, seq })
        undo.push({ index, key, queue, share, total: depth.total, bytes: send.body.length })
        outcomes[index] = { kind: 'stored', seq, createdAt: send.now }
      }
      if (refusedAs) {
        for (const change of undo.reverse()) {
          for (const counted of [change.total, change.share]) {
            counted.count -= 1
            counted.bytes -= change.bytes
          }
          positions.set(change.queue, positions.get(change.queue)! - 1)
          firstInBatch.delete(change.key)
          toInsert.pop()
        }
        for (let index = groupStart; index < groupStart + size; index++) {
          outcomes[index] = { kind: refusedAs }
        }
      } else {
        for (const change of undo) moved.add(change.queue)
      }
      groupStart += size
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
              recipient_device: send.recipientDevice,
              seq,
              sender_id: send.senderId,
              sender_device: send.senderDevice,
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
        .values(
          [...moved].map((queue) => {
            const recipient = recipientsByKey.get(queue)!
            return {
              recipient_id: recipient.userId,
              recipient_device: recipient.deviceId,
              last_seq: positions.get(queue)!,
            }
          }),
        )
        .onConflict((conflict) =>
          conflict
            .columns(['recipient_id', 'recipient_device'])
            .doUpdateSet((eb) => ({ last_seq: eb.ref('excluded.last_seq') })),
        )
        .execute()
    }

    // Later sends of an id first sent earlier in this batch are its duplicates.
    for (const [index, send] of sends.entries()) {
      if (outcomes[index]) continue
      const first = outcomes[firstInBatch.get(sendKey(send))!]
      if (first?.kind !== 'stored')
        throw new Error('queue batch: expected the first send of an id to be stored')
      outcomes[index] = { kind: 'duplicate', seq: first.seq, createdAt: first.createdAt, delivered: false }
    }
    return outcomes as SendOutcome[]
  }

  /**
   * The queued messages and the tombstones of acknowledged ones among these sends (by sender
   * device, id and destination); tombstones as `sendKey` → their expiry. PostgreSQL joins the keys
   * as arrays (one plan, the unique index probed per key); an OR of a thousand pairs took it about
   * 50 ms to plan and run per 500, twice per batch, which held a PostgreSQL node near 2,500 messages
   * a second. SQLite takes the OR as it is.
   */
  private async storedBefore(trx: Db, chunk: readonly NewMessage[]) {
    type QueuedRow = {
      seq: number
      sender_id: number
      sender_device: number
      recipient_id: number
      recipient_device: number
      client_id: Uint8Array
      created_at: number
    }
    type TombstoneRow = {
      client_id: Uint8Array
      sender_id: number
      sender_device: number
      recipient_device: number
      to_self: number
      expires_at: number
    }
    let queued: QueuedRow[]
    let buried: TombstoneRow[]
    const column = <T>(pick: (send: NewMessage) => T) => chunk.map(pick)
    if (this.dialect === 'postgres') {
      const senders = column((send) => send.senderId)
      const senderDevices = column((send) => send.senderDevice)
      const ids = column((send) => Buffer.from(send.clientId))
      const recipientDevices = column((send) => send.recipientDevice)
      queued = (
        await sql<QueuedRow>`
        select m.seq, m.sender_id, m.sender_device, m.recipient_id, m.recipient_device, m.client_id, m.created_at
        from messages m
        join unnest(${senders}::bigint[], ${senderDevices}::bigint[], ${ids}::bytea[],
          ${column((send) => send.recipientId)}::bigint[], ${recipientDevices}::bigint[])
          as k(sender_id, sender_device, client_id, recipient_id, recipient_device)
          on m.client_id = k.client_id and m.sender_id = k.sender_id and m.sender_device = k.sender_device
          and m.recipient_id = k.recipient_id and m.recipient_device = k.recipient_device`.execute(trx)
      ).rows
      buried = (
        await sql<TombstoneRow>`
        select t.client_id, t.sender_id, t.sender_device, t.recipient_device, t.to_self, t.expires_at
        from message_tombstones t
        join unnest(${ids}::bytea[], ${senders}::bigint[], ${senderDevices}::bigint[],
          ${recipientDevices}::bigint[], ${column(toSelf)}::int[])
          as k(client_id, sender_id, sender_device, recipient_device, to_self)
          on t.client_id = k.client_id and t.sender_id = k.sender_id and t.sender_device = k.sender_device
          and t.recipient_device = k.recipient_device and t.to_self = k.to_self`.execute(trx)
      ).rows
    } else {
      queued = await trx
        .selectFrom('messages')
        .select([
          'seq',
          'sender_id',
          'sender_device',
          'recipient_id',
          'recipient_device',
          'client_id',
          'created_at',
        ])
        .where((eb) =>
          eb.or(
            chunk.map((send) =>
              eb.and([
                eb('client_id', '=', send.clientId),
                eb('sender_id', '=', send.senderId),
                eb('sender_device', '=', send.senderDevice),
                eb('recipient_id', '=', send.recipientId),
                eb('recipient_device', '=', send.recipientDevice),
              ]),
            ),
          ),
        )
        .execute()
      buried = await trx
        .selectFrom('message_tombstones')
        .select(['client_id', 'sender_id', 'sender_device', 'recipient_device', 'to_self', 'expires_at'])
        .where((eb) =>
          eb.or(
            chunk.map((send) =>
              eb.and([
                eb('client_id', '=', send.clientId),
                eb('sender_id', '=', send.senderId),
                eb('sender_device', '=', send.senderDevice),
                eb('recipient_device', '=', send.recipientDevice),
                eb('to_self', '=', toSelf(send)),
              ]),
            ),
          ),
        )
        .execute()
    }
    const hex = (bytes: Uint8Array) =>
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
    const tombstoneKeyOf = (
      clientId: Uint8Array,
      senderId: number,
      senderDevice: number,
      recipientDevice: number,
      self: number,
    ) => `${senderId}.${senderDevice}>${self}.${recipientDevice}:${hex(clientId)}`
    const expiries = new Map<string, number>()
    for (const row of buried) {
      const key = tombstoneKeyOf(
        row.client_id,
        Number(row.sender_id),
        Number(row.sender_device),
        Number(row.recipient_device),
        Number(row.to_self),
      )
      expiries.set(key, row.expires_at)
    }
    const delivered = new Map<string, number>()
    for (const send of chunk) {
      const expiry = expiries.get(
        tombstoneKeyOf(send.clientId, send.senderId, send.senderDevice, send.recipientDevice, toSelf(send)),
      )
      if (expiry !== undefined) delivered.set(sendKey(send), expiry)
    }
    return {
      queued: queued.map((row) => ({
        ...row,
        sender_id: Number(row.sender_id),
        sender_device: Number(row.sender_device),
        recipient_id: Number(row.recipient_id),
        recipient_device: Number(row.recipient_device),
      })),
      delivered,
    }
  }

  fetch(recipient: DeviceAddress, afterSeq: number, limit: number, now: number): Promise<QueuedMessage[]> {
    return fetchQueued(this.db, recipient, afterSeq, limit, now)
  }

  countQueued(recipient: DeviceAddress, now: number): Promise<number> {
    return countQueued(this.db, recipient, now)
  }

  async close(): Promise<void> {}

  purgeExpired(now: number, batchSize: number): Promise<number> {
    return this.serial.run(async () => {
      let total = 0
      for (;;) {
        const deleted = await purgeExpiredMessages(this.db, now, batchSize)
        total += deleted
        if (deleted < batchSize) break
      }
      return total
    })
  }
}
