/**
 * Presence and the per-user connection limit across nodes (cluster-presence.ts): two or three
 * `build()` apps on one PostgreSQL database and one Redis (under a prefix of this run), with real
 * WebSocket clients. A user is online while they have a socket on any live node; a node that stops
 * renewing its entry stops counting once its TTL (short here) has passed; the oldest socket beyond
 * the limit is closed on whichever node holds it. Presence is the account's: its devices on different
 * nodes count alike, and every device of a watcher hears the changes.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { RelationsKey } from '../db/relations.js'
import { deleteAccount } from '../db/users.js'
import { ServerErrorCode } from '../errors.js'
import { createTestDatabase, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { linkDevice } from '../test/devices.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { REDIS_TEST_URL, redisUnavailable, testChannelPrefix } from '../test/redis.js'
import { connect, type RelaySocket, sharePresence, WAIT_TIMEOUT_MS } from '../test/ws-client.js'
import { RedisClusterPresence } from './cluster-presence.js'
import { RedisRelayBus } from './redis-bus.js'

const skip = (await postgresUnavailable()) ?? (await redisUnavailable())

/** Short, so that the dead-node test is quick; the test only ever waits for frames. */
const TEST_NODE_TTL_MS = 1_000
const TEST_REFRESH_INTERVAL_MS = 200

const silent = { error: () => {}, warn: () => {}, info: () => {} }

interface Node {
  readonly server: TestServer
  readonly presence: RedisClusterPresence
  readonly bus: RedisRelayBus
}

