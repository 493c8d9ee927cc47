/**
 * Password strength by zxcvbn-ts (common passwords, names, keyboard patterns, repeats, l33t), run
 * on a worker thread: one estimate of a hostile 256-character input costs tens of milliseconds of
 * CPU, which must not stall the event loop that relays messages.
 *
 * The worker's source is a string evaluated as CommonJS and loads the packages by absolute path, so
 * the same code runs under tsx, vitest and plain Node without a separate build step.
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { PASSWORD_MAX_LENGTH } from '../../shared/limits.js'

/** zxcvbn scores 0–4; registration needs at least this ("safely unguessable: moderate protection"). */
export const MIN_PASSWORD_SCORE = 3

const require = createRequire(import.meta.url)

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { ZxcvbnFactory } = require(workerData.core)
const common = require(workerData.common)
const zxcvbn = new ZxcvbnFactory({
  dictionary: { ...common.dictionary },
  graphs: common.adjacencyGraphs,
  maxLength: workerData.maxLength,
})
parentPort.on('message', ({ id, password, userInputs }) => {
  try {
    parentPort.postMessage({ id, score: zxcvbn.check(password, userInputs).score })
  } catch (error) {
    parentPort.postMessage({ id, error: String(error && error.message) })
  }
})
`

type Pending = { resolve: (score: number) => void; reject: (error: Error) => void }

let worker: Worker | undefined
const pending = new Map<number, Pending>()
let nextId = 0

function failAll(error: Error): void {
  for (const request of pending.values()) request.reject(error)
  pending.clear()
}

function startWorker(): Worker {
  const started = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: {
      core: require.resolve('@zxcvbn-ts/core'),
      common: require.resolve('@zxcvbn-ts/language-common'),
      maxLength: PASSWORD_MAX_LENGTH,
    },
  })
  started.on('message', (reply: { id: number; score?: number; error?: string }) => {
    const request = pending.get(reply.id)
    if (!request) return
    pending.delete(reply.id)
    if (reply.score === undefined) request.reject(new Error(`password strength: ${reply.error ?? 'failed'}`))
    else request.resolve(reply.score)
  })
  const retire = (error: Error) => {
    if (worker === started) worker = undefined
    failAll(error)
  }
  started.on('error', retire)
  started.on('exit', (code) => retire(new Error(`password strength: worker exited with code ${code}`)))
  // An idle estimator must never keep the process alive.
  started.unref()
  return started
}

/** zxcvbn's score (0–4) for `password`, penalising words from `userInputs` (e.g. the username). */
export function passwordScore(password: string, userInputs: readonly string[]): Promise<number> {
  worker ??= startWorker()
  const id = nextId++
  const active = worker
  return new Promise<number>((resolve, reject) => {
    pending.set(id, { resolve, reject })
    active.postMessage({ id, password, userInputs: [...userInputs] })
  })
}

/** Stops the worker (it restarts on the next call). */
export async function stopPasswordStrengthWorker(): Promise<void> {
  const running = worker
  worker = undefined
  if (running) await running.terminate()
}
