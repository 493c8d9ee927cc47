/**
 * TLS handshakes are limited per address (issue 10, item 8): raw TCP connections from 127.0.0.1
 * that never finish a handshake fill that address's allowance, while a client from 127.0.0.2 still
 * connects, registers, logs in and authenticates on the relay. Against the real server over TLS.
 */
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import type { LoginResponse } from '../shared/codec/api.js'
import { proxyPeers, TlsHandshakeLimiter } from './plugins/tls-handshakes.js'
import { decryptToken, makeClient, type StartOptions, startServer, type TestServer } from './test/harness.js'
import { RelaySocket, relayUrl } from './test/ws-client.js'

const LIMIT = 4
/** The first bytes of a TLS record carrying a ClientHello, without the rest: a stalled handshake. */
const HALF_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])

let server: TestServer | undefined
const held: Socket[] = []

/** What the server side saw: every accepted TCP connection and every finished handshake, in order. */
class ServerSide {
  readonly connections: Socket[] = []
  secured = 0
  private waiters: (() => void)[] = []

  constructor(of: TestServer) {
    // Registered after the limiter's own listeners, so these run after it has counted.
    of.app.server.on('connection', (socket: Socket) => {
      this.connections.push(socket)
      this.wake()
    })
    of.app.server.on('secureConnection', () => {
      this.secured += 1
      this.wake()
    })
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter()
  }

  /** Resolves once `condition` holds, re-checked on every connection and handshake. */
  until(condition: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const check = () => (condition() ? resolve() : this.waiters.push(check))
      check()
    })
  }

  /** The server's end of the connection `client` opened. */
  peerOf(client: Socket): Socket {
    const found = this.connections.find((socket) => socket.remotePort === client.localPort)
    if (!found) throw new Error(`no server-side connection for port ${client.localPort}`)
    return found
  }
}

let serverSide: ServerSide

afterEach(async () => {
  for (const socket of held.splice(0)) socket.destroy()
  await server?.close()
  server = undefined
})

async function start(options: StartOptions): Promise<TestServer> {
  server = await startServer(options)
  serverSide = new ServerSide(server)
  return server
}

/** Waits until the server has accepted `count` connections in all (the limiter has judged them). */
function accepted(count: number): Promise<void> {
  return serverSide.until(() => serverSide.connections.length >= count)
}

function port(of: TestServer): number {
  return Number(new URL(of.origin).port)
}

/** A TCP connection that sends nothing, or half a ClientHello; resolves once connected. */
function stalled(of: TestServer, from: string, halfHello: boolean): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: port(of), localAddress: from })
    socket.on('error', () => {})
    socket.once('connect', () => {
      if (halfHello) socket.write(HALF_CLIENT_HELLO)
      held.push(socket)
      resolve(socket)
    })
    socket.once('close', () => reject(new Error('closed before connecting')))
  })
}

/** Resolves with what the server did to a connection: sent bytes, or closed it without a word. */
function fate(socket: Socket): Promise<'closed' | 'answered'> {
  return new Promise((resolve) => {
    socket.once('data', () => resolve('answered'))
    socket.once('close', () => resolve('closed'))
  })
}

/** A full TLS handshake from `from`: 'secure', or 'refused' when the server drops the connection. */
function handshake(of: TestServer, from: string): Promise<'secure' | 'refused'> {
  return new Promise((resolve) => {
    // tls.connect takes no source address of its own: it runs over a TCP socket bound to one.
    const tcp = netConnect({ host: '127.0.0.1', port: port(of), localAddress: from })
    tcp.on('error', () => {})
    const socket = tlsConnect({ socket: tcp, ca: of.ca, servername: 'localhost' })
    socket.once('secureConnect', () => {
      socket.end()
      resolve('secure')
    })
    socket.once('error', () => resolve('refused'))
  })
}

