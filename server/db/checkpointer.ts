/**
 * SQLite WAL checkpoints on a worker thread. In WAL mode every commit appends pages to the log, and
 * a checkpoint copies them back into the database file (writing and fsyncing it). Left to SQLite,
 * the connection that commits past `wal_autocheckpoint` pages does that copy itself, inside its
 * commit: on the relay's event loop, a stall of tens of milliseconds every few thousand messages.
 * Here a second connection on its own thread runs PASSIVE checkpoints (which never wait for, nor
 * block, the writer) every SQLITE_CHECKPOINT_INTERVAL_MS; the main connection keeps a high
 * autocheckpoint threshold only as a safety net in case this thread falls behind or stops.
 *
 * The worker's source is a string evaluated as CommonJS that loads better-sqlite3 by absolute
 * path, so it runs the same under tsx, vitest and plain Node.
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

const require = createRequire(import.meta.url)

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.file)
db.pragma('busy_timeout = 0')
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)')
  } catch {
    // Busy or interrupted: the next turn tries again, and the writer's safety net remains.
  }
}, workerData.intervalMs)
parentPort.on('message', () => {
  clearInterval(timer)
  db.close()
  parentPort.close()
})
`

export interface Checkpointer {
  /** Stops the thread and closes its connection. */
  stop(): Promise<void>
}

export function startCheckpointer(file: string, intervalMs: number): Checkpointer {
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { driver: require.resolve('better-sqlite3'), file, intervalMs },
  })
  // Never keeps the process alive; an error only leaves checkpoints to the safety net.
  worker.unref()
  worker.on('error', () => {})
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()))
  return {
    async stop() {
      // Held while stopping, so the process waits for the thread to close its connection.
      worker.ref()
      worker.postMessage('stop')
      await exited
    },
  }
}
