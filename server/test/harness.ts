/**
 * Test harness: the real server over TLS on 127.0.0.1 (port 0) with a real database, HTTPS requests
 * through node:https trusting the test certificate, and clients whose keys come from shared/.
 */

import { createHash } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { Agent, request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { DEFAULT_DEVICE_ID } from '../../shared/address.js'
import { fromBase64Url, toBase64Url } from '../../shared/bytes.js'
import type { LoginResponse, RegisterRequest } from '../../shared/codec/api.js'
import { preKeyToJson, publicIdentityToJson } from '../../shared/codec/keys.js'
import {
  generateRsaOaepKeyPair,
  type RsaOaepKeyPair,
  randomBytes,
  rsaOaepDecrypt,
} from '../../shared/crypto/primitives.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyPair,
  publicPreKey,
} from '../../shared/identity.js'
import { type BuildOptions, build } from '../app.js'
import type { SqlDialect } from '../db/schema.js'
import { createSelfSignedCertificate, httpsOptions } from '../tls.js'
import { createTestDatabase, type TestDatabase } from './databases.js'

/** Tests hash with bcrypt's minimum cost; one test checks that the default is 12. */
export const TEST_BCRYPT_COST = 4

/** Limits high enough that tests registering and connecting many users from 127.0.0.1 never meet them. */
export const RELAXED_LIMITS: BuildOptions['limits'] = {
  registerRateLimit: { max: 10_000, timeWindowMs: 60_000 },
  loginRateLimit: { max: 10_000, timeWindowMs: 60_000 },
  bundleRateLimit: { max: 10_000, timeWindowMs: 60_000 },
  // Tests in which one user fetches a target's bundle many times, each claiming a key as before;
  // the tests of these two limits set them (server/keys.test.ts, test/prekey-drain.test.ts).
  oneTimePreKeyClaimsPerTarget: { max: 10_000, timeWindowMs: 60_000 },
  bundleRefetchWindowMs: 0,
  loginFailuresPerAddress: 10_000,
  // Every test client connects from 127.0.0.1, often dozens at once and hundreds within seconds;
  // tls-handshakes.test.ts tests the shipped limits.
  maxTlsHandshakesInProgressPerAddress: 10_000,
  tlsHandshakeRatePerAddress: { perSecond: 1e9, burst: 1e9 },
  // server/provisioning.test.ts tests the shipped limits where it means to.
  provisioningOpenRateLimit: { max: 10_000, timeWindowMs: 60_000 },
  provisioningRateLimit: { max: 10_000, timeWindowMs: 60_000 },
}

let certificate: Promise<{ cert: string; key: string }> | undefined

/** One self-signed localhost certificate per test file, kept in memory. */
export function testCertificate(): Promise<{ cert: string; key: string }> {
  certificate ??= createSelfSignedCertificate()
  return certificate
}

export interface HttpResponse {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly text: string
  // biome-ignore lint/suspicious/noExplicitAny: tests read response JSON loosely and assert on it
  readonly body: any
}

export interface RequestOptions {
  readonly method?: string
  readonly body?: unknown
  /** Raw body text (sent as is, with the JSON content type unless `contentType` says otherwise). */
  readonly rawBody?: string
  readonly contentType?: string
  readonly token?: Uint8Array
  readonly headers?: Record<string, string>
  /** The client's source address (any of 127.0.0.0/8 reaches a server on 127.0.0.1 under Linux). */
  readonly localAddress?: string
}

export interface TestServer {
  readonly app: FastifyInstance
  readonly database: TestDatabase
  readonly origin: string
  readonly ca: string
  request(path: string, options?: RequestOptions): Promise<HttpResponse>
  /** Stops the server but keeps the database (for restart tests). */
  stop(): Promise<void>
  close(): Promise<void>
}

export interface StartOptions extends Partial<Omit<BuildOptions, 'db' | 'https'>> {
  readonly dialect?: SqlDialect
  /** Reuse this database instead of creating one (restart tests). */
  readonly database?: TestDatabase
  /** The loopback address to listen on: 127.0.0.1 (default) or ::1. */
  readonly host?: '127.0.0.1' | '::1'
}

export async function startServer(options: StartOptions = {}): Promise<TestServer> {
  const material = await testCertificate()
  const database = options.database ?? (await createTestDatabase(options.dialect ?? 'sqlite'))
  const { host = '127.0.0.1', ...buildOptions } = options
  const app = await build({
    bcryptCost: TEST_BCRYPT_COST,
    log: false,
    ...buildOptions,
    limits: { ...RELAXED_LIMITS, ...options.limits },
    db: database.db,
    https: httpsOptions(material),
  })
  await app.listen({ host, port: 0 })
  const { port } = app.server.address() as AddressInfo
  const origin = `https://${host.includes(':') ? `[${host}]` : host}:${port}`
  const agent = new Agent({ ca: material.cert, keepAlive: true, maxSockets: 64 })
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    agent.destroy()
    await app.close()
  }
  return {
    app,
    database,
    origin,
    ca: material.cert,
    request: (path, requestOptions) => httpsFetch(agent, origin, path, requestOptions),
    stop,
    close: async () => {
      await stop()
      if (!options.database) await database.dispose()
    },
  }
}

