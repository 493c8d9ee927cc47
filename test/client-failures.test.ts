/**
 * The client core when things go wrong, against the real server over TLS: frames lost on the way
 * (`accepted`, `ack`), a local database that fails while receiving, sockets the server closes or a
 * server that restarts, and one-time prekeys drained by others. The failures are real: the test's
 * WebSocketFactory loses chosen frames of real connections, the store wrapper fails a real commit,
 * the server closes real sockets. No test has a time limit of its own: each step waits for an event
 * (or polls the server until a count changes).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signUp, startServer, type TestServer } from '../server/test/harness.js'
import { ChatClient, type ConnectionState, type MessageView } from '../shared/client/chat-client.js'
import { MemoryStore } from '../shared/client/store.js'
import type { ClientEvents } from '../shared/client/views.js'
import { ONE_TIME_PREKEY_BATCH, ONE_TIME_PREKEY_REFILL_THRESHOLD } from '../shared/limits.js'
import {
  FlakyStore,
  observedHttpClient,
  registerClient,
  restartServer,
  type TappedFrame,
  tappedWebSocketFactory,
} from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

/** Resolves with the first `event` from now on that `predicate` accepts. */
function nextEvent<K extends keyof ClientEvents>(
  client: ChatClient,
  event: K,
  predicate: (payload: ClientEvents[K]) => boolean = () => true,
): Promise<ClientEvents[K]> {
  return new Promise((resolve) => {
    const stop = client.events.on(event, (payload) => {
      if (!predicate(payload)) return
      stop()
      resolve(payload)
    })
  })
}

/** Every incoming message `client` announces from now on. */
function incoming(client: ChatClient): MessageView[] {
  const received: MessageView[] = []
  client.events.on('message', (message) => {
    if (message.direction === 'in') received.push(message)
  })
  return received
}

/** Every connection state `client` passes through from now on. */
function connectionStates(client: ChatClient): ConnectionState[] {
  const states: ConnectionState[] = []
  client.events.on('connection', ({ state }) => states.push(state))
  return states
}

async function online(...clients: ChatClient[]): Promise<void> {
  for (const client of clients) client.connect()
  await Promise.all(clients.map((client) => client.waitUntilOnline()))
}

/** Sends `text` from one client to the other and waits until it has arrived. */
async function exchange(from: ChatClient, to: ChatClient, text: string): Promise<MessageView> {
  const arriving = nextEvent(to, 'message', (m) => m.direction === 'in' && m.text === text)
  await from.send(to.username, text)
  return arriving
}

/** Closes every connection the server holds for `username`, from the server's side. */
function closeFromServer(on: TestServer, username: string): number {
  let closed = 0
  for (const connection of on.app.relay.connections) {
    if (connection.user?.username !== username) continue
    connection.close(1001, 'test: closed by the server')
    closed++
  }
  return closed
}

