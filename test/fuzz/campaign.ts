/**
 * The fuzz campaign against the running server (issue 10, item 10): REST requests and WebSocket
 * frames, before and after authentication, each mutated from a valid one by a seeded generator,
 * while two honest users (the real client core, from another loopback address) keep writing to
 * each other. Afterwards: every honest message arrived once and in order, the honest users log in
 * again and read their whole history, SQLite's integrity and foreign-key checks pass, the rows are
 * the ones the answers account for, and no answer was a 5xx, no frame E2E_ERR_INTERNAL, no close
 * 1011, no line logged at error level. Any of those is a failure, reported with the seed and the
 * input's index (and its bytes), which regenerate that input alone.
 *
 * Two phases: most inputs go to a server whose rate and abuse limits are raised (otherwise nearly
 * every input would be a 429 and reach nothing behind the limits); a share goes to a server with
 * the shipped limits, where 429s and refused connections are expected and counted. bcrypt runs at
 * the tests' cost in both (TEST_BCRYPT_COST), which changes no code path.
 */

import { randomBytes } from 'node:crypto'
import { Agent, request as httpsRequest } from 'node:https'
import { sql } from 'kysely'
import WebSocket from 'ws'
import { DEFAULT_LIMITS } from '../../server/app.js'
import type { ServerLimits } from '../../server/context.js'
import { MAX_FRAME_BYTES, WS_MAX_PAYLOAD_BYTES } from '../../server/limits.js'
import {
  decryptToken,
  httpsFetch,
  loginSecretFor,
  makeClient,
  RELAXED_LIMITS,
  startServer,
  strongPassword,
  type TestClient,
  type TestServer,
} from '../../server/test/harness.js'
import { RelaySocket, relayUrl } from '../../server/test/ws-client.js'
import { DEFAULT_DEVICE_ID } from '../../shared/address.js'
import { toBase64Url } from '../../shared/bytes.js'
import { ChatClient, type ChatClientOptions, type MessageView } from '../../shared/client/chat-client.js'
import type { HttpClient, WebSocketFactory, WebSocketLike } from '../../shared/client/transport.js'
import type { LoginResponse } from '../../shared/codec/api.js'
import { FRAME_VERSION } from '../../shared/codec/frames.js'
import { preKeyToJson } from '../../shared/codec/keys.js'
import { generateOneTimePreKeys, generateSignedPreKey, publicPreKey } from '../../shared/identity.js'
import { MAX_ENVELOPE_BYTES } from '../../shared/limits.js'
import { clientOptions } from '../client-helpers.js'
import { type Json, mutate, mutateBytes, tweakedString } from './mutate.js'
import { Prng, seedFor } from './prng.js'

export interface CampaignOptions {
  readonly seed: number
  /** Inputs in all, over both phases. */
  readonly inputs: number
  /** The share of inputs sent to the server with the shipped limits (the rest: raised limits). */
  readonly shippedLimitsShare: number
  /** Messages each honest user writes to the other during each phase. */
  readonly honestMessagesPerPhase: number
  /** Inputs in flight at once (one fuzzing account and relay socket each). */
  readonly concurrency: number
  readonly progress?: (line: string) => void
}

/** Something that must never happen, with what regenerates it. */
export interface Failure {
  readonly phase: string
  readonly index: number
  readonly kind: string
  readonly what: string
  /** The input's first bytes as JSON-escaped text. */
  readonly input: string
}

export interface PhaseReport {
  readonly phase: 'raised-limits' | 'shipped-limits'
  readonly inputs: number
  readonly durationMs: number
  /** Input kind (route or frame type and layer) → outcome (HTTP status, frame codes, close) → count. */
  readonly outcomes: Record<string, Record<string, number>>
  /** Time spent per input kind, summed over the workers (where a run's time goes). */
  readonly milliseconds: Record<string, number>
  /** REST answers by HTTP status, over all REST inputs. */
  readonly httpStatuses: Record<string, number>
  /** Mutation operators used, and how often. */
  readonly operators: Record<string, number>
  readonly failures: Failure[]
  readonly errorLogLines: number
  /** The first lines logged at error level, for the report. */
  readonly errorLogSamples: string[]
  readonly honest: {
    readonly sent: number
    readonly received: number
    readonly inOrder: boolean
    readonly lost: number
    readonly duplicated: number
    readonly historyAfterLogin: boolean
    readonly problems: string[]
  }
  readonly integrity: {
    readonly integrityCheck: string
    readonly foreignKeyViolations: number
    readonly users: { readonly expected: number; readonly actual: number }
    readonly honestRowsUnchanged: boolean
    readonly honestQueueEmpty: boolean
    readonly maxTokensPerDevice: number
    readonly maxOneTimePreKeysPerUser: number
  }
}

export interface CampaignReport {
  readonly seed: number
  readonly inputs: number
  readonly durationMs: number
  readonly phases: PhaseReport[]
  readonly failures: Failure[]
}

/** Limits raised so inputs reach what the limits would otherwise keep them from. */
const RAISED_LIMITS: Partial<ServerLimits> = {
  ...RELAXED_LIMITS,
  loginFailuresPerAccount: 1e9,
  loginFailuresPerAccountAddress: 1e9,
  loginAccountDelayAfter: 1e9,
  loginFailuresPerDevice: 1e9,
  maxUnauthenticatedSocketsPerAddress: 1e9,
  sendRatePerUser: { perSecond: 1e9, burst: 1e9 },
  frameRatePerConnection: { perSecond: 1e9, burst: 1e9 },
  maxConnectionsPerUser: 1_000,
}

const HONEST_ADDRESS = '127.0.0.2'
const FUZZ_ADDRESS = '127.0.0.1'
/** Only a guard: in a passing run every wait ends on an event long before this. */
const GUARD_MS = 30_000

// --- Counting -----------------------------------------------------------------------------------

class Tally {
  readonly outcomes: Record<string, Record<string, number>> = {}
  readonly httpStatuses: Record<string, number> = {}
  readonly operators: Record<string, number> = {}
  readonly failures: Failure[] = []
  /** Milliseconds spent per input kind, summed over the workers. */
  readonly milliseconds: Record<string, number> = {}
  registered = 0
  /** Accounts the campaign deleted (the delete target, once). */
  deleted = 0

  outcome(kind: string, outcome: string): void {
    const row = this.outcomes[kind] ?? {}
    this.outcomes[kind] = row
    row[outcome] = (row[outcome] ?? 0) + 1
  }

  status(status: string): void {
    this.httpStatuses[status] = (this.httpStatuses[status] ?? 0) + 1
  }

  operator(name: string): void {
    this.operators[name] = (this.operators[name] ?? 0) + 1
  }
}

