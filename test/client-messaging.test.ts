/**
 * Two client cores talking through the real server (TLS, WebSocket relay, SQLite queue): sending
 * online and offline, delivery states, history and sessions surviving a restart, deduplication,
 * and key-change warnings.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../server/test/harness.js'
import {
  type ChatClient,
  ChatClient as Client,
  type DeliveryState,
  type MessageView,
} from '../shared/client/chat-client.js'
import { isClientError } from '../shared/client/errors.js'
import { MemoryStore } from '../shared/client/store.js'
import { clientOptions, registerClient } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

/** Resolves with the first `count` messages `client` receives from now on. */
function nextMessages(client: ChatClient, count: number): Promise<MessageView[]> {
  return new Promise((resolve) => {
    const received: MessageView[] = []
    const stop = client.events.on('message', (message) => {
      if (message.direction !== 'in') return
      received.push(message)
      if (received.length === count) {
        stop()
        resolve(received)
      }
    })
  })
}

function deliveryState(client: ChatClient, id: string, state: DeliveryState): Promise<void> {
  return new Promise((resolve) => {
    const stop = client.events.on('delivery', (event) => {
      if (event.id === id && event.state === state) {
        stop()
        resolve()
      }
    })
  })
}

/** Polls until `condition` holds (the test's own timeout is the failure guard). */
async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20))
}

async function online(...clients: ChatClient[]): Promise<void> {
  for (const client of clients) client.connect()
  await Promise.all(clients.map((client) => client.waitUntilOnline()))
}

