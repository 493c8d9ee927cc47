/**
 * The client core over the in-memory relay (test/memory-relay.ts): the messaging scenarios of
 * client-messaging.test.ts and client-failures.test.ts that run against the real server, here
 * without TLS, sockets or a database, to show the fake carries the core the same way. Each test has
 * its own relay (forked from one where Alice and Bob registered), so usernames are plain names.
 */
import { beforeAll, describe, expect, it } from 'vitest'
import { decryptToken, loginSecretFor, makeClient, strongPassword } from '../server/test/harness.js'
import { fromBase64Url, toBase64Url } from '../shared/bytes.js'
import {
  ChatClient,
  type ChatClientOptions,
  type ContentHandler,
  type MessageView,
  messageTime,
  noticeText,
} from '../shared/client/chat-client.js'
import { MAX_RECEIPT_IDS } from '../shared/client/content.js'
import { isClientError } from '../shared/client/errors.js'
import { MemoryStore } from '../shared/client/store.js'
import { type HttpResponse, webSocketUrl } from '../shared/client/transport.js'
import type { ClientEvents } from '../shared/client/views.js'
import type { LoginResponse } from '../shared/codec/api.js'
import { type Static, Type } from '../shared/codec/schema.js'
import { RETRY_REQUEST_INTERVAL_MS } from '../shared/limits.js'
import { TEST_KDF_ITERATIONS } from './client-helpers.js'
import { copyStore, MemoryRelay, type MemoryRelayLimits, type NetworkLink } from './memory-relay.js'

interface Device {
  readonly client: ChatClient
  readonly options: ChatClientOptions
  readonly store: MemoryStore
  readonly link: NetworkLink
  readonly password: string
  readonly events: Recorder
}

/** Every event a client emits from the moment it is made, and a way to wait for one. */
class Recorder {
  readonly seen: { [K in keyof ClientEvents]?: ClientEvents[K][] } = {}
  private readonly waiting = new Set<() => void>()

  constructor(client: ChatClient) {
    for (const name of ['message', 'delivery', 'connection', 'problem', 'identity-changed'] as const) {
      client.events.on(name, (payload) => {
        const list = (this.seen[name] ?? []) as unknown[]
        list.push(payload)
        ;(this.seen as Record<string, unknown[]>)[name] = list
        for (const wake of [...this.waiting]) wake()
      })
    }
  }

  of<K extends keyof ClientEvents>(name: K): ClientEvents[K][] {
    return (this.seen[name] ?? []) as ClientEvents[K][]
  }

  /** Incoming messages, in the order they were announced. */
  get incoming(): MessageView[] {
    return this.of('message').filter((message) => message.direction === 'in')
  }

  /** Resolves once `condition` holds (checked now and after every event). */
  until(condition: () => boolean): Promise<void> {
    if (condition()) return Promise.resolve()
    return new Promise((resolve) => {
      const check = () => {
        if (!condition()) return
        this.waiting.delete(check)
        resolve()
      }
      this.waiting.add(check)
    })
  }

  delivered(id: string, state: 'accepted' | 'delivered'): Promise<void> {
    return this.until(() => this.of('delivery').some((event) => event.id === id && event.state === state))
  }
}

function deviceOptions(relay: MemoryRelay, link: NetworkLink, store: MemoryStore): ChatClientOptions {
  return {
    serverUrl: relay.serverUrl,
    http: link.http,
    webSocket: link.webSocket,
    store,
    storageKeyIterations: TEST_KDF_ITERATIONS,
    minimumStorageKeyIterations: TEST_KDF_ITERATIONS,
    loginSecretIterations: TEST_KDF_ITERATIONS,
  }
}

/** Alice and Bob registered once per file: the core makes an RSA-3072 key pair per account. */
let registered: { relay: MemoryRelay; stores: Record<'alice' | 'bob', MemoryStore>; password: string }

beforeAll(async () => {
  const relay = new MemoryRelay()
  const password = strongPassword()
  const stores = { alice: new MemoryStore(), bob: new MemoryStore() }
  for (const name of ['alice', 'bob'] as const) {
    const client = await ChatClient.register(deviceOptions(relay, relay.link(), stores[name]), name, password)
    await client.close()
  }
  registered = { relay, stores, password }
})

/** A relay of its own for one test, with Alice and Bob registered on it and logged in, not connected. */
async function pair(
  limits: Partial<MemoryRelayLimits> = {},
): Promise<{ relay: MemoryRelay; alice: Device; bob: Device }> {
  const relay = registered.relay.fork({ limits })
  const device = async (name: 'alice' | 'bob'): Promise<Device> => {
    const link = relay.link()
    const store = await copyStore(registered.stores[name])
    const options = deviceOptions(relay, link, store)
    const client = await ChatClient.open(options, registered.password)
    return { client, options, store, link, password: registered.password, events: new Recorder(client) }
  }
  return { relay, alice: await device('alice'), bob: await device('bob') }
}

/** The same device's client again, opened from its store, as after a restart of the app. */
async function reopen(device: Device): Promise<Device> {
  await device.client.close()
  const client = await ChatClient.open(device.options, device.password)
  return { ...device, client, events: new Recorder(client) }
}

