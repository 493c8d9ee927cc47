/** The real process: `node --import tsx server/main.ts`, as `npm start` runs it (which adds a V8 heap flag). */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes, X509Certificate } from 'node:crypto'
import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createTestDatabase,
  POSTGRES_TEST_URL,
  postgresUnavailable,
  type TestDatabase,
} from './test/databases.js'
import { httpsFetch, removeDir } from './test/harness.js'
import { freePort } from './test/processes.js'
import {
  hasRedisServer,
  REDIS_TEST_URL,
  redisUnavailable,
  startRedisServer,
  stopRedisServer,
} from './test/redis.js'

const ROOT = resolve(import.meta.dirname, '..')
const METRICS_TOKEN_FOR_TEST = 'main-test-metrics-token-0123456789abcdef'

interface Running {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<number | null>
}

function run(env: Record<string, string>, args: string[] = []): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString()
  })
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)))
  return { child, stdout: () => out, stderr: () => err, exited }
}

/** Resolves once the process printed `pattern`; rejects if it exits first. */
function waitFor(running: Running, pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((done, fail) => {
    const check = () => {
      const match = running.stdout().match(pattern)
      if (match) {
        running.child.stdout?.off('data', check)
        done(match)
      }
    }
    running.child.stdout?.on('data', check)
    running.exited.then((code) => fail(new Error(`exited with ${code}: ${running.stderr()}`)))
    check()
  })
}

