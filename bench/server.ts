/**
 * `npm run bench:server`: the real server (build() + listen, a temporary SQLite database with the
 * production settings: WAL, synchronous=FULL) driven over loopback TLS by a load generator in a
 * child process (bench/server-load.ts), and, in the same run, a bare `ws` relay with the same
 * certificate and the same load as the floor to compare with.
 *
 * - relay: 200 clients in 100 pairs, each keeping 50 messages in flight to its partner (218-byte
 *   envelopes, the size of a short text message); messages delivered per second, send→deliver
 *   latency. The real server authenticates, validates every frame, stores every message durably
 *   before `accepted`, and takes it out of the queue on the cumulative ack. The bare relay and the
 *   server run in turns, twice each, and each keeps its better run (other work on the machine
 *   during one run should not decide the ratio); the table lists every run.
 * - relay, 3 devices: 60 users (BENCH_DEVICE_USERS) in pairs, each with 3 devices and one
 *   connection per device; every device keeps the same window of `send.devices` in flight to its
 *   partner (an envelope per device of the partner, a sent copy per other device of its own: 5
 *   stored rows a send), and every device acknowledges its own queue. The headline counts copies
 *   delivered to the recipient's devices; sent copies are counted apart. Latency is send → the
 *   first of the recipient's devices, and send → all three. The floor is the bare relay splitting
 *   the same envelopes, one line each, to the same 5 sockets (bench/relay-kit.ts), in turns as above.
 * - drain: 10,000 messages queued for an offline user, timed from its auth frame to the last one;
 *   and 10,000 queued for each of 3 devices of one user, drained by all three at once (from the
 *   first socket's open to the last device's last message).
 * - connections: idle authenticated connections held at once, and the server's memory per
 *   connection (resident set growth after a GC).
 * - logins: 50 concurrent logins at bcrypt cost 12, with the event loop's delay p99 meanwhile.
 *
 * Users, keys and session tokens are written straight into the database beforehand (registering
 * 16,000 users through bcrypt would take an hour and measure nothing of interest here). The
 * per-user send and per-connection frame rate limits are raised for the run: they exist to stop
 * one abusive account, and each bench client sends far faster than any person; so are the
 * per-sender queue share (the drain's backlog comes from one sender) and the limit on sockets not
 * yet authenticated per address and the TLS handshake limits per address (every load client
 * connects from 127.0.0.1). Everything else is
 * as shipped. Progress goes to stderr; stdout gets a table, then one JSON line.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { build } from '../server/app.js'
import { hashPassword } from '../server/auth/password.js'
import { openDatabase } from '../server/db/connect.js'
import { migrateToLatest } from '../server/db/migrate.js'
import {
  BCRYPT_COST,
  MAX_QUEUED_BYTES_PER_RECIPIENT,
  MAX_QUEUED_MESSAGES_PER_RECIPIENT,
} from '../server/limits.js'
import { loginSecretFor } from '../server/test/harness.js'
import { createSelfSignedCertificate, httpsOptions } from '../server/tls.js'
import { generateRsaOaepKeyPair } from '../shared/crypto/primitives.js'
import {
  BENCH_LIMITS,
  cpuPerMessage,
  createUsers,
  LoadGenerator,
  round,
  startBareRelay,
} from './relay-kit.js'
import type { DevicesRelayResult, RelayResult } from './server-load.js'

const RELAY_CLIENTS = Number(process.env.BENCH_CLIENTS ?? 200)
const WINDOW = Number(process.env.BENCH_WINDOW ?? 50)
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1_500)
const DURATION_MS = Number(process.env.BENCH_MS ?? 4_000)
/** Runs of each relay, in turns; the better of each counts. */
const RELAY_ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const DRAIN_MESSAGES = 10_000
/** Users (in pairs) of the case with several devices per user, and their devices each. */
const DEVICE_USERS = Number(process.env.BENCH_DEVICE_USERS ?? 60)
const DEVICES_PER_USER = 3
/** Messages each device keeps in flight in that case (each of them 5 copies). */
const DEVICE_WINDOW = Number(process.env.BENCH_DEVICE_WINDOW ?? WINDOW)
const LOGINS = 50
const WANTED_CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16_000)
/** File descriptors kept free for everything else the process opens. */
const FD_MARGIN = 1_000