async function online(...devices: Device[]): Promise<void> {
  for (const { client } of devices) client.connect()
  await Promise.all(devices.map(({ client }) => client.waitUntilOnline()))
}

async function closeAll(...devices: Device[]): Promise<void> {
  await Promise.all(devices.map(({ client }) => client.close()))
}

describe('the client core over the in-memory relay', () => {
  it('sends both ways while online; the sender sees accepted, then delivered', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)

    const sent = await alice.client.send('bob', 'Hello Bob')
    await alice.events.delivered(sent.id, 'delivered')
    expect(bob.events.incoming.map((m) => [m.peer, m.text, m.id])).toEqual([['alice', 'Hello Bob', sent.id]])
    expect(alice.events.of('delivery').map((event) => event.state)).toEqual(['accepted', 'delivered'])
    expect((await alice.client.history('bob')).map((m) => [m.text, m.state])).toEqual([
      ['Hello Bob', 'delivered'],
    ])

    await bob.client.send('alice', 'Hi Alice')
    await alice.events.until(() => alice.events.incoming.length === 1)
    expect(alice.events.incoming[0]?.text).toBe('Hi Alice')
    expect((await bob.client.contact('alice'))?.unread).toBe(1)

    // Once settled, every delivery is acknowledged and nothing waits on the relay.
    await relay.settle()
    expect(relay.queued('alice')).toEqual([])
    expect(relay.queued('bob')).toEqual([])
    expect(relay.of('sent', 'send.devices', 'alice').filter((frame) => frame.id === sent.id)).toHaveLength(1)
    await closeAll(alice, bob)
  })

  it('a server from before devices: the send stays sending, and the problem says the server must be updated', async () => {
    const { relay, alice, bob } = await pair()
    relay.beforeDevices = true
    await online(alice, bob)
    const sent = await alice.client.send('bob', 'to a server that is too old')
    await alice.events.until(() =>
      alice.events.of('problem').some((p) => p.code === 'E2E_ERR_VERSION_MISMATCH'),
    )
    expect(alice.events.of('problem').find((p) => p.code === 'E2E_ERR_VERSION_MISMATCH')?.message).toMatch(
      /server must be updated/,
    )
    expect((await alice.client.history('bob')).find((m) => m.id === sent.id)?.state).toBe('sending')
    await closeAll(alice, bob)
  })

  it('offline: ten messages wait on the relay and arrive once, in order, when the recipient returns', async () => {
    const { relay, alice, bob: registeredBob } = await pair()
    let bob = registeredBob
    await online(alice)
    const ids: string[] = []
    for (let i = 0; i < 10; i++) ids.push((await alice.client.send('bob', `message ${i}`)).id)
    await alice.events.until(() => alice.events.of('delivery').length === 10)
    expect(relay.queued('bob').map((queued) => [queued.id, queued.from])).toEqual(
      ids.map((id) => [id, 'alice']),
    )

    // Bob comes online only now, from his stored account.
    bob = await reopen(bob)
    await online(bob)
    await relay.settle()
    expect(bob.events.incoming.map((m) => m.text)).toEqual(ids.map((_, i) => `message ${i}`))
    expect(bob.events.incoming.map((m) => m.id)).toEqual(ids)
    expect(relay.queued('bob')).toEqual([])
    expect(relay.of('received', 'ready', 'bob')).toEqual([
      { v: 1, type: 'ready', username: 'bob', queued: 10 },
    ])

    // After a reconnect nothing arrives twice.
    await bob.client.disconnect()
    await online(bob)
    await alice.client.send('bob', 'after the reconnect')
    await bob.events.until(() => bob.events.incoming.length === 11)
    await relay.settle()
    expect(bob.events.incoming.at(-1)?.text).toBe('after the reconnect')
    expect(relay.of('received', 'ready', 'bob').map((frame) => frame.queued)).toEqual([10, 0])
    expect(await bob.client.history('alice', { limit: 100 })).toHaveLength(11)
    await closeAll(alice, bob)
  })

  it('a backlog is stored in batches, each answered by its receipts in one commit', async () => {
    const { relay, alice, bob: registeredBob } = await pair()
    await online(alice)
    const count = 250
    const ids: string[] = []
    for (let i = 0; i < count; i++) ids.push((await alice.client.send('bob', `message ${i}`)).id)
    await alice.events.until(() => alice.events.of('delivery').length === count)

    // What each of bob's commits writes: messages stored, receipts queued, outbox entries settled.
    const commits: { messages: number; receipts: number; settled: number }[] = []
    const commit = registeredBob.store.commit.bind(registeredBob.store)
    registeredBob.store.commit = async (operations) => {
      await commit(operations)
      commits.push({
        messages: operations.filter((op) => op.op === 'put' && op.table === 'messages').length,
        receipts: operations.filter((op) => op.op === 'put' && op.table === 'outbox').length,
        settled: operations.filter((op) => op.op === 'delete' && op.table === 'outbox').length,
      })
    }
    const bob = await reopen(registeredBob)
    await online(bob)
    for (const id of ids) await alice.events.delivered(id, 'delivered')
    await relay.settle()
    expect(bob.events.incoming.map((m) => m.id)).toEqual(ids)

    const stored = commits.filter((c) => c.messages > 0)
    const receipts = commits.filter((c) => c.receipts > 0)
    const settled = commits.filter((c) => c.settled > 0)
    // A batch of more than MAX_RECEIPT_IDS deliveries needs several receipts: all in one commit.
    expect(Math.max(...stored.map((c) => c.messages))).toBeGreaterThan(MAX_RECEIPT_IDS)
    expect(receipts.length).toBe(stored.length)
    for (const [i, c] of receipts.entries()) {
      expect(c.receipts).toBe(Math.ceil(stored[i]!.messages / MAX_RECEIPT_IDS))
    }
    // Every receipt is accepted and leaves the outbox (answers that arrive together are settled in
    // one commit; this relay moves one frame per event, so here they come one by one).
    const sum = (list: { settled: number; receipts: number }[], key: 'settled' | 'receipts') =>
      list.reduce((total, c) => total + c[key], 0)
    expect(sum(settled, 'settled')).toBe(sum(receipts, 'receipts'))
    expect(await registeredBob.store.list('outbox')).toEqual([])
    await closeAll(alice, bob)
  })

  it('messages written while the network is gone go out when it is back, and the client reconnects by itself', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)
    await alice.client.send('bob', 'before')
    await bob.events.until(() => bob.events.incoming.length === 1)

    alice.link.goOffline()
    await alice.events.until(() => alice.client.connection === 'offline')
    expect(relay.connectionCount('alice')).toBe(0)
    const queued = await alice.client.send('bob', 'written offline')
    expect(queued.state).toBe('sending')
    expect(relay.queued('bob')).toEqual([])

    alice.link.goOnline()
    await bob.events.until(() => bob.events.incoming.length === 2)
    expect(bob.events.incoming.map((m) => m.text)).toEqual(['before', 'written offline'])
    await alice.events.delivered(queued.id, 'delivered')
    await closeAll(alice, bob)
  })

  it('a send refused because our share of the queue is full stays sending, and goes out once there is room', async () => {
    const { relay, alice, bob } = await pair({ maxQueuedMessagesPerSender: 2 })
    await online(alice)
    const sent = []
    for (const text of ['one', 'two', 'three']) sent.push(await alice.client.send('bob', text))
    await relay.settle()
    expect(relay.of('received', 'error', 'alice')).toMatchObject([
      { code: 'E2E_ERR_QUEUE_SHARE_FULL', id: sent[2]!.id },
    ])
    expect(relay.queued('bob').map((queued) => queued.id)).toEqual([sent[0]!.id, sent[1]!.id])
    // Not given up on: still in the outbox, still "sending".
    expect((await alice.client.history('bob')).map((m) => [m.text, m.state])).toEqual([
      ['one', 'accepted'],
      ['two', 'accepted'],
      ['three', 'sending'],
    ])
    expect(alice.events.of('delivery').some((event) => event.state === 'failed')).toBe(false)

    // Bob drains the queue; Alice's next flush (here her reconnect) sends the third, which arrives last.
    await online(bob)
    await bob.events.until(() => bob.events.incoming.length === 2)
    await relay.settle()
    await alice.client.disconnect()
    await online(alice)
    await bob.events.until(() => bob.events.incoming.length === 3)
    expect(bob.events.incoming.map((m) => m.text)).toEqual(['one', 'two', 'three'])
    await alice.events.delivered(sent[2]!.id, 'accepted')
    await closeAll(alice, bob)
  })

  it('a delivery sent again because the ack was lost is stored and announced once', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)

    // Bob stores the message; his acknowledgement is lost with the connection.
    relay.dropNext('ack', { username: 'bob', close: true })
    const sent = await alice.client.send('bob', 'delivered twice')
    const deliveries = () => relay.of('received', 'deliver', 'bob').filter((frame) => frame.id === sent.id)
    // After reconnecting by itself, Bob is sent the message again, with the same seq, and acknowledges it.
    const second = await relay.waitFor(
      (seen) => seen.frame.type === 'deliver' && seen.frame.id === sent.id && deliveries().length === 2,
    )
    await relay.waitFor(
      (seen) => seen.direction === 'sent' && seen.frame.type === 'ack' && seen.frame.upTo >= second.frame.seq,
    )
    await relay.settle()
    expect(deliveries().map((frame) => frame.seq)).toEqual([second.frame.seq, second.frame.seq])
    expect(relay.of('received', 'ready', 'bob')).toHaveLength(2)
    expect(relay.queued('bob')).toEqual([])

    await alice.client.send('bob', 'a later message')
    await bob.events.until(() => bob.events.incoming.length === 2)
    expect(bob.events.incoming.map((m) => m.text)).toEqual(['delivered twice', 'a later message'])
    expect((await bob.client.history('alice')).map((m) => m.text)).toEqual([
      'delivered twice',
      'a later message',
    ])
    expect((await bob.client.contact('alice'))?.unread).toBe(2)
    await closeAll(alice, bob)
  })

  it('a send whose accepted is lost goes out again with the same id after the reconnect, and arrives once', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)

    // The relay stores the send and answers; the answer is lost with the connection.
    relay.dropNext('accepted', { username: 'alice', close: true })
    const sent = await alice.client.send('bob', 'the answer to this is lost')
    await alice.events.delivered(sent.id, 'delivered')
    await relay.waitFor((seen) => seen.frame.type === 'accepted' && seen.frame.id === sent.id)

    // The client reconnected by itself and sent the same id again; the relay took it as a retry.
    expect(relay.of('received', 'ready', 'alice')).toHaveLength(2)
    expect(relay.of('sent', 'send.devices', 'alice').map((frame) => frame.id)).toEqual([sent.id, sent.id])
    // Alice handles frames in order: once a later message is accepted, so was the retry.
    const later = await alice.client.send('bob', 'a later message')
    await alice.events.delivered(later.id, 'accepted')
    await relay.settle()
    expect(bob.events.incoming.map((m) => [m.id, m.text])).toEqual([
      [sent.id, 'the answer to this is lost'],
      [later.id, 'a later message'],
    ])
    // The retry's `accepted` took the message out of the outbox: it is not sent a third time.
    expect(await alice.store.list('outbox')).toEqual([])
    expect(relay.of('sent', 'send.devices', 'alice').map((frame) => frame.id)).toEqual([
      sent.id,
      sent.id,
      later.id,
    ])
    expect((await alice.client.history('bob')).map((m) => [m.id, m.state])).toEqual([
      [sent.id, 'delivered'],
      [later.id, expect.stringMatching(/^(accepted|delivered)$/)],
    ])
    await closeAll(alice, bob)
  })

  it('a client reopened from its store keeps history and sessions, and a receipt marks a burst delivered', async () => {
    const { relay, alice: registeredAlice, bob } = await pair()
    let alice = registeredAlice
    await online(alice, bob)
    await alice.client.send('bob', 'before the restart')
    await bob.events.until(() => bob.events.incoming.length === 1)

    alice = await reopen(alice)
    expect((await alice.client.history('bob')).map((m) => m.text)).toEqual(['before the restart'])
    await online(alice)
    const burst = []
    for (const text of ['one', 'two', 'three']) burst.push(await alice.client.send('bob', text))
    for (const message of burst) await alice.events.delivered(message.id, 'delivered')
    // The session went on: none of these started a new one with a prekey bundle.
    expect(relay.oneTimePreKeyCount('bob')).toBe(99)
    await bob.client.send('alice', 'still the same session')
    await alice.events.until(() => alice.events.incoming.length === 1)
    expect(alice.events.incoming[0]?.text).toBe('still the same session')
    expect((await alice.client.history('bob')).map((m) => [m.text, m.state])).toEqual([
      ['before the restart', 'delivered'],
      ['one', 'delivered'],
      ['two', 'delivered'],
      ['three', 'delivered'],
      ['still the same session', 'received'],
    ])
    await closeAll(alice, bob)
  })

  it('finds the relay again after a restart, and what was written meanwhile arrives', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)
    await alice.client.send('bob', 'before the restart')
    await bob.events.until(() => bob.events.incoming.length === 1)
    relay.restart()
    await alice.events.until(() => alice.client.connection !== 'online')
    const written = await alice.client.send('bob', 'during the restart')
    await alice.events.delivered(written.id, 'delivered')
    expect(bob.events.incoming.map((m) => m.text)).toEqual(['before the restart', 'during the restart'])
    expect(relay.of('received', 'ready', 'alice')).toHaveLength(2)
    expect(relay.of('received', 'ready', 'bob')).toHaveLength(2)
    await closeAll(alice, bob)
  })

  it('a contact who starts over on a new device: warned at once, refused until accepted, then the conversation goes on', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)
    await alice.client.send('bob', 'hello bob')
    await bob.events.until(() => bob.events.incoming.length === 1)
    // bob writes back: his presence and identity changes now go to alice (docs/protocol.md §13.4).
    await bob.client.send('alice', 'hello alice')
    await alice.events.until(() => alice.events.incoming.length === 1)
    const before = await alice.client.safetyNumber('bob')

    await bob.client.close()
    const newLink = relay.link()
    const newStore = new MemoryStore()
    const newBob = await ChatClient.reinstall(deviceOptions(relay, newLink, newStore), 'bob', bob.password)
    await alice.events.until(() => alice.events.of('identity-changed').length === 1)
    expect(alice.events.of('identity-changed')).toEqual([{ peer: 'bob' }])
    // The old device still opens its history, but its key no longer receives tokens.
    const oldBob = await ChatClient.open(bob.options, bob.password)
    expect((await oldBob.history('alice')).map((m) => m.text)).toEqual(['hello bob', 'hello alice'])
    const replaced = await oldBob.login(bob.password).catch((e: unknown) => e)
    expect(isClientError(replaced, 'E2E_ERR_ACCOUNT_REPLACED')).toBe(true)

    const shown = await alice.client.safetyNumber('bob')
    expect(shown.digits).not.toBe(before.digits)
    const refused = await alice.client.send('bob', 'are you still you?').catch((e: unknown) => e)
    expect(isClientError(refused, 'E2E_ERR_IDENTITY_CHANGED')).toBe(true)
    await alice.client.acceptIdentityChange('bob', shown.digits)
    const newBobEvents = new Recorder(newBob)
    newBob.connect()
    await newBob.waitUntilOnline()
    const welcome = await alice.client.send('bob', 'welcome back')
    // (Alice's receipt for "hello alice" went to the old keys: the new device shows a notice for it.)
    await newBobEvents.until(() => newBobEvents.incoming.some((m) => m.text === 'welcome back'))
    await alice.events.delivered(welcome.id, 'delivered')
    await Promise.all([alice.client.close(), newBob.close(), oldBob.close()])
  })

  it('a slow identity check after identity.changed holds up no delivery behind it; its warning comes when it ends', async () => {
    const { relay, alice, bob } = await pair()
    await online(alice, bob)
    await bob.client.send('alice', 'hello alice')
    await alice.events.until(() => alice.events.incoming.length === 1)
    const carol = await ChatClient.register(
      deviceOptions(relay, relay.link(), new MemoryStore()),
      'carol',
      registered.password,
    )
    carol.connect()
    await carol.waitUntilOnline()

    // Alice's fetch of bob's keys gets no answer until the test says so (a server or a network that
    // never answers one request; the real client gives up after 30 s).
    const request = alice.link.http.request
    let answer!: () => void
    const held = new Promise<void>((resolve) => {
      answer = resolve
    })
    let asked!: () => void
    const fetching = new Promise<void>((resolve) => {
      asked = resolve
    })
    alice.link.http.request = async (method, path, options) => {
      if (method === 'GET' && path.endsWith('/users/bob/identity')) {
        asked()
        await held
      }
      return request(method, path, options)
    }
    await bob.client.close()
    const newBob = await ChatClient.reinstall(
      deviceOptions(relay, relay.link(), new MemoryStore()),
      'bob',
      bob.password,
    )
    await fetching
    // The identity.changed frame reached alice and its check is waiting: carol's message still arrives.
    await carol.send('alice', 'carol here')
    await alice.events.until(() => alice.events.incoming.some((message) => message.text === 'carol here'))
    expect(alice.events.of('identity-changed')).toEqual([])

    answer()
    await alice.events.until(() => alice.events.of('identity-changed').length === 1)
    expect(alice.events.of('identity-changed')).toEqual([{ peer: 'bob' }])
    // A send to bob waited for the check, so it is refused as a key change, not sent to the old keys.
    const refused = await alice.client.send('bob', 'still you?').catch((e: unknown) => e)
    expect(isClientError(refused, 'E2E_ERR_IDENTITY_CHANGED')).toBe(true)
    await Promise.all([alice.client.close(), newBob.close(), carol.close()])
  })
})