describe('deduplication and retry with the same id', () => {
  it('a send whose accepted is lost goes out again with the same id after the reconnect, and arrives once', async () => {
    const { factory, tap } = tappedWebSocketFactory(server)
    const aliceStore = new MemoryStore()
    const alice = (await registerClient(server, { webSocket: factory, store: aliceStore })).client
    const bob = (await registerClient(server)).client
    await online(alice, bob)
    const atBob = incoming(bob)

    // The server stores the send and answers; the answer is lost with the connection.
    tap.filter = ({ direction, frame }) => {
      if (direction !== 'received' || frame.type !== 'accepted') return 'pass'
      tap.filter = undefined
      return 'drop-and-close'
    }
    const delivered = nextEvent(alice, 'delivery', (event) => event.state === 'delivered')
    const sent = await alice.send(bob.username, 'the answer to this is lost')
    // Bob's receipt may overtake the second `accepted`; both come, on the new connection.
    expect((await delivered).id).toBe(sent.id)
    await tap.waitFor(
      ({ direction, frame }) => direction === 'received' && frame.type === 'accepted' && frame.id === sent.id,
    )

    // The client reconnected by itself and sent the same id again; the server took it as a retry.
    expect(tap.of('received', 'ready')).toHaveLength(2)
    expect(tap.of('sent', 'send.devices').map((frame) => frame.id)).toEqual([sent.id, sent.id])

    // Anything still on its way to Bob would come before a later message.
    const laterDelivered = nextEvent(alice, 'delivery', (e) => e.state === 'delivered' && e.id !== sent.id)
    await exchange(alice, bob, 'a later message')
    await laterDelivered
    expect(atBob.map((m) => [m.id, m.text])).toEqual([
      [sent.id, 'the answer to this is lost'],
      [expect.any(String), 'a later message'],
    ])
    expect((await bob.history(alice.username)).map((m) => m.text)).toEqual([
      'the answer to this is lost',
      'a later message',
    ])
    // The retry's `accepted` took the message out of the outbox: it is not sent a third time.
    expect(await aliceStore.list('outbox')).toEqual([])
    expect((await alice.history(bob.username)).map((m) => [m.id, m.state])).toEqual([
      [sent.id, 'delivered'],
      [expect.any(String), 'delivered'],
    ])
    await Promise.all([alice.close(), bob.close()])
  })

  it('a delivery the server sends again because the ack was lost is stored and announced once', async () => {
    const alice = (await registerClient(server)).client
    const { factory, tap } = tappedWebSocketFactory(server)
    const bob = (await registerClient(server, { webSocket: factory })).client
    await online(alice, bob)
    const atBob = incoming(bob)

    // Bob stores the message; his acknowledgement is lost with the connection.
    tap.filter = ({ direction, frame }) => {
      if (direction !== 'sent' || frame.type !== 'ack') return 'pass'
      tap.filter = undefined
      return 'drop-and-close'
    }
    const sent = await alice.send(bob.username, 'delivered twice')
    const first = await tap.waitFor(
      ({ direction, frame }) => direction === 'received' && frame.type === 'deliver' && frame.id === sent.id,
    )
    // After reconnecting by itself, Bob is sent the message again and acknowledges that copy.
    const redelivered = await tap.waitFor(
      (seen) =>
        seen !== first &&
        seen.direction === 'received' &&
        seen.frame.type === 'deliver' &&
        seen.frame.id === sent.id,
    )
    await tap.waitFor(
      ({ direction, frame }) => direction === 'sent' && frame.type === 'ack' && frame.upTo >= first.frame.seq,
    )
    expect(redelivered.frame.seq).toBe(first.frame.seq)
    expect(tap.of('received', 'ready')).toHaveLength(2)

    await exchange(alice, bob, 'a later message')
    expect(atBob.map((m) => m.text)).toEqual(['delivered twice', 'a later message'])
    expect((await bob.history(alice.username)).map((m) => m.text)).toEqual([
      'delivered twice',
      'a later message',
    ])
    expect((await bob.contact(alice.username))?.unread).toBe(2)
    await Promise.all([alice.close(), bob.close()])
  })
})