describe('server process', () => {
  let dir: string
  let env: Record<string, string>
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'secure-chat-main-'))
    env = { DATA_DIR: join(dir, 'data'), CERT_DIR: join(dir, 'certs') }
  })
  afterAll(async () => {
    await removeDir(dir)
  })

  it('starts on first run with a new certificate, prints URL and fingerprint, stops on SIGTERM', async () => {
    const server = run(env)
    try {
      const [, url] = await waitFor(server, /listening on (https:\/\/127\.0\.0\.1:\d+)/)
      const [, fingerprint] = await waitFor(server, /SHA-256 fingerprint: ([0-9A-F:]{95})/)
      expect(server.stdout()).toContain('self-signed, created now')
      expect(server.stdout()).toMatch(
        /relations key: \S+ \(created now\), its check recorded in the database/,
      )
      const cert = await readFile(join(dir, 'certs', 'localhost.pem'), 'utf8')
      expect(new X509Certificate(cert).fingerprint256).toBe(fingerprint)

      const agent = new Agent({ ca: cert })
      const health = await httpsFetch(agent, url!, '/api/v1/health')
      agent.destroy()
      expect(health.status).toBe(200)
      expect(health.body).toEqual({ status: 'ok' })
    } finally {
      server.child.kill('SIGTERM')
    }
    expect(await server.exited).toBe(0)
    expect(server.stdout()).toContain('secure-chat stopped')
  })

  it('reuses the certificate and the database on the next run', async () => {
    const first = await readFile(join(dir, 'certs', 'localhost.pem'), 'utf8')
    const server = run(env)
    try {
      await waitFor(server, /SPKI, base64\): \S+/)
      expect(server.stdout()).not.toContain('created now')
      expect(server.stdout()).not.toContain('applied migrations')
      expect(server.stdout()).toContain('relations.key, the one the database was set up with')
      expect(server.stdout()).toContain(new X509Certificate(first).fingerprint256)
    } finally {
      server.child.kill('SIGINT')
    }
    expect(await server.exited).toBe(0)
  })

  it('refuses a relations.key other than the database’s, and takes it with --replace-relations-key', async () => {
    const keyFile = join(dir, 'data', 'relations.key')
    const original = await readFile(keyFile)
    await writeFile(keyFile, randomBytes(32))
    const refused = run(env)
    expect(await refused.exited).toBe(1)
    expect(refused.stderr()).toMatch(/^cannot use the relations key: .*--replace-relations-key$/m)
    expect(refused.stdout()).not.toContain('listening')

    const replacing = run(env, ['--replace-relations-key'])
    try {
      await waitFor(replacing, /SPKI, base64\): \S+/)
      expect(replacing.stdout()).toContain(
        "relations key: replacing the database's with this data directory's (--replace-relations-key)",
      )
      expect(replacing.stdout()).toMatch(
        /relations key: \S+, replaced the database's; 0 relations stored under the old key deleted/,
      )
    } finally {
      replacing.child.kill('SIGTERM')
    }
    expect(await replacing.exited).toBe(0)
    // The old file is now the stranger.
    await writeFile(keyFile, original)
    const old = run(env)
    expect(await old.exited).toBe(1)
    expect(old.stderr()).toContain('expected the relations key this database was set up with')
  })

  it('refuses a database written by a newer server, saying so', async () => {
    const file = join(dir, 'data', 'secure-chat.sqlite')
    const sqlite = new BetterSqlite3(file)
    sqlite
      .prepare('insert into kysely_migration (name, timestamp) values (?, ?)')
      .run('2999-01-01-01-future', 'x')
    sqlite.close()
    const server = run(env)
    expect(await server.exited).toBe(1)
    expect(server.stderr()).toMatch(
      /cannot open the database: .*unknown migration\(s\) "2999-01-01-01-future"/,
    )
  })

  it('says PostgreSQL is unreachable, naming host and port but never the password, and exits 1', async () => {
    const server = run({
      ...env,
      DATABASE_URL: 'postgres://chat:pw-secret-42@127.0.0.1:1/chat',
      METRICS_TOKEN: METRICS_TOKEN_FOR_TEST,
    })
    expect(await server.exited).toBe(1)
    // The configuration came first, with the password masked and the token not shown.
    expect(server.stdout()).toContain('configuration:\n  host: 127.0.0.1\n  port: 0\n')
    expect(server.stdout()).toContain('  database: PostgreSQL postgres://chat:***@127.0.0.1:1/chat\n')
    expect(server.stdout()).toContain(
      '  metrics: on the main port with a bearer token (METRICS_TOKEN, not shown)',
    )
    expect(server.stderr() + server.stdout()).not.toContain(METRICS_TOKEN_FOR_TEST)
    expect(server.stderr()).toMatch(
      /^cannot open the database: PostgreSQL is unreachable at 127\.0\.0\.1:1 \(ECONNREFUSED\)/m,
    )
    expect(server.stderr() + server.stdout()).not.toContain('pw-secret-42')
    expect(server.stdout()).not.toContain('listening')
  })

  it('serves /ready, and /metrics on its metrics port, never printing the token', async () => {
    // A data directory of its own: the test before this one left a database from the future.
    const server = run({
      ...env,
      DATA_DIR: join(dir, 'data-metrics'),
      METRICS_PORT: '0',
      METRICS_TOKEN: METRICS_TOKEN_FOR_TEST,
    })
    try {
      const [, url] = await waitFor(server, /listening on (https:\/\/127\.0\.0\.1:\d+)/)
      const [, metricsUrl] = await waitFor(server, /metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)/)
      expect(server.stdout()).toContain(
        '  metrics: http://127.0.0.1:0/metrics (bearer token); on the main port',
      )
      const agent = new Agent({ ca: await readFile(join(dir, 'certs', 'localhost.pem'), 'utf8') })
      const ready = await httpsFetch(agent, url!, '/ready')
      agent.destroy()
      expect(ready.status).toBe(200)
      expect(ready.body).toEqual({ status: 'ready', checks: { database: 'ok', bus: 'ok' } })

      const refused = await fetch(metricsUrl!)
      expect(refused.status).toBe(401)
      const served = await fetch(metricsUrl!, {
        headers: { authorization: `Bearer ${METRICS_TOKEN_FOR_TEST}` },
      })
      expect(served.status).toBe(200)
      const text = await served.text()
      expect(text).toContain('secure_chat_connections_open 0')
      expect(text).toContain('nodejs_eventloop_lag_p99_seconds')
    } finally {
      server.child.kill('SIGTERM')
    }
    expect(await server.exited).toBe(0)
    expect(server.stdout() + server.stderr()).not.toContain(METRICS_TOKEN_FOR_TEST)
  })

  it('exits with status 2 and a clear message on bad configuration', async () => {
    const server = run({ ...env, PORT: 'eighty' })
    expect(await server.exited).toBe(2)
    expect(server.stderr()).toContain(
      'configuration error: --port/PORT: expected an integer 0–65535, got "eighty"',
    )
  })
})