function preview(bytes: Buffer | string | undefined): string {
  if (bytes === undefined) return ''
  const text = typeof bytes === 'string' ? bytes : bytes.toString('latin1')
  return JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}… (${text.length} bytes)` : text)
}

/** A pino destination that counts lines at error level or above and keeps the first few. */
class ErrorLog {
  count = 0
  readonly first: string[] = []
  write(line: string): void {
    const level = (JSON.parse(line) as { level?: number }).level ?? 0
    if (level < 50) return
    this.count += 1
    if (this.first.length < 5) this.first.push(line.slice(0, 2_000))
  }
}

// --- Honest users: the real client core from another address ------------------------------------

function honestTransports(server: TestServer): Pick<ChatClientOptions, 'http' | 'webSocket'> {
  const agent = new Agent({ ca: server.ca, keepAlive: true })
  const http: HttpClient = {
    async request(method, path, options = {}) {
      const response = await httpsFetch(agent, server.origin, `/api/v1${path}`, {
        method,
        localAddress: HONEST_ADDRESS,
        ...(options.body !== undefined ? { body: options.body } : {}),
        ...(options.token ? { headers: { authorization: `Bearer ${options.token}` } } : {}),
      })
      return { status: response.status, body: response.body }
    },
  }
  const webSocket: WebSocketFactory = (url) =>
    new WebSocket(url, { ca: server.ca, localAddress: HONEST_ADDRESS }) as unknown as WebSocketLike
  return { http, webSocket }
}

class HonestPair {
  /** Texts each wrote, in the order written, and what each received, in the order received. */
  readonly sentByAlice: string[] = []
  readonly sentByBob: string[] = []
  readonly receivedByAlice: string[] = []
  readonly receivedByBob: string[] = []
  readonly problems: string[] = []
  private aliceChain: Promise<unknown> = Promise.resolve()
  private bobChain: Promise<unknown> = Promise.resolve()
  private waiters: (() => void)[] = []

  private constructor(
    readonly alice: { client: ChatClient; password: string; options: ChatClientOptions },
    readonly bob: { client: ChatClient; password: string; options: ChatClientOptions },
  ) {}

  static async start(server: TestServer, tag: string): Promise<HonestPair> {
    const make = async (name: string) => {
      const options = clientOptions(server, honestTransports(server))
      const password = strongPassword()
      const client = await ChatClient.register(options, name, password)
      return { client, password, options }
    }
    const pair = new HonestPair(await make(`honest-a-${tag}`), await make(`honest-b-${tag}`))
    pair.listen(pair.alice.client, pair.receivedByAlice)
    pair.listen(pair.bob.client, pair.receivedByBob)
    for (const client of [pair.alice.client, pair.bob.client]) client.connect()
    await Promise.all([pair.alice.client.waitUntilOnline(), pair.bob.client.waitUntilOnline()])
    return pair
  }

  private listen(client: ChatClient, into: string[]): void {
    client.events.on('message', (message: MessageView) => {
      if (message.direction !== 'in') return
      if (message.kind !== 'text') this.problems.push(`${client.username}: a ${message.kind} entry`)
      else into.push(message.text)
      for (const waiter of this.waiters.splice(0)) waiter()
    })
    client.events.on('undecryptable', ({ reason }) => this.problems.push(`undecryptable: ${reason}`))
  }

  /** Writes message `n` each way; each user's sends are chained, so they are written in order. */
  write(n: number): void {
    const toBob = `alice to bob #${n}`
    const toAlice = `bob to alice #${n}`
    this.sentByAlice.push(toBob)
    this.sentByBob.push(toAlice)
    this.aliceChain = this.aliceChain.then(() => this.alice.client.send(this.bob.client.username, toBob))
    this.bobChain = this.bobChain.then(() => this.bob.client.send(this.alice.client.username, toAlice))
  }

  /** Resolves once both have received as many as the other wrote (or the guard runs out). */
  async settle(): Promise<void> {
    await Promise.all([this.aliceChain, this.bobChain])
    const done = () =>
      this.receivedByBob.length >= this.sentByAlice.length &&
      this.receivedByAlice.length >= this.sentByBob.length
    await new Promise<void>((resolve) => {
      const guard = setTimeout(resolve, GUARD_MS)
      const check = () => {
        if (done()) {
          clearTimeout(guard)
          resolve()
        } else this.waiters.push(check)
      }
      check()
    })
  }

  /** Closes both, opens them again from their stores, logs in and reads the whole history. */
  async historyAfterLogin(): Promise<boolean> {
    const expected = (mine: string[], theirs: string[]) => ({ out: mine, in: theirs })
    const check = async (
      who: { client: ChatClient; password: string; options: ChatClientOptions },
      peer: string,
      wanted: { out: string[]; in: string[] },
    ) => {
      await who.client.close()
      const reopened = await ChatClient.open(who.options, who.password)
      await reopened.login(who.password)
      const history = await reopened.history(peer, { limit: 100_000 })
      await reopened.close()
      const texts = (direction: 'in' | 'out') =>
        history
          .filter((message) => message.direction === direction && message.kind === 'text')
          .map((message) => message.text)
      return (
        JSON.stringify(texts('out')) === JSON.stringify(wanted.out) &&
        JSON.stringify(texts('in')) === JSON.stringify(wanted.in)
      )
    }
    const [aliceOk, bobOk] = await Promise.all([
      check(this.alice, this.bob.client.username, expected(this.sentByAlice, this.receivedByAlice)),
      check(this.bob, this.alice.client.username, expected(this.sentByBob, this.receivedByBob)),
    ])
    return aliceOk && bobOk
  }
}

// --- The fuzzing side's accounts and material ---------------------------------------------------

interface Fuzzer {
  readonly client: TestClient
  token: string
}

interface Material {
  readonly server: TestServer
  readonly agent: Agent
  readonly tag: string
  /** One per worker: its relay socket and its authenticated REST calls. */
  readonly fuzzers: Fuzzer[]
  /** Logs in with the right password now and then (its tokens are used by nobody). */
  readonly loginTarget: TestClient
  /** Reinstalled with its right password now and then. */
  readonly reinstallTarget: TestClient
  /** Its one token, logged out by the first valid /logout. */
  readonly logoutToken: string
  /** Changes its password to the same one now and then (POST /account/password). */
  readonly passwordTarget: Fuzzer
  /** Asked to delete itself (POST /account/delete), mostly with a wrong secret; once, rightly. */
  readonly deleteTarget: Fuzzer
  /** Clients whose keys registration bodies reuse under fresh names. */
  readonly keyDonors: TestClient[]
  /** Signed one-time prekey batches and signed prekeys per fuzzer (signed by its identity). */
  readonly uploads: { oneTime: Json[]; signed: Json[] }[]
  readonly honestNames: string[]
}