/** A socket of the relay's driven by hand, recording what it receives. */
function rawSocket(relay: MemoryRelay, link: NetworkLink) {
  const socket = link.webSocket(webSocketUrl(relay.serverUrl))
  // biome-ignore lint/suspicious/noExplicitAny: tests read frames loosely and assert on them
  const received: any[] = []
  const closed: { code: number; reason: string }[] = []
  socket.onmessage = (event) => received.push(JSON.parse(String(event.data)))
  socket.onclose = (event) => closed.push(event)
  const opened = new Promise((resolve) => {
    socket.onopen = resolve
  })
  const send = (frame: unknown) => socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  return { socket, received, closed, opened, send }
}

/** A user registered and logged in by hand (no client core), with its token. */
async function rawUser(relay: MemoryRelay, username: string, oneTimePreKeys = 5) {
  const client = await makeClient({ username, oneTimePreKeys })
  const link = relay.link()
  expect((await link.http.request('POST', '/register', { body: client.registerBody() })).status).toBe(201)
  const login = await link.http.request('POST', '/login', {
    body: { username, loginSecret: client.loginSecret },
  })
  const token = toBase64Url(await decryptToken(client, login.body as LoginResponse))
  return { client, link, token }
}

function refusal(response: HttpResponse): [number, string | undefined] {
  return [response.status, (response.body as { error?: { code: string } } | undefined)?.error?.code]
}

