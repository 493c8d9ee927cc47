/**
 * `npm run bench:client`: how fast a backlog of queued messages drains end to end, in each client,
 * beside the ratchet's own one-way decrypt rate for the same count measured in the same run.
 *
 * For each size N (default 2,000 and 10,000; `npm run bench:client -- 500` or BENCH_CLIENT_SIZES=500
 * for a quick run), a fresh recipient is registered and goes offline, a fresh sender queues N text
 * messages for it through the real relay, and then:
 *
 * - terminal: `secure-chat read --json` (client-terminal/bin.mjs, what the installed command runs)
 *   as a child process, timed from spawn to its last JSON line, which must be N lines with the ids
 *   that were sent. The account uses the production key derivation (PBKDF2, 600,000 iterations):
 *   no test override, which the CLI honours only under the test runner anyway. The fixed cost of a
 *   read (node start, loading the client from its bundle, unlock, connect, an empty catch-up,
 *   exit) is measured on its own as `read --json` of an account with nothing queued (median of
 *   three; the `register` commands before them build the bundle if a source changed), and the
 *   unlock alone as one PBKDF2 derivation in this process; the "net" rate leaves the fixed cost out.
 * - web: the production PWA (`vite build`, served by the same server) in Debian Chromium, the
 *   account registered in that browser profile; timed from the click on "Log in" until the contact
 *   list shows N unread messages from the sender (every message stored and counted), then opening
 *   the conversation until its newest message shows. The "net" rate counts from the first message
 *   shown to the last.
 * - ratchet: the same shape of backlog in memory (one prekey message, then N−1 messages on the
 *   same chain, each a padded text message like the clients send), decrypted in order by
 *   acceptSession + decryptMessage: the floor the issue measures the drains against. The goal is a
 *   drain rate of at least half of it; the table prints the ratio.
 *
 * Queueing needs the sender to exceed the per-user send rate (100/s, burst 1,000), so messages are
 * queued by a server with that limit raised; the drains then run on a server started again on the
 * same SQLite file and port with every limit as shipped (the recipients' receipts and acks meet the
 * real limits). bcrypt runs at the production cost throughout. The sender encrypts with the real
 * session code (shared/session.ts: X3DH from the recipient's prekey bundle, then the Double Ratchet)
 * and sends real `send` frames over WSS; it is not a ChatClient because nothing on its side is timed.
 *
 * BENCH_CLIENT_ONLY=terminal or =web runs one client; BENCH_CLIENT_NODE_FLAGS adds node flags to
 * each terminal drain (to profile it), BENCH_CLIENT_WEB_PROFILE=<dir> writes a CPU profile of each
 * web drain's page there (and the IndexedDB calls it made, counted, beside it). Progress goes to stderr; stdout gets a table,
 * then one JSON line. It takes several minutes at the default sizes, so `npm run bench` leaves it out.
 */

import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import type { AddressInfo } from 'node:net'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import type { Page } from 'playwright-core'
import { build as viteBuild } from 'vite'
import WebSocket from 'ws'
import {
  contactButton,
  Device,
  passwordField,
  register as registerInBrowser,
} from '../client-web/e2e/browser.js'
import { type BuildOptions, build } from '../server/app.js'
import { openDatabase } from '../server/db/connect.js'
import { migrateToLatest } from '../server/db/migrate.js'
import type { Db } from '../server/db/schema.js'
import { MAX_QUEUED_BYTES_PER_RECIPIENT, MAX_QUEUED_MESSAGES_PER_RECIPIENT } from '../server/limits.js'
import {
  decryptToken,
  httpsFetch,
  makeClient,
  strongPassword,
  type TestClient,
} from '../server/test/harness.js'
import { createSelfSignedCertificate, httpsOptions } from '../server/tls.js'
import { DEFAULT_DEVICE_ID } from '../shared/address.js'
import { deriveStorageKey, newStorageKeyParameters } from '../shared/at-rest.js'
import { toBase64Url } from '../shared/bytes.js'
import { encodeContent } from '../shared/client/content.js'
import { LoginResponse, PreKeyBundleResponse } from '../shared/codec/api.js'
import { preKeyBundleFromJson } from '../shared/codec/keys.js'
import { decode } from '../shared/codec/schema.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyBundle,
  publicPreKey,
} from '../shared/identity.js'
import { newMessageId } from '../shared/message-id.js'
import {
  acceptSession,
  decryptMessage,
  encryptMessage,
  type Session,
  startSession,
} from '../shared/session.js'
import type { SessionNames } from '../shared/x3dh.js'

