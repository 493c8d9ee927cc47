/**
 * docs/operations.md, run: the configurations and commands its "(tested)" sections show are taken
 * out of the file and used as they are, with only the machine's paths and ports put in.
 *
 *   - nginx (Debian's) in front of two nodes sharing one PostgreSQL database: registration, log-in
 *     and the relay's WebSocket pass through it, and a message sent through it reaches its
 *     recipient through it, whichever node each lands on;
 *   - the systemd unit passes `systemd-analyze verify` (and a broken copy does not);
 *   - the SQLite backup copies a database the server has open; pg_dump and pg_restore carry a
 *     live PostgreSQL database, queued messages included, into an empty one.
 *
 * The tools come from Debian's packages (.ci/run installs them). Without one, the test that needs
 * it is skipped at a desk and fails under CI=true.
 */
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import Database from 'better-sqlite3'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase } from '../server/db/connect.js'
import { migrateToLatest } from '../server/db/migrate.js'
import { RelationsKey } from '../server/db/relations.js'
import { POSTGRES_TEST_URL, postgresUnavailable } from '../server/test/databases.js'
import { httpsFetch, signUp, startServer, type TestServer, testCertificate } from '../server/test/harness.js'
import { REDIS_TEST_URL, redisUnavailable, testChannelPrefix } from '../server/test/redis.js'
import { connect, newMessageId } from '../server/test/ws-client.js'

const run = promisify(execFile)
const doc = await readFile(join(import.meta.dirname, '..', 'docs', 'operations.md'), 'utf8')

/** The first ```lang block after the heading that starts with `heading`. */
function codeBlock(heading: string, lang: string): string {
  const at = doc.indexOf(`\n${heading}`)
  if (at === -1) throw new Error(`docs/operations.md: expected a section "${heading}", got none`)
  const start = doc.indexOf(`\`\`\`${lang}\n`, at)
  const end = doc.indexOf('\n```', start + 1)
  if (start === -1 || end === -1)
    throw new Error(`docs/operations.md: expected a ${lang} block in "${heading}"`)
  return doc.slice(start + lang.length + 4, end + 1)
}

/** Replaces each key by its value, and fails when the doc no longer has one of them. */
function fill(text: string, values: Record<string, string>): string {
  let out = text
  for (const [placeholder, value] of Object.entries(values)) {
    if (!out.includes(placeholder))
      throw new Error(`docs/operations.md: expected "${placeholder}" in the block`)
    out = out.replaceAll(placeholder, value)
  }
  return out
}