describe('TLS handshakes per address', () => {
  it('refuses connections beyond the in-progress limit from one address; another address still logs in', async () => {
    const s = await start({ limits: { maxTlsHandshakesInProgressPerAddress: LIMIT } })
    // Half of them silent, half stopped in the middle of a ClientHello.
    for (let i = 0; i < LIMIT; i++) await stalled(s, '127.0.0.1', i % 2 === 1)
    await accepted(LIMIT)

    const extra = await stalled(s, '127.0.0.1', true)
    expect(await fate(extra)).toBe('closed')
    expect(await handshake(s, '127.0.0.1')).toBe('refused')

    // 127.0.0.2 has its own allowance: it registers, logs in and authenticates on the relay.
    const client = await makeClient()
    const registered = await s.request('/api/v1/register', {
      body: client.registerBody(),
      localAddress: '127.0.0.2',
    })
    expect(registered.status).toBe(201)
    const login = await s.request('/api/v1/login', {
      body: { username: client.username, loginSecret: client.loginSecret },
      localAddress: '127.0.0.2',
    })
    expect(login.status).toBe(200)
    const token = await decryptToken(client, login.body as LoginResponse)
    const relay = new RelaySocket(
      new WebSocket(relayUrl(s), { ca: s.ca, localAddress: '127.0.0.2' }),
      'other-address',
    )
    await relay.opened
    relay.auth(token)
    expect((await relay.next('ready')).type).toBe('ready')
    await relay.close()

    // A stalled connection that closes frees its place.
    const serverEnd = serverSide.peerOf(held[0]!)
    const released = new Promise((resolve) => serverEnd.once('close', resolve))
    held[0]!.destroy()
    await released
    expect(await handshake(s, '127.0.0.1')).toBe('secure')
  })

  it('stops counting a connection once its handshake is done', async () => {
    const s = await start({ limits: { maxTlsHandshakesInProgressPerAddress: LIMIT } })
    // LIMIT connections that finish their handshake and stay open (keep-alive) count no longer.
    const secured = await Promise.all(
      Array.from(
        { length: LIMIT },
        () =>
          new Promise<Socket>((resolve, reject) => {
            const socket = tlsConnect({ host: '127.0.0.1', port: port(s), ca: s.ca, servername: 'localhost' })
            socket.once('secureConnect', () => resolve(socket))
            socket.once('error', reject)
          }),
      ),
    )
    held.push(...secured)
    await serverSide.until(() => serverSide.secured >= LIMIT)
    for (let i = 0; i < LIMIT; i++) await stalled(s, '127.0.0.1', false)
    await accepted(2 * LIMIT)
    const extra = await stalled(s, '127.0.0.1', false)
    expect(await fate(extra)).toBe('closed')
    // The LIMIT stalled ones are still open: they were admitted.
    expect(held.slice(LIMIT, 2 * LIMIT).every((socket) => !socket.destroyed)).toBe(true)
  })

  it('drops a connection that does not finish its handshake in time', async () => {
    const s = await start({ limits: { tlsHandshakeTimeoutMs: 50 } })
    const socket = await stalled(s, '127.0.0.1', true)
    // The server closes it on its own (the test waits for the close, not for a time).
    expect(await fate(socket)).toBe('closed')
  })

  it('limits the rate of new handshakes per address, on the injected clock', async () => {
    let now = 1_000_000
    const s = await start({
      now: () => now,
      limits: { tlsHandshakeRatePerAddress: { perSecond: 1, burst: 3 } },
    })
    for (let i = 0; i < 3; i++) expect(await handshake(s, '127.0.0.1')).toBe('secure')
    expect(await handshake(s, '127.0.0.1')).toBe('refused')
    expect(await handshake(s, '127.0.0.2')).toBe('secure')
    now += 1_000
    expect(await handshake(s, '127.0.0.1')).toBe('secure')
    expect(await handshake(s, '127.0.0.1')).toBe('refused')
  })

  it('does not limit peers named by --trust-proxy (a proxy carries many clients)', async () => {
    const s = await start({
      trustProxy: '127.0.0.1',
      limits: { maxTlsHandshakesInProgressPerAddress: 2 },
    })
    for (let i = 0; i < 4; i++) await stalled(s, '127.0.0.1', false)
    await accepted(4)
    expect(await handshake(s, '127.0.0.1')).toBe('secure')
    // A peer that is not the proxy is limited as usual.
    for (let i = 0; i < 2; i++) await stalled(s, '127.0.0.2', false)
    await accepted(7)
    expect(await fate(await stalled(s, '127.0.0.2', false))).toBe('closed')
  })
})

describe('which peers count as proxies', () => {
  it('follows the --trust-proxy setting', () => {
    expect(proxyPeers(false)('127.0.0.1')).toBe(false)
    expect(proxyPeers(undefined)('10.0.0.1')).toBe(false)
    expect(proxyPeers(true)('203.0.113.9')).toBe(true)
    expect(proxyPeers(1)('203.0.113.9')).toBe(true)
    const listed = proxyPeers('10.1.0.0/16,2001:db8::1,loopback')
    expect(listed('10.1.2.3')).toBe(true)
    expect(listed('::ffff:10.1.2.3')).toBe(true)
    expect(listed('10.2.0.1')).toBe(false)
    expect(listed('2001:db8::1')).toBe(true)
    expect(listed('2001:db8::2')).toBe(false)
    expect(listed('127.0.0.5')).toBe(true)
    expect(listed('::1')).toBe(true)
  })
})

describe('the limiter', () => {
  it('counts per address key, refuses at the limit and keeps a bounded number of addresses', () => {
    let now = 0
    const limiter = new TlsHandshakeLimiter(
      { maxInProgressPerAddress: 2, ratePerAddress: { perSecond: 1, burst: 10 }, maxAddresses: 10 },
      () => now,
    )
    expect(limiter.begin('a')).toBeUndefined()
    expect(limiter.begin('a')).toBeUndefined()
    expect(limiter.begin('a')).toBe('in-progress')
    limiter.end('a')
    expect(limiter.handshakesInProgress('a')).toBe(1)
    for (let i = 0; i < 1_000; i++) {
      now += 1
      expect(limiter.begin(`address${i}`)).toBeUndefined()
      limiter.end(`address${i}`)
    }
    expect(limiter.addressesRemembered()).toBeLessThanOrEqual(10)
  })
})