const body = (bytes: number) => toBase64Url(Uint8Array.from({ length: bytes }, (_, i) => i))
const messageId = (n: number) => toBase64Url(Uint8Array.from({ length: 16 }, (_, i) => (i === 15 ? n : 0)))

describe('the in-memory relay answers as the server does', () => {
  it('refuses REST requests with the server codes', async () => {
    const relay = new MemoryRelay()
    const link = relay.link()
    const post = (path: string, requestBody: unknown) =>
      link.http.request('POST', path, { body: requestBody })
    const alice = await makeClient({ username: 'alice' })
    const { loginSecret: _secret, ...withoutSecret } = alice.registerBody()
    expect(refusal(await post('/register', { ...withoutSecret, password: alice.password }))).toEqual([
      400,
      'E2E_ERR_CLIENT_OUTDATED',
    ])
    expect(refusal(await post('/register', { ...alice.registerBody(), extra: 1 }))).toEqual([
      400,
      'E2E_ERR_BAD_REQUEST',
    ])
    expect(refusal(await post('/register', alice.registerBody()))).toEqual([201, undefined])
    expect(refusal(await post('/register', { ...alice.registerBody(), username: 'ALICE' }))).toEqual([
      409,
      'E2E_ERR_USERNAME_TAKEN',
    ])
    expect(
      refusal(await post('/login', { username: 'alice', loginSecret: loginSecretFor(`${alice.password}x`) })),
    ).toEqual([401, 'E2E_ERR_INVALID_CREDENTIALS'])
    expect(refusal(await post('/login', { username: 'nobody', loginSecret: alice.loginSecret }))).toEqual([
      401,
      'E2E_ERR_INVALID_CREDENTIALS',
    ])
    expect(refusal(await link.http.request('GET', '/users?query=a'))).toEqual([
      401,
      'E2E_ERR_UNAUTHENTICATED',
    ])
    expect(refusal(await link.http.request('GET', '/nowhere'))).toEqual([404, 'E2E_ERR_NOT_FOUND'])
    const { token } = await rawUser(relay, 'bob')
    expect(refusal(await link.http.request('GET', '/users/nobody/identity', { token }))).toEqual([
      404,
      'E2E_ERR_USER_NOT_FOUND',
    ])
    expect(refusal(await link.http.request('GET', '/users/no%20body/identity', { token }))).toEqual([
      400,
      'E2E_ERR_INVALID_USERNAME',
    ])
    expect((await link.http.request('GET', '/users?query=ALI', { token })).body).toEqual({
      users: [{ username: 'alice' }],
    })
    expect(refusal(await link.http.request('GET', '/users?query=AL', { token }))).toEqual([
      400,
      'E2E_ERR_BAD_REQUEST',
    ])
    link.goOffline()
    await expect(link.http.request('GET', '/keys/status', { token })).rejects.toSatisfy((error) =>
      isClientError(error, 'E2E_ERR_NETWORK'),
    )
  })

  it('refuses bad frames with the server codes, closing before authentication', async () => {
    const relay = new MemoryRelay()
    // Enough one-time prekeys that the relay does not say they run low.
    const { link, token } = await rawUser(relay, 'alice', 12)
    const early = rawSocket(relay, link)
    await early.opened
    early.send({ v: 1, type: 'ack', upTo: 1 })
    await relay.settle()
    expect(early.received.map((frame) => frame.code)).toEqual(['E2E_ERR_UNAUTHENTICATED'])
    expect(early.closed).toEqual([{ code: 1008, reason: 'E2E_ERR_UNAUTHENTICATED' }])

    const socket = rawSocket(relay, link)
    await socket.opened
    socket.send({ v: 1, type: 'auth', token })
    socket.send('not json')
    socket.send({ v: 1, type: 'send', id: messageId(1), to: 'nobody', body: body(8) })
    // The last of the 22 characters of 16 bytes carries 2 bits and 4 unused ones: "B" sets one.
    socket.send({ v: 1, type: 'send', id: `${messageId(1).slice(0, 21)}B`, to: 'alice', body: body(8) })
    socket.send({ v: 1, type: 'auth', token })
    await relay.settle()
    expect(socket.received.map((frame) => [frame.type, frame.code ?? frame.queued, frame.id])).toEqual([
      ['ready', 0, undefined],
      ['error', 'E2E_ERR_BAD_FRAME', undefined],
      ['error', 'E2E_ERR_USER_NOT_FOUND', messageId(1)],
      ['error', 'E2E_ERR_BAD_FRAME', undefined],
      ['error', 'E2E_ERR_BAD_FRAME', undefined],
    ])
    expect(socket.closed).toEqual([])
  })

  it('hands out each one-time prekey once, says when they run low, and queues idempotent sends until acknowledged', async () => {
    const relay = new MemoryRelay()
    const alice = await rawUser(relay, 'alice', 12)
    const bob = await rawUser(relay, 'bob')
    const aliceSocket = rawSocket(relay, alice.link)
    await aliceSocket.opened
    aliceSocket.send({ v: 1, type: 'auth', token: alice.token })
    await relay.settle()

    const claimed: (number | undefined)[] = []
    for (let i = 0; i < 3; i++) {
      const bundle = await bob.link.http.request('GET', '/users/alice/bundle', { token: bob.token })
      claimed.push((bundle.body as { oneTimePreKey?: { keyId: number } }).oneTimePreKey?.keyId)
    }
    expect(claimed).toEqual([1, 2, 3])
    await relay.settle()
    // Fewer than ONE_TIME_PREKEY_REFILL_THRESHOLD (10) left after the third.
    expect(aliceSocket.received.filter((frame) => frame.type === 'prekeys.low')).toEqual([
      { v: 1, type: 'prekeys.low', remaining: 9 },
    ])

    // Three sends to Bob while he is offline, one of them twice: stored once, accepted twice alike.
    for (const n of [1, 2, 3, 1])
      aliceSocket.send({ v: 1, type: 'send', id: messageId(n), to: 'bob', body: body(n) })
    await relay.settle()
    const accepted = aliceSocket.received.filter((frame) => frame.type === 'accepted')
    expect(accepted.map((frame) => frame.id)).toEqual([1, 2, 3, 1].map(messageId))
    expect(accepted[3].ts).toBe(accepted[0].ts)
    const queued = relay.queued('bob')
    expect(queued.map((message) => [message.id, message.from])).toEqual(
      [1, 2, 3].map((n) => [messageId(n), 'alice']),
    )

    const bobSocket = rawSocket(relay, bob.link)
    await bobSocket.opened
    bobSocket.send({ v: 1, type: 'auth', token: bob.token })
    await relay.waitFor((seen) => seen.frame.type === 'deliver' && seen.frame.id === messageId(3))
    const deliveries = bobSocket.received.filter((frame) => frame.type === 'deliver')
    expect(bobSocket.received[0]).toEqual({ v: 1, type: 'ready', username: 'bob', queued: 3 })
    expect(deliveries.map((frame) => [frame.seq, frame.id, frame.from, frame.body])).toEqual(
      queued.map((message, i) => [message.seq, message.id, 'alice', body(i + 1)]),
    )
    // Acknowledging more than was sent acknowledges what was sent.
    bobSocket.send({ v: 1, type: 'ack', upTo: queued[1]!.seq })
    // Not settle(): that waits for the third delivery's acknowledgement too.
    await relay.waitFor((seen) => seen.frame.type === 'ack' && seen.frame.upTo === queued[1]!.seq)
    expect(relay.queued('bob').map((message) => message.id)).toEqual([messageId(3)])
    bobSocket.send({ v: 1, type: 'ack', upTo: queued[2]!.seq + 1_000 })
    await relay.settle()
    expect(relay.queued('bob')).toEqual([])
    // A retry after delivery is still a duplicate: accepted, not delivered again.
    aliceSocket.send({ v: 1, type: 'send', id: messageId(2), to: 'bob', body: body(2) })
    await relay.settle()
    expect(bobSocket.received.filter((frame) => frame.type === 'deliver')).toHaveLength(3)
    expect(aliceSocket.received.filter((frame) => frame.type === 'accepted')).toHaveLength(5)
  })

  it('holds everything on the wire while paused, and moves it one event at a time', async () => {
    const relay = new MemoryRelay()
    const alice = await rawUser(relay, 'alice', 12)
    await rawUser(relay, 'bob')
    const socket = rawSocket(relay, alice.link)
    relay.pause()
    expect(relay.inTransit).toBe(1)
    expect(relay.step()).toBe(true)
    await socket.opened
    socket.send({ v: 1, type: 'auth', token: alice.token })
    socket.send({ v: 1, type: 'send', id: messageId(1), to: 'bob', body: body(4) })
    expect(relay.inTransit).toBe(2)
    relay.step()
    expect(relay.connectionCount('alice')).toBe(1)
    relay.step()
    expect(relay.queued('bob').map((message) => message.id)).toEqual([messageId(1)])
    // The relay's answers wait on the wire too: ready, then accepted.
    expect(socket.received).toEqual([])
    expect(relay.inTransit).toBe(2)
    relay.step()
    expect(socket.received.map((frame) => frame.type)).toEqual(['ready'])
    relay.step()
    expect(socket.received.map((frame) => frame.type)).toEqual(['ready', 'accepted'])
    expect(relay.step()).toBe(false)
    relay.resume()
    socket.socket.close(1000, 'done')
    await relay.settle()
    expect(socket.closed).toEqual([{ code: 1000, reason: 'done' }])
    expect(relay.connectionCount('alice')).toBe(0)
  })
})

