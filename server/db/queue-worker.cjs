'use strict'
/**
 * The SQLite queue's thread (see queue-sqlite.ts, which starts it and speaks to it). It owns a
 * second better-sqlite3 connection to the server's database file and runs every queue operation
 * with statements prepared once: batches (acknowledgements, then sends) in one BEGIN IMMEDIATE …
 * COMMIT each, so one fsync per batch; queue reads; counts; the expiry purge. The relay's event
 * loop thereby spends no time in SQLite or waiting for fsync on the hot path.
 *
 * Plain CommonJS, so it runs as is under tsx, vitest and Node. Requests are handled one at a time
 * in arrival order. Queues are per device (recipient user and device). Queue depths (per queue, and per sending account within it) are read from the table
 * inside each batch's transaction and forgotten after it: other connections (another server
 * process on the same file) may write the table between batches.
 *
 * Wire format of a commit request (all arrays transferred, not copied):
 *   acks  Float64Array: recipientId, recipientDevice, upTo, recipientId, recipientDevice, upTo, …
 *   meta  Float64Array: per send recipientId, recipientDevice, senderId, senderDevice, now,
 *         expiresAt, bodyLength
 *   bytes Uint8Array:   per send the 16-byte client id, then the body
 *   groups Float64Array (optional): sizes of consecutive runs of sends stored all or none
 * and of its answer, `outcomes` Float64Array: per send kind, seq, createdAt, where kind is
 * 0 stored, 1 duplicate (still queued), 2 duplicate (delivered), 3 queue full, 4 the sender's
 * share of the recipient's queue full (limits: see db/queue.ts `refusal`, which this mirrors).
 */
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)

const CLIENT_ID_BYTES = 16
const SEND_FIELDS = 7
const { file, settings, limits } = workerData

const db = new Database(file)
db.pragma(`synchronous = ${settings.synchronous}`)
db.pragma('foreign_keys = ON')
db.pragma(`busy_timeout = ${settings.busyTimeoutMs}`)
db.pragma(`cache_size = -${settings.cacheKib}`)
db.pragma(`wal_autocheckpoint = ${settings.autocheckpointPages}`)
// As db/connect.ts: deleted rows are zeroed in their pages, not left in free space.
db.pragma('secure_delete = FAST')

const statements = {
  insert: db.prepare(
    `insert into messages (recipient_id, recipient_device, seq, sender_id, sender_device, client_id, body,
       created_at, expires_at)
     values (?, ?, ?, ?, ?, ?, ?, ?, ?)
     on conflict (client_id, sender_id, sender_device, recipient_id, recipient_device) do nothing`,
  ),
  existing: db.prepare(
    `select seq, created_at from messages where client_id = ? and sender_id = ? and sender_device = ?
     and recipient_id = ? and recipient_device = ?`,
  ),
  tombstone: db.prepare(
    `select expires_at from message_tombstones where client_id = ? and sender_id = ? and sender_device = ?
     and recipient_device = ? and to_self = ?`,
  ),
  position: db.prepare(
    'select last_seq from queue_positions where recipient_id = ? and recipient_device = ?',
  ),
  savePosition: db.prepare(
    `insert into queue_positions (recipient_id, recipient_device, last_seq) values (?, ?, ?)
     on conflict (recipient_id, recipient_device) do update set last_seq = excluded.last_seq`,
  ),
  depthBySender: db.prepare(
    `select sender_id, count(*) as count, coalesce(sum(length(body)), 0) as bytes from messages
     where recipient_id = ? and recipient_device = ? group by sender_id`,
  ),
  bury: db.prepare(
    `insert into message_tombstones (client_id, sender_id, sender_device, recipient_device, to_self, expires_at)
     select client_id, sender_id, sender_device, recipient_device,
       case when sender_id = recipient_id then 1 else 0 end, expires_at
     from messages where recipient_id = ? and recipient_device = ? and seq <= ?
     on conflict (client_id, sender_id, sender_device, recipient_device, to_self) do nothing`,
  ),
  acknowledge: db.prepare(
    'delete from messages where recipient_id = ? and recipient_device = ? and seq <= ?',
  ),
  fetch: db.prepare(
    `select m.seq, m.client_id, u.username, m.sender_device, m.body, m.created_at
     from messages m join users u on u.id = m.sender_id
     where m.recipient_id = ? and m.recipient_device = ? and m.seq > ? and m.expires_at > ?
     order by m.seq limit ?`,
  ),
  count: db.prepare(
    'select count(*) as count from messages where recipient_id = ? and recipient_device = ? and expires_at > ?',
  ),
  purge: db.prepare(
    'delete from messages where rowid in (select rowid from messages where expires_at <= ? limit ?)',
  ),
  purgeTombstones: db.prepare(
    `delete from message_tombstones where rowid in
     (select rowid from message_tombstones where expires_at <= ? limit ?)`,
  ),
}