async function registerAndLogin(server: TestServer, agent: Agent, client: TestClient): Promise<string> {
  const registered = await httpsFetch(agent, server.origin, '/api/v1/register', {
    body: client.registerBody(),
  })
  if (registered.status !== 201)
    throw new Error(`register ${client.username}: ${registered.status} ${registered.text}`)
  const login = await httpsFetch(agent, server.origin, '/api/v1/login', {
    body: { username: client.username, loginSecret: client.loginSecret },
  })
  if (login.status !== 200) throw new Error(`login ${client.username}: ${login.status} ${login.text}`)
  return toBase64Url(await decryptToken(client, login.body as LoginResponse))
}

async function prepare(
  server: TestServer,
  tag: string,
  workers: number,
  honestNames: string[],
): Promise<Material> {
  const agent = new Agent({ ca: server.ca, keepAlive: true, maxSockets: 64 })
  const fuzzers: Fuzzer[] = []
  for (let i = 0; i < workers; i++) {
    const client = await makeClient({ username: `fz-${tag}-w${i}` })
    fuzzers.push({ client, token: await registerAndLogin(server, agent, client) })
  }
  const loginTarget = await makeClient({ username: `fz-${tag}-login` })
  await registerAndLogin(server, agent, loginTarget)
  const reinstallTarget = await makeClient({ username: `fz-${tag}-reinstall` })
  await registerAndLogin(server, agent, reinstallTarget)
  const logoutClient = await makeClient({ username: `fz-${tag}-logout` })
  const logoutToken = await registerAndLogin(server, agent, logoutClient)
  const passwordClient = await makeClient({ username: `fz-${tag}-password` })
  const passwordTarget = {
    client: passwordClient,
    token: await registerAndLogin(server, agent, passwordClient),
  }
  const deleteClient = await makeClient({ username: `fz-${tag}-delete` })
  const deleteTarget = { client: deleteClient, token: await registerAndLogin(server, agent, deleteClient) }
  const keyDonors = [await makeClient({ oneTimePreKeys: 1 }), await makeClient({ oneTimePreKeys: 100 })]
  const uploads = await Promise.all(
    fuzzers.map(async ({ client }) => {
      const oneTime: Json[] = []
      for (let batch = 0; batch < 8; batch++) {
        const preKeys = await generateOneTimePreKeys(
          client.identity,
          DEFAULT_DEVICE_ID,
          1_000 + batch * 10,
          10,
        )
        oneTime.push(preKeys.map((preKey) => preKeyToJson(publicPreKey(preKey)) as unknown as Json))
      }
      const signed: Json[] = []
      for (let i = 0; i < 6; i++) {
        const preKey = await generateSignedPreKey(client.identity, DEFAULT_DEVICE_ID, 100 + i)
        signed.push(preKeyToJson(publicPreKey(preKey)) as unknown as Json)
      }
      return { oneTime, signed }
    }),
  )
  return {
    server,
    agent,
    tag,
    fuzzers,
    loginTarget,
    reinstallTarget,
    logoutToken,
    passwordTarget,
    deleteTarget,
    keyDonors,
    uploads,
    honestNames,
  }
}

// --- REST inputs --------------------------------------------------------------------------------

interface RestRequest {
  method: string
  path: string
  headers: Record<string, string | string[]>
  body: Buffer | undefined
}

interface RestTemplate {
  readonly route: string
  readonly method: string
  readonly path: string
  /** The username in the path, if the route has one (mutated by the path layer). */
  readonly pathUser?: string
  readonly query?: Record<string, string>
  readonly token?: string
  readonly body?: Json
}

const ROUTES = [
  ['register', 10],
  ['reinstall', 5],
  ['login', 10],
  ['login-challenge', 5],
  ['logout', 4],
  ['account-password', 4],
  ['account-delete', 3],
  ['blocks', 6],
  ['users-search', 8],
  ['users-identity', 7],
  ['users-bundle', 7],
  ['keys-status', 4],
  ['keys-one-time', 8],
  ['keys-signed', 6],
  ['health', 3],
  ['unknown', 3],
] as const

/**
 * A registration (or reinstall) body with the donor's keys under `username`, proving `password` by
 * its login secret; now and then also with the password itself, as clients of the previous version
 * sent it (the server still reads it while an account upgrades).
 */
function registerBody(rng: Prng, donor: TestClient, username: string, password: string): Json {
  const body = donor.registerBody()
  return {
    ...body,
    username,
    loginSecret: loginSecretFor(password),
    ...(rng.chance(0.2) ? { password } : {}),
    oneTimePreKeys: body.oneTimePreKeys.slice(0, rng.between(1, body.oneTimePreKeys.length)),
  } as unknown as Json
}

