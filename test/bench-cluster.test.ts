/**
 * `npm run bench:cluster` runs in CI (issue 11's "the benchmark passes in CI"), at a small load so
 * that it costs well under a minute: every configuration (the bare relay, one SQLite node, one
 * PostgreSQL node without Redis, 1, 2 and 3 nodes on PostgreSQL and Redis) must come up, carry
 * messages, deliver each exactly once and in order, and report the numbers the table and JSON line
 * promise. Speed never fails it: the numbers are the machine's, and a wall-clock bound in a test
 * would only measure the load of the CI machine.
 */
import { spawn } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { postgresUnavailable } from '../server/test/databases.js'
import { hasRedisServer } from '../server/test/redis.js'

const pgSkip = await postgresUnavailable()
const redisServer = hasRedisServer()

/** 12 pairs: placeClients then puts exactly half of them across nodes with 2 and with 3 nodes. */
const CLIENTS = 24

interface Configuration {
  readonly name: string
  readonly nodes: number
  readonly msgsPerSec: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly serverCpuMicrosPerMessage: number
  readonly redisCpuMicrosPerMessage: number | null
  readonly sent: number
  readonly delivered: number
  readonly crossingPairs: number
  readonly correct: boolean
}

function runBench(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('npx', ['tsx', '--max-semi-space-size=64', 'bench/cluster.ts'], {
      env: {
        ...process.env,
        BENCH_CLIENTS: String(CLIENTS),
        BENCH_WINDOW: '10',
        BENCH_WARMUP_MS: '300',
        BENCH_MS: '1000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk
    })
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

describe.skipIf(pgSkip !== undefined || !redisServer)('npm run bench:cluster', () => {
  it('measures every configuration, each delivering every message once and in order, and prints a table and a JSON line', {
    timeout: 300_000,
  }, async () => {
    const { code, stdout, stderr } = await runBench()
    // The whole progress log when it failed: which configuration, and what it said.
    expect(code, stderr).toBe(0)
    const lines = stdout.trimEnd().split('\n')
    const report = JSON.parse(lines.at(-1)!) as {
      clients: number
      configurations: Configuration[]
    }
    expect(report.clients).toBe(CLIENTS)
    expect(report.configurations.map((entry) => [entry.name, entry.nodes])).toEqual([
      ['bare ws relay', 1],
      ['1 node, SQLite', 1],
      ['1 node, PostgreSQL, no Redis', 1],
      ['1 node, PostgreSQL + Redis', 1],
      ['2 nodes, PostgreSQL + Redis', 2],
      ['3 nodes, PostgreSQL + Redis', 3],
    ])
    for (const entry of report.configurations) {
      expect(entry.correct, entry.name).toBe(true)
      expect(entry.delivered, entry.name).toBeGreaterThan(0)
      expect(entry.delivered, entry.name).toBe(entry.sent)
      expect(entry.msgsPerSec, entry.name).toBeGreaterThan(0)
      expect(entry.p99Ms, entry.name).toBeGreaterThanOrEqual(entry.p50Ms)
      // The cost of each configuration per message, the figure the issue asks for.
      expect(entry.serverCpuMicrosPerMessage, entry.name).toBeGreaterThan(0)
      // Redis's share is measured exactly where there is a Redis.
      expect(entry.redisCpuMicrosPerMessage === null, entry.name).toBe(
        !entry.name.includes('Redis') || entry.name.includes('no Redis'),
      )
      // Half the pairs cross nodes wherever there is more than one.
      expect(entry.crossingPairs, entry.name).toBe(entry.nodes > 1 ? CLIENTS / 4 : 0)
    }
    // The table: a header and one row per configuration, before the JSON line.
    const table = lines.slice(0, -1).join('\n')
    expect(table).toMatch(/^configuration\s+msgs\/s\s+vs bare\s+p50\s+p99\s+server CPU\/msg\s+notes/)
    for (const entry of report.configurations) expect(table).toContain(entry.name)
  })
})
