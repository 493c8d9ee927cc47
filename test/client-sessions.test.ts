/**
 * Sessions that never lose a message, through the real server: two people who send each other a
 * first message before either has read the other's (both online, both offline, one offline) keep
 * both sessions and converge, and everything after arrives once, in order, nothing undecryptable.
 * Then what the property test over the in-memory relay (client-sessions.property.test.ts) found
 * that shows here too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../server/test/harness.js'
import { type ChatClient, ChatClient as Client, type MessageView } from '../shared/client/chat-client.js'
import { registerClient, tappedWebSocketFactory } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

/** Everything a client reports receiving, and every message it could not decrypt. */
function observe(client: ChatClient): { texts: string[]; undecryptable: string[]; problems: string[] } {
  const seen = { texts: [] as string[], undecryptable: [] as string[], problems: [] as string[] }
  client.events.on('message', (message: MessageView) => {
    if (message.direction === 'in') seen.texts.push(message.text)
  })
  client.events.on('undecryptable', ({ id, reason }) => seen.undecryptable.push(`${id}: ${reason}`))
  client.events.on('problem', ({ code, message }) => seen.problems.push(`${code}: ${message}`))
  return seen
}

/** Polls until `condition` holds (the test's own timeout is the failure guard). */
async function waitFor(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20))
}

async function online(...clients: ChatClient[]): Promise<void> {
  for (const client of clients) client.connect()
  await Promise.all(clients.map((client) => client.waitUntilOnline()))
}

/**
 * After the crossed first messages: 20 rounds in which both send at once (so the messages cross
 * again), then every message has arrived exactly once, in order per sender, and every message the
 * two sent is delivered.
 */
async function converse(alice: ChatClient, bob: ChatClient, seenByAlice: string[], seenByBob: string[]) {
  await waitFor(() => seenByAlice.length === 1 && seenByBob.length === 1)
  for (let i = 0; i < 20; i++) {
    await Promise.all([alice.send(bob.username, `a${i}`), bob.send(alice.username, `b${i}`)])
  }
  await waitFor(() => seenByAlice.length === 21 && seenByBob.length === 21)
  expect(seenByBob).toEqual(['a-first', ...Array.from({ length: 20 }, (_, i) => `a${i}`)])
  expect(seenByAlice).toEqual(['b-first', ...Array.from({ length: 20 }, (_, i) => `b${i}`)])
  for (const [client, peer] of [
    [alice, bob],
    [bob, alice],
  ] as const) {
    await waitFor(async () =>
      (await client.history(peer.username, { limit: 100 }))
        .filter((m) => m.direction === 'out')
        .every((m) => m.state === 'delivered'),
    )
  }
  // Nothing more arrives later (no duplicates from redeliveries).
  await alice.flush()
  await bob.flush()
  expect(seenByBob.length).toBe(21)
  expect(seenByAlice.length).toBe(21)
}

describe('crossed first messages', () => {
  it('both online: both keep both sessions and every later message arrives', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    const a = observe(alice)
    const b = observe(bob)
    await online(alice, bob)
    await Promise.all([alice.send(bob.username, 'a-first'), bob.send(alice.username, 'b-first')])
    await converse(alice, bob, a.texts, b.texts)
    expect([...a.undecryptable, ...b.undecryptable]).toEqual([])
    expect([...a.problems, ...b.problems]).toEqual([])
    await Promise.all([alice.close(), bob.close()])
  })

  it('both offline: the first messages wait on the server and both sessions survive', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    const a = observe(alice)
    const b = observe(bob)
    await alice.send(bob.username, 'a-first')
    await bob.send(alice.username, 'b-first')
    await online(alice, bob)
    await converse(alice, bob, a.texts, b.texts)
    expect([...a.undecryptable, ...b.undecryptable]).toEqual([])
    expect([...a.problems, ...b.problems]).toEqual([])
    await Promise.all([alice.close(), bob.close()])
  })

  it('one offline: a message waits for bob while bob writes his own first message offline', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    const a = observe(alice)
    const b = observe(bob)
    await online(alice)
    await alice.send(bob.username, 'a-first')
    await alice.flush()
    await bob.send(alice.username, 'b-first')
    await online(bob)
    await converse(alice, bob, a.texts, b.texts)
    expect([...a.undecryptable, ...b.undecryptable]).toEqual([])
    expect([...a.problems, ...b.problems]).toEqual([])
    await Promise.all([alice.close(), bob.close()])
  })
})

