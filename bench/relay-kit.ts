/**
 * Pieces the relay benchmarks share (bench/server.ts, bench/cluster.ts): users written straight
 * into the database, the load generator in its child process (bench/server-load.ts), the bare `ws`
 * relay that is the floor, and the limits a benchmark raises. The load generator's clients all
 * connect from 127.0.0.1 and each sends far faster than a person, so the per-user send and
 * per-connection frame rates, the per-address limit on sockets not yet authenticated and the TLS
 * handshake limits per address are lifted; everything else stays as shipped.
 */
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { type WebSocket, WebSocketServer } from 'ws'
import type { BuildOptions } from '../server/app.js'
import { hashSessionToken } from '../server/auth/tokens.js'
import type { Db } from '../server/db/schema.js'
import type { httpsOptions } from '../server/tls.js'
import type { LoadCommand } from './server-load.js'

const unlimited = { perSecond: 1e9, burst: 1e9 }

/** The limits every relay benchmark raises (see above); bench/server.ts adds its own for the drain. */
export const BENCH_LIMITS = {
  sendRatePerUser: unlimited,
  frameRatePerConnection: unlimited,
  // Every load client connects from 127.0.0.1, hundreds of them at once before they authenticate.
  maxUnauthenticatedSocketsPerAddress: Number.MAX_SAFE_INTEGER,
  // ...and so thousands of TLS handshakes from one address, far beyond the per-address limits.
  maxTlsHandshakesInProgressPerAddress: Number.MAX_SAFE_INTEGER,
  tlsHandshakeRatePerAddress: unlimited,
} satisfies BuildOptions['limits']

export interface BenchUser {
  readonly id: number
  readonly username: string
  /** Device 1's session token. */
  readonly token: string
  /** A session token per device, device 1 first (`devices` ids 1, 2, ...). */
  readonly deviceTokens: readonly string[]
}

/**
 * Users with keys and a live session token per device, written in bulk (one transaction). Each
 * of the `devices` (1 unless told) gets what a linked device has: a `devices` row, a signed prekey,
 * one-time prekeys and its own session token.
 */
export async function createUsers(
  db: Db,
  prefix: string,
  count: number,
  options: { loginKey: Uint8Array; passwordHash: string; devices?: number },
): Promise<BenchUser[]> {
  const now = Date.now()
  const users: BenchUser[] = []
  const random = (length: number) => new Uint8Array(randomBytes(length))
  const deviceIds = Array.from({ length: options.devices ?? 1 }, (_, i) => i + 1)
  const everyDevice = <Row>(rows: readonly Row[]) =>
    rows.flatMap((row) => deviceIds.map((deviceId) => ({ row, deviceId })))
  await db.transaction().execute(async (trx) => {
    for (let start = 0; start < count; start += 500) {
      const names = Array.from({ length: Math.min(500, count - start) }, (_, i) => `${prefix}${start + i}`)
      const rows = await trx
        .insertInto('users')
        .values(
          names.map((username) => ({
            username,
            password_hash: options.passwordHash,
            credential: 'login-secret-v1',
            identity_key: random(32),
            signing_key: random(32),
            identity_signature: random(64),
            created_at: now,
            identity_changed_at: now,
          })),
        )
        .returning(['id', 'username'])
        .execute()
      await trx
        .insertInto('devices')
        .values(
          everyDevice(rows).map(({ row, deviceId }) => ({
            user_id: row.id,
            device_id: deviceId,
            login_key: options.loginKey,
            name: null,
            created_at: now,
            last_seen_at: now,
          })),
        )
        .execute()
      await trx
        .insertInto('signed_prekeys')
        .values(
          everyDevice(rows).map(({ row, deviceId }) => ({
            user_id: row.id,
            device_id: deviceId,
            key_id: 1,
            public_key: random(32),
            signature: random(64),
            created_at: now,
          })),
        )
        .execute()
      // Ten one-time prekeys each: at the refill threshold, so no prekeys.low frames.
      const preKeys = everyDevice(rows).flatMap(({ row, deviceId }) =>
        Array.from({ length: 10 }, (_, keyId) => ({
          user_id: row.id,
          device_id: deviceId,
          key_id: keyId + 1,
          public_key: random(32),
          signature: random(64),
        })),
      )
      for (let offset = 0; offset < preKeys.length; offset += 2_000) {
        await trx
          .insertInto('one_time_prekeys')
          .values(preKeys.slice(offset, offset + 2_000))
          .execute()
      }
      const tokens = everyDevice(rows).map((device) => ({ ...device, token: randomBytes(32) }))
      for (let offset = 0; offset < tokens.length; offset += 2_000) {
        await trx
          .insertInto('auth_tokens')
          .values(
            tokens.slice(offset, offset + 2_000).map(({ row, deviceId, token }) => ({
              token_hash: hashSessionToken(token),
              user_id: row.id,
              device_id: deviceId,
              created_at: now,
              expires_at: now + 24 * 60 * 60 * 1000,
            })),
          )
          .execute()
      }
      for (const [index, row] of rows.entries()) {
        const deviceTokens = tokens
          .slice(index * deviceIds.length, (index + 1) * deviceIds.length)
          .map(({ token }) => token.toString('base64url'))
        users.push({ id: row.id, username: row.username, token: deviceTokens[0]!, deviceTokens })
      }
    }
  })
  return users
}