export function httpsFetch(
  agent: Agent,
  origin: string,
  path: string,
  options: RequestOptions = {},
): Promise<HttpResponse> {
  const payload = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body))
  const headers: Record<string, string> = { ...options.headers }
  if (payload !== undefined) headers['content-type'] = options.contentType ?? 'application/json'
  if (options.token) headers.authorization = `Bearer ${toBase64Url(options.token)}`
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      new URL(path, origin),
      {
        method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
        headers,
        agent,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('error', reject)
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown
          try {
            body = text === '' ? undefined : JSON.parse(text)
          } catch {
            body = undefined
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body })
        })
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}

// --- Clients --------------------------------------------------------------------------------------

let sharedLoginKey: Promise<RsaOaepKeyPair> | undefined

/**
 * RSA-3072 generation takes a few hundred milliseconds, so test clients share one login key pair
 * unless a test asks for its own.
 */
export function sharedRsaKeyPair(): Promise<RsaOaepKeyPair> {
  sharedLoginKey ??= generateRsaOaepKeyPair()
  return sharedLoginKey
}

/**
 * A stand-in for the login secret a client derives from a password (shared/login-secret.ts): the
 * server cannot tell one 32-byte secret from another, and SHA-256 spares these tests 600,000
 * PBKDF2 iterations per account. Tests of the real derivation use the client core.
 */
export function loginSecretFor(password: string): string {
  return toBase64Url(new Uint8Array(createHash('sha256').update(password).digest()))
}

export interface TestClient {
  readonly username: string
  readonly password: string
  /** loginSecretFor(password): what registration and log-in send. */
  readonly loginSecret: string
  readonly identity: Identity
  readonly loginKey: RsaOaepKeyPair
  readonly signedPreKey: PreKeyPair
  readonly oneTimePreKeys: PreKeyPair[]
  registerBody(): RegisterRequest
}

let clientCounter = 0

/** A strong password that zxcvbn scores 4 (random words and digits). */
export function strongPassword(): string {
  return `violet-anchor-${toBase64Url(randomBytes(6))}-mosaic`
}

export async function makeClient(
  options: { username?: string; password?: string; oneTimePreKeys?: number; loginKey?: RsaOaepKeyPair } = {},
): Promise<TestClient> {
  clientCounter += 1
  const username = options.username ?? `user${process.pid}x${clientCounter}`
  const password = options.password ?? strongPassword()
  const identity = await generateIdentity()
  const [loginKey, signedPreKey, oneTimePreKeys] = await Promise.all([
    options.loginKey ?? sharedRsaKeyPair(),
    generateSignedPreKey(identity, DEFAULT_DEVICE_ID, 1),
    generateOneTimePreKeys(identity, DEFAULT_DEVICE_ID, 1, options.oneTimePreKeys ?? 5),
  ])
  const loginSecret = loginSecretFor(password)
  return {
    username,
    password,
    loginSecret,
    identity,
    loginKey,
    signedPreKey,
    oneTimePreKeys,
    registerBody: () => ({
      username,
      loginSecret,
      loginKey: toBase64Url(loginKey.publicKeySpki),
      identity: publicIdentityToJson(identity.public),
      signedPreKey: preKeyToJson(publicPreKey(signedPreKey)),
      oneTimePreKeys: oneTimePreKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))),
    }),
  }
}

/** Decrypts a login response's token with the client's RSA private key. */
export async function decryptToken(client: TestClient, response: LoginResponse): Promise<Uint8Array> {
  return rsaOaepDecrypt(client.loginKey.privateKey, fromBase64Url(response.encryptedToken))
}

export async function register(server: Pick<TestServer, 'request'>, client: TestClient): Promise<void> {
  const response = await server.request('/api/v1/register', { body: client.registerBody() })
  if (response.status !== 201)
    throw new Error(`register ${client.username}: ${response.status} ${response.text}`)
}

export async function login(
  server: Pick<TestServer, 'request'>,
  client: TestClient,
  password = client.password,
): Promise<Uint8Array> {
  const response = await server.request('/api/v1/login', {
    body: { username: client.username, loginSecret: loginSecretFor(password) },
  })
  if (response.status !== 200)
    throw new Error(`login ${client.username}: ${response.status} ${response.text}`)
  return decryptToken(client, response.body as LoginResponse)
}

/** A registered, logged-in client and its session token. */
export async function signUp(
  server: Pick<TestServer, 'request'>,
  options: Parameters<typeof makeClient>[0] = {},
): Promise<{ client: TestClient; token: Uint8Array }> {
  const client = await makeClient(options)
  await register(server, client)
  return { client, token: await login(server, client) }
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}
