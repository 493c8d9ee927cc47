/**
 * An account on several devices in the client core, against the real server over TLS
 * (docs/protocol.md §13.9): a contact's message reaches every device of the account after one
 * `devices.mismatch` answer, with no user action; what one device sends shows on the others as
 * our own message; reading a conversation and verifying a key on one device is reflected on the
 * others; a removed device stops getting anything, and contacts go on without an error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../server/test/harness.js'
import { ChatClient } from '../shared/client/chat-client.js'
import { startLink } from '../shared/client/link.js'
import { MemoryStore } from '../shared/client/store.js'
import type { MessageView } from '../shared/client/views.js'
import { clientOptions, registerClient, type TappedFrame, tappedWebSocketFactory } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

/** Resolves once `check` holds, trying again as events come in (and every 25 ms). */
async function until<T>(check: () => Promise<T | undefined> | T | undefined, what: string): Promise<T> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`expected ${what} within 20 s, got nothing`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

async function messageIn(client: ChatClient, peer: string, text: string): Promise<MessageView> {
  return until(async () => (await client.history(peer)).find((message) => message.text === text), `"${text}"`)
}

/** A second device of `existing`'s account, linked through the provisioning channel. */
async function linkDevice(existing: { client: ChatClient; password: string }, name: string) {
  const tapped = tappedWebSocketFactory(server)
  const options = clientOptions(server, { store: new MemoryStore(), webSocket: tapped.factory })
  const pending = await startLink(options.http, { name })
  // The new device answers once it has the other's key (while it waits for the check to show).
  const check = pending.waitForCheck()
  const approval = await existing.client.approveLink(pending.code)
  const provisioned = pending.waitForProvisioning()
  expect(await check).toBe(approval.check)
  await approval.approve()
  await provisioned
  const client = await ChatClient.completeLink(options, pending, existing.password)
  return { client, tap: tapped.tap }
}

const frames = (tap: { of(direction: TappedFrame['direction'], type: string): unknown[] }, type: string) =>
  tap.of('received', type) as { type: string; id: string }[]