function restTemplate(rng: Prng, material: Material, worker: number, index: number): RestTemplate {
  const fuzzer = material.fuzzers[worker]!
  const others = material.fuzzers.map(({ client }) => client.username)
  const someone = () =>
    rng.pick([...others, material.loginTarget.username, `fz-${material.tag}-nobody`, fuzzer.client.username])
  const route = rng.weighted(ROUTES)
  const base = '/api/v1'
  switch (route) {
    case 'register': {
      const username = `fz-${material.tag}-r${index.toString(36)}`
      const password = rng.chance(0.8)
        ? material.loginTarget.password
        : rng.pick(['password', 'aaaaaaaaaaaa', 'x'])
      return {
        route,
        method: 'POST',
        path: `${base}/register`,
        body: registerBody(rng, rng.pick(material.keyDonors), username, password),
      }
    }
    case 'reinstall': {
      const target = material.reinstallTarget
      const password = rng.chance(0.5) ? target.password : `${target.password}-wrong`
      return {
        route,
        method: 'POST',
        path: `${base}/reinstall`,
        body: registerBody(rng, rng.pick(material.keyDonors), target.username, password),
      }
    }
    case 'login': {
      const target = material.loginTarget
      const password = rng.chance(0.5) ? target.password : 'not-the-password'
      const body: Record<string, Json> = { username: rng.chance(0.7) ? target.username : someone() }
      // The login secret, the legacy password, or both (an upgrade), as clients send them.
      const form = rng.weighted([
        ['secret', 7],
        ['password', 2],
        ['both', 1],
      ] as const)
      if (form !== 'password') body.loginSecret = loginSecretFor(password)
      if (form !== 'secret') body.password = password
      if (rng.chance(0.3)) body.deviceProof = toBase64Url(rng.bytes(32))
      return { route, method: 'POST', path: `${base}/login`, body }
    }
    case 'login-challenge':
      return { route, method: 'POST', path: `${base}/login/challenge`, body: { username: someone() } }
    case 'logout':
      return { route, method: 'POST', path: `${base}/logout`, token: material.logoutToken }
    case 'account-password': {
      // The new secret is the current one again, so a change that succeeds leaves the next valid.
      const target = material.passwordTarget
      const current = rng.chance(0.7) ? target.client.loginSecret : loginSecretFor('not-the-password')
      return {
        route,
        method: 'POST',
        path: `${base}/account/password`,
        token: target.token,
        body: {
          loginSecret: current,
          newLoginSecret: target.client.loginSecret,
          endOtherSessions: rng.chance(0.3),
        },
      }
    }
    case 'account-delete': {
      // Mostly refused (a wrong secret, or a name that is not the token's); the first right one
      // deletes the account, and every later one meets a token that no longer exists.
      const target = material.deleteTarget
      const right = rng.chance(0.1)
      return {
        route,
        method: 'POST',
        path: `${base}/account/delete`,
        token: target.token,
        body: {
          username: rng.chance(0.9) ? target.client.username : someone(),
          loginSecret: right ? target.client.loginSecret : loginSecretFor('not-the-password'),
        },
      }
    }
    case 'blocks': {
      // Blocks among the fuzzers and the targets only: the honest pair's messages stay unscreened.
      const name = someone()
      return {
        route,
        method: rng.pick(['PUT', 'DELETE']),
        path: `${base}/blocks/${name}`,
        pathUser: name,
        token: fuzzer.token,
      }
    }
    case 'users-search':
      return {
        route,
        method: 'GET',
        path: `${base}/users`,
        query: { query: rng.pick(['fz-', `fz-${material.tag}`, 'hon', 'zzz']) },
        token: fuzzer.token,
      }
    case 'users-identity':
    case 'users-bundle': {
      const name = someone()
      const tail = route === 'users-identity' ? 'identity' : 'bundle'
      return {
        route,
        method: 'GET',
        path: `${base}/users/${name}/${tail}`,
        pathUser: name,
        token: fuzzer.token,
      }
    }
    case 'keys-status':
      return { route, method: 'GET', path: `${base}/keys/status`, token: fuzzer.token }
    case 'keys-one-time':
      return {
        route,
        method: 'POST',
        path: `${base}/keys/one-time`,
        token: fuzzer.token,
        body: { oneTimePreKeys: rng.pick(material.uploads[worker]!.oneTime) },
      }
    case 'keys-signed':
      return {
        route,
        method: 'PUT',
        path: `${base}/keys/signed`,
        token: fuzzer.token,
        body: { signedPreKey: rng.pick(material.uploads[worker]!.signed) },
      }
    case 'health':
      return { route, method: 'GET', path: `${base}/health` }
    default:
      return {
        route,
        method: rng.pick(['GET', 'POST', 'DELETE']),
        path: `${base}/${rng.pick(['admin', 'users/', 'keys', 'ws'])}`,
      }
  }
}

const CONTENT_TYPES = [
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/json; charset=utf-16',
  'application/json; charset=latin1',
  'application/JSON',
  'application/json, text/plain',
  'application/xml',
  '',
  '*/*',
  'application/json\u0000',
]

/** The template as a request, then one mutation layer on top; returns the request and its layer. */
function restInput(
  rng: Prng,
  template: RestTemplate,
  honest: readonly string[],
): { request: RestRequest; layer: string } {
  const headers: Record<string, string | string[]> = {}
  if (template.token) headers.authorization = `Bearer ${template.token}`
  let body: Buffer | undefined =
    template.body === undefined ? undefined : Buffer.from(JSON.stringify(template.body))
  if (body) headers['content-type'] = 'application/json'
  const query = (params: Record<string, string | string[]>) => {
    const parts: string[] = []
    for (const [key, value] of Object.entries(params))
      for (const item of Array.isArray(value) ? value : [value])
        parts.push(`${key}=${encodeURIComponent(item)}`)
    return parts.length > 0 ? `?${parts.join('&')}` : ''
  }
  let path = template.path + query(template.query ?? {})
  let method = template.method
  let layer = rng.weighted([
    ['valid', 6],
    ['body', template.body === undefined ? 0 : 50],
    ['transport', 20],
    ['path', 12],
    ['auth', template.token === undefined ? 2 : 10],
  ] as const) as string

  switch (layer) {
    case 'body': {
      const mutated = mutate(rng, template.body!)
      layer = `body:${mutated.operator}`
      body = mutated.bytes
      break
    }
    case 'transport': {
      const what = rng.pick([
        'content-type',
        'method',
        'oversize',
        'empty-body',
        'no-content-type',
        'body-on-get',
        'huge-header',
      ])
      layer = `transport:${what}`
      if (what === 'content-type') headers['content-type'] = rng.pick(CONTENT_TYPES)
      else if (what === 'method')
        method = rng.pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'])
      else if (what === 'oversize') {
        const filler = 'A'.repeat(rng.pick([64 * 1024, 64 * 1024 + 1, 200 * 1024, 1024 * 1024]))
        body = Buffer.from(JSON.stringify({ ...(template.body as object | undefined), filler }))
        headers['content-type'] = 'application/json'
      } else if (what === 'empty-body') {
        body = Buffer.alloc(0)
        headers['content-type'] = 'application/json'
      } else if (what === 'no-content-type') delete headers['content-type']
      else if (what === 'body-on-get') {
        body = Buffer.from(JSON.stringify({ username: 'x', extra: [1, 2, 3] }))
        headers['content-type'] = 'application/json'
      } else headers['x-fuzz'] = 'h'.repeat(rng.pick([1_000, 16_000, 80_000]))
      break
    }
    case 'path': {
      const hostile = rng.pick([
        '',
        '%',
        '%zz',
        '%00',
        '%2F',
        '..',
        '%2e%2e',
        'ａｌｉｃｅ',
        'A'.repeat(200),
        '😀',
        '%F0%9F%98',
        'a%20b',
        'x?y',
        'x#y',
        '%E2%80%AE',
      ])
      const what =
        template.pathUser !== undefined ? rng.pick(['user', 'query', 'shape']) : rng.pick(['query', 'shape'])
      layer = `path:${what}`
      if (what === 'user') {
        const raw = rng.chance(0.5)
          ? hostile
          : encodeURIComponent(rng.pick(['ａｌｉｃｅ', 'e\u0301', '\u202e', ' a ', '']))
        path = template.path.replace(`/users/${template.pathUser}/`, `/users/${raw}/`)
      } else if (what === 'query') {
        const params: Record<string, string | string[]> = { ...(template.query ?? {}) }
        const change = rng.pick(['duplicate', 'drop', 'extra', 'hostile', 'long'])
        if (change === 'duplicate') params.query = ['fz-', 'abc']
        else if (change === 'drop') delete params.query
        else if (change === 'extra') params[rng.pick(['limit', 'offset', '__proto__', 'query[]'])] = '1'
        else if (change === 'long') params.query = 'a'.repeat(rng.pick([65, 129, 5_000]))
        else params.query = rng.pick(['ａｌｉ', '\u0000ab', 'a\u202eb', '%%%', '😀😀😀', '   '])
        path = template.path + query(params)
      } else {
        path = rng.pick([
          `${path}/`,
          path.replace('/api/v1/', '/api/v1//'),
          path.toUpperCase(),
          path.replace('/api/v1/', '/api/v1/../v1/'),
          `${path}${'/x'.repeat(2_000)}`,
          path.replace('/api/v1', '/api/v2'),
          `${path};x=1`,
        ])
      }
      break
    }
    case 'auth': {
      const token = template.token ?? toBase64Url(rng.bytes(32))
      const what = rng.pick(['none', 'scheme', 'tweak', 'length', 'random', 'double', 'lowercase'])
      layer = `auth:${what}`
      if (what === 'none') delete headers.authorization
      else if (what === 'scheme')
        headers.authorization = rng.pick([`Basic ${token}`, token, 'Bearer', 'Bearer '])
      else if (what === 'tweak') headers.authorization = `Bearer ${tweakedString(rng, token)}`
      else if (what === 'length') headers.authorization = `Bearer ${token}${rng.pick(['A', 'AA', '='])}`
      else if (what === 'random')
        headers.authorization = `Bearer ${toBase64Url(rng.bytes(rng.pick([31, 32, 33])))}`
      else if (what === 'double')
        headers.authorization = [`Bearer ${token}`, `Bearer ${toBase64Url(rng.bytes(32))}`]
      else headers.authorization = `bearer ${token}`
      break
    }
    default:
      break
  }
  // Mutations never aim at the honest users: their names are swapped for a fuzzer's nonexistent one.
  if (body) {
    let text = body.toString('latin1')
    for (const name of honest) text = text.split(name).join('fz-not-honest')
    body = Buffer.from(text, 'latin1')
    // Node's client sends a HEAD request's body without a length, and the server would then read
    // it as the next request on the connection: the length keeps the exchange what was meant.
    headers['content-length'] = String(body.length)
  }
  return { request: { method, path, headers, body }, layer }
}