async function hasTool(name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

/** Skipped at a desk without the tool; under CI the test runs and fails on its absence. */
async function toolsFor(...names: string[]): Promise<boolean> {
  const missing: string[] = []
  for (const name of names) if (!(await hasTool(name))) missing.push(name)
  if (missing.length === 0) return true
  if (process.env.CI === 'true')
    throw new Error(`expected ${missing.join(', ')} on this machine (.ci/run installs them), got none`)
  return false
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

const portOf = (server: TestServer) => Number(new URL(server.origin).port)

describe('docs/operations.md: nginx in front of two nodes', async () => {
  // The cluster's services: under CI=true their absence fails the run (databases.ts, redis.ts).
  const available =
    (await toolsFor('nginx')) &&
    (await postgresUnavailable()) === undefined &&
    (await redisUnavailable()) === undefined
  let dir: string
  let nodes: TestServer[] = []
  let nginx: ReturnType<typeof spawn> | undefined
  let proxy: Pick<TestServer, 'origin' | 'ca' | 'request'>

  beforeAll(async () => {
    if (!available) return
    dir = await mkdtemp(join(tmpdir(), 'secure-chat-nginx-'))
    // Two cluster members (one PostgreSQL database, one Redis, one relations key), each trusting
    // nginx's X-Forwarded-For.
    const cluster = {
      trustProxy: '127.0.0.1',
      redis: { url: REDIS_TEST_URL, channelPrefix: testChannelPrefix() },
      relationsKey: RelationsKey.random(),
    }
    const first = await startServer({ dialect: 'postgres', ...cluster })
    const second = await startServer({ database: first.database, ...cluster })
    nodes = [first, second]
    const ca = join(dir, 'node-ca.pem')
    const cert = join(dir, 'fullchain.pem')
    await writeFile(ca, first.ca)
    await writeFile(cert, first.ca)
    // The nodes' self-signed certificate stands in for the public one too.
    const { key } = await testCertificate()
    await writeFile(join(dir, 'privkey.pem'), key)
    const port = await freePort()
    const server = fill(codeBlock('## nginx in front of several nodes', 'nginx'), {
      'listen 443 ssl;': `listen 127.0.0.1:${port} ssl;`,
      'server 127.0.0.1:8443;': `server 127.0.0.1:${portOf(first)};`,
      'server 127.0.0.1:8444;': `server 127.0.0.1:${portOf(second)};`,
      '/etc/letsencrypt/live/chat.example.org/fullchain.pem': cert,
      '/etc/letsencrypt/live/chat.example.org/privkey.pem': join(dir, 'privkey.pem'),
      '/srv/secure-chat/certs/localhost.pem': ca,
      'server_name chat.example.org;': 'server_name localhost;',
    })
    const config = join(dir, 'nginx.conf')
    await writeFile(
      config,
      [
        ...(process.getuid?.() === 0 ? ['user root;'] : []),
        'daemon off;',
        'worker_processes 1;',
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${join(dir, 'error.log')} warn;`,
        'events { worker_connections 256; }',
        'http {',
        '    access_log off;',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(
          (kind) => `    ${kind}_temp_path ${join(dir, `${kind}-temp`)};`,
        ),
        server,
        '}',
        '',
      ].join('\n'),
    )
    await run('nginx', ['-t', '-q', '-p', dir, '-c', config])
    nginx = spawn('nginx', ['-p', dir, '-c', config], { stdio: 'ignore' })
    const origin = `https://127.0.0.1:${port}`
    const agent = new Agent({ ca: first.ca, keepAlive: false, servername: 'localhost' })
    proxy = { origin, ca: first.ca, request: (path, options) => httpsFetch(agent, origin, path, options) }
    // nginx is up when it answers.
    for (let attempt = 0; ; attempt++) {
      try {
        if ((await proxy.request('/api/v1/health')).status === 200) break
      } catch (error) {
        if (attempt > 200) throw error
      }
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  })

  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((resolve) => nginx!.once('exit', resolve))
      nginx.kill('SIGQUIT')
      await exited
    }
    const [first, second] = nodes
    await second?.close()
    await first?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it.runIf(available)('passes registration, log-in and the relay through to either node', async () => {
    const alice = await signUp(proxy as TestServer)
    const bob = await signUp(proxy as TestServer)
    // Each of the next sockets goes to one of the two nodes, in turn: both online, on different
    // nodes or not, a message reaches bob live.
    const bobSocket = await connect(proxy, bob.token, 'bob via nginx')
    const aliceSocket = await connect(proxy, alice.token, 'alice via nginx')
    const live = newMessageId()
    aliceSocket.sendMessage(bob.client.username, { id: live })
    await aliceSocket.next('accepted', (frame) => frame.id === live)
    expect((await bobSocket.receive(1))[0]).toMatchObject({ id: live, from: alice.client.username })
    await bobSocket.close()
    // Offline: stored once in the shared database, drained through nginx wherever bob lands.
    const queued = newMessageId()
    aliceSocket.sendMessage(bob.client.username, { id: queued })
    await aliceSocket.next('accepted', (frame) => frame.id === queued)
    const again = await connect(proxy, bob.token, 'bob via nginx again')
    // The live one again first, if its acknowledgement had not been stored on the other node when
    // bob came back (delivery is at least once; the client keeps ids), then the queued one.
    const drained = await again.until(() => {
      const ids = again.frames.flatMap((frame) => (frame.type === 'deliver' ? [frame.id] : []))
      return ids.includes(queued) ? ids : undefined
    }, 'the queued message')
    expect(drained.filter((id) => id !== live)).toEqual([queued])
    await again.close()
    await aliceSocket.close()
    const ready = await proxy.request('/ready')
    expect(ready.status).toBe(200)
  })
})

describe('docs/operations.md: systemd', async () => {
  const available = await toolsFor('systemd-analyze')

  it.runIf(available)('the unit passes systemd-analyze verify, and a broken copy does not', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'secure-chat-systemd-'))
    try {
      const unit = codeBlock('## systemd', 'ini')
      expect(unit.startsWith('# /etc/systemd/system/secure-chat@.service\n')).toBe(true)
      const file = join(dir, 'secure-chat@.service')
      await writeFile(file, unit)
      await run('systemd-analyze', ['verify', file])
      const broken = join(dir, 'secure-chat-broken@.service')
      await writeFile(broken, unit.replace('ExecStart=/usr/bin/npm', 'ExecStart=npm-without-a-path'))
      await expect(run('systemd-analyze', ['verify', broken])).rejects.toThrow()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('docs/operations.md: backups', async () => {
  const sqliteAvailable = await toolsFor('sqlite3')
  const postgresAvailable = await toolsFor('pg_dump', 'pg_restore')

  it.runIf(sqliteAvailable)('the SQLite backup copies a database the server has open', async () => {
    const server = await startServer({ dialect: 'sqlite' })
    const backups = await mkdtemp(join(tmpdir(), 'secure-chat-backup-'))
    try {
      const alice = await signUp(server)
      const dataDir = dirname(server.database.location)
      await writeFile(join(dataDir, 'relations.key'), randomBytes(32))
      const commands = fill(codeBlock('## Backups', 'sh'), {
        '/srv/secure-chat/data/secure-chat.sqlite': server.database.location,
        '/srv/secure-chat/data/': `${dataDir}/`,
        '/var/backups/': `${backups}/`,
      })
      await run('sh', ['-e', '-c', commands])
      const copy = new Database(join(backups, 'secure-chat.sqlite'), { readonly: true })
      try {
        expect(copy.pragma('integrity_check', { simple: true })).toBe('ok')
        expect(copy.prepare('select username from users').all()).toEqual([
          { username: alice.client.username },
        ])
      } finally {
        copy.close()
      }
      expect(await readFile(join(backups, 'relations.key'))).toEqual(
        await readFile(join(dataDir, 'relations.key')),
      )
    } finally {
      await server.close()
      await rm(backups, { recursive: true, force: true })
    }
  })

  it.runIf(postgresAvailable)(
    'pg_dump and pg_restore carry a live database, its queue too, into an empty one',
    async () => {
      const name = `ops_${randomBytes(6).toString('hex')}`
      const url = (database: string) => {
        const parsed = new URL(POSTGRES_TEST_URL)
        parsed.pathname = `/${database}`
        return parsed.toString()
      }
      const admin = new pg.Client({ connectionString: POSTGRES_TEST_URL })
      await admin.connect()
      const backups = await mkdtemp(join(tmpdir(), 'secure-chat-pgdump-'))
      let server: TestServer | undefined
      let opened: Awaited<ReturnType<typeof openDatabase>> | undefined
      try {
        await admin.query(`create database ${name}`)
        await admin.query(`create database ${name}_restored`)
        opened = await openDatabase({ kind: 'postgres', url: url(name) })
        await migrateToLatest(opened.db, 'postgres')
        server = await startServer({
          database: {
            ...opened,
            location: name,
            reopen: () => openDatabase({ kind: 'postgres', url: url(name) }),
            // Closed below, after the server.
            dispose: async () => {},
          },
        })
        const alice = await signUp(server)
        const bob = await signUp(server)
        const socket = await connect(server, alice.token)
        const id = newMessageId()
        socket.sendMessage(bob.client.username, { id })
        await socket.next('accepted', (frame) => frame.id === id)
        await socket.close()

        const [dump, restore] = postgresCommands()
        const env = { ...process.env, DATABASE_URL: url(name) }
        await run('sh', ['-e', '-c', fill(dump, { '/var/backups/': `${backups}/` })], { env })
        await run('sh', ['-e', '-c', fill(restore, { '/var/backups/': `${backups}/` })], {
          env: { ...process.env, DATABASE_URL: url(`${name}_restored`) },
        })
        const restored = new pg.Client({ connectionString: url(`${name}_restored`) })
        await restored.connect()
        try {
          const users = await restored.query('select username from users order by username')
          expect(users.rows.map((row) => row.username)).toEqual(
            [alice.client.username, bob.client.username].sort(),
          )
          const queued = await restored.query('select count(*)::int as count from messages')
          expect(queued.rows[0].count).toBe(1)
        } finally {
          await restored.end()
        }
      } finally {
        await server?.close()
        await opened?.close()
        // Without force: a query the closing server still has in flight finishes first, rather
        // than being killed under a client nobody listens to any more.
        for (const database of [name, `${name}_restored`]) await dropWhenFree(admin, database)
        await admin.end()
        await rm(backups, { recursive: true, force: true })
      }
    },
  )
})

async function dropWhenFree(admin: pg.Client, database: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await admin.query(`drop database if exists ${database}`)
      return
    } catch (error) {
      // 55006: the database is being accessed by other users.
      if ((error as { code?: string }).code !== '55006' || attempt > 400) throw error
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
}

/** The pg_dump command block and the pg_restore command in the text after it. */
function postgresCommands(): [string, string] {
  const at = doc.indexOf('PostgreSQL, online:')
  const start = doc.indexOf('```sh\n', at)
  const end = doc.indexOf('\n```', start + 1)
  const dump = doc.slice(start + 6, end + 1)
  const restore = /`(pg_restore [^`]+)`/.exec(doc.slice(end))?.[1]
  if (!dump.startsWith('pg_dump ') || !restore)
    throw new Error('docs/operations.md: expected the pg_dump and pg_restore commands')
  return [dump, `${restore}\n`]
}
