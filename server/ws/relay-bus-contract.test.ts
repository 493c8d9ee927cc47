/**
 * The relay bus contract (relay-bus.ts) against each implementation: the in-process bus, and the
 * Redis bus with real Redis (two buses on one Redis, as two server processes, under a channel
 * prefix of their own). Then what only a network bus meets: malformed messages on a channel, its
 * own events coming back, a start without Redis, a subscriber connection killed.
 */
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  killSubscriber,
  REDIS_TEST_URL,
  rawRedis,
  redisUnavailable,
  testChannelPrefix,
} from '../test/redis.js'
import { encodeBusMessage, MAX_BUS_MESSAGE_CHARS } from './bus-codec.js'
import { InProcessRelayBus } from './in-process-bus.js'
import { RedisRelayBus } from './redis-bus.js'
import {
  type Address,
  primaryAddress,
  type RelayBus,
  type RelayEvent,
  type RelayListener,
} from './relay-bus.js'

const redisSkip = await redisUnavailable()

/** Long enough for any event to cross a loaded machine; only reached when something is wrong. */
const EVENT_TIMEOUT_MS = 20_000

function collectingLog() {
  const errors: unknown[] = []
  const warnings: unknown[] = []
  const log = {
    error: (object: unknown) => errors.push(object),
    warn: (object: unknown) => warnings.push(object),
    info: () => {},
  }
  return { log, errors, warnings }
}

function recorder(): { listener: RelayListener; events: RelayEvent[] } {
  const events: RelayEvent[] = []
  return { listener: (event) => events.push(event), events }
}

let nextUserId = 1_000 + Math.floor(Math.random() * 1_000_000)
function freshAddress(): Address {
  nextUserId += 1
  return primaryAddress(nextUserId)
}

function presence(address: Address, online = true): RelayEvent {
  return { kind: 'presence.changed', address, username: `user${address.userId}`, online }
}

function until(check: () => boolean, what: string): Promise<void> {
  return vi.waitFor(
    () => {
      if (!check()) throw new Error(`expected ${what}`)
    },
    { timeout: EVENT_TIMEOUT_MS, interval: 5 },
  )
}

/** Two buses as two processes would hold them (the in-process one is shared, as in one process). */
interface Pair {
  readonly publisher: RelayBus
  readonly subscriber: RelayBus
  close(): Promise<void>
}

const implementations: { name: string; skip: boolean; pair: () => Promise<Pair> }[] = [
  {
    name: 'InProcessRelayBus',
    skip: false,
    pair: async () => {
      const bus = new InProcessRelayBus(collectingLog().log)
      return { publisher: bus, subscriber: bus, close: () => bus.close() }
    },
  },
  {
    name: 'RedisRelayBus',
    skip: redisSkip !== undefined,
    pair: async () => {
      const channelPrefix = testChannelPrefix()
      const publisher = await RedisRelayBus.connect({
        url: REDIS_TEST_URL,
        channelPrefix,
        log: collectingLog().log,
      })
      const subscriber = await RedisRelayBus.connect({
        url: REDIS_TEST_URL,
        channelPrefix,
        log: collectingLog().log,
      })
      return {
        publisher,
        subscriber,
        close: async () => {
          await publisher.close()
          await subscriber.close()
        },
      }
    },
  },
]