const clusterSkip = (await postgresUnavailable()) ?? (await redisUnavailable())

describe.skipIf(clusterSkip !== undefined)('server process as a cluster member (REDIS_URL)', () => {
  let dir: string
  let database: TestDatabase
  let env: Record<string, string>
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'secure-chat-main-cluster-'))
    database = await createTestDatabase('postgres')
    // The test schema, through libpq's options parameter: the process migrates nothing else.
    const url = new URL(POSTGRES_TEST_URL)
    url.searchParams.set('options', `-c search_path=${database.location}`)
    env = { DATA_DIR: join(dir, 'data'), CERT_DIR: join(dir, 'certs'), DATABASE_URL: url.toString() }
  })
  afterAll(async () => {
    await database?.dispose()
    await removeDir(dir)
  })

  it('starts on PostgreSQL and Redis, says so, and stops on SIGTERM', async () => {
    const server = run({ ...env, REDIS_URL: REDIS_TEST_URL })
    try {
      await waitFor(server, /SPKI, base64\): \S+/)
      expect(server.stdout()).toContain('database: PostgreSQL (DATABASE_URL)')
      expect(server.stdout()).toContain(`relay bus: Redis ${REDIS_TEST_URL} (a cluster member)`)
    } finally {
      server.child.kill('SIGTERM')
    }
    expect(await server.exited).toBe(0)
  })

  it('a second node whose relations.key is not the first one’s refuses to start and says what to do; the same file starts', async () => {
    // The first test's node recorded its key's check in the database.
    const other = { ...env, DATA_DIR: join(dir, 'data-node2'), REDIS_URL: REDIS_TEST_URL }
    const refused = run(other)
    expect(await refused.exited).toBe(1)
    expect(refused.stderr()).toMatch(
      /^cannot use the relations key: .*data-node2\/relations\.key: expected the relations key this database was set up with \(check [0-9a-f]{12}…\), got another \(check [0-9a-f]{12}…\)\. Copy relations\.key from a node that serves this database/m,
    )
    expect(refused.stdout()).not.toContain('listening')
    // Copied from the first node, as docs/operations.md says: it starts.
    await copyFile(join(dir, 'data', 'relations.key'), join(dir, 'data-node2', 'relations.key'))
    const started = run(other)
    try {
      await waitFor(started, /SPKI, base64\): \S+/)
      expect(started.stdout()).toMatch(
        /relations key: \S+data-node2\/relations\.key, the one the database was set up with/,
      )
    } finally {
      started.child.kill('SIGTERM')
    }
    expect(await started.exited).toBe(0)
  })

  it('refuses a Redis Cluster, which it does not support, saying so, and exits 1', async () => {
    if (!hasRedisServer()) return
    const port = await freePort()
    // A node in cluster mode: INFO says cluster_enabled:1 (no slots are needed to see it).
    const redis = await startRedisServer(port, [
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      join(dir, `nodes-${port}.conf`),
    ])
    try {
      const server = run({ ...env, REDIS_URL: `redis://127.0.0.1:${port}` })
      expect(await server.exited).toBe(1)
      expect(server.stderr()).toMatch(
        new RegExp(
          `^Redis at redis://127\\.0\\.0\\.1:${port}: expected a single Redis .*got Redis Cluster`,
          'm',
        ),
      )
      expect(server.stdout()).not.toContain('listening')
    } finally {
      await stopRedisServer(redis)
    }
  })

  it('says Redis is unreachable, naming the address but never the password, and exits 1', async () => {
    const port = await new Promise<number>((done) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo
        probe.close(() => done(port))
      })
    })
    const server = run({ ...env, REDIS_URL: `redis://relay:redis-secret-7@127.0.0.1:${port}` })
    expect(await server.exited).toBe(1)
    expect(server.stderr()).toMatch(
      new RegExp(
        `^cannot reach Redis at redis://relay:\\*\\*\\*@127\\.0\\.0\\.1:${port}: connect ECONNREFUSED`,
        'm',
      ),
    )
    expect(server.stderr() + server.stdout()).not.toContain('redis-secret-7')
    expect(server.stdout()).not.toContain('listening')
  })
})
