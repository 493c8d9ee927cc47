/**
 * `npm run bench:cluster`: relay throughput and latency of 1, 2 and 3 server processes on one
 * PostgreSQL database and one Redis, beside the single SQLite node, one node on PostgreSQL without
 * Redis (to tell the database's cost from the bus's) and the bare `ws` relay, in the same run and with the same load (bench/server-load.ts: 200 clients in pairs, 50 messages in
 * flight each, over loopback TLS). On several nodes the clients are spread evenly and half the
 * pairs have their two ends on different nodes, so half the messages cross Redis.
 *
 * Each node is a process of its own (bench/cluster-node.ts: server/main.ts with the benchmark's
 * raised limits, bench/relay-kit.ts), with the V8 flag `npm start` passes. Server CPU per
 * delivered message is the user + system time of every node process, from /proc, over the run;
 * Redis's own is shown beside it (PostgreSQL's is not counted: its backends are shared with
 * whatever else uses the machine's server). Redis is a redis-server of this run's own on a free
 * port, and PostgreSQL a fresh schema (server/test/databases.ts; DATABASE_URL_TEST to point
 * elsewhere), dropped at the end.
 *
 * It fails (exit 1) only when a message is not delivered exactly once and in order, or an error
 * frame comes; speed never fails it. Progress goes to stderr; stdout gets a table, then one JSON
 * line. BENCH_CLIENTS, BENCH_WINDOW, BENCH_WARMUP_MS and BENCH_MS change the load.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { hashPassword } from '../server/auth/password.js'
import { openDatabase } from '../server/db/connect.js'
import { migrateToLatest } from '../server/db/migrate.js'
import { RELATIONS_KEY_BYTES } from '../server/db/relations.js'
import {
  createTestDatabase,
  POSTGRES_TEST_URL,
  postgresUnavailable,
  type TestDatabase,
} from '../server/test/databases.js'
import { loginSecretFor, TEST_BCRYPT_COST } from '../server/test/harness.js'
import { freePort, type NodeProcess, shareRelationsKey, startNode } from '../server/test/processes.js'
import { hasRedisServer, startRedisServer, stopRedisServer } from '../server/test/redis.js'
import { createSelfSignedCertificate, httpsOptions } from '../server/tls.js'
import { generateRsaOaepKeyPair } from '../shared/crypto/primitives.js'
import {
  type BenchUser,
  cpuPerMessage,
  createUsers,
  LoadGenerator,
  round,
  startBareRelay,
} from './relay-kit.js'
import type { RelayResult } from './server-load.js'

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 200)
const WINDOW = Number(process.env.BENCH_WINDOW ?? 50)
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1_500)
const DURATION_MS = Number(process.env.BENCH_MS ?? 4_000)
const NODE_COUNTS = [1, 2, 3] as const
/** As `npm start` runs the server (package.json; bench/server.ts says why). */
const NODE_FLAGS = ['--max-semi-space-size=64']
const ENTRY = 'bench/cluster-node.ts'

const progress = (text: string) => process.stderr.write(`${text}\n`)

/** Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat. */
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())

/** User + system CPU of a process (all its threads) so far, in µs. */
async function processCpuMicros(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may hold spaces; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS
}

const sumCpu = async (pids: readonly number[]) =>
  (await Promise.all(pids.map(processCpuMicros))).reduce((sum, value) => sum + value, 0)

/**
 * The node of each client. Pair k is clients 2k and 2k+1; its first client goes to node k mod n,
 * and in every other run of n pairs its second goes to the next node, so the nodes get the same
 * number of clients and half the pairs cross (none with one node).
 */
function placeClients(clients: number, nodes: number): number[] {
  const placement: number[] = []
  for (let pair = 0; pair * 2 < clients; pair++) {
    const first = pair % nodes
    const crossing = Math.floor(pair / nodes) % 2 === 1
    placement.push(first, crossing ? (first + 1) % nodes : first)
  }
  return placement.slice(0, clients)
}

interface Measured {
  readonly name: string
  readonly nodes: number
  readonly crossingPairs: number
  readonly result: RelayResult
  /** µs of server CPU per delivered message: node processes (or the bench process for the bare relay). */
  readonly serverCpu: number
  /** µs of Redis CPU per delivered message, when there is a Redis. */
  readonly redisCpu: number | undefined
}

const correct = (measured: Measured) =>
  measured.result.errors === 0 && measured.result.undelivered === 0 && measured.result.mismatched === 0