/** Waits (a generous bound, never an assertion on time) until `check` holds. */
async function eventually(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_TIMEOUT_MS
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`expected ${what} within ${WAIT_TIMEOUT_MS} ms, got it not`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe.skipIf(skip !== undefined)('presence and connection limits across nodes', () => {
  let database: TestDatabase
  const sockets: RelaySocket[] = []
  const nodes: Node[] = []

  beforeAll(async () => {
    database = await createTestDatabase('postgres')
  })

  afterEach(async () => {
    for (const socket of sockets.splice(0)) await socket.close()
    for (const node of nodes.splice(0)) {
      await node.server.close()
      await node.bus.close()
      await node.presence.close()
    }
  })

  afterAll(async () => {
    await database?.dispose()
  })

  async function cluster(count: number, maxConnectionsPerUser?: number): Promise<TestServer[]> {
    const prefix = testChannelPrefix()
    const relationsKey = RelationsKey.random()
    const made: TestServer[] = []
    for (let index = 0; index < count; index++) {
      const bus = await RedisRelayBus.connect({ url: REDIS_TEST_URL, channelPrefix: prefix, log: silent })
      const presence = await RedisClusterPresence.connect({
        url: REDIS_TEST_URL,
        prefix,
        log: silent,
        nodeTtlMs: TEST_NODE_TTL_MS,
        refreshIntervalMs: TEST_REFRESH_INTERVAL_MS,
      })
      const server = await startServer({
        database,
        relayBus: bus,
        clusterPresence: presence,
        relationsKey,
        ...(maxConnectionsPerUser ? { limits: { maxConnectionsPerUser } } : {}),
      })
      nodes.push({ server, presence, bus })
      made.push(server)
    }
    return made
  }

  async function idOf(username: string): Promise<number> {
    const row = await database.db
      .selectFrom('users')
      .select('id')
      .where('username', '=', username)
      .executeTakeFirstOrThrow()
    return row.id
  }

  function presenceOf(socket: RelaySocket, username: string): boolean[] {
    return socket
      .all('presence')
      .filter((frame) => frame.username === username)
      .map((frame) => frame.online)
  }

  async function online(server: TestServer, token: Uint8Array, label: string) {
    const socket = await connect(server, token, label)
    sockets.push(socket)
    // Its record in Redis is written once it authenticated: wait for it, so that order is known.
    await server.app.relay.presenceSettled()
    return socket
  }

  /** The socket closes and the node it was on has told Redis (and published what that changed). */
  async function offline(server: TestServer, socket: RelaySocket): Promise<void> {
    const before = server.app.relay.connections.size
    await socket.close()
    await eventually(() => server.app.relay.connections.size < before, 'the node to see the socket close')
    await server.app.relay.presenceSettled()
  }

  it('bob with a socket on each node stays online when one closes, and goes offline with both', async () => {
    const [one, two] = await cluster(2)
    const [alice, bob] = await Promise.all([signUp(one!), signUp(two!)])
    await sharePresence(one!, bob.token, [alice.client.username])
    const b1 = await online(one!, bob.token, 'bob@1')
    const b2 = await online(two!, bob.token, 'bob@2')
    const a = await online(one!, alice.token, 'alice@1')

    a.subscribe([bob.client.username])
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: true })

    // Node 1 loses bob's only socket there: on a single node that would be "offline".
    await offline(one!, b1)
    await a.fence()
    expect(presenceOf(a, bob.client.username)).toEqual([true])
    const bobId = await idOf(bob.client.username)
    expect(await one!.app.relay.isOnline(bobId)).toBe(true)

    await offline(two!, b2)
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: false })
    expect(await one!.app.relay.isOnline(bobId)).toBe(false)
    expect(presenceOf(a, bob.client.username)).toEqual([true, false])
  })

  it('an account with a device on each node is online while either is connected, and each of the watcher’s devices hears it', async () => {
    const [one, two] = await cluster(2)
    const [alice, bob] = await Promise.all([signUp(one!), signUp(two!)])
    const bobTablet = await linkDevice(two!, bob.client, bob.token)
    const aliceLaptop = await linkDevice(one!, alice.client, alice.token)
    await sharePresence(one!, bob.token, [alice.client.username])
    const phone = await online(one!, bob.token, 'bob device 1@1')
    const tablet = await online(two!, bobTablet.token, 'bob device 2@2')
    // Alice's two devices watch bob, one on each node.
    const watchers = [
      await online(one!, alice.token, 'alice device 1@1'),
      await online(two!, aliceLaptop.token, 'alice device 2@2'),
    ]
    for (const watcher of watchers) {
      watcher.subscribe([bob.client.username])
      expect(await watcher.next('presence')).toMatchObject({ username: bob.client.username, online: true })
    }

    // Bob's phone goes; his tablet on the other node keeps him online.
    await offline(one!, phone)
    for (const watcher of watchers) await watcher.fence()
    for (const watcher of watchers) expect(presenceOf(watcher, bob.client.username)).toEqual([true])
    // And the tablet too: both of alice's devices hear "offline", once.
    await offline(two!, tablet)
    for (const watcher of watchers) {
      expect(await watcher.next('presence')).toMatchObject({ username: bob.client.username, online: false })
      expect(presenceOf(watcher, bob.client.username)).toEqual([true, false])
    }
  })

  it("a watcher's first presence frame counts sockets on other nodes; consent still applies", async () => {
    const [one, two] = await cluster(2)
    const [alice, bob, carol] = await Promise.all([signUp(one!), signUp(two!), signUp(two!)])
    await sharePresence(two!, bob.token, [alice.client.username])
    await online(two!, bob.token, 'bob@2')
    await online(two!, carol.token, 'carol@2')
    const a = await online(one!, alice.token, 'alice@1')

    // Bob shared with alice, carol did not: carol's presence is not sent at all, even though she is online.
    a.subscribe([carol.client.username, bob.client.username])
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: true })
    await a.fence()
    expect(presenceOf(a, carol.client.username)).toEqual([])
    expect(presenceOf(a, bob.client.username)).toEqual([true])
  })

  it('a node that stops renewing its entry stops counting after the TTL, and watchers hear "offline"', async () => {
    const [one, , three] = await cluster(3)
    const [alice, bob] = await Promise.all([signUp(one!), signUp(three!)])
    await sharePresence(one!, bob.token, [alice.client.username])
    await online(three!, bob.token, 'bob@3')
    const a = await online(one!, alice.token, 'alice@1')
    a.subscribe([bob.client.username])
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: true })

    // Node 3 "dies": its presence connection drops with no cleanup, and it renews nothing more
    // (its bus and socket stay up, so only the expiry can make bob offline).
    nodes[2]!.presence.abandon()
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: false })
    expect(await one!.app.relay.isOnline(await idOf(bob.client.username))).toBe(false)

    // Bob connecting on a live node is online again, for watchers and for a new watcher alike.
    await online(one!, bob.token, 'bob@1')
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: true })
  })

  it('the connection limit counts every node: a new socket closes the oldest, on the other node', async () => {
    const [one, two] = await cluster(2, 2)
    const bob = await signUp(one!)
    const oldest = await online(one!, bob.token, 'bob@1')
    const second = await online(two!, bob.token, 'bob@2')
    await online(two!, bob.token, 'bob@2 again')

    const refused = await oldest.next('error')
    expect(refused.code).toBe(ServerErrorCode.TooManyConnections)
    expect(refused.message).toBe('expected at most 2 connections per user, got another: closing the oldest')
    expect((await oldest.closed).code).toBe(1008)
    await second.fence()
    expect(second.all('error')).toEqual([])
  })

  it('a socket displaced on another node closes even when the event telling that node is lost: Redis keeps the list', async () => {
    const [one, two] = await cluster(2, 2)
    const bob = await signUp(one!)
    const oldest = await online(one!, bob.token, 'bob@1')
    // Node 2's `connection.displaced` events never reach anyone (a lost publish, a subscription not live yet).
    const bus = nodes[1]!.bus
    const publish = bus.publish.bind(bus)
    bus.publish = (event) => (event.kind === 'connection.displaced' ? Promise.resolve() : publish(event))
    await online(two!, bob.token, 'bob@2')
    await online(two!, bob.token, 'bob@2 again')

    const refused = await oldest.next('error')
    expect(refused.code).toBe(ServerErrorCode.TooManyConnections)
    expect((await oldest.closed).code).toBe(1008)
  })

  it('a presence event that arrives out of order (from another node, late) is checked against Redis: the watcher ends on the truth', async () => {
    const [one, two] = await cluster(2)
    const [alice, bob] = await Promise.all([signUp(one!), signUp(two!)])
    await sharePresence(two!, bob.token, [alice.client.username])
    await online(two!, bob.token, 'bob@2')
    const a = await online(one!, alice.token, 'alice@1')
    a.subscribe([bob.client.username])
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: true })

    // An "offline" that an earlier socket's close on some node published, overtaken by the
    // "online" of bob's socket now open: it reaches node 1 last.
    const bobId = await idOf(bob.client.username)
    await nodes[1]!.bus.publish({
      kind: 'presence.changed',
      address: { userId: bobId, deviceId: 1 },
      username: bob.client.username,
      online: false,
    })
    await eventually(
      () => presenceOf(a, bob.client.username).length >= 2,
      'a presence frame after the late event',
    )
    await one!.app.relay.presenceSettled()
    await a.fence()
    expect(presenceOf(a, bob.client.username).at(-1)).toBe(true)
  })

  it('a node shutting down takes its sockets out of Redis first: watchers elsewhere hear "offline"', async () => {
    const [one, two] = await cluster(2)
    const [alice, bob] = await Promise.all([signUp(one!), signUp(two!)])
    await sharePresence(one!, bob.token, [alice.client.username])
    const b = await online(two!, bob.token, 'bob@2')
    const a = await online(one!, alice.token, 'alice@1')
    a.subscribe([bob.client.username])
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: true })

    const node = nodes.splice(1, 1)[0]!
    await node.server.close()
    await node.bus.close()
    await node.presence.close()
    expect((await b.closed).code).toBe(1001)
    expect(await a.next('presence')).toMatchObject({ username: bob.client.username, online: false })
  })

  it('a send to an account deleted without this node hearing of it fails, and the name is forgotten', async () => {
    const [one] = await cluster(2)
    const [alice, bob] = await Promise.all([signUp(one!), signUp(one!)])
    const a = await online(one!, alice.token, 'alice@1')
    const first = a.sendMessage(bob.client.username)
    await a.next('accepted', (frame) => frame.id === first)
    expect(one!.app.relay.directory.cached(bob.client.username)).toBeDefined()

    // Deleted in the database only: the account.deleted signal never reaches node 1.
    const bobId = await idOf(bob.client.username)
    await deleteAccount(database.db, bobId, {
      heldUntil: Date.now() + 3_600_000,
      relationsKey: RelationsKey.random(),
    })
    const refused = a.sendMessage(bob.client.username)
    expect((await a.next('error', (frame) => frame.id === refused)).code).toBe(ServerErrorCode.AccountDeleted)
    expect(one!.app.relay.directory.cached(bob.client.username)).toBeUndefined()
    const again = a.sendMessage(bob.client.username)
    expect((await a.next('error', (frame) => frame.id === again)).code).toBe(ServerErrorCode.AccountDeleted)
  })

  it('without a cluster presence store a node counts only its own sockets (the single-node default)', async () => {
    const server = await startServer({ database, relationsKey: RelationsKey.random() })
    try {
      const bob = await signUp(server)
      const b = await connect(server, bob.token, 'bob')
      sockets.push(b)
      // A plain boolean, at once, as before there were clusters.
      expect(server.app.relay.isOnline(await idOf(bob.client.username))).toBe(true)
    } finally {
      for (const socket of sockets.splice(0)) await socket.close()
      await server.close()
    }
  })
})