const progress = (text: string) => process.stderr.write(`${text}\n`)

/**
 * V8's young generation: 64 MiB semi-spaces instead of the default 16, as `npm start` runs the
 * server (package.json). A relay allocates short-lived strings and buffers for every frame; a
 * larger nursery means fewer scavenges and less promoted garbage (~15 % less CPU per message here).
 * The bench re-runs itself with the flag when started without it (`tsx bench/server.ts`).
 */
const SEMI_SPACE_FLAG = '--max-semi-space-size=64'
if (!process.execArgv.includes(SEMI_SPACE_FLAG)) {
  const rerun = spawnSync(
    process.execPath,
    [SEMI_SPACE_FLAG, ...process.execArgv, ...process.argv.slice(1)],
    {
      stdio: 'inherit',
    },
  )
  process.exit(rerun.status ?? 1)
}

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** The fd limit this process inherited (what `ulimit -n` says in its shell). */
function fdLimit(): number {
  try {
    const text = execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()
    return text === 'unlimited' ? Number.POSITIVE_INFINITY : Number(text)
  } catch {
    return 1024
  }
}

/** Time the event loop was busy (not waiting for I/O) per message delivered, in µs. */
const loopPerMessage = (utilization: { active: number }, messages: number) =>
  round((utilization.active * 1000) / Math.max(1, messages), 1)