export class LoadGenerator {
  private readonly child = fork(new URL('./server-load.ts', import.meta.url), {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  private waiting: ((message: { ok: boolean; result?: unknown; error?: string }) => void) | undefined
  readonly started: Promise<unknown>

  constructor() {
    this.child.on('message', (message: { ok: boolean; result?: unknown; error?: string }) => {
      const waiting = this.waiting
      this.waiting = undefined
      waiting?.(message)
    })
    this.started = this.next()
  }

  private next(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.waiting = (message) => (message.ok ? resolve(message.result) : reject(new Error(message.error)))
    })
  }

  run<T>(command: LoadCommand): Promise<T> {
    const result = this.next() as Promise<T>
    this.child.send(command)
    return result
  }

  exit(): void {
    if (this.child.connected) this.child.send({ cmd: 'exit' })
  }
}

/**
 * The floor: a ws relay over TLS that forwards each frame to the paired socket, nothing else.
 * A socket that says `devices:<user>:<device>:<count>` is one of `count` devices of a user (users
 * in pairs, 0 with 1, ...): its frames are lines, one envelope each, the partner's devices first
 * and then its own other devices, and each line goes to its device, as `send.devices` fans out on
 * the real server (bench/server-load.ts, relay.devices).
 */
export async function startBareRelay(tls: ReturnType<typeof httpsOptions>) {
  const server = createServer(tls)
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  const peers: WebSocket[] = []
  const devicesOf: WebSocket[][] = []
  wss.on('connection', (ws) => {
    let index = -1
    let partner: WebSocket | undefined
    let devices: { user: number; device: number; count: number } | undefined
    let fanOut: WebSocket[] | undefined
    ws.on('message', (data: Buffer, isBinary) => {
      if (devices) {
        // The load generator connects every device before any sends, so the lists are whole by now.
        fanOut ??= [
          ...devicesOf[devices.user ^ 1]!.slice(0, devices.count),
          ...devicesOf[devices.user]!.slice(0, devices.count).filter(
            (_, other) => other !== devices!.device - 1,
          ),
        ]
        let start = 0
        for (const target of fanOut) {
          const end = data.indexOf(0x0a, start)
          target.send(data.subarray(start, end < 0 ? data.length : end), { binary: isBinary })
          start = end + 1
        }
        return
      }
      if (index < 0) {
        const hello = String(data)
        if (hello.startsWith('devices:')) {
          const [user, device, count] = hello.slice('devices:'.length).split(':').map(Number)
          devices = { user: user!, device: device!, count: count! }
          devicesOf[devices.user] ??= []
          devicesOf[devices.user]![devices.device - 1] = ws
          ws.send('ok')
          return
        }
        index = Number(hello.slice('pair:'.length))
        peers[index] = ws
        const other = peers[index ^ 1]
        if (other) {
          ws.send('ok')
          other.send('ok')
        }
        return
      }
      partner ??= peers[index ^ 1]
      partner?.send(data, { binary: isBinary })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `wss://127.0.0.1:${port}`,
    close: async () => {
      for (const client of wss.clients) client.terminate()
      await new Promise((resolve) => wss.close(resolve))
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

export const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits

/** Server process CPU (user + system, all threads) per message delivered, in µs. */
export const cpuPerMessage = (usage: NodeJS.CpuUsage, messages: number) =>
  round((usage.user + usage.system) / Math.max(1, messages), 1)