describe('an account on two devices', () => {
  it('gets every message on both, sees its own sends on both, and keeps read state and verification in step', async () => {
    const bobTapped = tappedWebSocketFactory(server)
    const bob = await registerClient(server, { webSocket: bobTapped.factory })
    const alice = await registerClient(server)
    await alice.client.addContact(bob.client.username)
    await bob.client.addContact(alice.client.username)
    await alice.client.markVerified(bob.client.username, true)
    const laptop = await linkDevice(alice, 'Laptop')
    expect(laptop.client.deviceId).toBe(2)
    for (const client of [alice.client, bob.client, laptop.client]) client.connect()
    await Promise.all([alice.client, bob.client, laptop.client].map((client) => client.waitUntilOnline()))
    const A = alice.client.username
    const B = bob.client.username

    // Verification came along at link time; unmarking it on the phone unmarks it on the laptop
    // (the phone has sent nothing since the link: it learned of the laptop when it connected).
    expect((await laptop.client.contact(B))?.verified).toBe(true)
    await alice.client.markVerified(B, false)
    await until(async () => (await laptop.client.contact(B))?.verified === false, 'the laptop to unmark bob')
    await laptop.client.markVerified(B, true)
    await until(
      async () => (await alice.client.contact(B))?.verified === true,
      'the phone to mark bob verified',
    )

    // Bob knows of alice's device 1 only: the server's answer names device 2, and his client
    // fetches its bundle and sends again, with the same id. Both of alice's devices get it.
    const hi = await bob.client.send(A, 'hi alice, on every device')
    const onPhone = await messageIn(alice.client, B, hi.text)
    const onLaptop = await messageIn(laptop.client, B, hi.text)
    expect([onPhone.id, onLaptop.id]).toEqual([hi.id, hi.id])
    expect(frames(bobTapped.tap, 'devices.mismatch').map((frame) => frame.id)).toEqual([hi.id])
    await until(
      async () => (await bob.client.history(A)).find((m) => m.id === hi.id && m.state === 'delivered'),
      'delivered',
    )
    // His next message goes to both at once.
    const again = await bob.client.send(A, 'second one')
    await messageIn(laptop.client, B, again.text)
    await messageIn(alice.client, B, again.text)
    expect(frames(bobTapped.tap, 'devices.mismatch')).toHaveLength(1)

    // What the phone sends shows on the laptop as alice's own, and the other way round, with the
    // sending device named.
    const fromPhone = await alice.client.send(B, 'sent from the phone')
    const copyOnLaptop = await messageIn(laptop.client, B, fromPhone.text)
    expect(copyOnLaptop).toMatchObject({ id: fromPhone.id, direction: 'out', peer: B })
    expect(copyOnLaptop.device).toBeUndefined()
    const fromLaptop = await laptop.client.send(B, 'sent from the laptop')
    expect(fromLaptop.device).toBe(2)
    expect(await messageIn(alice.client, B, fromLaptop.text)).toMatchObject({
      id: fromLaptop.id,
      direction: 'out',
      device: 2,
    })
    expect(await messageIn(bob.client, A, fromLaptop.text)).toMatchObject({ direction: 'in', device: 2 })
    expect((await messageIn(bob.client, A, fromPhone.text)).device).toBeUndefined()
    // The conversation list shows it as the newest entry on both.
    const newest = async (client: ChatClient) =>
      (await client.conversations()).find((conversation) => conversation.username === B)?.preview?.text
    await until(async () => (await newest(alice.client)) === fromLaptop.text, 'the preview on the phone')

    // Read on the laptop: the phone's unread count clears too.
    const unread = async (client: ChatClient) =>
      (await client.conversations()).find((conversation) => conversation.username === B)?.unread
    expect(await unread(alice.client)).toBeGreaterThan(0)
    await laptop.client.markRead(B)
    expect(await unread(laptop.client)).toBe(0)
    await until(async () => (await unread(alice.client)) === 0, 'the phone to clear its unread count')
    // A message after that is unread on both.
    const later = await bob.client.send(A, 'after you read')
    await messageIn(alice.client, B, later.text)
    await messageIn(laptop.client, B, later.text)
    expect(await unread(alice.client)).toBe(1)

    // The phone removes the laptop: bob's next message gets one answer naming device 2 as stale,
    // and reaches the phone alone, with no error.
    await alice.client.removeDevice(2)
    const problems: string[] = []
    bob.client.events.on('problem', ({ code }) => problems.push(code))
    const afterRemoval = await bob.client.send(A, 'only the phone now')
    await messageIn(alice.client, B, afterRemoval.text)
    await until(
      async () =>
        (await bob.client.history(A)).find((m) => m.id === afterRemoval.id && m.state === 'delivered'),
      'delivered after the removal',
    )
    expect(frames(bobTapped.tap, 'devices.mismatch').map((frame) => frame.id)).toEqual([
      hi.id,
      afterRemoval.id,
    ])
    expect(problems).toEqual([])
    expect((await laptop.client.history(B)).map((message) => message.text)).not.toContain(afterRemoval.text)
    // And the phone's own sends no longer carry a copy for the laptop.
    const last = await alice.client.send(B, 'just us two')
    await messageIn(bob.client, A, last.text)

    for (const client of [alice.client, bob.client, laptop.client]) await client.close()
  })
})

describe('a device the server adds on its own', () => {
  it('is refused by a contact, whose message fails with the reason, and nothing reaches it', async () => {
    const alice = await registerClient(server)
    const bob = await registerClient(server)
    await alice.client.addContact(bob.client.username)
    await bob.client.addContact(alice.client.username)
    for (const client of [alice.client, bob.client]) client.connect()
    await Promise.all([alice.client.waitUntilOnline(), bob.client.waitUntilOnline()])
    const A = alice.client.username
    const before = await bob.client.send(A, 'before the server meddles')
    await messageIn(alice.client, bob.client.username, before.text)

    // Straight into the server's database: a device 7 for alice with device 1's keys, whose
    // signatures are for device 1 and so do not hold for device 7.
    const db = server.database.db
    const { id: userId } = await db
      .selectFrom('users')
      .select('id')
      .where('username', '=', A)
      .executeTakeFirstOrThrow()
    const device1 = await db
      .selectFrom('devices')
      .selectAll()
      .where('user_id', '=', userId)
      .where('device_id', '=', 1)
      .executeTakeFirstOrThrow()
    await db
      .insertInto('devices')
      .values({ ...device1, device_id: 7, name: null })
      .execute()
    const signed = await db
      .selectFrom('signed_prekeys')
      .select(['key_id', 'public_key', 'signature', 'created_at'])
      .where('user_id', '=', userId)
      .where('device_id', '=', 1)
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow()
    await db
      .insertInto('signed_prekeys')
      .values({ ...signed, user_id: userId, device_id: 7 })
      .execute()

    const problems: { code: string; message: string }[] = []
    bob.client.events.on('problem', ({ code, message }) => problems.push({ code, message }))
    const meddled = await bob.client.send(A, 'the server wants a copy of this')
    await until(
      async () => (await bob.client.history(A)).find((m) => m.id === meddled.id && m.state === 'failed'),
      'the message to fail',
    )
    expect(problems).toContainEqual({
      code: 'E2E_ERR_BAD_SIGNATURE',
      message: expect.stringMatching(/device 7.*not signed by .*identity key.*added a device/),
    })
    // Nothing of it reached any device of alice's: the server had no envelope to store.
    const { count } = await db
      .selectFrom('messages')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('recipient_id', '=', userId)
      .where('client_id', '=', Buffer.from(meddled.id, 'base64url'))
      .executeTakeFirstOrThrow()
    expect(Number(count)).toBe(0)
    expect((await alice.client.history(bob.client.username)).map((m) => m.text)).not.toContain(meddled.text)
    for (const client of [alice.client, bob.client]) await client.close()
  })
})