describe('content of a kind a version does not know', () => {
  /** A later version's content type: a poll, shown in the conversation as its question. */
  const PollContent = Type.Object({
    v: Type.Literal(1),
    type: Type.Literal('poll'),
    question: Type.String({ minLength: 1, maxLength: 200 }),
  })
  const pollHandler: ContentHandler<Static<typeof PollContent>> = {
    type: 'poll',
    schema: PollContent,
    display: (poll) => `Poll: ${poll.question}`,
    async handle() {},
  }

  it('is kept by a client one version behind, shown as such, and shown by a later version from the store', async () => {
    const { alice, bob } = await pair()
    const later: Device = { ...alice, options: { ...alice.options, contentHandlers: [pollHandler] } }
    const aliceLater = await reopen(later)
    await online(aliceLater, bob)
    await aliceLater.client.send('bob', 'a question for you')
    await bob.events.until(() => bob.events.incoming.length === 1)
    const id = await aliceLater.client.sendContent('bob', { v: 1, type: 'poll', question: 'Lunch at noon?' })
    await bob.events.until(() => bob.events.incoming.length === 2)
    const [kept] = bob.events.incoming.slice(1)
    expect(kept).toMatchObject({ id, kind: 'unsupported', text: '' })
    expect(noticeText(kept!)).toBe(
      'alice sent a kind of message this version cannot display. Update secure-chat to see it.',
    )
    expect((await bob.client.history('alice')).map((m) => m.kind)).toEqual(['text', 'unsupported'])

    // Bob updates: the same store, opened by a version that knows polls, shows it.
    const bobLater = await reopen({ ...bob, options: { ...bob.options, contentHandlers: [pollHandler] } })
    expect((await bobLater.client.history('alice')).map((m) => [m.kind, m.text])).toEqual([
      ['text', 'a question for you'],
      ['text', 'Poll: Lunch at noon?'],
    ])
    // A type the client has no handler for, or a built-in one, is not sent through sendContent.
    const refused = await bob.client
      .sendContent('alice', { v: 1, type: 'poll', question: 'x' })
      .catch((e: unknown) => e)
    expect(isClientError(refused, 'E2E_ERR_CLIENT_INPUT')).toBe(true)
    const builtIn = await aliceLater.client
      .sendContent('bob', { v: 1, type: 'text', text: 'x' })
      .catch((e: unknown) => e)
    expect(isClientError(builtIn, 'E2E_ERR_CLIENT_INPUT')).toBe(true)
    await closeAll(aliceLater, bobLater)
  })
})

