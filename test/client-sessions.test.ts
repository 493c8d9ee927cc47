/**
 * Sessions that never lose a message, through the real server: two people who send each other a
 * first message before either has read the other's (both online, both offline, one offline) keep
 * both sessions and converge, and everything after arrives once, in order, nothing undecryptable.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../server/test/harness.js'
import type { ChatClient, MessageView } from '../shared/client/chat-client.js'
import { registerClient } from './client-helpers.js'

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
