/**
 * The relay's heartbeat over TLS with real `ws` clients: a client that stops answering pings is
 * terminated and its watchers see it go offline; one that answers stays; a session that expires
 * while its socket is open is ended at the next heartbeat. Every wait is on an event (a ping, a
 * frame, a close); the short interval only makes those events come sooner.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { ServerErrorCode } from '../errors.js'
import { TOKEN_LIFETIME_MS } from '../limits.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, RelaySocket, relayUrl, sharePresence, WAIT_TIMEOUT_MS } from '../test/ws-client.js'

/**
 * Short enough that a test sees several beats quickly, long enough that a client in this same
 * process answers a ping well before the next one even on a busy two-core machine.
 */
const HEARTBEAT_MS = 200

/**
 * An authenticated socket whose client never answers pings (ws answers them unless told not to),
 * and a promise of its first ping (watched from before authentication, so none is missed).
 */
async function connectSilent(server: TestServer, token: Uint8Array, label: string) {
  const socket = new RelaySocket(new WebSocket(relayUrl(server), { ca: server.ca, autoPong: false }), label)
  await socket.opened
  const pinged = pings(socket, 1)
  socket.auth(token)
  const ready = await socket.next('ready')
  socket.username = ready.username
  return { socket, pinged }
}

/** Resolves once the client has received `count` pings from the server; rejects if it closes first. */
function pings(socket: RelaySocket, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = 0
    const timer = setTimeout(
      () => reject(new Error(`${socket.label}: expected ${count} pings, got ${seen}`)),
      WAIT_TIMEOUT_MS,
    )
    const onPing = () => {
      seen += 1
      if (seen < count) return
      clearTimeout(timer)
      socket.ws.off('ping', onPing)
      resolve()
    }
    socket.ws.on('ping', onPing)
    void socket.closed.then(({ code }) => {
      clearTimeout(timer)
      reject(new Error(`${socket.label}: expected ${count} pings, got ${seen} and a close (${code})`))
    })
  })
}

describe('relay heartbeat over WSS', () => {
  const clock = Date.now()
  let server: TestServer
  const sockets: RelaySocket[] = []
  const track = <T extends RelaySocket>(socket: T): T => {
    sockets.push(socket)
    return socket
  }

  beforeAll(async () => {
    server = await startServer({ now: () => clock, limits: { heartbeatIntervalMs: HEARTBEAT_MS } })
  })
  afterAll(async () => {
    for (const socket of sockets) await socket.close()
    await server?.close()
  })

  it('terminates a client that misses a ping, and its watchers see it go offline', async () => {
    const [watcher, silent] = await Promise.all([signUp(server), signUp(server)])
    await sharePresence(server, silent.token, [watcher.client.username])
    const w = track(await connect(server, watcher.token, 'watcher'))
    w.subscribe([silent.client.username])
    expect(await w.next('presence')).toMatchObject({ username: silent.client.username, online: false })

    const { socket: s, pinged } = await connectSilent(server, silent.token, 'silent')
    track(s)
    expect(await w.next('presence')).toMatchObject({ username: silent.client.username, online: true })
    await pinged
    // Terminated, not closed: no close frame (1006), because a dead link would not carry one.
    expect((await s.closed).code).toBe(1006)
    expect(await w.next('presence')).toEqual({
      v: 1,
      type: 'presence',
      username: silent.client.username,
      online: false,
    })
    // The watcher answered every ping and is still here.
    await w.fence()
  })

  it('keeps a client that answers pings across several intervals', async () => {
    const alice = await signUp(server)
    const a = track(await connect(server, alice.token, 'answering'))
    // Silent between pings: only its pongs show it is alive.
    await pings(a, 4)
    expect(a.ws.readyState).toBe(WebSocket.OPEN)
    await a.fence()
    expect(a.all('error')).toEqual([])
  })
})

describe('a session that expires while its socket is open', () => {
  let clock = Date.now()
  let server: TestServer
  const sockets: RelaySocket[] = []

  beforeAll(async () => {
    server = await startServer({ now: () => clock, limits: { heartbeatIntervalMs: HEARTBEAT_MS } })
  })
  afterAll(async () => {
    for (const socket of sockets) await socket.close()
    await server?.close()
  })

  it('is ended at the next heartbeat with E2E_ERR_UNAUTHENTICATED and 1008', async () => {
    const alice = await signUp(server)
    // The watcher logs in a day later, so its own session outlives alice's.
    clock += 24 * 60 * 60 * 1000
    const watcher = await signUp(server)
    const w = await connect(server, watcher.token, 'watcher')
    const a = await connect(server, alice.token, 'alice')
    sockets.push(w, a)
    a.share([watcher.client.username])
    await a.fence()
    w.subscribe([alice.client.username])
    expect(await w.next('presence')).toMatchObject({ username: alice.client.username, online: true })
    // A heartbeat passes with the session still live.
    await pings(a, 1)
    expect(a.ws.readyState).toBe(WebSocket.OPEN)

    clock += TOKEN_LIFETIME_MS - 24 * 60 * 60 * 1000 + 1
    const error = await a.next('error')
    expect(error.code).toBe(ServerErrorCode.Unauthenticated)
    expect(error.message).toMatch(/expired/)
    expect((await a.closed).code).toBe(1008)
    expect(await w.next('presence')).toMatchObject({ username: alice.client.username, online: false })
  })
})