describe('the conversation list', () => {
  it('comes from the core with each conversation’s newest entry, without reading any history', async () => {
    const { alice, bob } = await pair()
    await online(alice, bob)
    await alice.client.send('bob', 'first line\nsecond line')
    await bob.events.until(() => bob.events.incoming.length === 1)
    const reply = await bob.client.send('alice', 'a reply')
    await alice.events.until(() => alice.events.incoming.length === 1)

    let historyReads = 0
    const listMessages = alice.store.listMessages.bind(alice.store)
    alice.store.listMessages = (...args) => {
      historyReads++
      return listMessages(...args)
    }
    const [conversation] = await alice.client.conversations()
    expect(historyReads).toBe(0)
    expect(conversation).toMatchObject({
      username: 'bob',
      unread: 1,
      preview: { id: reply.id, text: 'a reply', direction: 'in', kind: 'text' },
    })
    // The time it shows is the one the conversation shows for that message.
    const [, last] = await alice.client.history('bob')
    expect(conversation?.preview?.time).toBe(messageTime(last!))
    const [atBob] = await bob.client.conversations()
    expect(atBob?.preview).toMatchObject({ text: 'a reply', direction: 'out' })
    alice.store.listMessages = listMessages
    await closeAll(alice, bob)
  })
})

describe('asking for messages again', () => {
  /** The fresh sessions (type 2 envelopes) bob has started with alice: one per retry request. */
  const freshSessions = (relay: MemoryRelay) =>
    relay
      .of('sent', 'send.devices', 'bob')
      .filter(
        (frame) =>
          frame.to === 'alice' &&
          frame.messages.some((message: { body: string }) => fromBase64Url(message.body)[1] === 2),
      ).length

  it('gathers what fails into one request, asks again only after the interval, and remembers across restarts', async () => {
    const { relay, alice, bob: first } = await pair()
    let clock = Date.now()
    const bobOptions = { ...first.options, now: () => clock }
    await first.client.close()
    let bob = await reopen({ ...first, options: bobOptions })
    await online(alice, bob)
    await alice.client.send('bob', 'hello')
    await bob.events.until(() => bob.events.incoming.length === 1)
    const hi = await bob.client.send('alice', 'hi')
    await bob.events.delivered(hi.id, 'delivered')
    await relay.settle()

    // Bob's session with alice is lost while he is away; alice writes twice meanwhile.
    const lose = async () => {
      await bob.client.close()
      await bob.store.commit([{ op: 'delete', table: 'sessions', key: 'alice:1' }])
    }
    await lose()
    const requestsBefore = freshSessions(relay)
    await alice.client.send('bob', 'one')
    await alice.client.send('bob', 'two')
    await alice.client.flush()
    bob = await reopen({ ...bob, options: bobOptions })
    await online(bob)
    await bob.events.until(() => bob.events.incoming.filter((m) => m.kind === 'text').length === 2)
    expect(bob.events.incoming.filter((m) => m.kind === 'undecryptable')).toHaveLength(2)
    // One request named both.
    expect(freshSessions(relay) - requestsBefore).toBe(1)
    expect((await bob.client.history('alice')).map((m) => [m.kind, m.text])).toEqual([
      ['text', 'hello'],
      ['text', 'hi'],
      ['text', 'one'],
      ['text', 'two'],
    ])
    await bob.client.flush()
    await relay.settle()

    // Lost again within the interval: the notice stays and no request goes out, even after a restart.
    await lose()
    await alice.client.send('bob', 'three')
    await alice.client.flush()
    bob = await reopen({ ...bob, options: bobOptions })
    await online(bob)
    await bob.events.until(() => bob.events.incoming.some((m) => m.kind === 'undecryptable'))
    await relay.settle()
    expect(freshSessions(relay) - requestsBefore).toBe(1)
    expect((await bob.client.history('alice')).at(-1)?.kind).toBe('undecryptable')

    // Once the interval is over, the next start asks (the pending id was stored), and it arrives.
    clock += RETRY_REQUEST_INTERVAL_MS + 1
    await bob.client.close()
    bob = await reopen({ ...bob, options: bobOptions })
    await online(bob)
    await bob.events.until(() => bob.events.incoming.some((m) => m.kind === 'text' && m.text === 'three'))
    expect(freshSessions(relay) - requestsBefore).toBe(2)
    expect((await bob.client.history('alice')).map((m) => m.kind)).toEqual([
      'text',
      'text',
      'text',
      'text',
      'text',
    ])
    await closeAll(alice, bob)
  })
})