const DEFAULT_SIZES = [2_000, 10_000]
const SIZES = parseSizes(process.argv.slice(2).join(',') || process.env.BENCH_CLIENT_SIZES)
const ONLY = process.env.BENCH_CLIENT_ONLY
const RUN_TERMINAL = ONLY === undefined || ONLY === 'terminal'
const RUN_WEB = ONLY === undefined || ONLY === 'web'
/**
 * BENCH_CLIENT_NODE_FLAGS: extra node flags for each drain's `read` (not the empty ones), e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/profiles" for a V8 CPU profile of every drain.
 */
const DRAIN_NODE_FLAGS = (process.env.BENCH_CLIENT_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean)
/** BENCH_CLIENT_WEB_PROFILE=<dir>: a CPU profile of the page (DevTools protocol) for each web drain. */
const WEB_PROFILE_DIR = process.env.BENCH_CLIENT_WEB_PROFILE
/** Empty reads whose median is the terminal client's fixed cost per command. */
const EMPTY_READS = 3
/** `send` frames the queueing sender keeps unanswered at once (the relay answers each with `accepted`). */
const SEND_WINDOW = 200
/** Messages decrypted (and not counted) before the ratchet is timed. */
const RATCHET_WARM_UP = 500
/** Timed runs of the ratchet per size; the fastest counts (other work on the machine is not the ratchet's). */
const RATCHET_RUNS = 3
/** How often the web drain's progress is looked at (the resolution of its timings). */
const WEB_POLL_MS = 50
/** How often a progress line goes to stderr during a long drain. */
const PROGRESS_EVERY_MS = 10_000

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url))
const secureChatBin = join(repositoryRoot, 'client-terminal', 'bin.mjs')

const progress = (text: string) => process.stderr.write(`${text}\n`)
const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits
const seconds = (ms: number) => round(ms / 1000, 3)
const rate = (messages: number, ms: number) => Math.round(messages / (ms / 1000))

function parseSizes(text: string | undefined): number[] {
  if (text === undefined || text.trim() === '') return DEFAULT_SIZES
  const sizes = text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map(Number)
  for (const size of sizes) {
    // The relay queues at most 10,000 messages per recipient (server/limits.ts).
    if (!Number.isSafeInteger(size) || size < 1 || size > 10_000) {
      throw new Error(`bench:client sizes: expected integers from 1 to 10,000, got "${text}"`)
    }
  }
  return sizes
}

/** The text of backlog message `index` (0-based) of `count`: short, like a chat message. */
const messageText = (index: number, count: number) =>
  `backlog message ${index + 1} of ${count}: see you at the station at six`

// --- The server: one SQLite file, two lives ----------------------------------------------------

interface RunningServer {
  readonly origin: string
  readonly url: string
  close(): Promise<void>
}

async function startServer(
  file: string,
  tls: ReturnType<typeof httpsOptions>,
  port: number,
  limits: BuildOptions['limits'],
): Promise<RunningServer> {
  const database = await openDatabase({ kind: 'sqlite', file })
  await migrateToLatest(database.db, 'sqlite')
  const app = await build({ db: database.db as Db, https: tls, log: false, ...(limits ? { limits } : {}) })
  await app.listen({ host: '127.0.0.1', port })
  const bound = (app.server.address() as AddressInfo).port
  return {
    origin: `https://127.0.0.1:${bound}`,
    url: `wss://127.0.0.1:${bound}/ws`,
    close: async () => {
      await app.close()
      await database.close()
    },
  }
}

/**
 * Limits for the queueing server only: senders far beyond a person's rate, one sender's share of
 * the queue as large as the whole queue (the backlog comes from one sender), and more registrations
 * from 127.0.0.1 than a quarter of an hour allows. Everything else as shipped.
 */
const QUEUEING_LIMITS: BuildOptions['limits'] = {
  maxQueuedMessagesPerSender: MAX_QUEUED_MESSAGES_PER_RECIPIENT,
  maxQueuedBytesPerSender: MAX_QUEUED_BYTES_PER_RECIPIENT,
  sendRatePerUser: { perSecond: 1e9, burst: 1e9 },
  frameRatePerConnection: { perSecond: 1e9, burst: 1e9 },
  registerRateLimit: { max: 1_000, timeWindowMs: 60_000 },
}

// --- The sender: real ratchet messages through the real relay ----------------------------------

interface Sender {
  readonly client: TestClient
  readonly token: string
}

async function registerSender(agent: Agent, origin: string): Promise<Sender> {
  const client = await makeClient()
  const registered = await httpsFetch(agent, origin, '/api/v1/register', { body: client.registerBody() })
  if (registered.status !== 201) throw new Error(`register sender: ${registered.status} ${registered.text}`)
  const login = await httpsFetch(agent, origin, '/api/v1/login', {
    body: { username: client.username, loginSecret: client.loginSecret },
  })
  if (login.status !== 200) throw new Error(`login sender: ${login.status} ${login.text}`)
  const token = await decryptToken(client, decode(LoginResponse, login.body, 'login response'))
  return { client, token: toBase64Url(token) }
}