for (const implementation of implementations) {
  describe.skipIf(implementation.skip)(`${implementation.name} keeps the relay bus contract`, () => {
    let pair: Pair

    beforeAll(async () => {
      pair = await implementation.pair()
    })

    afterAll(async () => {
      await pair.close()
    })

    it('is up and ready once made, and down for good once closed', async () => {
      const extra = await implementation.pair()
      expect(extra.publisher.status).toBe('up')
      await expect(extra.publisher.ready()).resolves.toBe(true)
      await extra.close()
      expect(extra.publisher.status).toBe('closed')
      await expect(extra.publisher.ready()).resolves.toBe(false)
      await expect(extra.publisher.publish(presence(freshAddress()))).resolves.toBeUndefined()
    })

    it("hands an event to its address's listeners only: not another user's, not another device's", async () => {
      const { publisher, subscriber } = pair
      const address = freshAddress()
      const mine = recorder()
      const theirs = recorder()
      await subscriber.subscribe(address, mine.listener)
      const other = freshAddress()
      await subscriber.subscribe(other, theirs.listener)

      await publisher.publish(presence(freshAddress()))
      await publisher.publish(presence({ userId: address.userId, deviceId: 2 }))
      const event = presence(address)
      const before = { ...publisher.counters }
      await publisher.publish(event)
      expect(publisher.counters.published).toBe(before.published + 1)
      await until(() => mine.events.length > 0, 'the event for the subscribed address')
      // Redis keeps one publisher's messages in order for one subscriber, so anything published
      // before the event would have arrived by now.
      expect(mine.events).toEqual([event])
      expect(theirs.events).toEqual([])
    })

    it('delivers once to a listener subscribed twice, and to every listener of the address', async () => {
      const { publisher, subscriber } = pair
      const address = freshAddress()
      const first = recorder()
      const second = recorder()
      await subscriber.subscribe(address, first.listener)
      await subscriber.subscribe(address, first.listener)
      await subscriber.subscribe(address, second.listener)
      await publisher.publish(presence(address))
      await publisher.publish(presence(address, false))
      await until(
        () => first.events.length >= 2 && second.events.length >= 2,
        'both events at both listeners',
      )
      expect(first.events).toHaveLength(2)
      expect(second.events).toHaveLength(2)
    })

    it('stops delivering to a listener once it unsubscribes, and only to that one', async () => {
      const { publisher, subscriber } = pair
      const address = freshAddress()
      const first = recorder()
      const second = recorder()
      await subscriber.subscribe(address, first.listener)
      await subscriber.subscribe(address, second.listener)
      await subscriber.unsubscribe(address, first.listener)
      await publisher.publish(presence(address))
      await until(() => second.events.length === 1, 'the event at the listener still subscribed')
      expect(first.events).toEqual([])

      // With the last listener gone, nothing arrives: a marker on another address, published after,
      // arrives first.
      await subscriber.unsubscribe(address, second.listener)
      await publisher.publish(presence(address, false))
      const marker = recorder()
      const markerAddress = freshAddress()
      await subscriber.subscribe(markerAddress, marker.listener)
      await publisher.publish(presence(markerAddress))
      await until(() => marker.events.length === 1, 'the marker')
      expect(second.events).toHaveLength(1)
    })

    it('carries byte arrays exactly, and every field of every event', async () => {
      const { publisher, subscriber } = pair
      const address = freshAddress()
      const received = recorder()
      await subscriber.subscribe(address, received.listener)
      const tokenHash = randomBytes(32)
      tokenHash[0] = 0x00
      tokenHash[31] = 0xff
      const body = Buffer.from(randomBytes(300).toString('base64url'), 'latin1')
      const id = randomBytes(16).toString('base64url')
      const events: RelayEvent[] = [
        {
          kind: 'message.committed',
          address,
          seq: 7,
          copy: { id, sender: 'alice', body, createdAt: 1_700_000_000_123 },
        },
        { kind: 'message.committed', address, seq: 8 },
        { kind: 'session.revoked', address, tokenHash },
        { kind: 'identity.changed', address, username: 'bob.b' },
        { kind: 'account.deleted', address, username: 'bob-b' },
        { kind: 'prekeys.served', address },
        { kind: 'presence.granted', address, ownerId: 42, username: 'carol' },
        { kind: 'presence.revoked', address, viewerId: 43, username: 'dave_d' },
        { kind: 'connection.displaced', address, socketId: 'a1B2-c_3.17' },
        presence(address, false),
      ]
      for (const event of events) await publisher.publish(event)
      await until(() => received.events.length === events.length, 'every event')

      // Bytes compared as bytes: a Buffer off the network equals the Uint8Array that was sent.
      const normalise = (event: RelayEvent) =>
        JSON.parse(
          JSON.stringify(event, (_key, value) =>
            value instanceof Uint8Array || value?.type === 'Buffer'
              ? { bytes: Buffer.from(value.data ?? value).toString('hex') }
              : value,
          ),
        )
      expect(received.events.map(normalise)).toEqual(events.map(normalise))
      const revoked = received.events[2] as Extract<RelayEvent, { kind: 'session.revoked' }>
      expect(revoked.tokenHash).toBeInstanceOf(Uint8Array)
      expect(Buffer.from(revoked.tokenHash).equals(tokenHash)).toBe(true)
      const committed = received.events[0] as Extract<RelayEvent, { kind: 'message.committed' }>
      expect(Buffer.from(committed.copy!.body).equals(body)).toBe(true)
      expect(received.events[1]).not.toHaveProperty('copy')
    })

    it('logs a listener that throws, still delivers to the others, and resolves the publish', async () => {
      const { publisher, subscriber } = pair
      const address = freshAddress()
      const after = recorder()
      await subscriber.subscribe(address, () => {
        throw new Error('listener bug')
      })
      await subscriber.subscribe(address, after.listener)
      await expect(publisher.publish(presence(address))).resolves.toBeUndefined()
      await until(() => after.events.length === 1, 'the event at the listener after the one that throws')
    })
  })
}