describe('acknowledging only what is stored', () => {
  it('a message whose storing fails is not acknowledged, and arrives once after the reconnect', async () => {
    const alice = (await registerClient(server)).client
    const { factory, tap } = tappedWebSocketFactory(server)
    const bobStore = new FlakyStore()
    const bob = (await registerClient(server, { webSocket: factory, store: bobStore })).client
    await online(alice, bob)
    const atBob = incoming(bob)
    const problems: string[] = []
    bob.events.on('problem', ({ message }) => problems.push(message))

    // The next write of a received message to Bob's database fails, once.
    bobStore.failOnce((operations) =>
      operations.some((operation) => operation.op === 'put' && operation.table === 'messages'),
    )
    const arrived = nextEvent(bob, 'message', (m) => m.direction === 'in')
    const sent = await alice.send(bob.username, 'stored on the second try')

    const isDelivery = (seen: TappedFrame) =>
      seen.direction === 'received' && seen.frame.type === 'deliver' && seen.frame.id === sent.id
    const first = await tap.waitFor(isDelivery)
    const ack = await tap.waitFor(
      ({ direction, frame }) => direction === 'sent' && frame.type === 'ack' && frame.upTo >= first.frame.seq,
    )
    // The first acknowledgement that covers the message left only after a second copy came in
    // (after the reconnect) and was stored.
    const second = tap.frames.find((seen) => seen !== first && isDelivery(seen))
    expect(second?.frame.seq).toBe(first.frame.seq)
    expect(tap.frames.indexOf(ack)).toBeGreaterThan(tap.frames.indexOf(second!))
    expect((await arrived).id).toBe(sent.id)
    expect(bobStore.failed).toHaveLength(1)
    expect(problems).toContain('test: the local database is unavailable')
    expect(tap.of('received', 'ready')).toHaveLength(2)

    await exchange(alice, bob, 'a later message')
    expect(atBob.map((m) => m.text)).toEqual(['stored on the second try', 'a later message'])
    expect((await bob.history(alice.username)).map((m) => m.text)).toEqual([
      'stored on the second try',
      'a later message',
    ])
    await Promise.all([alice.close(), bob.close()])
  })

  it('a backlog is stored in batches, acknowledged only once stored, and a failing batch loses nothing', async () => {
    const alice = (await registerClient(server)).client
    const { factory, tap } = tappedWebSocketFactory(server)
    const bobStore = new FlakyStore()
    const bobAccount = await registerClient(server, { webSocket: factory, store: bobStore })
    await bobAccount.client.close()
    await online(alice)
    const texts = Array.from({ length: 120 }, (_, i) => `queued ${i}`)
    for (const text of texts) await alice.send(bobAccount.client.username, text)
    await alice.flush()

    // Bob comes back; the second batch of deliveries his database is asked to store fails once.
    let batches = 0
    const commitsWithMessages: number[] = []
    bobStore.failOnce((operations) => {
      const messages = operations.filter(
        (operation) => operation.op === 'put' && operation.table === 'messages',
      )
      return messages.length > 0 && ++batches === 2
    })
    const counting = bobStore.commit.bind(bobStore)
    bobStore.commit = async (operations) => {
      await counting(operations)
      const stored = operations.filter(
        (operation) => operation.op === 'put' && operation.table === 'messages',
      )
      if (stored.length > 0) commitsWithMessages.push(stored.length)
    }
    const bob = await ChatClient.open(bobAccount.options, bobAccount.password)
    const atBob = incoming(bob)
    bob.connect()
    await new Promise<void>((resolve) => {
      const check = () => atBob.length >= texts.length && resolve()
      bob.events.on('message', check)
    })
    expect(atBob.map((m) => m.text)).toEqual(texts)
    expect((await bob.history(alice.username, { limit: 200 })).map((m) => m.text)).toEqual(texts)
    expect(bobStore.failed).toHaveLength(1)
    // Many messages per commit (a commit per message would make 120).
    expect(commitsWithMessages.reduce((a, b) => a + b, 0)).toBe(texts.length)
    expect(commitsWithMessages.length).toBeLessThanOrEqual(texts.length / 2)
    // Nothing was acknowledged before it was stored: on the first connection, whose second batch
    // failed, no acknowledgement went beyond the deliveries of its first batch.
    const reconnect = tap.frames.findIndex(
      (seen, i) => i > tap.frames.findIndex((f) => f.frame.type === 'ready') && seen.frame.type === 'ready',
    )
    const firstConnection = tap.frames.slice(0, reconnect)
    const delivered = firstConnection.filter(
      (seen) => seen.direction === 'received' && seen.frame.type === 'deliver',
    )
    const acked = firstConnection
      .filter((seen) => seen.direction === 'sent' && seen.frame.type === 'ack')
      .map((seen) => seen.frame.upTo as number)
    expect(reconnect).toBeGreaterThan(0)
    expect(Math.max(0, ...acked)).toBeLessThanOrEqual(delivered[commitsWithMessages[0]! - 1]!.frame.seq)
    await Promise.all([alice.close(), bob.close()])
  })
})