/** Resolves with the first message event for `id` that `accept` accepts. */
function messageEvent(client: ChatClient, accept: (message: MessageView) => boolean): Promise<MessageView> {
  return new Promise((resolve) => {
    const stop = client.events.on('message', (message) => {
      if (!accept(message)) return
      stop()
      resolve(message)
    })
  })
}

describe('messages that cannot be decrypted', () => {
  it('a session lost on one side: a notice, a retry request, and the message arrives in its place', async () => {
    const bobAccount = await registerClient(server)
    const alice = (await registerClient(server)).client
    let bob = bobAccount.client
    const a = observe(alice)
    let b = observe(bob)
    await online(alice, bob)
    await alice.send(bob.username, 'before')
    await waitFor(() => b.texts.length === 1)
    await bob.send(alice.username, 'reply')
    await waitFor(() => a.texts.length === 1)
    // Nothing in flight any more: both messages delivered (each side has the other's receipt).
    const delivered = async (client: ChatClient, peer: ChatClient) =>
      (await client.history(peer.username)).every((m) => m.direction === 'in' || m.state === 'delivered')
    await waitFor(async () => (await delivered(alice, bob)) && (await delivered(bob, alice)))

    // Bob's session with alice is gone from his store (as if it lost it), and his app restarts.
    await bob.close()
    await bobAccount.options.store.commit([{ op: 'delete', table: 'sessions', key: `${alice.username}:1` }])
    bob = await Client.open(bobAccount.options, bobAccount.password)
    const seenBefore = b.texts
    b = observe(bob)
    b.texts.push(...seenBefore)
    await online(bob)
    const notice = messageEvent(bob, (m) => m.kind === 'undecryptable')
    const recovered = messageEvent(bob, (m) => m.kind === 'text' && m.text === 'after the loss')
    const sent = await alice.send(bob.username, 'after the loss')
    const shown = await notice
    expect(shown.id).toBe(sent.id)
    const message = await recovered
    expect(b.undecryptable).toHaveLength(1)
    expect(message.id).toBe(sent.id)
    expect(message.order).toBe(shown.order)
    // One entry for it, in the notice's place, and alice sees it delivered.
    const history = await bob.history(alice.username)
    expect(history.map((m) => [m.kind, m.text])).toEqual([
      ['text', 'before'],
      ['text', 'reply'],
      ['text', 'after the loss'],
    ])
    await waitFor(async () =>
      (await alice.history(bob.username)).every((m) => m.direction === 'in' || m.state === 'delivered'),
    )
    // The conversation goes on, both ways, on the fresh session.
    await alice.send(bob.username, 'and on')
    await bob.send(alice.username, 'and back')
    await waitFor(() => b.texts.includes('and on') && a.texts.includes('and back'))
    expect(b.texts.filter((text) => text === 'after the loss')).toHaveLength(1)
    expect([...a.problems, ...b.problems]).toEqual([])
    await Promise.all([alice.close(), bob.close()])
  })

  it('a message whose content the sender no longer has is reported lost, on both sides', async () => {
    const aliceAccount = await registerClient(server)
    const bobAccount = await registerClient(server)
    const alice = aliceAccount.client
    await online(alice, bobAccount.client)
    await alice.send(bobAccount.client.username, 'hello')
    await waitFor(async () => (await alice.history(bobAccount.client.username))[0]?.state === 'delivered')
    await bobAccount.client.close()

    const sent = await alice.send(bobAccount.client.username, 'gone before it is read')
    await alice.flush()
    // Alice's device no longer keeps what she sent (as after SENT_CONTENT_KEEP_MS), and bob's
    // session with her is gone: his retry request can only be answered "unavailable".
    const aliceStore = aliceAccount.options.store
    await aliceStore.commit(
      (await aliceStore.list('sent')).map((entry) => ({
        op: 'delete' as const,
        table: 'sent' as const,
        key: entry.key,
      })),
    )
    await bobAccount.options.store.commit([{ op: 'delete', table: 'sessions', key: `${alice.username}:1` }])
    const bob = await Client.open(bobAccount.options, bobAccount.password)
    const lost = messageEvent(bob, (m) => m.kind === 'lost')
    const failed = new Promise<void>((resolve) =>
      alice.events.on('delivery', ({ id, state }) => id === sent.id && state === 'failed' && resolve()),
    )
    await online(bob)
    expect((await lost).id).toBe(sent.id)
    await failed
    expect((await alice.history(bobAccount.client.username)).find((m) => m.id === sent.id)?.state).toBe(
      'failed',
    )
    expect((await bob.history(alice.username)).map((m) => m.kind)).toEqual(['text', 'lost'])
    await Promise.all([alice.close(), bob.close()])
  })
})