describe('messaging through the relay', () => {
  it('sends both ways while online; the sender sees accepted, then delivered', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    await online(alice, bob)

    const toBob = nextMessages(bob, 1)
    const sent = await alice.send(bob.username, 'Hello Bob')
    const delivered = deliveryState(alice, sent.id, 'delivered')
    const [received] = await toBob
    expect(received?.text).toBe('Hello Bob')
    expect(received?.peer).toBe(alice.username)
    await delivered
    expect((await alice.history(bob.username)).map((m) => [m.text, m.state])).toEqual([
      ['Hello Bob', 'delivered'],
    ])

    const toAlice = nextMessages(alice, 1)
    await bob.send(alice.username, 'Hi Alice')
    expect((await toAlice)[0]?.text).toBe('Hi Alice')
    expect((await bob.contact(alice.username))?.unread).toBe(1)
    await Promise.all([alice.close(), bob.close()])
  })

  it('offline: ten messages wait on the server and arrive once, in order, when the recipient returns', async () => {
    const alice = (await registerClient(server)).client
    const bobAccount = await registerClient(server)
    await online(alice)
    const ids: string[] = []
    for (let i = 0; i < 10; i++) ids.push((await alice.send(bobAccount.client.username, `message ${i}`)).id)
    await waitFor(async () =>
      (await alice.history(bobAccount.client.username, { limit: 20 })).every((m) => m.state === 'accepted'),
    )

    // Bob comes online only now, from his stored account.
    const bob = await Client.open(bobAccount.options, bobAccount.password)
    const arriving = nextMessages(bob, 10)
    await online(bob)
    const received = await arriving
    expect(received.map((m) => m.text)).toEqual(ids.map((_, i) => `message ${i}`))
    expect(received.map((m) => m.id)).toEqual(ids)
    // After a reconnect nothing arrives twice.
    await bob.disconnect()
    let extra = 0
    bob.events.on('message', () => extra++)
    await online(bob)
    await alice.send(bob.username, 'after the reconnect')
    await new Promise<void>((resolve) =>
      bob.events.on('message', (m) => m.text === 'after the reconnect' && resolve()),
    )
    expect(extra).toBe(1)
    expect((await bob.history(alice.username, { limit: 100 })).length).toBe(11)
    await Promise.all([alice.close(), bob.close()])
  })

  it('a client reopened from its store keeps history and sessions', async () => {
    const store = new MemoryStore()
    const aliceAccount = await registerClient(server, { store })
    const bob = (await registerClient(server)).client
    await online(aliceAccount.client, bob)
    const toBob = nextMessages(bob, 1)
    await aliceAccount.client.send(bob.username, 'before the restart')
    await toBob
    await aliceAccount.client.close()

    const alice = await Client.open(aliceAccount.options, aliceAccount.password)
    expect((await alice.history(bob.username)).map((m) => m.text)).toEqual(['before the restart'])
    await online(alice)
    const again = nextMessages(bob, 1)
    await alice.send(bob.username, 'after the restart')
    expect((await again)[0]?.text).toBe('after the restart')
    const toAlice = nextMessages(alice, 1)
    await bob.send(alice.username, 'still the same session')
    expect((await toAlice)[0]?.text).toBe('still the same session')
    await Promise.all([alice.close(), bob.close()])
  })

  it('messages sent while the sender is offline go out when it reconnects', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    await online(bob)
    await alice.addContact(bob.username)
    const queued = await alice.send(bob.username, 'written offline')
    expect(queued.state).toBe('sending')
    const toBob = nextMessages(bob, 1)
    await online(alice)
    expect((await toBob)[0]?.text).toBe('written offline')
    await Promise.all([alice.close(), bob.close()])
  })

  it('a contact who starts over on a new device: warned at once if online, else on reconnect; sending waits for acknowledgement', async () => {
    const alice = (await registerClient(server)).client
    const carol = (await registerClient(server)).client
    const bobAccount = await registerClient(server)
    const bob = bobAccount.client
    await online(alice, bob, carol)
    for (const peer of [alice, carol]) {
      const arriving = nextMessages(bob, 1)
      await peer.send(bob.username, `hello from ${peer.username}`)
      await arriving
    }
    // bob writes back to alice only: his identity changes now reach her at once (docs/protocol.md
    // §13.4); carol, who only wrote to him, learns of them when her client next checks.
    const answer = nextMessages(alice, 1)
    await bob.send(alice.username, 'hello alice')
    await answer
    const before = await alice.safetyNumber(bob.username)
    // Carol is offline when Bob starts over; Alice is online.
    await carol.disconnect()
    await bob.close()
    const aliceWarned = new Promise<string>((resolve) =>
      alice.events.on('identity-changed', ({ peer }) => resolve(peer)),
    )
    const newBob = await Client.reinstall(clientOptions(server), bob.username, bobAccount.password)
    expect(await aliceWarned).toBe(bob.username)
    // The old device still opens its history, but can no longer log in: the account is elsewhere now.
    const oldBob = await Client.open(bobAccount.options, bobAccount.password)
    expect((await oldBob.history(alice.username)).length).toBe(2)
    const replaced = await oldBob.login(bobAccount.password).catch((e: unknown) => e)
    expect(isClientError(replaced, 'E2E_ERR_ACCOUNT_REPLACED')).toBe(true)

    const contact = await alice.contact(bob.username)
    expect(contact?.identityChanged).toBe(true)
    const shown = await alice.safetyNumber(bob.username)
    expect(shown.digits).not.toBe(before.digits)
    const refused = await alice.send(bob.username, 'are you still you?').catch((e: unknown) => e)
    expect(isClientError(refused, 'E2E_ERR_IDENTITY_CHANGED')).toBe(true)

    // Accepting needs the number the user saw; then the conversation continues on the new keys.
    await alice.acceptIdentityChange(bob.username, shown.digits)
    await online(newBob)
    // (Alice's receipt for "hello alice" went to the old keys: the new device shows a notice for it.)
    const toNewBob = new Promise<string>((resolve) =>
      newBob.events.on('message', (message) => {
        if (message.kind === 'text') resolve(message.text)
      }),
    )
    await alice.send(bob.username, 'welcome back')
    expect(await toNewBob).toBe('welcome back')

    // Carol learns of it when she reconnects, before she can send to the old keys.
    const carolWarned = new Promise<string>((resolve) =>
      carol.events.on('identity-changed', ({ peer }) => resolve(peer)),
    )
    await online(carol)
    expect(await carolWarned).toBe(bob.username)
    const carolRefused = await carol.send(bob.username, 'hi').catch((e: unknown) => e)
    expect(isClientError(carolRefused, 'E2E_ERR_IDENTITY_CHANGED')).toBe(true)
    await Promise.all([alice.close(), carol.close(), newBob.close()])
  })
})