describe('history at link time', () => {
  it('the existing device sends its conversations in parts; the new one shows the same, in order, with progress on both', async () => {
    const alice = await registerClient(server)
    const bob = await registerClient(server)
    const carol = await registerClient(server)
    await alice.client.addContact(bob.client.username)
    for (const client of [alice.client, bob.client, carol.client]) client.connect()
    await Promise.all([alice.client, bob.client, carol.client].map((client) => client.waitUntilOnline()))
    const A = alice.client.username
    const B = bob.client.username
    const C = carol.client.username
    // Enough text for more than one part (48 KiB each): 40 messages of 1,500 characters to bob,
    // his answer, and a conversation carol started.
    const long = (n: number) => `${n} `.padEnd(1_500, 'history ')
    for (let n = 0; n < 40; n++) await alice.client.send(B, long(n))
    await bob.client.send(A, 'got them all')
    await carol.client.send(A, 'hello from carol')
    await messageIn(alice.client, B, 'got them all')
    await messageIn(alice.client, C, 'hello from carol')
    await alice.client.flush(20_000)

    const laptop = await linkDevice(alice, 'Laptop')
    const received: { part: number; parts: number }[] = []
    laptop.client.events.on('history', ({ part, parts }) => received.push({ part, parts }))
    // History is not news: no `message` event (a UI would notify of each), a `contact-updated` per conversation.
    const messageEvents: string[] = []
    const updated = new Set<string>()
    laptop.client.events.on('message', ({ text }) => messageEvents.push(text))
    laptop.client.events.on('contact-updated', ({ peer }) => updated.add(peer))
    laptop.client.connect()
    await laptop.client.waitUntilOnline()
    expect(await alice.client.waitForDevice(2, { timeoutMs: 20_000, intervalMs: 50 })).toBe(true)
    const progress: [number, number][] = []
    const sent = await alice.client.sendHistory({ onProgress: (done, parts) => progress.push([done, parts]) })
    expect(sent).toMatchObject({ messages: 42, leftOut: 0 })
    expect(sent.parts).toBeGreaterThan(1)
    expect(progress.at(-1)).toEqual([sent.parts, sent.parts])

    await until(() => received.length === sent.parts || undefined, 'every part on the laptop')
    expect(received.map(({ part }) => part).sort((a, b) => a - b)).toEqual(
      Array.from({ length: sent.parts }, (_, i) => i + 1),
    )
    const shown = async (client: ChatClient, peer: string) =>
      (await client.history(peer, { limit: 100 })).map(({ id, direction, text }) => ({ id, direction, text }))
    expect(messageEvents).toEqual([])
    expect([...updated].sort()).toEqual([B, C].sort())
    expect(await shown(laptop.client, B)).toEqual(await shown(alice.client, B))
    expect(await shown(laptop.client, C)).toEqual(await shown(alice.client, C))
    // Nothing of it is unread there (it was read, or not, on the phone; it is history here).
    const conversations = await laptop.client.conversations()
    expect(conversations.map((c) => c.username).sort()).toEqual([B, C].sort())
    expect(conversations.find((c) => c.username === C)?.preview?.text).toBe('hello from carol')
    // A second transfer adds nothing twice.
    await alice.client.sendHistory()
    await until(() => received.length === 2 * sent.parts || undefined, 'the second transfer')
    expect((await laptop.client.history(B, { limit: 100 })).length).toBe(41)
    for (const client of [alice.client, bob.client, carol.client, laptop.client]) await client.close()
  })
})