async function fetchBundle(
  agent: Agent,
  origin: string,
  sender: Sender,
  peer: string,
): Promise<PreKeyBundle> {
  const response = await httpsFetch(agent, origin, `/api/v1/users/${encodeURIComponent(peer)}/bundle`, {
    headers: { authorization: `Bearer ${sender.token}` },
  })
  if (response.status !== 200) throw new Error(`bundle of ${peer}: ${response.status} ${response.text}`)
  return preKeyBundleFromJson(decode(PreKeyBundleResponse, response.body, 'prekey bundle'))
}

/**
 * `count` envelopes on one new session, as a client that was never answered sends them. `names`
 * are the sender's and the reader's usernames: both are bound into the session (docs/protocol.md
 * §4.4), so a backlog made under other names is one the reader cannot decrypt at all.
 */
async function encryptBacklog(
  identity: Identity,
  bundle: PreKeyBundle,
  names: SessionNames,
  count: number,
): Promise<{ id: string; envelope: Uint8Array }[]> {
  let session: Session = await startSession(identity, bundle, names)
  const messages: { id: string; envelope: Uint8Array }[] = []
  for (let index = 0; index < count; index++) {
    const sentAt = Date.now()
    const id = toBase64Url(newMessageId(sentAt))
    const encrypted = await encryptMessage(
      session,
      encodeContent({ v: 1, type: 'text', id, text: messageText(index, count), sentAt }),
    )
    session = encrypted.session
    messages.push({ id, envelope: encrypted.envelope })
  }
  return messages
}

/** Sends every message to `peer` over one relay connection; resolves once the relay accepted all. */
function sendAll(
  url: string,
  ca: string,
  sender: Sender,
  peer: string,
  messages: readonly { id: string; envelope: Uint8Array }[],
): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ca, perMessageDeflate: false })
    let next = 0
    let accepted = 0
    let ready = false
    const pump = () => {
      while (next < messages.length && next - accepted < SEND_WINDOW) {
        const message = messages[next++]!
        ws.send(
          JSON.stringify({
            v: 1,
            type: 'send',
            id: message.id,
            to: peer,
            body: toBase64Url(message.envelope),
          }),
        )
      }
    }
    ws.once('open', () => ws.send(JSON.stringify({ v: 1, type: 'auth', token: sender.token })))
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { type: string; code?: string; message?: string }
      if (frame.type === 'ready') {
        ready = true
        pump()
      } else if (frame.type === 'accepted') {
        if (++accepted === messages.length) {
          ws.close(1000)
          resolve()
        } else pump()
      } else if (frame.type === 'error') {
        ws.terminate()
        reject(new Error(`queueing for ${peer}: the relay answered ${frame.code}: ${frame.message}`))
      }
    })
    ws.once('error', reject)
    ws.once('close', (code) => {
      if (!ready || accepted < messages.length) {
        reject(new Error(`queueing for ${peer}: closed with ${code} after ${accepted} accepted`))
      }
    })
  })
}

async function queueBacklog(
  agent: Agent,
  server: RunningServer,
  ca: string,
  peer: string,
  count: number,
): Promise<{ sender: string; ids: string[] }> {
  const sender = await registerSender(agent, server.origin)
  const bundle = await fetchBundle(agent, server.origin, sender, peer)
  const names = { initiator: sender.client.username, responder: peer }
  const messages = await encryptBacklog(sender.client.identity, bundle, names, count)
  await sendAll(server.url, ca, sender, peer, messages)
  progress(`  queued ${count} messages from ${sender.client.username} for ${peer}`)
  return { sender: sender.client.username, ids: messages.map((message) => message.id) }
}

// --- The ratchet alone -----------------------------------------------------------------------------

/** Alice, and Bob with a signed and a one-time prekey, as the bundle Alice starts a session from. */
async function twoParties() {
  const [alice, bob] = await Promise.all([generateIdentity(), generateIdentity()])
  const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 1)
  const [oneTimePreKey] = await generateOneTimePreKeys(bob, DEFAULT_DEVICE_ID, 2, 1)
  const bundle: PreKeyBundle = {
    deviceId: DEFAULT_DEVICE_ID,
    identity: bob.public,
    signedPreKey: publicPreKey(signedPreKey),
    oneTimePreKey: publicPreKey(oneTimePreKey!),
  }
  return { alice, bob, signedPreKey, oneTimePreKey: oneTimePreKey!, bundle }
}