async function main(): Promise<void> {
  const started = performance.now()
  const postgres = await postgresUnavailable()
  if (postgres !== undefined) throw new Error(`bench:cluster needs PostgreSQL: ${postgres}`)
  if (!hasRedisServer()) throw new Error('bench:cluster needs the redis-server binary, got none')

  const dir = await mkdtemp(join(tmpdir(), 'secure-chat-bench-cluster-'))
  const load = new LoadGenerator()
  const running: NodeProcess[] = []
  let database: TestDatabase | undefined
  let redis: Awaited<ReturnType<typeof startRedisServer>> | undefined
  const measured: Measured[] = []
  try {
    progress('making a certificate and an RSA login key')
    const [certificate, loginKey, passwordHash] = await Promise.all([
      createSelfSignedCertificate(),
      generateRsaOaepKeyPair(),
      // Nobody logs in: any hash will do, the cheapest is quickest.
      hashPassword(loginSecretFor('violet-anchor-bench-mosaic-42'), TEST_BCRYPT_COST),
    ])
    const certFile = join(dir, 'cert.pem')
    const keyFile = join(dir, 'key.pem')
    await writeFile(certFile, certificate.cert)
    await writeFile(keyFile, certificate.key, { mode: 0o600 })
    const tlsEnv = { TLS_CERT: certFile, TLS_KEY: keyFile }
    const userOptions = { loginKey: loginKey.publicKeySpki, passwordHash }
    await load.started

    const run = async (
      name: string,
      users: BenchUser[],
      urls: string[],
      cpuOf: { nodes: readonly number[]; redis?: number } | 'this process',
      nodes: number,
      placement: number[],
    ): Promise<void> => {
      progress(`${name}`)
      const ownCpu = process.cpuUsage()
      const nodesBefore = cpuOf === 'this process' ? 0 : await sumCpu(cpuOf.nodes)
      const redisBefore =
        cpuOf === 'this process' || cpuOf.redis === undefined ? 0 : await sumCpu([cpuOf.redis])
      const result = await load.run<RelayResult>({
        cmd: 'relay',
        mode: cpuOf === 'this process' ? 'bare' : 'server',
        url: urls[0]!,
        urls: placement.map((node) => urls[node]!),
        ca: certificate.cert,
        tokens: users.map((user) => user.token),
        names: users.map((user) => user.username),
        window: WINDOW,
        warmupMs: WARMUP_MS,
        durationMs: DURATION_MS,
      })
      const delivered = Math.max(1, result.total)
      const serverCpu =
        cpuOf === 'this process'
          ? cpuPerMessage(process.cpuUsage(ownCpu), delivered)
          : round(((await sumCpu(cpuOf.nodes)) - nodesBefore) / delivered, 1)
      const redisCpu =
        cpuOf === 'this process' || cpuOf.redis === undefined
          ? undefined
          : round(((await sumCpu([cpuOf.redis])) - redisBefore) / delivered, 1)
      let crossingPairs = 0
      for (let pair = 0; pair * 2 + 1 < placement.length; pair++) {
        if (placement[pair * 2] !== placement[pair * 2 + 1]) crossingPairs += 1
      }
      const entry = { name, nodes, crossingPairs, result, serverCpu, redisCpu }
      measured.push(entry)
      progress(
        `  ${result.msgsPerSec} msgs/s, p99 ${result.p99Ms} ms, ${serverCpu} µs server CPU per message; ` +
          `${result.total}/${result.sent} delivered, ${result.mismatched} out of place, ${result.errors} error frames`,
      )
    }

    // --- the floor: the bare ws relay in this process ------------------------------------------
    const bare = await startBareRelay(httpsOptions(certificate))
    await run(
      'bare ws relay',
      Array.from({ length: CLIENTS }, (_, index) => ({
        id: index,
        username: `bare${index}`,
        token: '',
        deviceTokens: [],
      })),
      [bare.url],
      'this process',
      1,
      placeClients(CLIENTS, 1),
    )
    await bare.close()

    /** Nodes of one configuration, each with a data directory of its own and one relations key. */
    const startNodes = async (
      label: string,
      count: number,
      env: Record<string, string>,
      relationsKey: Uint8Array,
    ) => {
      const dataDirs = Array.from({ length: count }, (_, index) => join(dir, `${label}-node${index + 1}`))
      await shareRelationsKey(dataDirs, relationsKey)
      const nodes = await Promise.all(
        dataDirs.map((dataDir, index) =>
          startNode({
            label: `${label}-node${index + 1}`,
            env,
            dataDir,
            ca: certificate.cert,
            entry: ENTRY,
            nodeFlags: NODE_FLAGS,
          }),
        ),
      )
      running.push(...nodes)
      return nodes
    }
    const runNodes = async (
      name: string,
      users: BenchUser[],
      nodes: readonly NodeProcess[],
      redisPid: number | undefined,
    ) => {
      await run(
        name,
        users,
        nodes.map((node) => `${node.origin.replace(/^https/, 'wss')}/ws`),
        { nodes: nodes.map((node) => node.child.pid!), redis: redisPid },
        nodes.length,
        placeClients(CLIENTS, nodes.length),
      )
      for (const node of nodes) await node.stop()
      running.splice(0)
    }

    // --- one node on SQLite --------------------------------------------------------------------
    {
      // The node's database file is in its data directory, where server/main.ts puts it.
      const sqlite = await openDatabase({
        kind: 'sqlite',
        file: join(dir, 'sqlite-node1', 'secure-chat.sqlite'),
      })
      await migrateToLatest(sqlite.db, 'sqlite')
      const users = await createUsers(sqlite.db, 'sqlite-', CLIENTS, userOptions)
      await sqlite.close()
      await runNodes(
        '1 node, SQLite',
        users,
        await startNodes('sqlite', 1, tlsEnv, randomBytes(RELATIONS_KEY_BYTES)),
        undefined,
      )
    }

    // --- 1, 2 and 3 nodes on PostgreSQL and Redis ------------------------------------------------
    database = await createTestDatabase('postgres')
    const databaseUrl = new URL(POSTGRES_TEST_URL)
    databaseUrl.searchParams.set('options', `-c search_path=${database.location}`)
    const redisPort = await freePort()
    redis = await startRedisServer(redisPort)
    // Every configuration on the PostgreSQL database is one deployment to its key check.
    const postgresRelationsKey = randomBytes(RELATIONS_KEY_BYTES)
    const clusterEnv = {
      ...tlsEnv,
      DATABASE_URL: databaseUrl.toString(),
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    }
    {
      // PostgreSQL without Redis (one node, its bus in the process): which of the two costs what.
      const users = await createUsers(database.db, 'pg0-', CLIENTS, userOptions)
      const { REDIS_URL: _none, ...aloneEnv } = clusterEnv
      await runNodes(
        '1 node, PostgreSQL, no Redis',
        users,
        await startNodes('pg-alone', 1, aloneEnv, postgresRelationsKey),
        undefined,
      )
    }
    for (const count of NODE_COUNTS) {
      // Users of their own per configuration: nothing left in a queue from one run reaches the next.
      const users = await createUsers(database.db, `pg${count}-`, CLIENTS, userOptions)
      await runNodes(
        `${count} node${count > 1 ? 's' : ''}, PostgreSQL + Redis`,
        users,
        await startNodes(`pg${count}`, count, clusterEnv, postgresRelationsKey),
        redis.pid!,
      )
    }
  } finally {
    load.exit()
    for (const node of running) await node.kill()
    if (redis) await stopRedisServer(redis)
    await database?.dispose()
    await rm(dir, { recursive: true, force: true })
  }

  const bare = measured[0]!
  const rows: string[][] = [
    ['configuration', 'msgs/s', 'vs bare', 'p50', 'p99', 'server CPU/msg', 'notes'],
    ...measured.map((entry) => [
      entry.name,
      String(entry.result.msgsPerSec),
      `${round(entry.result.msgsPerSec / Math.max(1, bare.result.msgsPerSec))}x`,
      `${entry.result.p50Ms} ms`,
      `${entry.result.p99Ms} ms`,
      `${entry.serverCpu} µs`,
      [
        `${entry.result.total}/${entry.result.sent} delivered${correct(entry) ? '' : ` — FAILED: ${entry.result.undelivered} undelivered, ${entry.result.mismatched} out of place, ${entry.result.errors} error frames`}`,
        entry.nodes > 1 ? `${entry.crossingPairs}/${CLIENTS / 2} pairs cross nodes` : undefined,
        entry.redisCpu === undefined ? undefined : `Redis ${entry.redisCpu} µs/msg`,
      ]
        .filter((note) => note !== undefined)
        .join('; '),
    ]),
  ]
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  const line = (row: string[]) =>
    row
      .map((cell, column) =>
        column === 0 || column === row.length - 1
          ? cell.padEnd(widths[column]!)
          : cell.padStart(widths[column]!),
      )
      .join('  ')
      .trimEnd()
  process.stdout.write(
    `${rows.map(line).join('\n')}\n(${CLIENTS} clients, window ${WINDOW}, ${DURATION_MS / 1000} s measured after ${WARMUP_MS / 1000} s of warm-up per configuration; ` +
      `server CPU: user + system of the node processes, all threads; ${round((performance.now() - started) / 1000, 1)} s in all)\n`,
  )
  process.stdout.write(
    `${JSON.stringify({
      clients: CLIENTS,
      window: WINDOW,
      configurations: measured.map((entry) => ({
        name: entry.name,
        nodes: entry.nodes,
        msgsPerSec: entry.result.msgsPerSec,
        p50Ms: entry.result.p50Ms,
        p99Ms: entry.result.p99Ms,
        serverCpuMicrosPerMessage: entry.serverCpu,
        redisCpuMicrosPerMessage: entry.redisCpu ?? null,
        sent: entry.result.sent,
        delivered: entry.result.total,
        crossingPairs: entry.crossingPairs,
        correct: correct(entry),
      })),
    })}\n`,
  )
  if (!measured.every(correct)) {
    process.stderr.write('bench:cluster: a message was not delivered exactly once and in order\n')
    process.exitCode = 1
  }
}

await main()
// The load generator's pipe must not keep a finished benchmark waiting.
process.stdout.write('', () => process.exit(process.exitCode ?? 0))