/**
 * Sends one request; the HTTP status as text, or `transport:<code>` when no answer came. A reset of
 * a kept-alive connection the server had already closed (after a 413 or 431, say) before this
 * request reached it is the client's race, not an answer: that request is sent once more.
 */
async function sendRequest(
  material: Material,
  request: RestRequest,
): Promise<{ status: string; text: string }> {
  const first = await sendOnce(material, request)
  return first.staleConnection ? sendOnce(material, request) : first
}

function sendOnce(
  material: Material,
  request: RestRequest,
): Promise<{ status: string; text: string; staleConnection?: boolean }> {
  return new Promise((resolve) => {
    let req: ReturnType<typeof httpsRequest>
    try {
      req = httpsRequest(
        new URL(request.path, material.server.origin),
        {
          method: request.method,
          headers: request.headers,
          agent: material.agent,
          localAddress: FUZZ_ADDRESS,
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.on('error', () => resolve({ status: 'transport:response', text: '' }))
          res.on('end', () =>
            resolve({ status: String(res.statusCode ?? 0), text: Buffer.concat(chunks).toString() }),
          )
        },
      )
    } catch (error) {
      // Node refuses some hostile paths and headers itself, before anything is sent.
      resolve({ status: `client-refused:${(error as NodeJS.ErrnoException).code ?? 'error'}`, text: '' })
      return
    }
    req.on('error', (error: NodeJS.ErrnoException) =>
      resolve({
        status: `transport:${error.code ?? 'error'}`,
        text: '',
        staleConnection: req.reusedSocket && error.code === 'ECONNRESET',
      }),
    )
    req.end(request.body)
  })
}

// --- Relay inputs -------------------------------------------------------------------------------

type FrameTemplate = { readonly type: string; readonly frame: Json }

function frameTemplate(rng: Prng, material: Material, worker: number, authenticated: boolean): FrameTemplate {
  const fuzzer = material.fuzzers[worker]!
  const peers = material.fuzzers.filter((_, i) => i !== worker).map(({ client }) => client.username)
  const to = rng.chance(0.85) && peers.length > 0 ? rng.pick(peers) : `fz-${material.tag}-nobody`
  const type = authenticated
    ? rng.weighted([
        ['send', 50],
        ['ack', 20],
        ['presence.subscribe', 15],
        ['presence.share', 10],
        ['auth', 10],
      ] as const)
    : rng.weighted([
        ['auth', 70],
        ['send', 15],
        ['ack', 15],
      ] as const)
  const v = FRAME_VERSION
  switch (type) {
    case 'send': {
      const size = rng.chance(0.05) ? MAX_ENVELOPE_BYTES : rng.between(1, 300)
      return {
        type,
        frame: { v, type, id: toBase64Url(rng.bytes(16)), to, body: toBase64Url(rng.bytes(size)) },
      }
    }
    case 'ack':
      return { type, frame: { v, type, upTo: rng.between(1, 1_000) } }
    case 'presence.subscribe':
    case 'presence.share':
      return { type, frame: { v, type, users: peers.slice(0, rng.between(0, peers.length)) } }
    default: {
      const token = rng.chance(0.5) ? fuzzer.token : toBase64Url(rng.bytes(32))
      return { type: 'auth', frame: { v, type: 'auth', token } }
    }
  }
}

interface FrameInput {
  readonly layer: string
  readonly data: Buffer
  readonly binary: boolean
}

function frameInput(rng: Prng, template: FrameTemplate): FrameInput {
  const valid = Buffer.from(JSON.stringify(template.frame))
  const layer = rng.weighted([
    ['valid', 10],
    ['mutated', 72],
    ['binary', 4],
    ['oversize', 3],
    ['huge', 1],
    ['empty', 2],
    ['many-names', 3],
    ['invalid-utf8', 5],
  ] as const)
  switch (layer) {
    case 'mutated': {
      const mutated = mutate(rng, template.frame)
      return { layer: `mutated:${mutated.operator}`, data: mutated.bytes, binary: false }
    }
    case 'binary':
      return { layer, data: valid, binary: true }
    case 'oversize':
      return {
        layer,
        data: Buffer.from(`${valid.toString().slice(0, -1)},"pad":"${'A'.repeat(MAX_FRAME_BYTES)}"}`),
        binary: false,
      }
    case 'huge':
      return { layer, data: Buffer.alloc(WS_MAX_PAYLOAD_BYTES + 1, 0x41), binary: false }
    case 'empty':
      return { layer, data: Buffer.alloc(0), binary: false }
    case 'many-names': {
      const users = Array.from({ length: rng.pick([500, 501, 2_000]) }, (_, i) => `fz-many-${i}`)
      return {
        layer,
        data: Buffer.from(
          JSON.stringify({
            v: FRAME_VERSION,
            type: template.type === 'presence.share' ? 'presence.share' : 'presence.subscribe',
            users,
          }),
        ),
        binary: false,
      }
    }
    case 'invalid-utf8':
      return { layer, data: mutateBytes(rng, valid, 'invalid-utf8').bytes, binary: false }
    default:
      return { layer, data: valid, binary: false }
  }
}

