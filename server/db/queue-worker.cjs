'use strict'
/**
 * The SQLite queue's thread (see queue-sqlite.ts, which starts it and speaks to it). It owns a
 * second better-sqlite3 connection to the server's database file and runs every queue operation
 * with statements prepared once: batches (acknowledgements, then sends) in one BEGIN IMMEDIATE …
 * COMMIT each, so one fsync per batch; queue reads; counts; the expiry purge. The relay's event
 * loop thereby spends no time in SQLite or waiting for fsync on the hot path.
 *
 * Plain CommonJS, so it runs as is under tsx, vitest and Node. Requests are handled one at a time
 * in arrival order. Queue depths (per recipient, and per sender within it) are read from the table
 * inside each batch's transaction and forgotten after it: other connections (another server
 * process on the same file) may write the table between batches.
 *
 * Wire format of a commit request (all arrays transferred, not copied):
 *   acks  Float64Array: recipientId, upTo, recipientId, upTo, …
 *   meta  Float64Array: per send recipientId, senderId, now, expiresAt, bodyLength
 *   bytes Uint8Array:   per send the 16-byte client id, then the body
 * and of its answer, `outcomes` Float64Array: per send kind, seq, createdAt, where kind is
 * 0 stored, 1 duplicate (still queued), 2 duplicate (delivered), 3 queue full, 4 the sender's
 * share of the recipient's queue full (limits: see db/queue.ts `refusal`, which this mirrors).
 */
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)

const CLIENT_ID_BYTES = 16
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
    `insert into messages (recipient_id, seq, sender_id, client_id, body, created_at, expires_at)
     values (?, ?, ?, ?, ?, ?, ?) on conflict (client_id, sender_id) do nothing`,
  ),
  existing: db.prepare('select seq, created_at from messages where client_id = ? and sender_id = ?'),
  tombstone: db.prepare('select expires_at from message_tombstones where client_id = ? and sender_id = ?'),
  position: db.prepare('select last_seq from queue_positions where recipient_id = ?'),
  savePosition: db.prepare(
    `insert into queue_positions (recipient_id, last_seq) values (?, ?)
     on conflict (recipient_id) do update set last_seq = excluded.last_seq`,
  ),
  depthBySender: db.prepare(
    `select sender_id, count(*) as count, coalesce(sum(length(body)), 0) as bytes from messages
     where recipient_id = ? group by sender_id`,
  ),
  bury: db.prepare(
    `insert into message_tombstones (client_id, sender_id, expires_at)
     select client_id, sender_id, expires_at from messages where recipient_id = ? and seq <= ?
     on conflict (client_id, sender_id) do nothing`,
  ),
  acknowledge: db.prepare('delete from messages where recipient_id = ? and seq <= ?'),
  fetch: db.prepare(
    `select m.seq, m.client_id, u.username, m.body, m.created_at
     from messages m join users u on u.id = m.sender_id
     where m.recipient_id = ? and m.seq > ? and m.expires_at > ?
     order by m.seq limit ?`,
  ),
  count: db.prepare('select count(*) as count from messages where recipient_id = ? and expires_at > ?'),
  purge: db.prepare(
    'delete from messages where rowid in (select rowid from messages where expires_at <= ? limit ?)',
  ),
  purgeTombstones: db.prepare(
    `delete from message_tombstones where rowid in
     (select rowid from message_tombstones where expires_at <= ? limit ?)`,
  ),
}

/** A recipient's depth in total and per sender, read in the current transaction. */
function loadDepth(recipientId) {
  const total = { count: 0, bytes: 0 }
  const bySender = new Map()
  for (const row of statements.depthBySender.all(recipientId)) {
    bySender.set(row.sender_id, { count: row.count, bytes: row.bytes })
    total.count += row.count
    total.bytes += row.bytes
  }
  const position = statements.position.get(recipientId)
  return { total, bySender, lastSeq: position ? position.last_seq : 0, moved: false }
}

/** 4 when the sender's share is full, 3 when the recipient's queue is, 0 when there is room. */
function refusal(total, share, bytes) {
  if (share.count >= limits.maxMessagesPerSender || share.bytes + bytes > limits.maxBytesPerSender) return 4
  if (total.count >= limits.maxMessages || total.bytes + bytes > limits.maxBytes) return 3
  return 0
}

const applyBatch = db.transaction((request) => {
  const { acks, meta, bytes } = request
  for (let i = 0; i < acks.length; i += 2) {
    const recipientId = acks[i]
    const upTo = acks[i + 1]
    statements.bury.run(recipientId, upTo)
    statements.acknowledge.run(recipientId, upTo)
  }
  // Read after the acknowledgements, in this transaction (BEGIN IMMEDIATE: no other writer).
  const depths = new Map()
  const sends = meta.length / 5
  const outcomes = new Float64Array(sends * 3)
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let offset = 0
  for (let i = 0; i < sends; i++) {
    const recipientId = meta[i * 5]
    const senderId = meta[i * 5 + 1]
    const sentAt = meta[i * 5 + 2]
    const expiresAt = meta[i * 5 + 3]
    const bodyLength = meta[i * 5 + 4]
    const clientId = buffer.subarray(offset, offset + CLIENT_ID_BYTES)
    const body = buffer.subarray(offset + CLIENT_ID_BYTES, offset + CLIENT_ID_BYTES + bodyLength)
    offset += CLIENT_ID_BYTES + bodyLength
    // Acknowledged already (a tombstone): a duplicate, whatever the queue's depth.
    const buried = statements.tombstone.get(clientId, senderId)
    if (buried) {
      outcomes[i * 3] = 2
      outcomes[i * 3 + 1] = 0
      // The tombstone keeps no time of its own: the acceptance time is its expiry less the lifetime.
      outcomes[i * 3 + 2] = buried.expires_at - (expiresAt - sentAt)
      continue
    }
    let depth = depths.get(recipientId)
    if (!depth) {
      depth = loadDepth(recipientId)
      depths.set(recipientId, depth)
    }
    let share = depth.bySender.get(senderId)
    if (!share) {
      share = { count: 0, bytes: 0 }
      depth.bySender.set(senderId, share)
    }
    const refused = refusal(depth.total, share, bodyLength)
    if (refused === 0) {
      const seq = depth.lastSeq + 1
      const inserted = statements.insert.run(recipientId, seq, senderId, clientId, body, sentAt, expiresAt)
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
        continue
      }
    }
    // Refused, or the insert met the UNIQUE (client_id, sender_id): a duplicate if the row exists.
    const existing = statements.existing.get(clientId, senderId)
    if (existing) {
      outcomes[i * 3] = 1
      outcomes[i * 3 + 1] = existing.seq
      outcomes[i * 3 + 2] = existing.created_at
    } else {
      outcomes[i * 3] = refused
    }
  }
  for (const [recipientId, depth] of depths) {
    if (depth.moved) statements.savePosition.run(recipientId, depth.lastSeq)
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
      const rows = statements.fetch.all(request.recipientId, request.afterSeq, request.now, request.limit)
      return [rows, []]
    }
    case 'count':
      return [statements.count.get(request.recipientId, request.now).count, []]
    case 'purge':
      return [
        statements.purge.run(request.now, request.limit).changes +
          statements.purgeTombstones.run(request.now, request.limit).changes,
        [],
      ]
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