/** A device queue's depth in total and per sending account, read in the current transaction. */
function loadDepth(recipientId, recipientDevice) {
  const total = { count: 0, bytes: 0 }
  const bySender = new Map()
  for (const row of statements.depthBySender.all(recipientId, recipientDevice)) {
    bySender.set(row.sender_id, { count: row.count, bytes: row.bytes })
    total.count += row.count
    total.bytes += row.bytes
  }
  const position = statements.position.get(recipientId, recipientDevice)
  return {
    recipientId,
    recipientDevice,
    total,
    bySender,
    lastSeq: position ? position.last_seq : 0,
    moved: false,
  }
}

/** 4 when the sender's share is full, 3 when the recipient's queue is, 0 when there is room. */
function refusal(total, share, bytes) {
  if (share.count >= limits.maxMessagesPerSender || share.bytes + bytes > limits.maxBytesPerSender) return 4
  if (total.count >= limits.maxMessages || total.bytes + bytes > limits.maxBytes) return 3
  return 0
}

/** Thrown inside a group's savepoint when one of its sends is refused: the group is rolled back. */
class GroupRefused extends Error {
  constructor(code) {
    super('queue group refused')
    this.code = code
  }
}

/**
 * Stores send `i` of the batch (or finds it stored) and writes its outcome. Returns 0, or the
 * refusal (3, 4) when it was refused and nothing was stored for it.
 */
function applySend(i, meta, buffer, offset, depths, outcomes) {
  const at = i * SEND_FIELDS
  const recipientId = meta[at]
  const recipientDevice = meta[at + 1]
  const senderId = meta[at + 2]
  const senderDevice = meta[at + 3]
  const sentAt = meta[at + 4]
  const expiresAt = meta[at + 5]
  const bodyLength = meta[at + 6]
  const clientId = buffer.subarray(offset, offset + CLIENT_ID_BYTES)
  const body = buffer.subarray(offset + CLIENT_ID_BYTES, offset + CLIENT_ID_BYTES + bodyLength)
  // Acknowledged already (a tombstone): a duplicate, whatever the queue's depth.
  const buried = statements.tombstone.get(
    clientId,
    senderId,
    senderDevice,
    recipientDevice,
    senderId === recipientId ? 1 : 0,
  )
  if (buried) {
    outcomes[i * 3] = 2
    outcomes[i * 3 + 1] = 0
    // The tombstone keeps no time of its own: the acceptance time is its expiry less the lifetime.
    outcomes[i * 3 + 2] = buried.expires_at - (expiresAt - sentAt)
    return 0
  }
  const depth = depthOf(depths, recipientId, recipientDevice)
  let share = depth.bySender.get(senderId)
  if (!share) {
    share = { count: 0, bytes: 0 }
    depth.bySender.set(senderId, share)
  }
  const refused = refusal(depth.total, share, bodyLength)
  if (refused === 0) {
    const seq = depth.lastSeq + 1
    const inserted = statements.insert.run(
      recipientId,
      recipientDevice,
      seq,
      senderId,
      senderDevice,
      clientId,
      body,
      sentAt,
      expiresAt,
    )
    if (inserted.changes === 1) {
      for (const counted of [depth.total, share]) {
        counted.count += 1
        counted.bytes += bodyLength
      }
      depth.lastSeq = seq
      depth.moved = true
      outcomes[i * 3] = 0
      outcomes[i * 3 + 1] = seq
      outcomes[i * 3 + 2] = sentAt
      return 0
    }
  }
  // Refused, or the insert met the UNIQUE (id, sender device, recipient device): a duplicate if
  // the row exists.
  const existing = statements.existing.get(clientId, senderId, senderDevice, recipientId, recipientDevice)
  if (existing) {
    outcomes[i * 3] = 1
    outcomes[i * 3 + 1] = existing.seq
    outcomes[i * 3 + 2] = existing.created_at
    return 0
  }
  outcomes[i * 3] = refused
  return refused
}

function depthOf(depths, recipientId, recipientDevice) {
  const queue = `${recipientId}.${recipientDevice}`
  let depth = depths.get(queue)
  if (!depth) {
    depth = loadDepth(recipientId, recipientDevice)
    depths.set(queue, depth)
  }
  return depth
}

/**
 * The counters a group may change in one queue, to put back when it is rolled back: the total and
 * the share of the group's sender alone (a group is one send), not every sender's, which made each
 * group cost as much as the queue had senders.
 */
