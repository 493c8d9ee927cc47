/**
 * Two server nodes, as `build()` makes them, on loopback over TLS, sharing one PostgreSQL database
 * and one Redis (under a channel prefix of this run), with real WebSocket clients: a message sent
 * on one node reaches its recipient on the other, live or from the queue, and a publish that never
 * arrives still delivers, exactly once, through the recheck of queue positions or the reconnect.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { RelationsKey } from '../db/relations.js'
import { createTestDatabase, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { linkDevice } from '../test/devices.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import {
  killSubscriber,
  REDIS_TEST_URL,
  rawRedis,
  redisUnavailable,
  testChannelPrefix,
} from '../test/redis.js'
import { connect, newMessageId, type RelaySocket } from '../test/ws-client.js'
import { RedisRelayBus } from './redis-bus.js'
import type { Address, RelayBus, RelayEvent, RelayListener } from './relay-bus.js'

const skip = (await postgresUnavailable()) ?? (await redisUnavailable())

/** Long enough never to be what delivers in a test that is about the live path. */
const NO_RECHECK_MS = 60 * 60 * 1000
/** Short, so that the test about the recheck is quick (it still waits only for frames). */
const QUICK_RECHECK_MS = 100

const silent = { error: () => {}, warn: () => {}, info: () => {} }

/**
 * A Redis bus whose `message.committed` publishes can be lost on purpose (they never leave), or
 * held back and sent later (they arrive late, after later ones).
 */