async function main(): Promise<void> {
  const benchStarted = performance.now()
  const limit = fdLimit()
  const connectionTarget = Math.max(0, Math.min(WANTED_CONNECTIONS, limit - FD_MARGIN))
  progress(`fd limit ${limit}: holding up to ${connectionTarget} connections`)
  if (connectionTarget < 15_000) {
    progress(`  (raise it with \`ulimit -n 20000\` before the run to hold more than 15,000)`)
  }
  const dir = await mkdtemp(join(tmpdir(), 'secure-chat-bench-'))
  const load = new LoadGenerator()
  try {
    progress('making a certificate, an RSA login key and a bcrypt hash (cost 12)')
    // What a client sends is the login secret derived from the password (shared/login-secret.ts),
    // and the server keeps a bcrypt hash of that; any 32 bytes stand for one here.
    const loginSecret = loginSecretFor('violet-anchor-bench-mosaic-42')
    const [certificate, loginKey, passwordHash] = await Promise.all([
      createSelfSignedCertificate(),
      generateRsaOaepKeyPair(),
      hashPassword(loginSecret, BCRYPT_COST),
    ])
    const tls = httpsOptions(certificate)
    const database = await openDatabase({ kind: 'sqlite', file: join(dir, 'bench.sqlite') })
    await migrateToLatest(database.db, 'sqlite')

    progress(
      `creating ${RELAY_CLIENTS + DEVICE_USERS + 4 + LOGINS + connectionTarget} users with keys and session tokens`,
    )
    const userOptions = { loginKey: loginKey.publicKeySpki, passwordHash }
    const relayUsers = await createUsers(database.db, 'relay-', RELAY_CLIENTS, userOptions)
    const [drainSender, drainRecipient] = await createUsers(database.db, 'drain-', 2, userOptions)
    const deviceUsers = await createUsers(database.db, 'devices-', DEVICE_USERS, {
      ...userOptions,
      devices: DEVICES_PER_USER,
    })
    const [drainDevicesSender] = await createUsers(database.db, 'drain3-sender-', 1, userOptions)
    const [drainDevicesRecipient] = await createUsers(database.db, 'drain3-', 1, {
      ...userOptions,
      devices: DEVICES_PER_USER,
    })
    const loginUsers = await createUsers(database.db, 'login-', LOGINS, userOptions)
    const idleUsers = await createUsers(database.db, 'idle-', connectionTarget, userOptions)
    const app = await build({
      db: database.db,
      https: tls,
      log: false,
      limits: {
        ...BENCH_LIMITS,
        loginRateLimit: { max: 1_000, timeWindowMs: 60_000 },
        // The drain queues 10,000 messages from one sender: its share is the whole queue here.
        maxQueuedMessagesPerSender: MAX_QUEUED_MESSAGES_PER_RECIPIENT,
        maxQueuedBytesPerSender: MAX_QUEUED_BYTES_PER_RECIPIENT,
      },
    })
    await app.listen({ host: '127.0.0.1', port: 0 })
    const { port } = app.server.address() as AddressInfo
    const origin = `https://127.0.0.1:${port}`
    const url = `wss://127.0.0.1:${port}/ws`
    await load.started

    // --- relay: bare floor, then the real server -------------------------------------------------
    // Bare floor and real server in turns, twice each; each side keeps its better run, so a burst of
    // unrelated load on the machine during one run does not decide the comparison.
    interface Measured {
      readonly result: RelayResult
      readonly cpu: number
      readonly loop: number
    }
    const measure = async (mode: 'bare' | 'server', target: string): Promise<Measured> => {
      const cpu = process.cpuUsage()
      const loop = performance.eventLoopUtilization()
      const result = await load.run<RelayResult>({
        cmd: 'relay',
        mode,
        url: target,
        ca: certificate.cert,
        tokens: relayUsers.map((user) => user.token),
        names: relayUsers.map((user) => user.username),
        window: WINDOW,
        warmupMs: WARMUP_MS,
        durationMs: DURATION_MS,
      })
      const measured = {
        result,
        cpu: cpuPerMessage(process.cpuUsage(cpu), result.total),
        loop: loopPerMessage(performance.eventLoopUtilization(loop), result.total),
      }
      progress(
        `  ${mode === 'bare' ? 'bare relay' : 'server relay'}: ${result.msgsPerSec} msgs/s, ${measured.cpu} µs of server CPU per message (${result.errors} error frames)`,
      )
      return measured
    }
    const better = (a: Measured, b: Measured) => (b.result.msgsPerSec > a.result.msgsPerSec ? b : a)
    const bare = await startBareRelay(tls)
    let bareBest: Measured | undefined
    let relayBest: Measured | undefined
    const rounds: string[] = []
    for (let turn = 0; turn < RELAY_ROUNDS; turn++) {
      const bareRun = await measure('bare', bare.url)
      const relayRun = await measure('server', url)
      rounds.push(`${relayRun.result.msgsPerSec} / ${bareRun.result.msgsPerSec}`)
      bareBest = bareBest ? better(bareBest, bareRun) : bareRun
      relayBest = relayBest ? better(relayBest, relayRun) : relayRun
    }

    // --- relay with three devices per user: the same turns, the same floor (fanning out) ----------
    interface MeasuredDevices {
      readonly result: DevicesRelayResult
      readonly cpu: number
    }
    const measureDevices = async (mode: 'bare' | 'server', target: string): Promise<MeasuredDevices> => {
      const cpu = process.cpuUsage()
      const result = await load.run<DevicesRelayResult>({
        cmd: 'relay.devices',
        mode,
        url: target,
        ca: certificate.cert,
        users: deviceUsers.map((user) => ({ name: user.username, tokens: [...user.deviceTokens] })),
        window: DEVICE_WINDOW,
        warmupMs: WARMUP_MS,
        durationMs: DURATION_MS,
      })
      const measured = { result, cpu: cpuPerMessage(process.cpuUsage(cpu), result.totalRecipientCopies) }
      progress(
        `  ${mode === 'bare' ? 'bare relay' : 'server relay'}, ${DEVICES_PER_USER} devices: ${result.recipientCopiesPerSec} copies/s to recipients (+ ${result.ownCopiesPerSec} own), ${measured.cpu} µs of server CPU per copy (${result.errors} error frames, ${result.undelivered} undelivered, ${result.mismatched} out of place)`,
      )
      return measured
    }
    const betterDevices = (a: MeasuredDevices, b: MeasuredDevices) =>
      b.result.recipientCopiesPerSec > a.result.recipientCopiesPerSec ? b : a
    let bareDevicesBest: MeasuredDevices | undefined
    let devicesBest: MeasuredDevices | undefined
    const deviceRounds: string[] = []
    for (let turn = 0; turn < RELAY_ROUNDS; turn++) {
      const bareRun = await measureDevices('bare', bare.url)
      const serverRun = await measureDevices('server', url)
      deviceRounds.push(`${serverRun.result.recipientCopiesPerSec} / ${bareRun.result.recipientCopiesPerSec}`)
      bareDevicesBest = bareDevicesBest ? betterDevices(bareDevicesBest, bareRun) : bareRun
      devicesBest = devicesBest ? betterDevices(devicesBest, serverRun) : serverRun
    }
    await bare.close()
    const devicesResult = devicesBest!.result
    const bareDevicesResult = bareDevicesBest!.result
    const bareResult = bareBest!.result
    const relayResult = relayBest!.result
    const { cpu: bareCpu, loop: bareLoop } = bareBest!
    const { cpu: relayCpu, loop: relayLoop } = relayBest!

    // --- drain -------------------------------------------------------------------------------------
    const drain = await load.run<{
      accepted: number
      sendErrors: number
      seconds: number
      fromReadySeconds: number
      received: number
      queued: number
    }>({
      cmd: 'drain',
      url,
      ca: certificate.cert,
      sender: drainSender!.token,
      recipient: drainRecipient!.token,
      recipientName: drainRecipient!.username,
      count: DRAIN_MESSAGES,
    })
    progress(`  drained ${drain.received} in ${round(drain.seconds, 3)} s`)
    const drainDevices = await load.run<{
      accepted: number
      sendErrors: number
      seconds: number
      received: number
      queued: number
      devices: number
    }>({
      cmd: 'drain.devices',
      url,
      ca: certificate.cert,
      sender: drainDevicesSender!.token,
      recipients: [...drainDevicesRecipient!.deviceTokens],
      recipientName: drainDevicesRecipient!.username,
      count: DRAIN_MESSAGES,
    })
    progress(
      `  drained ${drainDevices.received} (${drainDevices.devices} devices) in ${round(drainDevices.seconds, 3)} s`,
    )

    // --- logins under event-loop measurement -------------------------------------------------------
    progress(`logins: ${LOGINS} at once (bcrypt cost ${BCRYPT_COST})`)
    gc()
    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    const logins = await load.run<{ statuses: number[]; seconds: number }>({
      cmd: 'logins',
      origin,
      ca: certificate.cert,
      users: loginUsers.map((user) => ({ username: user.username, loginSecret })),
    })
    delay.disable()
    const loginOk = logins.statuses.filter((status) => status === 200).length
    const eventLoopP99Ms = round(delay.percentile(99) / 1e6)
    const eventLoopMaxMs = round(delay.max / 1e6)
    progress(`  ${loginOk}/${LOGINS} logins in ${logins.seconds} s; event loop p99 ${eventLoopP99Ms} ms`)

    // --- idle connections --------------------------------------------------------------------------
    // Memory per connection is the marginal cost: resident set growth (after a GC) while the second
    // half opens, so whatever earlier phases left in the heap does not count either way.
    progress(`connections: opening ${connectionTarget} authenticated connections`)
    const half = Math.floor(connectionTarget / 2)
    const firstHalf = await load.run<{ held: number; failed: number; seconds: number }>({
      cmd: 'hold',
      url,
      ca: certificate.cert,
      tokens: idleUsers.slice(0, half).map((user) => user.token),
      concurrency: 200,
    })
    gc()
    const before = process.memoryUsage()
    const secondHalf = await load.run<{ held: number; failed: number; seconds: number }>({
      cmd: 'hold',
      url,
      ca: certificate.cert,
      tokens: idleUsers.slice(half).map((user) => user.token),
      concurrency: 200,
    })
    gc()
    const after = process.memoryUsage()
    const hold = {
      held: firstHalf.held + secondHalf.held,
      failed: firstHalf.failed + secondHalf.failed,
      seconds: round(firstHalf.seconds + secondHalf.seconds),
    }
    const serverSide = [...app.relay.connections].filter((connection) => connection.state === 'open').length
    const held = Math.min(hold.held, serverSide)
    const added = secondHalf.held
    const bytesPerConnection = added > 0 ? Math.round((after.rss - before.rss) / added) : 0
    const heapPerConnection = added > 0 ? Math.round((after.heapUsed - before.heapUsed) / added) : 0
    progress(`  held ${held} (client ${hold.held}, server ${serverSide}) in ${hold.seconds} s`)
    await load.run({ cmd: 'release' })
    await app.close()
    await database.close()

    const ratio = relayResult.msgsPerSec / Math.max(1, bareResult.msgsPerSec)
    const rows: [string, string, string][] = [
      [
        'relay (real server)',
        `${relayResult.msgsPerSec} msgs/s`,
        `p50 ${relayResult.p50Ms} ms, p99 ${relayResult.p99Ms} ms`,
      ],
      [
        'bare ws relay',
        `${bareResult.msgsPerSec} msgs/s`,
        `p50 ${bareResult.p50Ms} ms, p99 ${bareResult.p99Ms} ms`,
      ],
      [
        'relay / bare',
        `${round(ratio)}x`,
        `must be ≥ 0.3x (aim 0.5x); runs (server / bare): ${rounds.join(', ')}`,
      ],
      [
        `relay, ${DEVICES_PER_USER} devices (real server)`,
        `${devicesResult.recipientCopiesPerSec} copies/s`,
        `to recipients' devices; + ${devicesResult.ownCopiesPerSec} own copies/s, ${devicesResult.sendsPerSec} sends/s; ` +
          `first device p50 ${devicesResult.firstP50Ms} ms, p99 ${devicesResult.firstP99Ms} ms; ` +
          `all ${DEVICES_PER_USER} p50 ${devicesResult.allP50Ms} ms, p99 ${devicesResult.allP99Ms} ms`,
      ],
      [
        `bare ws relay, ${DEVICES_PER_USER} devices`,
        `${bareDevicesResult.recipientCopiesPerSec} copies/s`,
        `+ ${bareDevicesResult.ownCopiesPerSec} own copies/s; first device p50 ${bareDevicesResult.firstP50Ms} ms, ` +
          `p99 ${bareDevicesResult.firstP99Ms} ms; all ${DEVICES_PER_USER} p50 ${bareDevicesResult.allP50Ms} ms, p99 ${bareDevicesResult.allP99Ms} ms`,
      ],
      [
        `relay / bare, ${DEVICES_PER_USER} devices`,
        `${round(devicesResult.recipientCopiesPerSec / Math.max(1, bareDevicesResult.recipientCopiesPerSec))}x`,
        `copies to recipients; ${DEVICE_USERS} users × ${DEVICES_PER_USER} devices; runs (server / bare): ${deviceRounds.join(', ')}`,
      ],
      [
        `server CPU per copy, ${DEVICES_PER_USER} devices`,
        `${devicesBest!.cpu} µs`,
        `bare relay: ${bareDevicesBest!.cpu} µs (per copy to a recipient; own copies ride along)`,
      ],
      [
        'server event loop per message',
        `${relayLoop} µs`,
        `bare relay: ${bareLoop} µs (time busy, main thread)`,
      ],
      ['server CPU per message', `${relayCpu} µs`, `bare relay: ${bareCpu} µs (user + system, all threads)`],
      [
        'load generator CPU per message',
        `${relayResult.clientCpuMicros} µs`,
        `bare relay: ${bareResult.clientCpuMicros} µs (its own process)`,
      ],
      [
        'drain',
        `${drain.received} msgs in ${round(drain.seconds, 3)} s`,
        `${round(drain.fromReadySeconds, 3)} s after ready; must be < 1 s`,
      ],
      [
        `drain, ${drainDevices.devices} devices`,
        `${drainDevices.received} msgs in ${round(drainDevices.seconds, 3)} s`,
        `${DRAIN_MESSAGES} per device, all drained at once; must be < 1 s`,
      ],
      [
        'idle connections held',
        `${held}`,
        `must be > 15,000; opened in ${hold.seconds} s, ${hold.failed} failed`,
      ],
      ['memory per connection', `${bytesPerConnection} B RSS`, `${heapPerConnection} B of JS heap`],
      [
        'concurrent logins',
        `${loginOk}/${LOGINS} in ${logins.seconds} s`,
        `event loop p99 ${eventLoopP99Ms} ms, max ${eventLoopMaxMs} ms`,
      ],
    ]
    const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => row[column]!.length)))
    const line = (row: [string, string, string]) =>
      `${row[0].padEnd(widths[0]!)}  ${row[1].padStart(widths[1]!)}  ${row[2]}`
    process.stdout.write(
      `${line(['case', 'result', 'notes'])}\n${rows.map(line).join('\n')}\n` +
        `(${RELAY_CLIENTS} clients, window ${WINDOW}, ${RELAY_ROUNDS} runs of ${DURATION_MS / 1000} s per relay, the better kept; ` +
        `${round((performance.now() - benchStarted) / 1000, 1)} s in all)\n`,
    )
    process.stdout.write(
      `${JSON.stringify({
        relay: {
          clients: RELAY_CLIENTS,
          msgsPerSec: relayResult.msgsPerSec,
          p50Ms: relayResult.p50Ms,
          p99Ms: relayResult.p99Ms,
        },
        bareRelay: { msgsPerSec: bareResult.msgsPerSec, p50Ms: bareResult.p50Ms, p99Ms: bareResult.p99Ms },
        relayDevices: {
          users: DEVICE_USERS,
          devicesPerUser: DEVICES_PER_USER,
          copiesPerSec: devicesResult.recipientCopiesPerSec,
          ownCopiesPerSec: devicesResult.ownCopiesPerSec,
          sendsPerSec: devicesResult.sendsPerSec,
          firstP50Ms: devicesResult.firstP50Ms,
          firstP99Ms: devicesResult.firstP99Ms,
          allP50Ms: devicesResult.allP50Ms,
          allP99Ms: devicesResult.allP99Ms,
        },
        bareRelayDevices: {
          copiesPerSec: bareDevicesResult.recipientCopiesPerSec,
          ownCopiesPerSec: bareDevicesResult.ownCopiesPerSec,
          firstP50Ms: bareDevicesResult.firstP50Ms,
          firstP99Ms: bareDevicesResult.firstP99Ms,
          allP50Ms: bareDevicesResult.allP50Ms,
          allP99Ms: bareDevicesResult.allP99Ms,
        },
        drain: { messages: drain.received, seconds: round(drain.seconds, 3) },
        drainDevices: {
          devices: drainDevices.devices,
          messages: drainDevices.received,
          seconds: round(drainDevices.seconds, 3),
        },
        connections: { held, bytesPerConnection },
        logins: { concurrent: LOGINS, eventLoopP99Ms },
      })}\n`,
    )
  } finally {
    load.exit()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
// Exit explicitly once the results are out: the run's last handles (the load generator's pipe, a
// worker's port) must not keep a finished benchmark waiting.
process.stdout.write('', () => process.exit(0))