function snapshot(depth, senderId) {
  const share = depth.bySender.get(senderId)
  return {
    depth,
    senderId,
    total: { ...depth.total },
    share: share ? { ...share } : undefined,
    lastSeq: depth.lastSeq,
    moved: depth.moved,
  }
}

function restore(saved) {
  const { depth } = saved
  depth.total.count = saved.total.count
  depth.total.bytes = saved.total.bytes
  if (saved.share) depth.bySender.set(saved.senderId, saved.share)
  else depth.bySender.delete(saved.senderId)
  depth.lastSeq = saved.lastSeq
  depth.moved = saved.moved
}

/**
 * The sends of one group (a message to several devices) in a savepoint: when one is refused, the
 * savepoint is rolled back (better-sqlite3 makes a nested transaction one) and every send of the
 * group gets that refusal.
 */
const applyGroup = db.transaction((first, count, offsets, meta, buffer, depths, outcomes) => {
  for (let i = first; i < first + count; i++) {
    const refused = applySend(i, meta, buffer, offsets[i - first], depths, outcomes)
    if (refused !== 0) throw new GroupRefused(refused)
  }
})

const applyBatch = db.transaction((request) => {
  const { acks, meta, bytes, groups } = request
  for (let i = 0; i < acks.length; i += 3) {
    const recipientId = acks[i]
    const recipientDevice = acks[i + 1]
    const upTo = acks[i + 2]
    statements.bury.run(recipientId, recipientDevice, upTo)
    statements.acknowledge.run(recipientId, recipientDevice, upTo)
  }
  // Read after the acknowledgements, in this transaction (BEGIN IMMEDIATE: no other writer).
  const depths = new Map()
  const sends = meta.length / SEND_FIELDS
  const outcomes = new Float64Array(sends * 3)
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let offset = 0
  let i = 0
  let group = 0
  while (i < sends) {
    const count = groups ? groups[group++] : 1
    if (count === 1) {
      applySend(i, meta, buffer, offset, depths, outcomes)
      offset += CLIENT_ID_BYTES + meta[i * SEND_FIELDS + 6]
      i += 1
      continue
    }
    const offsets = []
    const saved = []
    for (let j = i; j < i + count; j++) {
      offsets.push(offset)
      offset += CLIENT_ID_BYTES + meta[j * SEND_FIELDS + 6]
      const depth = depthOf(depths, meta[j * SEND_FIELDS], meta[j * SEND_FIELDS + 1])
      const senderId = meta[j * SEND_FIELDS + 2]
      if (!saved.some((state) => state.depth === depth && state.senderId === senderId))
        saved.push(snapshot(depth, senderId))
    }
    try {
      applyGroup(i, count, offsets, meta, buffer, depths, outcomes)
    } catch (error) {
      if (!(error instanceof GroupRefused)) throw error
      for (const state of saved) restore(state)
      for (let j = i; j < i + count; j++) {
        outcomes[j * 3] = error.code
        outcomes[j * 3 + 1] = 0
        outcomes[j * 3 + 2] = 0
      }
    }
    i += count
  }
  for (const depth of depths.values()) {
    if (depth.moved) statements.savePosition.run(depth.recipientId, depth.recipientDevice, depth.lastSeq)
  }
  return outcomes
})

function handle(request) {
  switch (request.op) {
    case 'commit': {
      const outcomes = applyBatch.immediate(request)
      return [outcomes, [outcomes.buffer]]
    }
    case 'fetch': {
      const rows = statements.fetch.all(
        request.recipientId,
        request.recipientDevice,
        request.afterSeq,
        request.now,
        request.limit,
      )
      return [rows, []]
    }
    case 'count':
      return [statements.count.get(request.recipientId, request.recipientDevice, request.now).count, []]
    case 'purge': {
      const purged =
        statements.purge.run(request.now, request.limit).changes +
        statements.purgeTombstones.run(request.now, request.limit).changes
      return [purged, []]
    }
    default:
      throw new Error(`queue worker: expected a known operation, got ${String(request.op)}`)
  }
}

parentPort.on('message', (request) => {
  if (request.op === 'close') {
    db.close()
    parentPort.postMessage({ id: request.id, ok: true, result: null })
    parentPort.close()
    return
  }
  try {
    const [result, transfer] = handle(request)
    parentPort.postMessage({ id: request.id, ok: true, result }, transfer)
  } catch (error) {
    parentPort.postMessage({
      id: request.id,
      ok: false,
      error: { message: String(error?.message), code: error?.code },
    })
  }
})