describe.skipIf(redisSkip !== undefined)('RedisRelayBus on the network', () => {
  const channelPrefix = testChannelPrefix()
  const opened: RelayBus[] = []
  const raw = redisSkip === undefined ? rawRedis() : undefined

  async function open(log = collectingLog().log): Promise<RedisRelayBus> {
    const bus = await RedisRelayBus.connect({ url: REDIS_TEST_URL, channelPrefix, log })
    opened.push(bus)
    return bus
  }

  afterEach(async () => {
    for (const bus of opened.splice(0)) await bus.close()
  })

  afterAll(() => {
    raw?.disconnect()
  })

  it("reports each event's lag from its publisher's clock, and none for its own", async () => {
    const lags: (number | undefined)[] = []
    const metrics = {
      published: () => {},
      publishFailed: () => {},
      received: (_kind: RelayEvent['kind'], lagSeconds?: number) => void lags.push(lagSeconds),
    }
    const subscriber = await RedisRelayBus.connect({
      url: REDIS_TEST_URL,
      channelPrefix,
      log: collectingLog().log,
      metrics,
    })
    opened.push(subscriber)
    const address = freshAddress()
    const received = recorder()
    await subscriber.subscribe(address, received.listener)
    // Sent 250 ms ago by another node's clock; then one this bus publishes itself.
    await raw!.spublish(
      subscriber.channelOf(address),
      encodeBusMessage('another-node', presence(address), Date.now() - 250),
    )
    await until(() => received.events.length === 1, 'the event from the other node')
    await subscriber.publish(presence(address, false))
    await until(() => received.events.length === 2, 'its own event')
    expect(lags).toHaveLength(2)
    expect(lags[0]).toBeGreaterThanOrEqual(0.25)
    expect(lags[1]).toBeUndefined()
  })

  it('drops malformed messages on a channel, logs them, and keeps serving', async () => {
    const { log, warnings } = collectingLog()
    const bus = await open(log)
    const address = freshAddress()
    const received = recorder()
    await bus.subscribe(address, received.listener)
    const channel = bus.channelOf(address)
    const valid = (event: RelayEvent) => encodeBusMessage('another-node', event)
    const junk = [
      'not json',
      '{"v":1}',
      JSON.stringify({ v: 2, from: 'another-node', event: presence(address) }),
      // A known event with a field too many, a seq that is no position, a name that is no username.
      valid(presence(address)).replace('"online":true', '"online":true,"extra":1'),
      valid({ kind: 'message.committed', address, seq: 1 }).replace('"seq":1', '"seq":-1'),
      valid({ kind: 'identity.changed', address, username: 'bob' }).replace('"bob"', '"Bob Smith"'),
      // A valid event for another address than the channel's.
      valid(presence(freshAddress())),
      'x'.repeat(MAX_BUS_MESSAGE_CHARS + 1),
      '[]',
      'null',
    ]
    for (const text of junk) await raw!.spublish(channel, text)
    const event = presence(address)
    await raw!.spublish(channel, valid(event))
    await until(() => received.events.length === 1, 'the valid event after the junk')
    expect(received.events).toEqual([event])
    expect(bus.counters.dropped).toBe(junk.length)
    expect(bus.counters.received).toBe(1)
    expect(warnings).toHaveLength(junk.length)
    // The log says why, never what: no junk in it.
    expect(
      JSON.stringify(warnings, (_key, value) => (value instanceof Error ? value.message : value)),
    ).not.toContain('Bob Smith')
    expect(bus.status).toBe('up')
  })

  it('hands its own events to its own listeners once, at once, and not again when Redis echoes them', async () => {
    const bus = await open()
    const other = await open()
    const address = freshAddress()
    const received = recorder()
    await bus.subscribe(address, received.listener)
    const own = presence(address)
    const published = bus.publish(own)
    // Before the publish resolves: this process's sockets never wait for Redis.
    expect(received.events).toEqual([own])
    await published
    const marker = presence(address, false)
    await other.publish(marker)
    await until(() => received.events.length === 2, "the other process's marker")
    expect(received.events).toEqual([own, marker])
  })

  it('says which Redis it cannot reach at start, without the password', async () => {
    const port = await new Promise<number>((resolve) => {
      const server = createServer()
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number }
        server.close(() => resolve(port))
      })
    })
    const attempt = RedisRelayBus.connect({
      url: `redis://relay:hunter2@127.0.0.1:${port}/0`,
      channelPrefix,
      log: collectingLog().log,
      connectTimeoutMs: 2_000,
    })
    await expect(attempt).rejects.toThrow(
      new RegExp(
        `^cannot reach Redis at redis://relay:\\*\\*\\*@127\\.0\\.0\\.1:${port}/0: connect ECONNREFUSED`,
      ),
    )
    await expect(attempt).rejects.not.toThrow(/hunter2/)
  })

  it('reports a lost subscriber connection, renews its subscriptions when back, and calls onResumed', async () => {
    const { log, warnings } = collectingLog()
    const bus = await open(log)
    const other = await open()
    const address = freshAddress()
    const received = recorder()
    await bus.subscribe(address, received.listener)
    let resumed = 0
    bus.onResumed(() => {
      resumed += 1
    })

    await killSubscriber(raw!, bus.nodeId)
    await until(() => resumed === 1, 'onResumed after the reconnect')
    expect(bus.counters.resumed).toBe(1)
    expect(bus.status).toBe('up')
    await expect(bus.ready()).resolves.toBe(true)
    expect(warnings.length).toBeGreaterThan(0)

    const event = presence(address)
    await other.publish(event)
    await until(() => received.events.length === 1, 'an event on the renewed subscription')
    expect(received.events).toEqual([event])
  })
})
