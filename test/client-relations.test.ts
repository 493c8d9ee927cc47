/**
 * The client core (shared/client) against the real server over TLS: presence goes only between
 * people who talk (issue 10 item 5), and blocking (item 11). Whom our presence is shared with, and
 * whom we blocked, live in the contact record; the server keeps them as relations (server/db/relations.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { TestServer } from '../server/test/harness.js'
import { startServer } from '../server/test/harness.js'
import type { ChatClient, DeliveryState, MessageView } from '../shared/client/chat-client.js'
import { isClientError } from '../shared/client/errors.js'
import { registerClient } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

async function online(...clients: ChatClient[]): Promise<void> {
  for (const client of clients) client.connect()
  await Promise.all(clients.map((client) => client.waitUntilOnline()))
}

function presence(client: ChatClient, username: string, online: boolean): Promise<void> {
  return new Promise((resolve) => {
    const stop = client.events.on('presence', (event) => {
      if (event.username === username && event.online === online) {
        stop()
        resolve()
      }
    })
  })
}

function nextMessage(client: ChatClient, text: string): Promise<MessageView> {
  return new Promise((resolve) => {
    const stop = client.events.on('message', (message) => {
      if (message.text === text) {
        stop()
        resolve(message)
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

describe('presence between people who talk', () => {
  it('writing shares our presence; only writing back (or adding) shares theirs with us', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    await online(alice, bob)

    // alice writes first: bob sees alice online, alice does not yet see bob.
    const bobSeesAlice = presence(bob, alice.username, true)
    await alice.send(bob.username, 'hi bob')
    await bobSeesAlice
    expect((await bob.contact(alice.username))?.online).toBe(true)
    expect((await alice.contact(bob.username))?.online).toBe(false)

    // bob answers: now alice sees him too, without reconnecting.
    const aliceSeesBob = presence(alice, bob.username, true)
    await bob.send(alice.username, 'hi alice')
    await aliceSeesBob
    expect((await alice.contact(bob.username))?.online).toBe(true)
    await Promise.all([alice.close(), bob.close()])
  })

  it('adding a contact who wrote to us shares our presence with them', async () => {
    const carol = (await registerClient(server)).client
    const dave = (await registerClient(server)).client
    await online(carol, dave)
    const arrived = nextMessage(dave, 'hello dave')
    await carol.send(dave.username, 'hello dave')
    await arrived
    const carolSeesDave = presence(carol, dave.username, true)
    await dave.addContact(carol.username)
    await carolSeesDave
    await Promise.all([carol.close(), dave.close()])
  })
})

describe('blocking', () => {
  it('drops what a blocked user sends, hides our presence, refuses sending to them, and keeps the history', async () => {
    const alice = (await registerClient(server)).client
    const bob = (await registerClient(server)).client
    await online(alice, bob)
    const first = nextMessage(bob, 'before')
    await alice.send(bob.username, 'before')
    await first
    const aliceSeesBob = presence(alice, bob.username, true)
    await bob.send(alice.username, 'reply')
    await aliceSeesBob

    const aliceLosesBob = presence(alice, bob.username, false)
    const view = await bob.blockContact(alice.username)
    expect(view).toMatchObject({ username: alice.username, blocked: true, online: false })
    await aliceLosesBob
    expect((await alice.contact(bob.username))?.online).toBe(false)

    // alice is not told: her message is accepted, and never reaches bob.
    const dropped = await alice.send(bob.username, 'while blocked')
    await deliveryState(alice, dropped.id, 'accepted')
    const refused = await bob.send(alice.username, 'to a blocked contact').catch((error: unknown) => error)
    expect(isClientError(refused, 'E2E_ERR_CONTACT_BLOCKED')).toBe(true)
    // The conversation stays, marked blocked in the list both UIs show.
    const [listed] = (await bob.conversations()).filter((row) => row.username === alice.username)
    expect(listed).toMatchObject({ blocked: true, preview: expect.objectContaining({ text: 'reply' }) })

    await bob.unblockContact(alice.username)
    const after = nextMessage(bob, 'after')
    await alice.send(bob.username, 'after')
    await after
    expect((await bob.history(alice.username)).map((message) => message.text)).toEqual([
      'before',
      'reply',
      'after',
    ])
    expect((await bob.contact(alice.username))?.blocked).toBe(false)
    await Promise.all([alice.close(), bob.close()])
  })

  it('can block someone who is not a contact yet, and refuses an unknown user', async () => {
    const erin = (await registerClient(server)).client
    const frank = (await registerClient(server)).client
    expect(await erin.blockContact(frank.username)).toMatchObject({ username: frank.username, blocked: true })
    expect((await erin.contacts()).map((contact) => contact.username)).toEqual([frank.username])
    const unknown = await erin.blockContact('nobody-here-at-all').catch((error: unknown) => error)
    expect(isClientError(unknown, 'E2E_ERR_UNKNOWN_USER')).toBe(true)
    expect(await erin.contact('nobody-here-at-all')).toBeUndefined()
  })
})