describe("a message from a contact's second device that does not decrypt", () => {
  it('is asked for again from that device, which sends it; the other device neither answers for it nor shows it twice', async () => {
    const aliceAccount = await registerClient(server)
    const bobAccount = await registerClient(server)
    const alice = aliceAccount.client
    let bob = bobAccount.client
    await alice.addContact(bob.username)
    await bob.addContact(alice.username)
    const laptop = (await linkDevice(aliceAccount, 'Laptop')).client
    // The phone stays away for now: bob's reply is then "delivered" only once the laptop's receipt
    // for it has reached him, so nothing of the laptop's is in flight when he loses his session
    // (a receipt that came after would fail too, and the laptop's message would wait out
    // RETRY_REQUEST_INTERVAL_MS for the next request).
    for (const client of [bob, laptop]) client.connect()
    await Promise.all([bob, laptop].map((client) => client.waitUntilOnline()))
    const A = alice.username
    const B = bob.username

    // The laptop and bob each hear from the other, so the laptop's next message is a plain one
    // (type 1) that only the session bob is about to lose can open.
    const first = await laptop.send(B, 'from the laptop')
    await messageIn(bob, A, first.text)
    const reply = await bob.send(A, 'reply to both')
    await messageIn(laptop, B, reply.text)
    const settled = async (client: ChatClient, peer: string) =>
      (await client.history(peer)).every((m) => m.direction === 'in' || m.state === 'delivered')
    await until(async () => (await settled(laptop, B)) && (await settled(bob, A)), 'everything delivered')

    // Bob loses his session with the laptop (not the one with the phone) and his app restarts.
    await bob.close()
    await bobAccount.options.store.commit([{ op: 'delete', table: 'sessions', key: `${A}:2` }])
    bob = await ChatClient.open(bobAccount.options, bobAccount.password)
    for (const client of [bob, alice]) client.connect()
    await Promise.all([bob, alice].map((client) => client.waitUntilOnline()))
    await messageIn(alice, B, reply.text)
    const problems: string[] = []
    const undecryptable: string[] = []
    for (const client of [alice, bob, laptop]) client.events.on('problem', ({ code }) => problems.push(code))
    bob.events.on('undecryptable', ({ id }) => undecryptable.push(id))

    const lost = await laptop.send(B, 'after bob lost the session')
    // The laptop, which sent it and keeps its content, answers; the phone, which has only its
    // sent copy, neither answers "unavailable" nor resends.
    const recovered = await until(
      async () => (await bob.history(A)).find((m) => m.id === lost.id && m.kind === 'text'),
      "the laptop's message in the notice's place",
    )
    expect(undecryptable).toEqual([lost.id])
    expect(recovered).toMatchObject({ text: lost.text, device: 2, direction: 'in' })
    expect((await bob.history(A)).map((m) => [m.kind, m.text])).toEqual([
      ['text', first.text],
      ['text', reply.text],
      ['text', lost.text],
    ])
    await until(
      async () => (await laptop.history(B)).find((m) => m.id === lost.id && m.state === 'delivered'),
      'the laptop to see it delivered',
    )
    // What the laptop sends next reaches the phone after the resend's sent copy: the phone shows
    // the message once, as sent from the laptop.
    const next = await laptop.send(B, 'and on')
    await messageIn(alice, B, next.text)
    await messageIn(bob, A, next.text)
    const onPhone = (await alice.history(B)).filter((m) => m.text === lost.text)
    expect(onPhone).toHaveLength(1)
    expect(onPhone[0]).toMatchObject({ id: lost.id, direction: 'out', device: 2 })
    expect(problems).toEqual([])
    for (const client of [alice, bob, laptop]) await client.close()
  })
})

