/**
 * The queue's fast path on SQLite: the same semantics as KyselyQueueRepository (queue.test.ts runs
 * one suite against both), executed on a worker thread (queue-worker.cjs) with its own connection
 * and statements prepared once. Kysely's SQLite driver prepares every statement anew, and
 * better-sqlite3 is synchronous: on the event loop, the queue's inserts, index updates and the
 * commit's fsync took a third of the relay's time. Here the event loop only packs a batch into two
 * transferred arrays and reads the outcomes back.
 *
 * The worker's connection is a second writer beside Kysely's. SQLite serialises them: a queue
 * batch waits (on its own thread) for a registration's transaction to finish, and a registration's
 * statement waits for a batch's commit (busy_timeout) — a few milliseconds, rarely.
 */

import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import {
  SQLITE_AUTOCHECKPOINT_PAGES,
  SQLITE_BUSY_TIMEOUT_MS,
  SQLITE_CACHE_KIB,
  SQLITE_SYNCHRONOUS,
} from './connect.js'
import type { DeviceAddress } from './devices.js'
import type { QueueBatch, QueuedMessage, QueueLimits, QueueRepository, SendOutcome } from './queue.js'

const require = createRequire(import.meta.url)

const CLIENT_ID_BYTES = 16
/** Numbers per send in a commit request's `meta` (queue-worker.cjs reads the same layout). */
const SEND_FIELDS = 7

interface Reply {
  readonly id: number
  readonly ok: boolean
  readonly result?: unknown
  readonly error?: { message: string; code?: string }
}

interface FetchedRow {
  seq: number
  client_id: Uint8Array
  username: string
  sender_device: number
  body: Uint8Array
  created_at: number
}

export class SqliteQueueRepository implements QueueRepository {
  readonly dialect = 'sqlite' as const
  private readonly worker: Worker
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>()
  private nextId = 0
  private failure: Error | undefined
  private closed: Promise<void> | undefined

  constructor(file: string, limits: QueueLimits) {
    this.worker = new Worker(new URL('./queue-worker.cjs', import.meta.url), {
      workerData: {
        driver: require.resolve('better-sqlite3'),
        file,
        settings: {
          synchronous: SQLITE_SYNCHRONOUS,
          busyTimeoutMs: SQLITE_BUSY_TIMEOUT_MS,
          cacheKib: SQLITE_CACHE_KIB,
          autocheckpointPages: SQLITE_AUTOCHECKPOINT_PAGES,
        },
        limits: { ...limits },
      },
    })
    this.worker.on('message', (reply: Reply) => {
      const waiting = this.pending.get(reply.id)
      if (!waiting) return
      this.pending.delete(reply.id)
      if (reply.ok) waiting.resolve(reply.result)
      else waiting.reject(Object.assign(new Error(reply.error?.message), { code: reply.error?.code }))
    })
    const fail = (error: Error) => {
      this.failure = error
      for (const waiting of this.pending.values()) waiting.reject(error)
      this.pending.clear()
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => fail(new Error(`queue worker: exited with code ${code}`)))
    // An idle queue thread never keeps the process alive (after the listeners: adding one refs it).
    this.worker.unref()
  }

  private call<T>(request: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failure) return Promise.reject(this.failure)
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
      this.worker.postMessage({ ...request, id }, transfer)
    })
  }

  async commit(batch: QueueBatch): Promise<SendOutcome[]> {
    const { sends } = batch
    const acks = new Float64Array(batch.acks.length * 3)
    let index = 0
    for (const ack of batch.acks) {
      acks[index++] = ack.recipientId
      acks[index++] = ack.recipientDevice
      acks[index++] = ack.upTo
    }
    const meta = new Float64Array(sends.length * SEND_FIELDS)
    let size = 0
    for (const send of sends) {
      if (send.clientId.length !== CLIENT_ID_BYTES) {
        // The table's CHECK would refuse it; refuse the batch the same way, before packing.
        throw new Error(
          `queue batch: expected ${CLIENT_ID_BYTES}-byte client ids, got ${send.clientId.length}`,
        )
      }
      size += CLIENT_ID_BYTES + send.body.length
    }
    const bytes = new Uint8Array(size)
    let offset = 0
    for (let i = 0; i < sends.length; i++) {
      const send = sends[i]!
      const at = i * SEND_FIELDS
      meta[at] = send.recipientId
      meta[at + 1] = send.recipientDevice
      meta[at + 2] = send.senderId
      meta[at + 3] = send.senderDevice
      meta[at + 4] = send.now
      meta[at + 5] = send.expiresAt
      meta[at + 6] = send.body.length
      bytes.set(send.clientId, offset)
      bytes.set(send.body, offset + CLIENT_ID_BYTES)
      offset += CLIENT_ID_BYTES + send.body.length
    }
    const groups = batch.groups?.some((size) => size > 1) ? Float64Array.from(batch.groups) : undefined
    const outcomes = await this.call<Float64Array>(
      { op: 'commit', acks, meta, bytes, groups, now: batch.now },
      groups
        ? [acks.buffer, meta.buffer, bytes.buffer, groups.buffer]
        : [acks.buffer, meta.buffer, bytes.buffer],
    )
    const out: SendOutcome[] = new Array(sends.length)
    for (let i = 0; i < sends.length; i++) {
      const kind = outcomes[i * 3]
      const seq = outcomes[i * 3 + 1]!
      const createdAt = outcomes[i * 3 + 2]!
      out[i] =
        kind === 0
          ? { kind: 'stored', seq, createdAt }
          : kind === 3
            ? { kind: 'full' }
            : kind === 4
              ? { kind: 'share-full' }
              : { kind: 'duplicate', seq, createdAt, delivered: kind === 2 }
    }
    return out
  }

  async fetch(
    recipient: DeviceAddress,
    afterSeq: number,
    limit: number,
    now: number,
  ): Promise<QueuedMessage[]> {
    const { userId: recipientId, deviceId: recipientDevice } = recipient
    const rows = await this.call<FetchedRow[]>({
      op: 'fetch',
      recipientId,
      recipientDevice,
      afterSeq,
      limit,
      now,
    })
    return rows.map((row) => ({
      seq: row.seq,
      clientId: row.client_id,
      sender: row.username,
      senderDevice: row.sender_device,
      body: row.body,
      createdAt: row.created_at,
    }))
  }

  countQueued(recipient: DeviceAddress, now: number): Promise<number> {
    return this.call<number>({
      op: 'count',
      recipientId: recipient.userId,
      recipientDevice: recipient.deviceId,
      now,
    })
  }

  async purgeExpired(now: number, batchSize: number): Promise<number> {
    let total = 0
    // One statement per request, so batches from the relay get their turn in between.
    for (;;) {
      const deleted = await this.call<number>({ op: 'purge', now, limit: batchSize })
      total += deleted
      if (deleted < batchSize) return total
    }
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.failure) return
      // Held while closing, so the process waits for the thread to close its connection.
      this.worker.ref()
      const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()))
      await this.call({ op: 'close' }).catch(() => {})
      await exited
    })()
    return this.closed
  }
}
