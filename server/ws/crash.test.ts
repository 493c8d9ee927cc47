/**
 * Crash safety with the real process: `node --import tsx server/main.ts` on a temporary data
 * directory, a burst of sends, SIGKILL in the middle of it, a restart on the same database. Every
 * message that was `accepted` is delivered exactly once; nothing that was not sent appears; and
 * after the sender retries what it never heard back about, every message it sent is delivered
 * exactly once.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { httpsFetch, removeDir, signUp, type TestServer } from '../test/harness.js'
import { connect, newMessageId, WAIT_TIMEOUT_MS } from '../test/ws-client.js'

const ROOT = resolve(import.meta.dirname, '../..')
const BURST = 3_000
const IN_FLIGHT = 200
/** Accepted messages after which the server is killed (the rest of the burst is in flight). */
const KILL_AFTER = 600

interface Running {
  readonly child: ChildProcess
  readonly origin: string
  readonly exited: Promise<NodeJS.Signals | number | null>
}

async function start(env: Record<string, string>): Promise<Running> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString()
  })
  const exited = new Promise<NodeJS.Signals | number | null>((done) =>
    child.on('exit', (code, signal) => done(signal ?? code)),
  )
  const origin = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start: ${err}`)), WAIT_TIMEOUT_MS)
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const match = /listening on (https:\/\/127\.0\.0\.1:\d+)/.exec(out)
      // The fingerprint line comes last: the server is fully up once it is printed.
      if (match && out.includes('SPKI')) {
        clearTimeout(timer)
        done(match[1]!)
      }
    })
    void exited.then((code) => {
      clearTimeout(timer)
      fail(new Error(`server exited with ${code}: ${err}`))
    })
  })
  return { child, origin, exited }
}

describe('crash safety of the real server process', () => {
  let dir: string
  let env: Record<string, string>
  let running: Running | undefined
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'secure-chat-crash-'))
    env = { DATA_DIR: join(dir, 'data'), CERT_DIR: join(dir, 'certs') }
  })
  afterAll(async () => {
    if (running && running.child.exitCode === null) {
      running.child.kill('SIGKILL')
      await running.exited
    }
    await removeDir(dir)
  })

  it('delivers every accepted message exactly once after SIGKILL mid-burst and a restart', async () => {
    running = await start(env)
    const ca = await readFile(join(dir, 'certs', 'localhost.pem'), 'utf8')
    const agent = new Agent({ ca, keepAlive: true })
    const first = { origin: running.origin, ca }
    const api = {
      request: (path: string, options?: object) => httpsFetch(agent, running!.origin, path, options),
    }
    const alice = await signUp(api as unknown as TestServer)
    const bob = await signUp(api as unknown as TestServer)
    agent.destroy()

    // The burst: ids chosen up front, at most IN_FLIGHT unanswered, killed after KILL_AFTER accepted.
    const ids = Array.from({ length: BURST }, () => newMessageId())
    const sender = await connect(first, alice.token, 'alice')
    let sent = 0
    const refill = () => {
      while (sent < ids.length && sent - sender.all('accepted').length < IN_FLIGHT) {
        sender.sendMessage(bob.client.username, { id: ids[sent] })
        sent += 1
      }
    }
    sender.ws.on('message', refill)
    refill()
    await sender.until(
      () => (sender.all('accepted').length >= KILL_AFTER ? true : undefined),
      'enough accepted',
    )
    running.child.kill('SIGKILL')
    expect(await running.exited).toBe('SIGKILL')
    await sender.closed
    const accepted = new Set(sender.all('accepted').map((frame) => frame.id))
    const sentIds = new Set(ids.slice(0, sent))
    expect(accepted.size).toBeGreaterThanOrEqual(KILL_AFTER)
    expect(sent).toBeGreaterThan(accepted.size)

    // Restart on the same database; bob drains everything that survived.
    running = await start(env)
    const second = { origin: running.origin, ca }
    const recipient = await connect(second, bob.token, 'bob')
    const queued = recipient.ready.queued
    const drained = await recipient.receive(queued)
    const drainedIds = drained.map((frame) => frame.id)
    expect(new Set(drainedIds).size).toBe(drainedIds.length)
    for (const id of accepted) expect(drainedIds).toContain(id)
    for (const id of drainedIds) expect(sentIds.has(id)).toBe(true)
    const seqs = drained.map((frame) => frame.seq)
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs)
    // In send order too: the queue keeps arrival order.
    expect(drainedIds).toEqual(ids.filter((id) => drainedIds.includes(id)))
    recipient.ack(seqs.at(-1)!)

    // Alice retries everything she sent and never heard back about, plus one fence message.
    const retry = await connect(second, alice.token, 'alice-retry')
    const unanswered = [...sentIds].filter((id) => !accepted.has(id))
    for (const id of unanswered) retry.sendMessage(bob.client.username, { id })
    expect((await retry.take('accepted', unanswered.length)).map((frame) => frame.id).sort()).toEqual(
      [...unanswered].sort(),
    )
    const fence = retry.sendMessage(bob.client.username)
    // Exactly the messages not drained yet, then the fence: a duplicate would push the fence out.
    const rest = await recipient.receive(sentIds.size - drained.length + 1)
    expect(rest.at(-1)!.id).toBe(fence)
    const all = [...drainedIds, ...rest.map((frame) => frame.id)]
    expect(new Set(all).size).toBe(all.length)
    expect(new Set(all)).toEqual(new Set([...sentIds, fence]))

    await Promise.all([retry.close(), recipient.close()] as Promise<unknown>[])
    running.child.kill('SIGTERM')
    expect(await running.exited).toBe(0)
  })
})