class LosingBus implements RelayBus {
  losing = false
  lost = 0
  /** Loses `session.revoked` publishes (a logout's) instead. */
  losingRevocations = false
  holding = false
  private held: RelayEvent[] = []
  /** Publishes what was held back, in order. */
  async release(): Promise<void> {
    this.holding = false
    for (const event of this.held.splice(0)) await this.inner.publish(event)
  }
  constructor(readonly inner: RedisRelayBus) {}
  readonly lossy = true
  get status() {
    return this.inner.status
  }
  get counters() {
    return this.inner.counters
  }
  ready(): Promise<boolean> {
    return this.inner.ready()
  }
  onResumed(callback: () => void): void {
    this.inner.onResumed(callback)
  }
  publish(event: RelayEvent): Promise<void> {
    if (this.losing && event.kind === 'message.committed') {
      this.lost += 1
      return Promise.resolve()
    }
    if (this.losingRevocations && event.kind === 'session.revoked') {
      this.lost += 1
      return Promise.resolve()
    }
    if (this.holding && event.kind === 'message.committed') {
      this.held.push(event)
      return Promise.resolve()
    }
    return this.inner.publish(event)
  }
  subscribe(address: Address, listener: RelayListener): Promise<void> {
    return this.inner.subscribe(address, listener)
  }
  unsubscribe(address: Address, listener: RelayListener): Promise<void> {
    return this.inner.unsubscribe(address, listener)
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

interface Cluster {
  readonly nodes: [TestServer, TestServer]
  readonly buses: [LosingBus, LosingBus]
  close(): Promise<void>
}

async function startCluster(
  database: TestDatabase,
  recheckIntervalMs: [number, number],
  sessionRecheckIntervalMs: [number, number] = [NO_RECHECK_MS, NO_RECHECK_MS],
): Promise<Cluster> {
  const channelPrefix = testChannelPrefix()
  const relationsKey = RelationsKey.random()
  const buses: LosingBus[] = []
  const nodes: TestServer[] = []
  for (const [index, interval] of recheckIntervalMs.entries()) {
    const bus = new LosingBus(
      await RedisRelayBus.connect({ url: REDIS_TEST_URL, channelPrefix, log: silent }),
    )
    buses.push(bus)
    nodes.push(
      await startServer({
        database,
        relayBus: bus,
        relationsKey,
        limits: {
          relayRecheckIntervalMs: interval,
          relaySessionRecheckIntervalMs: sessionRecheckIntervalMs[index]!,
        },
      }),
    )
  }
  return {
    nodes: nodes as [TestServer, TestServer],
    buses: buses as [LosingBus, LosingBus],
    close: async () => {
      for (const node of nodes) await node.close()
      for (const bus of buses) await bus.close()
    },
  }
}

describe.skipIf(skip !== undefined)('two nodes sharing PostgreSQL and Redis', () => {
  let database: TestDatabase
  const sockets: RelaySocket[] = []
  const clusters: Cluster[] = []

  beforeAll(async () => {
    database = await createTestDatabase('postgres')
  })

  afterEach(async () => {
    for (const socket of sockets.splice(0)) await socket.close()
    for (const cluster of clusters.splice(0)) await cluster.close()
  })

  afterAll(async () => {
    await database?.dispose()
  })

  async function cluster(recheck: [number, number], sessionRecheck?: [number, number]): Promise<Cluster> {
    const made = await startCluster(database, recheck, sessionRecheck)
    clusters.push(made)
    return made
  }

  async function online(server: TestServer, token: Uint8Array, label: string) {
    const socket = await connect(server, token, label)
    sockets.push(socket)
    return socket
  }

  it('alice on node 1 sends to bob on node 2, and bob gets it live over Redis', async () => {
    const { nodes, buses } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const [alice, bob] = await Promise.all([signUp(nodes[0]), signUp(nodes[1])])
    const a = await online(nodes[0], alice.token, 'alice@1')
    const b = await online(nodes[1], bob.token, 'bob@2')
    expect(b.ready.queued).toBe(0)

    const received = buses[1].counters.received
    const id = a.sendMessage(bob.client.username)
    await a.next('accepted', (frame) => frame.id === id)
    const delivered = await b.next('deliver')
    expect(delivered).toMatchObject({ id, from: alice.client.username, seq: 1 })
    expect(buses[1].counters.received).toBeGreaterThan(received)

    // And back, acknowledged on node 2, so that nothing is left in the queue for either.
    b.ack(delivered.seq)
    const reply = b.sendMessage(alice.client.username)
    expect((await a.next('deliver')).id).toBe(reply)
    const extra = b.sendMessage(alice.client.username)
    expect((await a.next('deliver')).id).toBe(extra)
    expect(a.all('deliver').map((frame) => frame.id)).toEqual([reply, extra])
    expect(b.all('deliver').map((frame) => frame.id)).toEqual([id])
  })

  it('bob, offline while alice sends on node 1, gets the queued message when he connects to node 2', async () => {
    const { nodes } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const [alice, bob] = await Promise.all([signUp(nodes[0]), signUp(nodes[1])])
    const a = await online(nodes[0], alice.token, 'alice@1')
    const first = a.sendMessage(bob.client.username)
    const second = a.sendMessage(bob.client.username)
    await a.next('accepted', (frame) => frame.id === first)
    await a.next('accepted', (frame) => frame.id === second)

    const b = await online(nodes[1], bob.token, 'bob@2')
    expect(b.ready.queued).toBe(2)
    const delivered = await b.take('deliver', 2)
    expect(delivered.map((frame) => frame.id)).toEqual([first, second])

    // Caught up now: the next one comes live, after the queued ones and not again.
    const third = a.sendMessage(bob.client.username)
    expect((await b.next('deliver')).id).toBe(third)
    expect(b.all('deliver').map((frame) => frame.id)).toEqual([first, second, third])
  })

  it('a publish that never arrives is delivered by the periodic recheck, exactly once', async () => {
    const { nodes, buses } = await cluster([NO_RECHECK_MS, QUICK_RECHECK_MS])
    const [alice, bob] = await Promise.all([signUp(nodes[0]), signUp(nodes[1])])
    const a = await online(nodes[0], alice.token, 'alice@1')
    const b = await online(nodes[1], bob.token, 'bob@2')

    buses[0].losing = true
    const lost = a.sendMessage(bob.client.username)
    await a.next('accepted', (frame) => frame.id === lost)
    expect(buses[0].lost).toBe(1)
    expect((await b.next('deliver')).id).toBe(lost)

    // Published again: the next one is live, and the lost one is not delivered a second time.
    buses[0].losing = false
    const live = a.sendMessage(bob.client.username)
    expect((await b.next('deliver')).id).toBe(live)
    const fence = a.sendMessage(bob.client.username)
    expect((await b.next('deliver')).id).toBe(fence)
    expect(b.all('deliver').map((frame) => frame.id)).toEqual([lost, live, fence])
    expect(b.all('deliver').map((frame) => frame.seq)).toEqual([1, 2, 3])
  })

  it('a publish lost while a node is cut off from Redis is delivered when it reconnects, exactly once', async () => {
    const { nodes, buses } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const [alice, bob] = await Promise.all([signUp(nodes[0]), signUp(nodes[1])])
    const a = await online(nodes[0], alice.token, 'alice@1')
    const b = await online(nodes[1], bob.token, 'bob@2')

    // The publish is lost (as if Redis dropped it while node 2 was away), then node 2's subscriber
    // connection is killed: reconnecting, node 2 re-reads the queues of its caught-up sockets.
    buses[0].losing = true
    const lost = a.sendMessage(bob.client.username)
    await a.next('accepted', (frame) => frame.id === lost)
    buses[0].losing = false
    const resumed = buses[1].counters.resumed
    const redis = rawRedis()
    try {
      await killSubscriber(redis, buses[1].inner.nodeId)
    } finally {
      redis.disconnect()
    }
    expect((await b.next('deliver')).id).toBe(lost)
    expect(buses[1].counters.resumed).toBe(resumed + 1)
    expect(buses[1].status).toBe('up')

    const after = a.sendMessage(bob.client.username)
    expect((await b.next('deliver')).id).toBe(after)
    expect(b.all('deliver').map((frame) => frame.id)).toEqual([lost, after])
  })

  it('a logout on node 1 whose event is lost still ends the socket on node 2 (the session recheck)', async () => {
    const { nodes, buses } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS], [NO_RECHECK_MS, QUICK_RECHECK_MS])
    const bob = await signUp(nodes[0])
    const b = await online(nodes[1], bob.token, 'bob@2')
    await b.fence()

    buses[0].losingRevocations = true
    const logout = await nodes[0].request('/api/v1/logout', { method: 'POST', token: bob.token })
    expect(logout.status).toBe(204)
    expect(buses[0].lost).toBe(1)
    expect((await b.next('error')).code).toBe('E2E_ERR_UNAUTHENTICATED')
    expect((await b.closed).code).toBe(1008)
  })

  it('a late signal from another node neither skips a message nor delivers it twice', async () => {
    const { nodes, buses } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const [alice, carol, bob] = await Promise.all([signUp(nodes[0]), signUp(nodes[1]), signUp(nodes[1])])
    const a = await online(nodes[0], alice.token, 'alice@1')
    const c = await online(nodes[1], carol.token, 'carol@2')
    const b = await online(nodes[1], bob.token, 'bob@2')

    // Alice's message is seq 1, its signal held back; Carol's is seq 2, signalled on node 2 at
    // once with its copy. Pushing that copy would move bob's connection past seq 1 for good.
    buses[0].holding = true
    const first = a.sendMessage(bob.client.username)
    await a.next('accepted', (frame) => frame.id === first)
    const second = c.sendMessage(bob.client.username)
    await c.next('accepted', (frame) => frame.id === second)
    const delivered = await b.take('deliver', 2)
    expect(delivered.map((frame) => [frame.seq, frame.id])).toEqual([
      [1, first],
      [2, second],
    ])

    // The late signal for seq 1 arrives now: nothing is sent again.
    const received = buses[1].counters.received
    await buses[0].release()
    const fence = a.sendMessage(bob.client.username)
    expect((await b.next('deliver')).id).toBe(fence)
    expect(buses[1].counters.received).toBe(received + 2)
    expect(b.all('deliver').map((frame) => frame.id)).toEqual([first, second, fence])
  })

  it("messages sent on both nodes to one recipient arrive once each, in the queue's order", async () => {
    const { nodes } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const [alice, carol, bob] = await Promise.all([signUp(nodes[0]), signUp(nodes[1]), signUp(nodes[1])])
    const a = await online(nodes[0], alice.token, 'alice@1')
    const c = await online(nodes[1], carol.token, 'carol@2')
    const b = await online(nodes[1], bob.token, 'bob@2')

    const sent: string[] = []
    for (let round = 0; round < 20; round++) {
      sent.push(a.sendMessage(bob.client.username), c.sendMessage(bob.client.username))
    }
    const delivered = await b.receive(sent.length)
    expect(new Set(delivered.map((frame) => frame.id))).toEqual(new Set(sent))
    expect(delivered.map((frame) => frame.seq)).toEqual(sent.map((_id, index) => index + 1))
    // A last fence: nothing arrives twice after the burst either.
    const fence = a.sendMessage(bob.client.username)
    expect((await b.next('deliver')).id).toBe(fence)
    expect(b.all('deliver')).toHaveLength(sent.length + 1)
  })

  it("an account's devices on both nodes: each reads its own queue, and one removed from node 1 is closed on node 2 at once", async () => {
    const { nodes } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const { client, token } = await signUp(nodes[0])
    const second = await linkDevice(nodes[1], client, token)
    const third = await linkDevice(nodes[0], client, token)
    const { id: userId } = await database.db
      .selectFrom('users')
      .select('id')
      .where('username', '=', client.username)
      .executeTakeFirstOrThrow()
    const row = (deviceId: number) => ({
      recipient_id: userId,
      recipient_device: deviceId,
      seq: 1,
      sender_id: userId,
      sender_device: 1,
      client_id: new Uint8Array(16).fill(deviceId),
      body: new TextEncoder().encode(`for device ${deviceId}`),
      created_at: 1,
      expires_at: Date.now() + 60_000,
    })
    await database.db
      .insertInto('messages')
      .values([row(2), row(3)])
      .execute()
    const first = await online(nodes[0], token, 'device1@1')
    const two = await online(nodes[1], second.token, 'device2@2')
    const three = await online(nodes[0], third.token, 'device3@1')
    expect([first.ready.queued, two.ready.queued, three.ready.queued]).toEqual([0, 1, 1])
    expect((await two.next('deliver')).id).toBe(Buffer.from(new Uint8Array(16).fill(2)).toString('base64url'))
    expect((await three.next('deliver')).id).toBe(
      Buffer.from(new Uint8Array(16).fill(3)).toString('base64url'),
    )

    const removed = await nodes[0].request(`/api/v1/devices/${second.deviceId}`, { method: 'DELETE', token })
    expect(removed.status).toBe(204)
    expect(await two.next('error')).toMatchObject({ code: 'E2E_ERR_DEVICE_REMOVED' })
    expect((await two.closed).code).toBe(1008)
    // The others stay; the removed device's queue is gone, device 3's is untouched.
    expect(first.frames.filter((frame) => frame.type === 'error')).toEqual([])
    expect(three.frames.filter((frame) => frame.type === 'error')).toEqual([])
    const devices = await nodes[1].request('/api/v1/devices', { token: third.token })
    expect(devices.body.devices.map((device: { id: number }) => device.id)).toEqual([1, 3])
  })

  it('send.devices across nodes: every device of a three-device account gets its copy live, sent copies too, and a device removed on one node is stale on the other', async () => {
    const { nodes } = await cluster([NO_RECHECK_MS, NO_RECHECK_MS])
    const alice = await signUp(nodes[0])
    const bob = await signUp(nodes[1])
    const second = await linkDevice(nodes[1], alice.client, alice.token)
    const third = await linkDevice(nodes[0], alice.client, alice.token)
    const [a1, a2, a3, b] = [
      await online(nodes[0], alice.token, 'alice1@1'),
      await online(nodes[1], second.token, 'alice2@2'),
      await online(nodes[0], third.token, 'alice3@1'),
      await online(nodes[1], bob.token, 'bob@2'),
    ]
    const body = (n: number) => Buffer.from(`envelope ${n}`).toString('base64url')
    const send = (
      socket: RelaySocket,
      to: string,
      messages: number[],
      own: number[],
      id = newMessageId(),
    ) => {
      socket.send({
        v: 1,
        type: 'send.devices',
        id,
        to,
        messages: messages.map((device) => ({ device, body: body(device) })),
        own: own.map((device) => ({ device, body: body(100 + device) })),
      })
      return id
    }

    // Bob on node 2 to alice's three devices, two of them on node 1.
    const toAlice = send(b, alice.client.username, [1, 2, 3], [])
    expect((await b.next('accepted')).id).toBe(toAlice)
    for (const [socket, device] of [
      [a1, 1],
      [a2, 2],
      [a3, 3],
    ] as const) {
      expect(await socket.next('deliver')).toMatchObject({
        id: toAlice,
        from: bob.client.username,
        body: body(device),
      })
    }

    // Alice's device 2 on node 2 answers: bob gets it, her devices on node 1 get the sent copies.
    const reply = send(a2, bob.client.username, [1], [1, 3])
    expect((await a2.next('accepted')).id).toBe(reply)
    expect(await b.next('deliver')).toMatchObject({ id: reply, device: second.deviceId, body: body(1) })
    expect(await a1.next('deliver')).toMatchObject({
      id: reply,
      from: alice.client.username,
      device: 2,
      body: body(101),
    })
    expect(await a3.next('deliver')).toMatchObject({ id: reply, device: 2, body: body(103) })

    // Device 3 removed on node 2: bob's list naming it is stale, and nothing of that send is stored.
    const removed = await nodes[1].request(`/api/v1/devices/${third.deviceId}`, {
      method: 'DELETE',
      token: alice.token,
    })
    expect(removed.status).toBe(204)
    expect((await a3.closed).code).toBe(1008)
    const stale = send(b, alice.client.username, [1, 2, 3], [])
    expect(await b.next('devices.mismatch')).toMatchObject({
      id: stale,
      recipient: { missing: [], extra: [], stale: [3] },
    })
    const fixed = send(b, alice.client.username, [1, 2], [], stale)
    expect((await b.next('accepted')).id).toBe(fixed)
    expect((await a1.next('deliver')).id).toBe(stale)
    expect((await a2.next('deliver')).id).toBe(stale)
  })
})