describe('two accounts on two devices each', () => {
  it("show each other's presence on every device, and a contact's key change warns on every device", async () => {
    const aliceAccount = await registerClient(server)
    const bobAccount = await registerClient(server)
    const alice = aliceAccount.client
    const bob = bobAccount.client
    const A = alice.username
    const B = bob.username
    await alice.addContact(B)
    await bob.addContact(A)
    const laptop = (await linkDevice(aliceAccount, 'Laptop')).client
    const tablet = (await linkDevice(bobAccount, 'Tablet')).client
    const alices = [alice, laptop]
    const bobs = [bob, tablet]
    const online = async (client: ChatClient, peer: string) => (await client.contact(peer))?.online
    const problems: string[] = []
    for (const client of [...alices, ...bobs])
      client.events.on('problem', ({ code, message }) =>
        problems.push(`${client.username}:${client.deviceId} ${code} ${message}`),
      )

    // Bob on his tablet alone: both of alice's devices see him online.
    for (const client of [...alices, tablet]) client.connect()
    await Promise.all([...alices, tablet].map((client) => client.waitUntilOnline()))
    for (const client of alices) await until(() => online(client, B), 'bob online on each of alice’s devices')
    // His phone joins and his tablet leaves: he is still online (one device is enough).
    bob.connect()
    await bob.waitUntilOnline()
    await until(() => online(tablet, A), 'alice online on bob’s tablet')
    await until(() => online(bob, A), 'alice online on bob’s phone')
    await tablet.disconnect()
    const hello = await bob.send(A, 'from the phone, the tablet is off')
    for (const client of alices) await messageIn(client, B, hello.text)
    for (const client of alices) expect(await online(client, B)).toBe(true)
    // The laptop going away does not make alice offline for bob; the phone going too does.
    await laptop.disconnect()
    const stillThere = await alice.send(B, 'the phone is still here')
    await messageIn(bob, A, stillThere.text)
    expect(await online(bob, A)).toBe(true)
    await alice.disconnect()
    await until(async () => (await online(bob, A)) === false, 'alice offline for bob once both are gone')
    await Promise.all(alices.map((client) => client.connect()))
    await Promise.all(alices.map((client) => client.waitUntilOnline()))

    // Bob starts over (a new identity on a new install: his tablet is removed). Both of alice's
    // devices are warned, and neither sends to the new keys until the change is accepted.
    const warned = alices.map(
      (client) =>
        new Promise<string>((resolve) => client.events.on('identity-changed', ({ peer }) => resolve(peer))),
    )
    await bob.close()
    await tablet.close()
    const newBob = await ChatClient.reinstall(clientOptions(server), B, bobAccount.password)
    expect(await Promise.all(warned)).toEqual([B, B])
    for (const client of alices) {
      expect((await client.contact(B))?.identityChanged).toBe(true)
      const refused = await client.send(B, 'is that you?').catch((error: unknown) => error)
      expect(refused).toMatchObject({ code: 'E2E_ERR_IDENTITY_CHANGED' })
    }
    // Accepted on the laptop: the phone trusts the new key too, and both reach the new install
    // (whose one device is all bob has now: the tablet is stale to both).
    const shown = await laptop.safetyNumber(B)
    await laptop.acceptIdentityChange(B, shown.digits)
    await until(async () => (await alice.contact(B))?.identityChanged === false, 'the phone to accept it too')
    expect((await alice.safetyNumber(B)).digits).toBe(shown.digits)
    newBob.connect()
    await newBob.waitUntilOnline()
    const fromPhone = await alice.send(B, 'welcome back, from the phone')
    const fromLaptop = await laptop.send(B, 'and from the laptop')
    await messageIn(newBob, A, fromPhone.text)
    await messageIn(newBob, A, fromLaptop.text)
    expect(problems).toEqual([])
    for (const client of [...alices, newBob]) await client.close()
  })
})

describe('a device removed while it is offline', () => {
  it('hears it from its next request: the same problem as on the relay, once, and it is logged out', async () => {
    const alice = await registerClient(server)
    const laptop = (await linkDevice(alice, 'Laptop')).client
    const problems: { code: string; id?: string }[] = []
    laptop.events.on('problem', (problem) => problems.push(problem))
    await alice.client.removeDevice(laptop.deviceId)
    // Two requests at once, both refused: one problem.
    const refusals = await Promise.all([
      laptop.devices().catch((error: unknown) => error),
      laptop.preKeyStatus().catch((error: unknown) => error),
    ])
    for (const refused of refusals) expect(refused).toMatchObject({ serverCode: 'E2E_ERR_DEVICE_REMOVED' })
    expect(problems).toEqual([{ code: 'E2E_ERR_DEVICE_REMOVED', message: expect.any(String) }])
    expect(laptop.loggedIn).toBe(false)
    expect(laptop.connection).toBe('logged-out')
    await Promise.all([alice.client.close(), laptop.close()])
  })
})