/** One-way decrypt of a backlog shaped like the queued ones: acceptSession, then N−1 decryptMessage. */
async function ratchetDrain(count: number): Promise<{ ms: number }> {
  const { alice, bob, signedPreKey, oneTimePreKey, bundle } = await twoParties()
  const messages = await encryptBacklog(alice, bundle, { initiator: 'alice', responder: 'bob' }, count)
  const started = performance.now()
  const first = await acceptSession(
    bob,
    messages[0]!.envelope,
    { signedPreKey, oneTimePreKey },
    { initiator: 'alice', responder: 'bob' },
  )
  let session = first.session
  for (let index = 1; index < messages.length; index++) {
    session = (await decryptMessage(session, messages[index]!.envelope)).session
  }
  return { ms: performance.now() - started }
}

/**
 * bench:crypto's one-way case (bench/crypto.ts): Alice encrypts and Bob decrypts, message after
 * message, in one process. The issue's goal is a drain at least half this rate; the decrypt-only
 * floor above is the stricter comparison (a reader does only the decrypting half).
 */
async function cryptoOneWay(count: number): Promise<{ ms: number }> {
  const { alice, bob, signedPreKey, oneTimePreKey, bundle } = await twoParties()
  const message = new Uint8Array(100)
  const started = performance.now()
  let sender = await startSession(alice, bundle, { initiator: 'alice', responder: 'bob' })
  const first = await encryptMessage(sender, message)
  sender = first.session
  let receiver = (
    await acceptSession(
      bob,
      first.envelope,
      { signedPreKey, oneTimePreKey },
      { initiator: 'alice', responder: 'bob' },
    )
  ).session
  for (let index = 1; index < count; index++) {
    const sent = await encryptMessage(sender, message)
    sender = sent.session
    receiver = (await decryptMessage(receiver, sent.envelope)).session
  }
  return { ms: performance.now() - started }
}

// --- The terminal client ----------------------------------------------------------------------------

interface TerminalAccount {
  readonly username: string
  readonly password: string
  readonly dataDir: string
}

interface CliRun {
  readonly code: number
  readonly lines: string[]
  /** From spawn to the last line on stdout (to exit when there was none), ms. */
  readonly lastLineMs: number
  readonly exitMs: number
  readonly stderr: string
}

/** Runs `secure-chat <args>` as the account, with no setting beyond what a user would give. */
function runSecureChat(
  account: TerminalAccount,
  origin: string,
  caFile: string,
  args: string[],
  nodeFlags: readonly string[] = [],
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(
      process.execPath,
      [
        ...nodeFlags,
        secureChatBin,
        ...args,
        '--server',
        origin,
        '--ca',
        caFile,
        '--data-dir',
        account.dataDir,
      ],
      {
        cwd: repositoryRoot,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          SECURE_CHAT_PASSWORD: account.password,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const lines: string[] = []
    let partial = ''
    let lastLineAt: number | undefined
    let stderr = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop() ?? ''
      if (parts.length > 0) {
        lastLineAt = performance.now()
        lines.push(...parts)
      }
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk
    })
    child.once('error', reject)
    child.once('close', (code) => {
      const exitedAt = performance.now()
      if (partial !== '') lines.push(partial)
      resolve({
        code: code ?? 1,
        lines,
        lastLineMs: (lastLineAt ?? exitedAt) - started,
        exitMs: exitedAt - started,
        stderr,
      })
    })
  })
}

async function checkedRun(account: TerminalAccount, origin: string, caFile: string, args: string[]) {
  const run = await runSecureChat(account, origin, caFile, args)
  if (run.code !== 0) {
    throw new Error(`secure-chat ${args.join(' ')} exited ${run.code}: ${run.stderr.trim()}`)
  }
  return run
}

interface TerminalResult {
  readonly messages: number
  readonly lastLineMs: number
  readonly exitMs: number
  /** Why the read did not finish (its exit code and message), if it did not: a result in itself. */
  readonly failure?: string
}

/**
 * Drains the backlog with `read --json` and checks that exactly the ids sent were printed. A read
 * that fails (the CLI gives the backlog CATCH_UP_TIMEOUT_MS to arrive) is reported, not thrown.
 */