describe('reconnecting by itself', () => {
  it('comes back online after the server closes its socket, and what was sent meanwhile arrives', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    await online(alice, bob)
    await exchange(alice, bob, 'before')
    await exchange(bob, alice, 'before, back')

    const states = connectionStates(alice)
    const offline = nextEvent(alice, 'connection', ({ state }) => state === 'offline')
    const back = nextEvent(alice, 'connection', ({ state }) => state === 'online')
    expect(closeFromServer(server, alice.username)).toBe(1)
    await offline

    // Written while Alice is away: hers waits in her outbox, Bob's in the server's queue.
    expect(alice.connection).toBe('offline')
    const toBob = nextEvent(bob, 'message', (m) => m.text === 'written while disconnected')
    const toAlice = nextEvent(alice, 'message', (m) => m.text === 'sent while Alice was away')
    expect((await alice.send(bob.username, 'written while disconnected')).state).toBe('sending')
    await bob.send(alice.username, 'sent while Alice was away')

    await back
    expect(states).toEqual(['offline', 'connecting', 'online'])
    await Promise.all([toBob, toAlice])
    await Promise.all([alice.close(), bob.close()])
  })

  it('finds the server again after it restarts on the same database and port', async () => {
    let own = await startServer()
    try {
      const alice = (await registerClient(own)).client
      const bob = (await registerClient(own)).client
      await online(alice, bob)
      await exchange(alice, bob, 'before the restart')
      const atBob = incoming(bob)

      const offline = nextEvent(alice, 'connection', ({ state }) => state === 'offline')
      const aliceBack = nextEvent(alice, 'connection', ({ state }) => state === 'online')
      const bobBack = nextEvent(bob, 'connection', ({ state }) => state === 'online')
      const restarted = restartServer(own)
      await offline
      const toBob = nextEvent(bob, 'message', (m) => m.text === 'written during the restart')
      await alice.send(bob.username, 'written during the restart')
      own = await restarted

      await Promise.all([aliceBack, bobBack, toBob])
      await exchange(bob, alice, 'after the restart')
      expect(atBob.map((m) => m.text)).toEqual(['written during the restart'])
      await Promise.all([alice.close(), bob.close()])
    } finally {
      await own.close()
    }
  })
})

describe('one-time prekeys drained by others', () => {
  /** Polls the server's count of the client's one-time prekeys until it reaches `atLeast`. */
  async function oneTimePreKeysReach(client: ChatClient, atLeast: number): Promise<number> {
    for (;;) {
      const { oneTimePreKeys } = await client.preKeyStatus()
      if (oneTimePreKeys >= atLeast) return oneTimePreKeys
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  async function drain(owner: ChatClient, leaving: number): Promise<void> {
    const { token } = await signUp(server)
    for (let i = 0; i < ONE_TIME_PREKEY_BATCH - leaving; i++) {
      const response = await server.request(`/api/v1/users/${owner.username}/bundle`, { token })
      expect(response.status).toBe(200)
    }
  }

  it('refills on the server’s prekeys.low, without being asked to', async () => {
    const requests: string[] = []
    let statusAnswered!: () => void
    const firstStatus = new Promise<void>((resolve) => {
      statusAnswered = resolve
    })
    const http = observedHttpClient(server, (method, path) => {
      requests.push(`${method} ${path}`)
      if (path === '/keys/status') statusAnswered()
      return undefined
    })
    const { factory, tap } = tappedWebSocketFactory(server)
    const owner = (await registerClient(server, { http, webSocket: factory })).client
    await online(owner)
    // The check every connection starts with has found the keys all there; from now on only the
    // server's frame can start a refill.
    await firstStatus

    await drain(owner, 5)
    expect(await oneTimePreKeysReach(owner, ONE_TIME_PREKEY_BATCH)).toBe(5 + ONE_TIME_PREKEY_BATCH)
    const lows = tap.of('received', 'prekeys.low')
    expect(lows.length).toBeGreaterThan(0)
    expect(lows.every((frame) => frame.remaining < ONE_TIME_PREKEY_REFILL_THRESHOLD)).toBe(true)
    expect(requests.filter((request) => request === 'POST /keys/one-time')).toHaveLength(1)
    await owner.close()
  })

  it('a prekeys.low that comes while a check is under way still leads to a refill', async () => {
    // The check at connect gets its answer (every key still there) only after the drain.
    let statusHeld!: () => void
    const held = new Promise<void>((resolve) => {
      statusHeld = resolve
    })
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let holding = true
    const http = observedHttpClient(server, (_method, path) => {
      if (path !== '/keys/status' || !holding) return undefined
      holding = false
      statusHeld()
      return gate
    })
    const { factory, tap } = tappedWebSocketFactory(server)
    const owner = (await registerClient(server, { http, webSocket: factory })).client
    await online(owner)
    await held

    await drain(owner, 5)
    await tap.waitFor(
      ({ direction, frame }) =>
        direction === 'received' && frame.type === 'prekeys.low' && frame.remaining === 5,
    )
    // The client handles the frame in a later turn (nothing is queued before it); let it.
    await new Promise((resolve) => setImmediate(resolve))
    release()
    expect(await oneTimePreKeysReach(owner, ONE_TIME_PREKEY_BATCH)).toBe(5 + ONE_TIME_PREKEY_BATCH)
    await owner.close()
  })
})
