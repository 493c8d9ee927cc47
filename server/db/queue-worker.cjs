'use strict'
/**
 * The SQLite queue's thread (see queue-sqlite.ts, which starts it and speaks to it). It owns a
 * second better-sqlite3 connection to the server's database file and runs every queue operation
 * with statements prepared once: batches (acknowledgements, then sends) in one BEGIN IMMEDIATE …
 * COMMIT each, so one fsync per batch; queue reads; counts; the expiry purge. The relay's event
 * loop thereby spends no time in SQLite or waiting for fsync on the hot path.
 *
 * Plain CommonJS, so it runs as is under tsx, vitest and Node. Requests are handled one at a time
 * in arrival order. It is the only writer of the messages table while it runs, which lets it keep
 * each recipient's queue depth (messages, bytes) in memory.
 *
 * Wire format of a commit request (all arrays transferred, not copied):
 *   acks  Float64Array: recipientId, upTo, recipientId, upTo, …
 *   meta  Float64Array: per send recipientId, senderId, now, expiresAt, bodyLength
 *   bytes Uint8Array:   per send the 16-byte client id, then the body
 * and of its answer, `outcomes` Float64Array: per send kind, seq, createdAt, where kind is
 * 0 stored, 1 duplicate (still queued), 2 duplicate (delivered), 3 queue full.
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

const statements = {
  insert: db.prepare(
    `insert into messages (recipient_id, sender_id, client_id, body, created_at, expires_at)
     values (?, ?, ?, ?, ?, ?) on conflict (client_id, sender_id) do nothing`,
  ),
  existing: db.prepare(
    'select seq, created_at, delivered_at from messages where client_id = ? and sender_id = ?',
  ),
  depth: db.prepare(
    `select count(*) as count, coalesce(sum(length(body)), 0) as bytes from messages
     where recipient_id = ? and delivered_at is null`,
  ),
  freed: db.prepare(
    `select count(*) as count, coalesce(sum(length(body)), 0) as bytes from messages
     where recipient_id = ? and delivered_at is null and seq <= ?`,
  ),
  acknowledge: db.prepare(
    `update messages set body = x'', delivered_at = ?
     where recipient_id = ? and delivered_at is null and seq <= ?`,
  ),
  fetch: db.prepare(
    `select m.seq, m.client_id, u.username, m.body, m.created_at
     from messages m join users u on u.id = m.sender_id
     where m.recipient_id = ? and m.delivered_at is null and m.seq > ? and m.expires_at > ?
     order by m.seq limit ?`,
  ),
  count: db.prepare(
    'select count(*) as count from messages where recipient_id = ? and delivered_at is null and expires_at > ?',
  ),
  purge: db.prepare(
    'delete from messages where seq in (select seq from messages where expires_at <= ? limit ?)',
  ),
}

/** Queue depth per recipient (messages and bytes not yet acknowledged), loaded on first use. */
const depths = new Map()

function depthOf(recipientId) {
  let depth = depths.get(recipientId)
  if (!depth) {
    if (depths.size >= limits.maxCachedDepths) depths.clear()
    depth = statements.depth.get(recipientId)
    depths.set(recipientId, depth)
  }
  return depth
}

const isFull = (depth, bytes) => depth.count >= limits.maxMessages || depth.bytes + bytes > limits.maxBytes

const applyBatch = db.transaction((request) => {
  const { acks, meta, bytes, now } = request
  for (let i = 0; i < acks.length; i += 2) {
    const recipientId = acks[i]
    const upTo = acks[i + 1]
    const freed = statements.freed.get(recipientId, upTo)
    if (freed.count === 0) continue
    statements.acknowledge.run(now, recipientId, upTo)
    const depth = depths.get(recipientId)
    if (depth) {
      depth.count = Math.max(0, depth.count - freed.count)
      depth.bytes = Math.max(0, depth.bytes - freed.bytes)
    }
  }
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
    const depth = depthOf(recipientId)
    if (!isFull(depth, bodyLength)) {
      const inserted = statements.insert.run(recipientId, senderId, clientId, body, sentAt, expiresAt)
      if (inserted.changes === 1) {
        depth.count += 1
        depth.bytes += bodyLength
        outcomes[i * 3] = 0
        outcomes[i * 3 + 1] = Number(inserted.lastInsertRowid)
        outcomes[i * 3 + 2] = sentAt
        continue
      }
    }
    // Full, or the insert met the UNIQUE (client_id, sender_id): a duplicate if the row exists.
    const existing = statements.existing.get(clientId, senderId)
    if (existing) {
      outcomes[i * 3] = existing.delivered_at === null ? 1 : 2
      outcomes[i * 3 + 1] = existing.seq
      outcomes[i * 3 + 2] = existing.created_at
    } else {
      outcomes[i * 3] = 3
    }
  }
  return outcomes
})

function handle(request) {
  switch (request.op) {
    case 'commit':
      try {
        const outcomes = applyBatch.immediate(request)
        return [outcomes, [outcomes.buffer]]
      } catch (error) {
        depths.clear()
        throw error
      }
    case 'fetch': {
      const rows = statements.fetch.all(request.recipientId, request.afterSeq, request.now, request.limit)
      return [rows, []]
    }
    case 'count':
      return [statements.count.get(request.recipientId, request.now).count, []]
    case 'purge': {
      const deleted = statements.purge.run(request.now, request.limit).changes
      depths.clear()
      return [deleted, []]
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