async function terminalDrain(
  account: TerminalAccount,
  origin: string,
  caFile: string,
  sentIds: readonly string[],
): Promise<TerminalResult> {
  const run = await runSecureChat(account, origin, caFile, ['read', '--json'], DRAIN_NODE_FLAGS)
  if (run.code !== 0) {
    const failure = `exit ${run.code}: ${run.stderr.trim()}`
    return { messages: sentIds.length, lastLineMs: run.lastLineMs, exitMs: run.exitMs, failure }
  }
  const records = run.lines
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { id: string; kind: string; text: string })
  const printed = records.map((record) => record.id)
  const expected = new Set(sentIds)
  const unexpected = printed.filter((id) => !expected.delete(id))
  if (printed.length !== sentIds.length || unexpected.length > 0 || expected.size > 0) {
    throw new Error(
      `terminal drain: expected the ${sentIds.length} messages sent, got ${printed.length} lines (${expected.size} missing, ${unexpected.length} unexpected); stderr: ${run.stderr.trim()}`,
    )
  }
  // A notice carries the id of the message it stands for: only the texts themselves, in the order
  // sent, count as drained (a backlog that does not decrypt would otherwise be timed as one).
  const wrong = records.findIndex(
    (record, index) => record.kind !== 'text' || record.text !== messageText(index, sentIds.length),
  )
  if (wrong !== -1) {
    const record = records[wrong]!
    throw new Error(
      `terminal drain: expected line ${wrong + 1} to be the text "${messageText(wrong, sentIds.length)}", got a ${record.kind}: ${record.text}`,
    )
  }
  return { messages: printed.length, lastLineMs: run.lastLineMs, exitMs: run.exitMs }
}

// --- The web client -------------------------------------------------------------------------------

async function buildWebApp(): Promise<void> {
  // As client-web/e2e/global-setup.ts: the production build that `npm start` serves.
  const nodeEnv = process.env.NODE_ENV
  process.env.NODE_ENV = 'production'
  try {
    await viteBuild({
      configFile: join(repositoryRoot, 'vite.config.ts'),
      mode: 'production',
      logLevel: 'warn',
    })
  } finally {
    process.env.NODE_ENV = nodeEnv
  }
}

interface WebAccount {
  readonly device: Device
  readonly username: string
  readonly password: string
}

interface WebResult {
  readonly messages: number
  /** From the click on "Log in" until the list of chats shows (the account unlocked). */
  readonly unlockedMs: number
  /** ... until the sender appears with at least one unread message. */
  readonly firstMs: number
  /** ... until the sender shows N unread messages. */
  readonly allMs: number
  /** From the click on the conversation until its newest message shows. */
  readonly openMs: number
}

/** The unread count the contact list shows for `sender` (its badge), 0 while it is not listed. */
async function unreadFrom(device: Device, sender: string): Promise<number> {
  const badge = contactButton(device, sender).locator('.badge')
  if ((await badge.count()) === 0) return 0
  return Number(await badge.textContent())
}

/** Profiles the page's main thread, where the client core runs, until `stop` writes the profile. */
async function startProfiler(page: Page): Promise<{ stop(file: string): Promise<void> }> {
  const session = await page.context().newCDPSession(page)
  // IndexedDB calls counted beside the profile: their cost shows in it only as native time.
  // (A string: tsx's transform would add helpers to a function that the page does not have.)
  await page.evaluate(`(() => {
    const counts = {}
    globalThis.__idbCounts = counts
    const count = (target, name, label) => {
      const original = target[name]
      target[name] = function (...args) {
        const key = label === 'transaction' ? label + ' ' + (args[1] ?? 'readonly') + ' ' + [].concat(args[0]).join('+') : label
        counts[key] = (counts[key] ?? 0) + 1
        return original.apply(this, args)
      }
    }
    count(IDBDatabase.prototype, 'transaction', 'transaction')
    for (const name of ['get', 'getAll', 'put', 'delete', 'openCursor', 'count']) count(IDBObjectStore.prototype, name, 'store.' + name)
    for (const name of ['get', 'getAll', 'openCursor', 'count']) count(IDBIndex.prototype, name, 'index.' + name)
    count(IDBCursor.prototype, 'continue', 'cursor.continue')
  })()`)
  await session.send('Profiler.enable')
  await session.send('Profiler.start')
  return {
    async stop(file) {
      const { profile } = await session.send('Profiler.stop')
      await writeFile(file, JSON.stringify(profile))
      const counts: unknown = await page.evaluate('globalThis.__idbCounts')
      await writeFile(file.replace(/\.cpuprofile$/, '.idb.json'), JSON.stringify(counts, null, 1))
      progress(`  IndexedDB calls during the drain: ${JSON.stringify(counts)}`)
      await session.detach()
    },
  }
}