/** What came back for one frame: error codes in order, `accepted`, `ready`, or how it closed. */
function describeFrames(socket: RelaySocket, from: number, fenceId: string | undefined): string {
  const parts: string[] = []
  for (const frame of socket.frames.slice(from)) {
    if (frame.type === 'error' && frame.id === fenceId) continue
    if (frame.type === 'error') parts.push(frame.code)
    else if (frame.type === 'accepted' || frame.type === 'ready') parts.push(frame.type)
  }
  return [...new Set(parts)].join('+') || 'no-answer'
}

function checkFrames(socket: RelaySocket, from: number, fail: (what: string) => void): void {
  for (const frame of socket.frames.slice(from)) {
    if (frame.type === 'error' && frame.code === 'E2E_ERR_INTERNAL')
      fail(`error frame E2E_ERR_INTERNAL: ${frame.message}`)
  }
  if (socket.invalid.length > 0)
    fail(`the server sent a frame that does not decode: ${socket.invalid[0]!.slice(0, 200)}`)
}

/** A worker's authenticated relay socket, opened again whenever the server closed it. */
class WorkerSocket {
  socket: RelaySocket | undefined
  /** Where in `socket.frames` the deliveries not yet acknowledged start. */
  private acked = 0
  closes: Record<string, number> = {}

  constructor(
    private readonly material: Material,
    private readonly worker: number,
  ) {}

  async ready(): Promise<RelaySocket | undefined> {
    if (this.socket && this.socket.ws.readyState === WebSocket.OPEN) return this.socket
    const fuzzer = this.material.fuzzers[this.worker]!
    const socket = new RelaySocket(
      new WebSocket(relayUrl(this.material.server), {
        ca: this.material.server.ca,
        localAddress: FUZZ_ADDRESS,
      }),
      `fuzz-${this.worker}`,
    )
    try {
      await socket.opened
    } catch {
      return undefined
    }
    socket.send({ v: FRAME_VERSION, type: 'auth', token: fuzzer.token })
    try {
      await socket.until(
        () =>
          socket.frames.some((frame) => frame.type === 'ready' || frame.type === 'error') ? true : undefined,
        'ready',
      )
    } catch {
      return undefined
    }
    if (!socket.frames.some((frame) => frame.type === 'ready')) return undefined
    this.socket = socket
    this.acked = 0
    return socket
  }

  /** Acknowledges what was delivered, as a client would, so the fuzzers' queues drain. */
  acknowledge(): void {
    const socket = this.socket
    if (!socket || socket.ws.readyState !== WebSocket.OPEN) return
    let upTo = 0
    for (const frame of socket.frames.slice(this.acked))
      if (frame.type === 'deliver') upTo = Math.max(upTo, frame.seq)
    this.acked = socket.frames.length
    if (upTo > 0) socket.ack(upTo)
  }

  async close(): Promise<void> {
    await this.socket?.close()
  }
}

/**
 * Sends one frame on the worker's authenticated socket, then a fence: a send to a user nobody has,
 * whose refusal (carrying the fence's id) comes after every answer the frame caused synchronously.
 */
async function authenticatedFrame(
  worker: WorkerSocket,
  input: FrameInput,
  fenceTo: string,
  fail: (what: string) => void,
): Promise<string> {
  const socket = await worker.ready()
  if (!socket) return 'could-not-connect'
  const from = socket.frames.length
  socket.ws.send(input.data, { binary: input.binary })
  const fenceId = toBase64Url(randomBytes(16))
  socket.send({ v: FRAME_VERSION, type: 'send', id: fenceId, to: fenceTo, body: 'AAAA' })
  let outcome: string
  try {
    await socket.until(
      () =>
        socket.frames.slice(from).some((frame) => frame.type === 'error' && frame.id === fenceId)
          ? true
          : undefined,
      'the fence',
    )
    outcome = describeFrames(socket, from, fenceId)
  } catch {
    const closed = await Promise.race([
      socket.closed,
      new Promise<undefined>((resolve) => setTimeout(resolve, GUARD_MS)),
    ])
    outcome = closed ? `${describeFrames(socket, from, fenceId)}|close:${closed.code}` : 'hung'
    if (!closed) fail('no answer to the frame or the fence, and the socket stayed open')
    else if (closed.code === 1011) fail('closed with 1011 (internal error)')
    worker.closes[String(closed?.code)] = (worker.closes[String(closed?.code)] ?? 0) + 1
  }
  checkFrames(socket, from, fail)
  worker.acknowledge()
  return outcome
}

/** Opens a new socket, sends one frame before authenticating, and waits for the server's verdict. */
async function unauthenticatedFrame(
  material: Material,
  input: FrameInput,
  fail: (what: string) => void,
): Promise<string> {
  const ws = new WebSocket(relayUrl(material.server), { ca: material.server.ca, localAddress: FUZZ_ADDRESS })
  const opened = await new Promise<string | undefined>((resolve) => {
    ws.once('open', () => resolve(undefined))
    ws.once('unexpected-response', (request, response) => {
      response.resume()
      request.destroy()
      resolve(`upgrade:${response.statusCode}`)
    })
    ws.once('error', (error: NodeJS.ErrnoException) => resolve(`transport:${error.code ?? 'error'}`))
  })
  if (opened) {
    ws.terminate()
    if (opened.startsWith('upgrade:5')) fail(`upgrade answered ${opened}`)
    return opened
  }
  const socket = new RelaySocket(ws, 'fuzz-unauthenticated')
  socket.ws.send(input.data, { binary: input.binary })
  let outcome: string
  try {
    await socket.until(
      () => (socket.frames.some((frame) => frame.type === 'ready') ? true : undefined),
      'ready or a close',
    )
    outcome = 'ready'
    await socket.close()
  } catch {
    const closed = await Promise.race([
      socket.closed,
      new Promise<undefined>((resolve) => setTimeout(resolve, GUARD_MS)),
    ])
    if (!closed) {
      fail('an unauthenticated socket was neither authenticated nor closed')
      ws.terminate()
      return 'hung'
    }
    if (closed.code === 1011) fail('closed with 1011 (internal error)')
    outcome = `${describeFrames(socket, 0, undefined)}|close:${closed.code}`
  }
  checkFrames(socket, 0, fail)
  return outcome
}