/** Resolves once `client` reports `id` in `state`. */
function deliveryOf(client: ChatClient, id: string, state: string): Promise<void> {
  return new Promise((resolve) => {
    const stop = client.events.on('delivery', (event) => {
      if (event.id !== id || event.state !== state) return
      stop()
      resolve()
    })
  })
}

describe('the outbox across connections (found by test/client-sessions.property.test.ts)', () => {
  it('a send whose `accepted` was lost to disconnect() goes out again after connect()', async () => {
    const { factory, tap } = tappedWebSocketFactory(server)
    const aliceAccount = await registerClient(server, { webSocket: factory })
    const alice = aliceAccount.client
    const bob = (await registerClient(server)).client
    await online(alice, bob)
    const first = await alice.send(bob.username, 'first')
    await deliveryOf(alice, first.id, 'delivered')

    // The send is on its way; the client closes before the server's answer can come back.
    const inFlight = await alice.send(bob.username, 'in flight')
    await alice.disconnect()
    alice.connect()
    await alice.waitUntilOnline()
    const later = await alice.send(bob.username, 'later')
    await deliveryOf(alice, later.id, 'accepted')
    // Sent again on the new connection (the server answers a duplicate with `accepted`), so the
    // outbox is empty and flush() can finish.
    // (A third copy can go out when its `accepted` crosses the listing of a later flush.)
    const copies = tap.of('sent', 'send.devices').filter((frame) => frame.id === inFlight.id)
    expect(copies.length).toBeGreaterThanOrEqual(2)
    expect(await aliceAccount.options.store.list('outbox')).toEqual([])
    await alice.flush()
    await Promise.all([alice.close(), bob.close()])
  })

  it('flush() waits for the answer to a retry request that has arrived', async () => {
    const { factory, tap } = tappedWebSocketFactory(server)
    const alice = (await registerClient(server, { webSocket: factory })).client
    const bobAccount = await registerClient(server)
    let bob = bobAccount.client
    await online(alice, bob)
    const before = await alice.send(bob.username, 'before')
    await deliveryOf(alice, before.id, 'delivered')

    // Bob's session with alice is gone (his app restarts on a store without it): her next message
    // cannot be decrypted, and he asks again.
    await bob.close()
    await bobAccount.options.store.commit([{ op: 'delete', table: 'sessions', key: `${alice.username}:1` }])
    bob = await Client.open(bobAccount.options, bobAccount.password)
    const b = observe(bob)
    await online(bob)
    const mark = tap.frames.length
    const lost = await alice.send(bob.username, 'after the loss')
    const retry = await tap.waitFor(
      (f) => tap.frames.indexOf(f) >= mark && f.direction === 'received' && f.frame.type === 'deliver',
    )
    await tap.waitFor(
      (f) => f.direction === 'sent' && f.frame.type === 'ack' && f.frame.upTo >= retry.frame.seq,
    )
    // The request is stored and acknowledged; its answer (the message again) is alice's to send.
    const afterRetry = tap.frames.length
    await alice.flush()
    const acceptedSince = tap.frames
      .slice(afterRetry)
      .filter((f) => f.direction === 'received' && f.frame.type === 'accepted')
    expect(acceptedSince.length, 'the resend was accepted before flush() resolved').toBeGreaterThan(0)
    await waitFor(async () =>
      (await bob.history(alice.username)).some((m) => m.id === lost.id && m.kind === 'text'),
    )
    expect(b.undecryptable).toHaveLength(1)
    await Promise.all([alice.close(), bob.close()])
  })
})