async function webDrain(account: WebAccount, sender: string, count: number): Promise<WebResult> {
  const { device } = account
  const page = device.page
  await device.goto('/')
  const logInButton = page.getByRole('button', { name: 'Log in', exact: true })
  await logInButton.waitFor()
  await page.getByLabel('Username').fill(account.username)
  await passwordField(page).fill(account.password)
  const profiler = WEB_PROFILE_DIR ? await startProfiler(page) : undefined
  const started = performance.now()
  await logInButton.click()
  await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
  const unlockedMs = performance.now() - started
  let firstMs: number | undefined
  let unread = 0
  let reported = performance.now()
  while (unread < count) {
    unread = await unreadFrom(device, sender)
    const now = performance.now()
    if (unread > 0) firstMs ??= now - started
    if (now - reported > PROGRESS_EVERY_MS) {
      progress(`    ${unread} of ${count} shown after ${seconds(now - started)} s`)
      reported = now
    }
    if (device.errors.length > 0) throw new Error(`web drain: the page failed: ${device.errors.join('; ')}`)
    if (unread < count) await new Promise((resolve) => setTimeout(resolve, WEB_POLL_MS))
  }
  const allMs = performance.now() - started
  if (profiler) await profiler.stop(join(WEB_PROFILE_DIR!, `web-drain-${count}.cpuprofile`))
  if (unread !== count) throw new Error(`web drain: expected ${count} unread messages, got ${unread}`)

  const opening = performance.now()
  await contactButton(device, sender).click()
  await page.getByRole('heading', { name: sender, level: 2 }).waitFor()
  await page.locator('sc-message-list .message .text', { hasText: messageText(count - 1, count) }).waitFor()
  const openMs = performance.now() - opening
  // Notices count as unread too: a backlog that did not decrypt must not pass for a drain.
  const notices = await page.locator('sc-message-list .notice').count()
  if (notices > 0)
    throw new Error(`web drain: expected only texts, got ${notices} notices in the conversation`)
  return { messages: count, unlockedMs, firstMs: firstMs ?? allMs, allMs, openMs }
}

// --- The run ----------------------------------------------------------------------------------------

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

async function main(): Promise<void> {
  const benchStarted = performance.now()
  // Other work on the machine slows every drain: the report says how busy it was.
  const load = loadavg().map((value) => round(value))
  const dir = await mkdtemp(join(tmpdir(), 'secure-chat-bench-client-'))
  const devices: Device[] = []
  let server: RunningServer | undefined
  try {
    progress(
      `bench:client — sizes ${SIZES.join(', ')}; ${[RUN_TERMINAL && 'terminal', RUN_WEB && 'web'].filter(Boolean).join(' and ')}; Node ${process.version}`,
    )
    if (RUN_WEB) {
      progress('building the web app (vite build)')
      await buildWebApp()
    }
    const certificate = await createSelfSignedCertificate()
    const tls = httpsOptions(certificate)
    const caFile = join(dir, 'ca.pem')
    await writeFile(caFile, certificate.cert)
    const databaseFile = join(dir, 'server.sqlite')
    const agent = new Agent({ ca: certificate.cert, keepAlive: true })

    // --- Accounts and backlogs, on the queueing server ---------------------------------------------
    server = await startServer(databaseFile, tls, 0, QUEUEING_LIMITS)
    const port = Number(new URL(server.origin).port)
    const terminalAccount = (name: string): TerminalAccount => ({
      username: name,
      password: strongPassword(),
      dataDir: join(dir, 'terminal', name),
    })
    const registerInTerminal = async (account: TerminalAccount) => {
      await checkedRun(account, server!.origin, caFile, ['register', account.username])
    }
    const empty = terminalAccount('emptyreader')
    const terminalBacklogs: { account: TerminalAccount; ids: string[] }[] = []
    const webBacklogs: { account: WebAccount; sender: string; count: number }[] = []
    if (RUN_TERMINAL) {
      progress('registering terminal accounts (secure-chat register, PBKDF2 at 600,000 iterations)')
      await registerInTerminal(empty)
      for (const count of SIZES) {
        const account = terminalAccount(`reader${count}`)
        await registerInTerminal(account)
        const { ids } = await queueBacklog(agent, server, certificate.cert, account.username, count)
        terminalBacklogs.push({ account, ids })
      }
    }
    if (RUN_WEB) {
      progress('registering web accounts in Chromium')
      for (const count of SIZES) {
        const device = new Device(`bench${count}`)
        devices.push(device)
        await device.start({ origin: server.origin, ca: certificate.cert })
        const account: WebAccount = { device, username: `webreader${count}`, password: strongPassword() }
        await device.goto('/')
        await registerInBrowser(device, account.username, account.password)
        // Closing the browser takes the recipient offline; its profile keeps the account.
        await device.close()
        const { sender } = await queueBacklog(agent, server, certificate.cert, account.username, count)
        webBacklogs.push({ account, sender, count })
      }
    }
    await server.close()
    server = undefined

    // --- Drains, on a server with every limit as shipped --------------------------------------------
    server = await startServer(databaseFile, tls, port, undefined)
    progress(`server restarted on port ${port} with the shipped limits`)

    progress('ratchet: one-way decrypt of the same backlogs in memory')
    const ratchet = new Map<number, number>()
    // Warmed up first, as bench/crypto.ts does: the floor is the ratchet's steady rate.
    await ratchetDrain(RATCHET_WARM_UP)
    for (const count of SIZES) {
      let ms = Number.POSITIVE_INFINITY
      for (let run = 0; run < RATCHET_RUNS; run++) ms = Math.min(ms, (await ratchetDrain(count)).ms)
      ratchet.set(count, ms)
      progress(`  ${count} decrypted in ${seconds(ms)} s (${rate(count, ms)} msgs/s)`)
    }
    const oneWay = new Map<number, number>()
    for (const count of SIZES) {
      let ms = Number.POSITIVE_INFINITY
      for (let run = 0; run < RATCHET_RUNS; run++) ms = Math.min(ms, (await cryptoOneWay(count)).ms)
      oneWay.set(count, ms)
      progress(`  bench:crypto one-way, ${count}: ${rate(count, ms)} msgs/s (encrypt and decrypt)`)
    }
    const unlock = await (async () => {
      const started = performance.now()
      await deriveStorageKey(strongPassword(), newStorageKeyParameters())
      return performance.now() - started
    })()

    const terminal: TerminalResult[] = []
    let emptyReadMs = 0
    if (RUN_TERMINAL) {
      progress(`terminal: ${EMPTY_READS} reads with nothing queued (the fixed cost of a read)`)
      const emptyRuns: number[] = []
      for (let run = 0; run < EMPTY_READS; run++) {
        emptyRuns.push((await checkedRun(empty, server.origin, caFile, ['read', '--json'])).exitMs)
      }
      emptyReadMs = median(emptyRuns)
      progress(`  ${emptyRuns.map((ms) => `${seconds(ms)} s`).join(', ')}`)
      for (const { account, ids } of terminalBacklogs) {
        progress(`terminal: secure-chat read --json with ${ids.length} queued`)
        const result = await terminalDrain(account, server.origin, caFile, ids)
        terminal.push(result)
        progress(
          result.failure
            ? `  did not finish: ${result.failure} (after ${seconds(result.exitMs)} s)`
            : `  ${result.messages} lines in ${seconds(result.lastLineMs)} s (exit at ${seconds(result.exitMs)} s)`,
        )
      }
    }

    const web: WebResult[] = []
    if (RUN_WEB) {
      for (const { account, sender, count } of webBacklogs) {
        progress(`web: logging in with ${count} queued`)
        await account.device.reopen()
        const result = await webDrain(account, sender, count)
        web.push(result)
        progress(
          `  all ${count} shown ${seconds(result.allMs)} s after the click (unlocked at ${seconds(result.unlockedMs)} s, first at ${seconds(result.firstMs)} s); conversation open in ${seconds(result.openMs)} s`,
        )
        await account.device.dispose()
      }
    }
    await server.close()
    server = undefined

    report({
      ratchet,
      oneWay,
      unlock,
      emptyReadMs,
      terminal,
      web,
      totalMs: performance.now() - benchStarted,
      load,
    })
  } finally {
    await Promise.all(devices.map((device) => device.dispose().catch(() => undefined)))
    await server?.close().catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
  }
}

