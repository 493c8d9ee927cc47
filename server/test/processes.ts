/**
 * Server nodes as real processes, started as `npm start` starts one (`node --import tsx
 * server/main.ts`, or another entry such as the benchmark's), each on a free loopback port of its
 * own; for tests and benchmarks of several nodes. A node is ready once it printed its address; its
 * output is kept for failure messages.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { type AddressInfo, createServer } from 'node:net'
import { join, resolve } from 'node:path'
import { RELATIONS_KEY_BYTES } from '../db/relations.js'
import { RELATIONS_KEY_FILE } from '../relations-key.js'
import { type HttpResponse, httpsFetch, type RequestOptions } from './harness.js'

const ROOT = resolve(import.meta.dirname, '../..')
export const SERVER_ENTRY = 'server/main.ts'

export interface NodeProcess {
  readonly label: string
  readonly child: ChildProcess
  readonly origin: string
  readonly ca: string
  readonly exited: Promise<number | null>
  output(): string
  request(path: string, options?: RequestOptions): Promise<HttpResponse>
  /** SIGKILL: no shutdown, no goodbye to Redis or the database. */
  kill(): Promise<void>
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>
}

export interface NodeOptions {
  readonly label: string
  /** Environment on top of this process's (DATABASE_URL, REDIS_URL, TLS_CERT, TLS_KEY, ...). */
  readonly env: Record<string, string>
  readonly dataDir: string
  readonly ca: string
  readonly entry?: string
  /** Flags for node itself, before `--import tsx` (e.g. a V8 heap flag, as `npm start` passes). */
  readonly nodeFlags?: readonly string[]
}

/** A loopback port free now (for a process that must come back on the same port). */
export function freePort(): Promise<number> {
  return new Promise((done) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo
      probe.close(() => done(port))
    })
  })
}

/**
 * Gives every data directory the same relations key (`key`, or a new one), as an operator copies
 * one file to each node (relations-key.ts): a node with another key than the database was set up
 * with refuses to start. Several node sets on one database pass the same `key`.
 */
export async function shareRelationsKey(
  dataDirs: readonly string[],
  key: Uint8Array = randomBytes(RELATIONS_KEY_BYTES),
): Promise<void> {
  for (const dir of dataDirs) {
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, RELATIONS_KEY_FILE), key, { mode: 0o600 })
  }
}

export async function startNode(options: NodeOptions): Promise<NodeProcess> {
  const child = spawn(
    process.execPath,
    [
      ...(options.nodeFlags ?? []),
      '--import',
      'tsx',
      options.entry ?? SERVER_ENTRY,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--data-dir',
      options.dataDir,
    ],
    {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: 'warn', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let output = ''
  const append = (chunk: Buffer) => {
    output += chunk.toString()
  }
  child.stdout?.on('data', append)
  child.stderr?.on('data', append)
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)))
  const origin = await new Promise<string>((done, fail) => {
    const check = () => {
      const match = output.match(/listening on (https:\/\/127\.0\.0\.1:\d+)/)
      if (match) {
        child.stdout?.off('data', check)
        done(match[1]!)
      }
    }
    child.stdout?.on('data', check)
    exited.then((code) =>
      fail(new Error(`${options.label}: exited with ${code} before listening: ${output}`)),
    )
  })
  const agent = new Agent({ ca: options.ca, keepAlive: true, maxSockets: 16 })
  const running = () => child.exitCode === null && child.signalCode === null
  return {
    label: options.label,
    child,
    origin,
    ca: options.ca,
    exited,
    output: () => output,
    request: (path, requestOptions) => httpsFetch(agent, origin, path, requestOptions),
    kill: async () => {
      agent.destroy()
      if (running()) child.kill('SIGKILL')
      await exited
    },
    stop: async () => {
      agent.destroy()
      if (running()) child.kill('SIGTERM')
      await exited
    },
  }
}