// --- The phases ---------------------------------------------------------------------------------

async function snapshotHonest(server: TestServer, names: string[]): Promise<string> {
  const db = server.database.db
  const users = await db
    .selectFrom('users')
    .selectAll()
    .where('username', 'in', names)
    .orderBy('id')
    .execute()
  const ids = users.map((user) => user.id)
  const signed = await db
    .selectFrom('signed_prekeys')
    .selectAll()
    .where('user_id', 'in', ids)
    .orderBy('id')
    .execute()
  return JSON.stringify({ users, signed }, (_key, value) =>
    value instanceof Uint8Array ? Buffer.from(value).toString('base64') : value,
  )
}

async function queuedFor(server: TestServer, names: string[]): Promise<number> {
  const db = server.database.db
  const row = await db
    .selectFrom('messages')
    .innerJoin('users', 'users.id', 'messages.recipient_id')
    .select(db.fn.countAll<number>().as('count'))
    .where('users.username', 'in', names)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

/** Polls until nothing is queued for these users, or the guard runs out. */
async function honestQueueDrained(server: TestServer, names: string[]): Promise<void> {
  const until = performance.now() + GUARD_MS
  while ((await queuedFor(server, names)) > 0 && performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function integrity(
  server: TestServer,
  honestNames: string[],
  honestBefore: string,
  expectedUsers: number,
): Promise<PhaseReport['integrity']> {
  const db = server.database.db
  const check = await sql<{ integrity_check: string }>`PRAGMA integrity_check`.execute(db)
  const foreignKeys = await sql`PRAGMA foreign_key_check`.execute(db)
  const users = await db
    .selectFrom('users')
    .select(db.fn.countAll<number>().as('count'))
    .executeTakeFirstOrThrow()
  const tokens = await db
    .selectFrom('auth_tokens')
    .select(['user_id', db.fn.countAll<number>().as('count')])
    .groupBy('user_id')
    .execute()
  const preKeys = await db
    .selectFrom('one_time_prekeys')
    .select(['user_id', db.fn.countAll<number>().as('count')])
    .groupBy('user_id')
    .execute()
  return {
    integrityCheck: check.rows.map((row) => row.integrity_check).join('; '),
    foreignKeyViolations: foreignKeys.rows.length,
    users: { expected: expectedUsers, actual: Number(users.count) },
    honestRowsUnchanged: (await snapshotHonest(server, honestNames)) === honestBefore,
    honestQueueEmpty: (await queuedFor(server, honestNames)) === 0,
    maxTokensPerDevice: Math.max(0, ...tokens.map((row) => Number(row.count))),
    maxOneTimePreKeysPerUser: Math.max(0, ...preKeys.map((row) => Number(row.count))),
  }
}

async function runPhase(
  phase: PhaseReport['phase'],
  phaseIndex: number,
  inputs: number,
  options: CampaignOptions,
): Promise<PhaseReport> {
  const started = performance.now()
  const log = new ErrorLog()
  const server = await startServer({
    limits: phase === 'raised-limits' ? RAISED_LIMITS : DEFAULT_LIMITS,
    log: { level: 'warn', stream: log },
  })
  const tally = new Tally()
  const tag = `${(options.seed >>> 0).toString(36)}${phaseIndex}`
  try {
    const honest = await HonestPair.start(server, tag)
    const honestNames = [honest.alice.client.username, honest.bob.client.username]
    const material = await prepare(server, tag, options.concurrency, honestNames)
    const honestBefore = await snapshotHonest(server, honestNames)
    const usersBefore = Number(
      (
        await server.database.db
          .selectFrom('users')
          .select(server.database.db.fn.countAll<number>().as('count'))
          .executeTakeFirstOrThrow()
      ).count,
    )
    const sockets = material.fuzzers.map((_, worker) => new WorkerSocket(material, worker))
    const fenceTo = `fz-${tag}-fence-nobody`

    let next = 0
    let done = 0
    let honestWritten = 0
    const honestEvery = Math.max(1, Math.floor(inputs / Math.max(1, options.honestMessagesPerPhase)))
    const progressEvery = Math.max(1, Math.floor(inputs / 20))

    const runInput = async (worker: number, index: number) => {
      const rng = new Prng(seedFor(options.seed, phaseIndex, index))
      const kind = rng.weighted([
        ['rest', 55],
        ['ws-authenticated', 38],
        // Each needs a TLS handshake and an upgrade of its own: the dearest kind per input.
        ['ws-unauthenticated', 7],
      ] as const)
      let input = ''
      const began = performance.now()
      const fail = (what: string) => tally.failures.push({ phase, index, kind, what, input })
      if (kind === 'rest') {
        const template = restTemplate(rng, material, worker, index)
        const { request, layer } = restInput(rng, template, honestNames)
        input = `${request.method} ${request.path.slice(0, 200)} ${JSON.stringify(request.headers).slice(0, 200)} ${preview(request.body)}`
        tally.operator(layer)
        const { status, text } = await sendRequest(material, request)
        tally.outcome(`rest ${template.route}`, status)
        // What made a request end without an answer (a reset after 413 or 431, a refused path).
        if (!/^\d+$/.test(status)) tally.outcome(`rest without an answer: ${status}`, layer)
        tally.status(status)
        if (status === '201') tally.registered += 1
        if (status === '204' && template.route === 'account-delete') tally.deleted += 1
        if (/^5\d\d$/.test(status)) fail(`HTTP ${status}: ${text.slice(0, 300)}`)
      } else {
        const authenticated = kind === 'ws-authenticated'
        const template = frameTemplate(rng, material, worker, authenticated)
        const frame = frameInput(rng, template)
        input = `${frame.binary ? 'binary' : 'text'} ${preview(frame.data)}`
        tally.operator(frame.layer)
        const outcome = authenticated
          ? await authenticatedFrame(sockets[worker]!, frame, fenceTo, fail)
          : await unauthenticatedFrame(material, frame, fail)
        tally.outcome(`${kind} ${template.type}`, outcome)
      }
      tally.milliseconds[kind] = Math.round((tally.milliseconds[kind] ?? 0) + performance.now() - began)
    }

    await Promise.all(
      material.fuzzers.map(async (_, worker) => {
        for (;;) {
          const index = next++
          if (index >= inputs) return
          try {
            await runInput(worker, index)
          } catch (error) {
            tally.failures.push({ phase, index, kind: 'harness', what: String(error), input: '' })
          }
          done += 1
          while (
            honestWritten < options.honestMessagesPerPhase &&
            done >= (honestWritten + 1) * honestEvery
          ) {
            honest.write(honestWritten++)
          }
          if (done % progressEvery === 0) options.progress?.(`${phase}: ${done}/${inputs} inputs`)
        }
      }),
    )
    while (honestWritten < options.honestMessagesPerPhase) honest.write(honestWritten++)
    await Promise.all(sockets.map((socket) => socket.close()))

    const health = await httpsFetch(material.agent, server.origin, '/api/v1/health', {
      localAddress: HONEST_ADDRESS,
    })
    if (health.status !== 200)
      tally.failures.push({ phase, index: -1, kind: 'health', what: `health ${health.status}`, input: '' })

    await honest.settle()
    const lost =
      honest.sentByAlice.filter((text) => !honest.receivedByBob.includes(text)).length +
      honest.sentByBob.filter((text) => !honest.receivedByAlice.includes(text)).length
    const received = honest.receivedByAlice.length + honest.receivedByBob.length
    const duplicated = received - new Set([...honest.receivedByAlice, ...honest.receivedByBob]).size
    const inOrder =
      JSON.stringify(honest.receivedByBob) === JSON.stringify(honest.sentByAlice) &&
      JSON.stringify(honest.receivedByAlice) === JSON.stringify(honest.sentByBob)
    // The last acknowledgements and receipts are still on their way: wait (with a guard) until the
    // server holds nothing more for the honest users, before they close.
    await Promise.all([honest.alice.client.flush(GUARD_MS), honest.bob.client.flush(GUARD_MS)])
    await honestQueueDrained(server, honestNames)
    const historyAfterLogin = await honest.historyAfterLogin()
    const report: PhaseReport = {
      phase,
      inputs,
      durationMs: Math.round(performance.now() - started),
      outcomes: tally.outcomes,
      milliseconds: tally.milliseconds,
      httpStatuses: tally.httpStatuses,
      operators: tally.operators,
      failures: tally.failures,
      errorLogLines: log.count,
      errorLogSamples: log.first,
      honest: {
        sent: honest.sentByAlice.length + honest.sentByBob.length,
        received,
        inOrder,
        lost,
        duplicated,
        historyAfterLogin,
        problems: honest.problems,
      },
      integrity: await integrity(
        server,
        honestNames,
        honestBefore,
        usersBefore + tally.registered - tally.deleted,
      ),
    }
    return report
  } finally {
    await server.close()
  }
}

/** Everything in a phase's report that must hold, as failures (empty when the phase passed). */
export function phaseFailures(report: PhaseReport): string[] {
  const problems = report.failures.map(
    (failure) =>
      `${failure.phase} input ${failure.index} (${failure.kind}): ${failure.what} — input ${failure.input}`,
  )
  const { honest, integrity } = report
  if (!honest.inOrder) problems.push(`${report.phase}: honest messages not all delivered in order`)
  if (honest.lost > 0) problems.push(`${report.phase}: ${honest.lost} honest messages lost`)
  if (honest.duplicated > 0)
    problems.push(`${report.phase}: ${honest.duplicated} honest messages delivered twice`)
  if (!honest.historyAfterLogin) problems.push(`${report.phase}: honest history after a new login differs`)
  if (honest.problems.length > 0)
    problems.push(`${report.phase}: honest clients saw ${honest.problems.join(', ')}`)
  if (integrity.integrityCheck !== 'ok')
    problems.push(`${report.phase}: integrity_check ${integrity.integrityCheck}`)
  if (integrity.foreignKeyViolations > 0)
    problems.push(`${report.phase}: ${integrity.foreignKeyViolations} foreign key violations`)
  if (integrity.users.actual !== integrity.users.expected)
    problems.push(
      `${report.phase}: ${integrity.users.actual} users stored, the answers account for ${integrity.users.expected}`,
    )
  if (!integrity.honestRowsUnchanged) problems.push(`${report.phase}: the honest users' rows changed`)
  if (!integrity.honestQueueEmpty)
    problems.push(`${report.phase}: messages still queued for the honest users`)
  if (integrity.maxTokensPerDevice > DEFAULT_LIMITS.maxTokensPerDevice)
    problems.push(`${report.phase}: a user holds too many tokens`)
  if (integrity.maxOneTimePreKeysPerUser > DEFAULT_LIMITS.maxOneTimePreKeysPerUser)
    problems.push(`${report.phase}: a user holds too many one-time prekeys`)
  if (report.errorLogLines > 0)
    problems.push(
      `${report.phase}: ${report.errorLogLines} lines logged at error level, the first: ${report.errorLogSamples[0]}`,
    )
  return problems
}

export async function runCampaign(options: CampaignOptions): Promise<CampaignReport> {
  const started = performance.now()
  const shipped = Math.round(options.inputs * options.shippedLimitsShare)
  const phases = [
    await runPhase('raised-limits', 0, options.inputs - shipped, options),
    await runPhase('shipped-limits', 1, shipped, options),
  ]
  return {
    seed: options.seed,
    inputs: phases.reduce((sum, phase) => sum + phase.inputs, 0),
    durationMs: Math.round(performance.now() - started),
    phases,
    failures: phases.flatMap((phase) => phase.failures),
  }
}

/** The report as a table of outcome counts per input kind, one block per phase. */
export function formatReport(report: CampaignReport): string {
  const lines: string[] = [
    `fuzz campaign: seed ${report.seed}, ${report.inputs} inputs, ${report.durationMs} ms`,
  ]
  for (const phase of report.phases) {
    lines.push('', `## ${phase.phase}: ${phase.inputs} inputs in ${phase.durationMs} ms`)
    lines.push(`HTTP statuses: ${JSON.stringify(phase.httpStatuses)}`)
    lines.push(`time per kind (ms, summed over workers): ${JSON.stringify(phase.milliseconds)}`)
    for (const [kind, outcomes] of Object.entries(phase.outcomes).sort()) {
      const total = Object.values(outcomes).reduce((sum, count) => sum + count, 0)
      const top = Object.entries(outcomes)
        .sort((a, b) => b[1] - a[1])
        .map(([outcome, count]) => `${outcome} ${count}`)
        .join(', ')
      lines.push(`  ${kind.padEnd(34)} ${String(total).padStart(7)}  ${top}`)
    }
    lines.push(`honest: ${JSON.stringify(phase.honest)}`)
    lines.push(`integrity: ${JSON.stringify(phase.integrity)}`)
    lines.push(`error log lines: ${phase.errorLogLines}`)
    const problems = phaseFailures(phase)
    lines.push(problems.length === 0 ? 'failures: none' : `failures (${problems.length}):`)
    for (const problem of problems.slice(0, 20)) lines.push(`  ${problem}`)
  }
  return lines.join('\n')
}