function report(results: {
  ratchet: ReadonlyMap<number, number>
  oneWay: ReadonlyMap<number, number>
  unlock: number
  emptyReadMs: number
  terminal: readonly TerminalResult[]
  web: readonly WebResult[]
  totalMs: number
  load: readonly number[]
}): void {
  const { ratchet, oneWay, unlock, emptyReadMs, terminal, web } = results
  const ratchetRate = (count: number) => rate(count, ratchet.get(count)!)
  const ratio = (drain: number, count: number) => round(drain / ratchetRate(count), 3)
  const oneWayRate = (count: number) => rate(count, oneWay.get(count)!)
  /** The issue's measure: the drain against bench:crypto's one-way rate (goal ≥ 0.5). */
  const goal = (drain: number, count: number) => round(drain / oneWayRate(count), 3)
  const rows: [string, string, string, string][] = []
  for (const [count, ms] of ratchet) {
    rows.push([
      `ratchet one-way decrypt, ${count}`,
      `${rate(count, ms)} msgs/s`,
      `${seconds(ms)} s`,
      `the floor (in this Node process; fastest of ${RATCHET_RUNS})`,
    ])
  }
  for (const [count, ms] of oneWay) {
    rows.push([
      `bench:crypto one-way, ${count}`,
      `${rate(count, ms)} msgs/s`,
      `${seconds(ms)} s`,
      'encrypt and decrypt per message, as bench/crypto.ts measures it: the goal is ≥ 0.5x of this',
    ])
  }
  for (const result of terminal) {
    if (result.failure) {
      rows.push([
        `terminal read --json, ${result.messages}`,
        'did not finish',
        `${seconds(result.exitMs)} s to exit`,
        result.failure,
      ])
      continue
    }
    const gross = rate(result.messages, result.lastLineMs)
    const net = rate(result.messages, result.lastLineMs - emptyReadMs)
    rows.push([
      `terminal read --json, ${result.messages}`,
      `${gross} msgs/s`,
      `${seconds(result.lastLineMs)} s to the last line`,
      `${goal(gross, result.messages)}x of bench:crypto one-way (goal ≥ 0.5x), ${ratio(gross, result.messages)}x of the decrypt floor; net of the fixed cost ${net} msgs/s, ${goal(net, result.messages)}x, ${ratio(net, result.messages)}x`,
    ])
  }
  if (terminal.length > 0) {
    rows.push([
      'terminal read, nothing queued',
      `${seconds(emptyReadMs)} s`,
      `median of ${EMPTY_READS}`,
      `the fixed cost of a read; unlocking alone (PBKDF2, 600,000 iterations) ${seconds(unlock)} s`,
    ])
  }
  for (const result of web) {
    const gross = rate(result.messages, result.allMs)
    const net = rate(result.messages - 1, result.allMs - result.firstMs)
    rows.push([
      `web log in → all shown, ${result.messages}`,
      `${gross} msgs/s`,
      `${seconds(result.allMs)} s after the click`,
      `${goal(gross, result.messages)}x of bench:crypto one-way (goal ≥ 0.5x), ${ratio(gross, result.messages)}x of the decrypt floor; first shown at ${seconds(result.firstMs)} s, from then on ${net} msgs/s, ${ratio(net, result.messages)}x; unlocked at ${seconds(result.unlockedMs)} s; conversation opens in ${seconds(result.openMs)} s`,
    ])
  }
  const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => row[column]!.length), 6))
  const line = (row: [string, string, string, string]) =>
    `${row[0].padEnd(widths[0]!)}  ${row[1].padStart(widths[1]!)}  ${row[2].padEnd(widths[2]!)}  ${row[3]}`
  process.stdout.write(
    `${line(['case', 'rate', 'time', 'notes'])}\n${rows.map(line).join('\n')}\n` +
      `(${round(results.totalMs / 1000, 1)} s in all; load average ${results.load.join(', ')} at the start, on ${cpus().length} CPUs)\n`,
  )
  process.stdout.write(
    `${JSON.stringify({
      loadAverage: results.load,
      ratchet: [...ratchet].map(([count, ms]) => ({
        messages: count,
        seconds: seconds(ms),
        msgsPerSec: rate(count, ms),
      })),
      cryptoOneWay: [...oneWay].map(([count, ms]) => ({ messages: count, msgsPerSec: rate(count, ms) })),
      terminal: terminal.map((result) =>
        result.failure
          ? { messages: result.messages, secondsToExit: seconds(result.exitMs), failed: result.failure }
          : {
              messages: result.messages,
              secondsToLastLine: seconds(result.lastLineMs),
              secondsToExit: seconds(result.exitMs),
              msgsPerSec: rate(result.messages, result.lastLineMs),
              netMsgsPerSec: rate(result.messages, result.lastLineMs - emptyReadMs),
              vsCryptoOneWay: goal(rate(result.messages, result.lastLineMs), result.messages),
              vsRatchet: ratio(rate(result.messages, result.lastLineMs), result.messages),
              netVsCryptoOneWay: goal(
                rate(result.messages, result.lastLineMs - emptyReadMs),
                result.messages,
              ),
              netVsRatchet: ratio(rate(result.messages, result.lastLineMs - emptyReadMs), result.messages),
            },
      ),
      ...(terminal.length > 0 && {
        terminalFixed: { emptyReadSeconds: seconds(emptyReadMs), unlockSeconds: seconds(unlock) },
      }),
      web: web.map((result) => ({
        messages: result.messages,
        secondsToAllShown: seconds(result.allMs),
        secondsToUnlocked: seconds(result.unlockedMs),
        secondsToFirstShown: seconds(result.firstMs),
        secondsToOpenConversation: seconds(result.openMs),
        msgsPerSec: rate(result.messages, result.allMs),
        netMsgsPerSec: rate(result.messages - 1, result.allMs - result.firstMs),
        vsCryptoOneWay: goal(rate(result.messages, result.allMs), result.messages),
        netVsCryptoOneWay: goal(rate(result.messages - 1, result.allMs - result.firstMs), result.messages),
        vsRatchet: ratio(rate(result.messages, result.allMs), result.messages),
        netVsRatchet: ratio(rate(result.messages - 1, result.allMs - result.firstMs), result.messages),
      })),
    })}\n`,
  )
}

await main()
// The browsers' and sockets' last handles must not keep a finished benchmark waiting.
process.stdout.write('', () => process.exit(0))
