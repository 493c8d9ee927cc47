/**
 * Sessions that never lose a message (issue 9), as a property: two real client cores, Alice and
 * Bob, on MemoryStores over the in-memory relay (test/memory-relay.ts), driven by a random sequence
 * of what people and networks do: either side sends (both at once too, so first messages cross),
 * disconnects and connects, loses its network and gets it back, is closed and reopened from its
 * store, loses a frame on the wire (its socket dying with it, as TCP loses frames), or loses its
 * session record with the other (simulated corruption, recovered by a retry request, §8.6). Then
 * both come online and settle, and:
 *
 *   - every text each side sent is in the other's history exactly once, by id and text, as a text
 *     (no notice left: nothing undecryptable, nothing lost), in the order it was sent: a message
 *     recovered by a retry takes its notice's place, which is where it arrived;
 *   - every text each side sent is "delivered" in its own history.
 *
 * Time: the clients' clock and every timer they set (the relay link's reconnect backoff, the
 * retries' RETRY_REQUEST_INTERVAL_MS, receipts' zero delay, flush's poll) are vitest's fake timers,
 * so a retry due in 60 s and a reconnect due in 30 s cost nothing: a `wait` op and the final phase
 * move the clock on. The fake clock also runs with real time (shouldAdvanceTime), so work that polls
 * goes on between the steps the test takes. The relay keeps the real clock (it was made before the
 * fake one, and nothing of it depends on time passing).
 *
 * A failure prints the op sequence (shrunk) and, in the assertion's message, both histories and
 * the problems the clients reported. FC_SEED and FC_RUNS replay or widen a search.
 */
import fc from 'fast-check'
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { strongPassword } from '../server/test/harness.js'
import {
  ChatClient,
  type ChatClientOptions,
  type MessageView,
  RECONNECT_MAX_DELAY_MS,
} from '../shared/client/chat-client.js'
import { isClientError } from '../shared/client/errors.js'
import { MemoryStore } from '../shared/client/store.js'
import type { WebSocketFactory } from '../shared/client/transport.js'
import type { ClientEvents } from '../shared/client/views.js'
import { RETRY_REQUEST_INTERVAL_MS } from '../shared/limits.js'
import { TEST_KDF_ITERATIONS } from './client-helpers.js'
import { copyStore, MemoryRelay, type NetworkLink } from './memory-relay.js'

type Party = 'alice' | 'bob'
const PARTIES: readonly Party[] = ['alice', 'bob']
const other = (party: Party): Party => (party === 'alice' ? 'bob' : 'alice')

/** Frames whose loss the relay can simulate, each taking its socket with it. */
type LostFrame = 'deliver' | 'accepted' | 'ack' | 'send'

type Op =
  | { readonly kind: 'send'; readonly who: Party }
  | { readonly kind: 'send-both' }
  | {
      readonly kind: 'connect' | 'disconnect' | 'network-down' | 'network-up' | 'reopen' | 'corrupt'
      readonly who: Party
    }
  | { readonly kind: 'lose'; readonly who: Party; readonly frame: LostFrame }
  | { readonly kind: 'wait'; readonly ms: number }
  | { readonly kind: 'settle' }

/** How an op prints in a counterexample: `send(alice)`, `lose(bob, deliver)`, `wait(61000)`. */
function describeOp(op: Op): string {
  switch (op.kind) {
    case 'send-both':
    case 'settle':
      return op.kind
    case 'wait':
      return `wait(${op.ms})`
    case 'lose':
      return `lose(${op.who}, ${op.frame})`
    default:
      return `${op.kind}(${op.who})`
  }
}

/** The ops of a printed counterexample (FC_OPS="send(alice),lose(bob, deliver)"), to replay it. */
function parseOps(text: string): Op[] {
  return [...text.matchAll(/([a-z-]+)(?:\(([^)]*)\))?/g)].map(([, kind, args = '']) => {
    const [first, second] = args.split(',').map((arg) => arg.trim())
    if (kind === 'wait') return printable<Op>({ kind, ms: Number(first) })
    if (kind === 'lose') return printable<Op>({ kind, who: first as Party, frame: second as LostFrame })
    if (kind === 'send-both' || kind === 'settle') return printable<Op>({ kind })
    return printable({ kind, who: first } as Op)
  })
}

function printable<T extends Op>(op: T): T {
  return Object.assign(op, { [fc.toStringMethod]: () => describeOp(op) })
}

/**
 * At most this many session records deleted per run. Each loss is recovered by one retry request
 * and one resend; the sender resends a message at most MAX_RESENDS_PER_MESSAGE (2) times.
 */
const MAX_CORRUPTIONS_PER_RUN = 2
/** Rounds of "time passes, everyone settles" the final phase allows before it gives up. */
const MAX_SETTLE_ROUNDS = 6

const party = fc.constantFrom<Party>(...PARTIES)
const simple = (kind: Exclude<Op['kind'], 'send-both' | 'lose' | 'wait' | 'settle'>) =>
  party.map((who) => printable({ kind, who }) as Op)
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: simple('send') },
  { weight: 2, arbitrary: fc.constant(null).map(() => printable<Op>({ kind: 'send-both' })) },
  { weight: 3, arbitrary: simple('connect') },
  { weight: 1, arbitrary: simple('disconnect') },
  { weight: 1, arbitrary: simple('network-down') },
  { weight: 1, arbitrary: simple('network-up') },
  { weight: 1, arbitrary: simple('reopen') },
  { weight: 1, arbitrary: simple('corrupt') },
  {
    weight: 2,
    arbitrary: fc
      .record({ who: party, frame: fc.constantFrom<LostFrame>('deliver', 'accepted', 'ack', 'send') })
      .map(({ who, frame }) => printable<Op>({ kind: 'lose', who, frame })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(1_000, RECONNECT_MAX_DELAY_MS, RETRY_REQUEST_INTERVAL_MS + 1)
      .map((ms) => printable<Op>({ kind: 'wait', ms })),
  },
  { weight: 2, arbitrary: fc.constant(null).map(() => printable<Op>({ kind: 'settle' })) },
)
const opsArbitrary = fc
  .array(opArbitrary, { minLength: 1, maxLength: 24 })
  .filter((ops) => ops.filter((op) => op.kind === 'corrupt').length <= MAX_CORRUPTIONS_PER_RUN)

interface Side {
  readonly name: Party
  readonly store: MemoryStore
  readonly link: NetworkLink
  readonly options: ChatClientOptions
  client: ChatClient
  /** connect() called and disconnect() not since (kept across a reopen). */
  connected: boolean
  /** What this side sent, in the order its sends returned. */
  readonly sent: { id: string; text: string }[]
  /** Problems and undecryptable deliveries the clients reported, for the failure message. */
  readonly log: string[]
}

/** Alice and Bob registered once: the core makes an RSA-3072 key pair per account. */
let registered: { relay: MemoryRelay; stores: Record<Party, MemoryStore>; password: string }

function deviceOptions(relay: MemoryRelay, link: NetworkLink, store: MemoryStore): ChatClientOptions {
  return {
    serverUrl: relay.serverUrl,
    http: link.http,
    webSocket: link.webSocket,
    store,
    storageKeyIterations: TEST_KDF_ITERATIONS,
    minimumStorageKeyIterations: TEST_KDF_ITERATIONS,
    // The faked Date while a run is going on (see the module comment).
    now: () => Date.now(),
  }
}

beforeAll(async () => {
  const relay = new MemoryRelay()
  const password = strongPassword()
  const stores = { alice: new MemoryStore(), bob: new MemoryStore() }
  for (const name of PARTIES) {
    const client = await ChatClient.register(deviceOptions(relay, relay.link(), stores[name]), name, password)
    await client.close()
  }
  registered = { relay, stores, password }
})

afterEach(() => {
  vi.useRealTimers()
})

function watch(side: Side): void {
  side.client.events.on('problem', ({ code, message }) => side.log.push(`problem ${code}: ${message}`))
  side.client.events.on('undecryptable', ({ id, reason }) => side.log.push(`undecryptable ${id}: ${reason}`))
  side.client.events.on('message', (m) => side.log.push(`message ${m.direction} ${m.kind} ${m.id} ${m.text}`))
  side.client.events.on('delivery', (d) => side.log.push(`delivery ${d.id} ${d.state}`))
  side.client.events.on('removed', (d) => side.log.push(`removed ${d.id}`))
  side.client.events.on('connection', (d) => side.log.push(`connection ${d.state}`))
}

async function openSide(
  relay: MemoryRelay,
  name: Party,
  webSocket?: (link: NetworkLink) => WebSocketFactory,
): Promise<Side> {
  const link = relay.link()
  const store = await copyStore(registered.stores[name])
  const options = {
    ...deviceOptions(relay, link, store),
    ...(webSocket ? { webSocket: webSocket(link) } : {}),
  }
  const client = await ChatClient.open(options, registered.password)
  const side: Side = { name, store, link, options, client, connected: false, sent: [], log: [] }
  watch(side)
  return side
}

/** Flushes; false when the connection was cut meanwhile. */
async function flushUnlessCut(client: ChatClient): Promise<boolean> {
  try {
    await client.flush()
    return true
  } catch (error) {
    if (isClientError(error, 'E2E_ERR_NETWORK') && client.connection !== 'online') return false
    throw error
  }
}

class World {
  private counter = 0
  corruptions = 0

  constructor(
    readonly relay: MemoryRelay,
    readonly sides: Record<Party, Side>,
  ) {}

  async send(who: Party): Promise<void> {
    const side = this.sides[who]
    const text = `${who} ${++this.counter}`
    try {
      const message = await side.client.send(other(who), text)
      side.sent.push({ id: message.id, text })
    } catch (error) {
      // A first message needs the peer's bundle, which needs the network: refused, nothing stored.
      if (!(isClientError(error, 'E2E_ERR_NETWORK') && !side.link.online)) throw error
      side.log.push(`send "${text}" refused offline`)
    }
  }

  async apply(op: Op): Promise<void> {
    if (op.kind === 'send-both') {
      await Promise.all(PARTIES.map((who) => this.send(who)))
      return
    }
    if (op.kind === 'wait') {
      await vi.advanceTimersByTimeAsync(op.ms)
      return
    }
    if (op.kind === 'settle') {
      await this.relay.settle()
      return
    }
    const side = this.sides[op.who]
    switch (op.kind) {
      case 'send':
        await this.send(op.who)
        return
      case 'connect':
        side.connected = true
        side.client.connect()
        return
      case 'disconnect':
        side.connected = false
        await side.client.disconnect()
        return
      case 'network-down':
        side.link.goOffline()
        return
      case 'network-up':
        side.link.goOnline()
        return
      case 'reopen':
        await side.client.close()
        side.client = await ChatClient.open(side.options, registered.password)
        watch(side)
        if (side.connected) side.client.connect()
        return
      case 'corrupt':
        this.corruptions++
        await side.store.commit([{ op: 'delete', table: 'sessions', key: `${other(op.who)}:1` }])
        return
      case 'lose':
        this.relay.dropNext(op.frame, { username: op.who, close: true })
        return
    }
  }

  /** Both online; then time passes and everyone settles until nothing is left to do. */
  async bringTogether(): Promise<void> {
    for (const side of Object.values(this.sides)) {
      side.link.goOnline()
      side.connected = true
      side.client.connect()
    }
    for (let round = 0; round < MAX_SETTLE_ROUNDS; round++) {
      // Any reconnect backoff is over.
      await vi.advanceTimersByTimeAsync(RECONNECT_MAX_DELAY_MS * 1.2)
      await Promise.all(Object.values(this.sides).map(({ client }) => client.waitUntilOnline()))
      await this.relay.settle()
      // A frame lost on the way (a drop armed by a `lose` op fires now) closes the socket under
      // flush: the next round reconnects and flushes again.
      const flushed = await Promise.all(Object.values(this.sides).map(({ client }) => flushUnlessCut(client)))
      await this.relay.settle()
      if (flushed.every(Boolean) && (await this.finished())) return
      // A retry request waits for RETRY_REQUEST_INTERVAL_MS after the previous one to the same peer.
      await vi.advanceTimersByTimeAsync(RETRY_REQUEST_INTERVAL_MS)
    }
  }

  /** Nothing queued on the relay, nothing in an outbox, no notice, every sent message delivered. */
  private async finished(): Promise<boolean> {
    for (const side of Object.values(this.sides)) {
      if (this.relay.queued(side.name).length > 0) return false
      if ((await side.store.list('outbox')).length > 0) return false
      const history = await this.history(side.name)
      if (history.some((m) => m.kind !== 'text' || (m.direction === 'out' && m.state !== 'delivered')))
        return false
    }
    return true
  }

  history(who: Party): Promise<MessageView[]> {
    return this.sides[who].client.history(other(who), { limit: 10_000 })
  }

  async report(): Promise<string> {
    const lines: string[] = []
    for (const side of Object.values(this.sides)) {
      lines.push(`${side.name} sent: ${side.sent.map((s) => `${s.text} (${s.id})`).join(', ')}`)
      lines.push(`${side.name}'s history:`)
      for (const m of await this.history(side.name)) {
        lines.push(`  ${m.order} ${m.direction} ${m.kind} ${m.state} ${m.id} ${JSON.stringify(m.text)}`)
      }
      lines.push(`${side.name}'s log:`, ...side.log.map((line) => `  ${line}`))
    }
    if (process.env.FC_FRAMES) {
      for (const f of this.relay.frames) {
        if (f.frame.type === 'presence' || f.frame.type === 'presence.subscribe') continue
        lines.push(`  #${f.socket} ${f.username} ${f.direction} ${f.frame.type} ${f.frame.id ?? ''} ${f.frame.seq ?? f.frame.upTo ?? ''} ${f.frame.from ?? f.frame.to ?? ''}`)
      }
    }
    return lines.join('\n')
  }
}

describe('sessions under random interleavings of two parties', () => {
  it('every text arrives once, in order, readable, and is delivered', async () => {
    await fc.assert(
      fc.asyncProperty(opsArbitrary, async (ops) => {
        const relay = registered.relay.fork()
        vi.useFakeTimers({
          toFake: ['setTimeout', 'clearTimeout', 'Date'],
          shouldAdvanceTime: true,
          advanceTimeDelta: 5,
        })
        const sides = { alice: await openSide(relay, 'alice'), bob: await openSide(relay, 'bob') }
        const world = new World(relay, sides)
        try {
          for (const op of ops) await world.apply(op)
          await world.bringTogether()
          const report = await world.report()
          for (const sender of PARTIES) {
            const receiver = other(sender)
            const received = (await world.history(receiver)).filter((m) => m.direction === 'in')
            expect(
              received.map((m) => [m.id, m.kind, m.text]),
              `${receiver} has what ${sender} sent, once each, in order\n${report}`,
            ).toEqual(sides[sender].sent.map(({ id, text }) => [id, 'text', text]))
            const own = (await world.history(sender)).filter((m) => m.direction === 'out')
            expect(
              own.map((m) => [m.id, m.state]),
              `${sender}'s messages are delivered\n${report}`,
            ).toEqual(sides[sender].sent.map(({ id }) => [id, 'delivered']))
          }
        } finally {
          await Promise.all(Object.values(sides).map(({ client }) => client.close()))
          vi.useRealTimers()
        }
      }),
      {
        numRuns: Number(process.env.FC_RUNS ?? (process.env.FC_OPS ? (process.env.FC_REPEAT ?? 1) : 25)),
        ...(process.env.FC_OPS ? { examples: Array.from({ length: Number(process.env.FC_REPEAT ?? 1) }, () => [parseOps(process.env.FC_OPS ?? "")]) } : {}),
        ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
        ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
        endOnFailure: false,
      },
    )
  })
})

/** Resolves once `client` emits `name` with a payload that `accept` accepts. */
function eventOf<K extends keyof ClientEvents>(
  client: ChatClient,
  name: K,
  accept: (payload: ClientEvents[K]) => boolean,
): Promise<void> {
  return new Promise((resolve) => {
    const stop = client.events.on(name, (payload) => {
      if (!accept(payload)) return
      stop()
      resolve()
    })
  })
}

/** Alice and Bob online, with a session both ways and nothing in flight. */
async function talking(): Promise<{ relay: MemoryRelay; alice: Side; bob: Side }> {
  const relay = registered.relay.fork()
  const alice = await openSide(relay, 'alice')
  const bob = await openSide(relay, 'bob')
  for (const side of [alice, bob]) side.client.connect()
  await Promise.all([alice.client.waitUntilOnline(), bob.client.waitUntilOnline()])
  for (const [from, to] of [
    [alice, bob],
    [bob, alice],
  ] as const) {
    const delivered = new Promise<void>((resolve) => {
      const stop = from.client.events.on('delivery', ({ state }) => {
        if (state !== 'delivered') return
        stop()
        resolve()
      })
    })
    await from.client.send(to.name, `hello ${to.name}`)
    await delivered
  }
  await relay.settle()
  return { relay, alice, bob }
}

async function inHistory(side: Side, id: string): Promise<MessageView | undefined> {
  return (await side.client.history(other(side.name), { limit: 1_000 })).find((m) => m.id === id)
}

/**
 * Event-loop turns a flush cut off from its connection gets to try another entry: each entry is
 * one WebCrypto call (well under a turn's worth of the thread pool), so 30 entries take a few turns.
 */
const OLD_FLUSH_GRACE_TURNS = 50
/** Rounds of 20 queued messages flushed 16 times at once. */
const CONCURRENT_FLUSH_ROUNDS = 3

async function eventLoopTurns(turns: number): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve))
}

/** Polls the store until `condition` holds (the test's own timeout is the failure guard). */
async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 5))
}

describe('what the property found, reduced to deterministic cases', () => {
  it('flush() waits for the answer to a retry request that has arrived', async () => {
    const { relay, alice, bob } = await talking()
    // Bob loses his session with alice: her next message cannot be decrypted, and he asks again.
    await bob.store.commit([{ op: 'delete', table: 'sessions', key: 'alice:1' }])
    const mark = relay.frames.length
    const lost = await alice.client.send('bob', 'after the loss')
    const retry = await relay.waitFor(
      (f, i = relay.frames.indexOf(f)) =>
        i >= mark && f.direction === 'received' && f.username === 'alice' && f.frame.type === 'deliver',
    )
    await relay.waitFor((f) => f.username === 'alice' && f.frame.type === 'ack' && f.frame.upTo >= retry.frame.seq)
    const afterRetry = relay.frames.length
    // The retry request is stored and acknowledged; its answer (the message again) is alice's to send.
    await alice.client.flush()
    const acceptedSince = relay.frames
      .slice(afterRetry)
      .filter((f) => f.username === 'alice' && f.direction === 'received' && f.frame.type === 'accepted')
    expect(acceptedSince.length, 'the resend was accepted before flush() resolved').toBeGreaterThan(0)
    await until(async () => (await inHistory(bob, lost.id))?.kind === 'text')
    await Promise.all([alice.client.close(), bob.client.close()])
  })

  it('a send whose `accepted` was lost to disconnect() goes out again after connect()', async () => {
    const { relay, alice, bob } = await talking()
    relay.pause()
    const inFlight = await alice.client.send('bob', 'in flight')
    // The send is on the wire; the client closes before the server's answer can come back.
    await alice.client.disconnect()
    relay.resume()
    await relay.settle()
    expect(relay.of('received', 'accepted', 'alice').filter((frame) => frame.id === inFlight.id)).toEqual([])

    alice.client.connect()
    await alice.client.waitUntilOnline()
    const later = await alice.client.send('bob', 'later')
    await eventOf(alice.client, 'delivery', ({ id, state }) => id === later.id && state === 'accepted')
    // Sent again on the new connection (the server answers a duplicate with `accepted`), so nothing
    // is left in the outbox and flush() can finish.
    expect(relay.of('sent', 'send', 'alice').filter((frame) => frame.id === inFlight.id)).toHaveLength(2)
    expect(await alice.store.list('outbox')).toEqual([])
    await Promise.all([alice.client.close(), bob.client.close()])
  })

  it('messages queued offline keep their order when the connection is cut mid-flush and reopened at once', async () => {
    const relay = registered.relay.fork()
    // Alice's sockets tell the test when the client tries to send on one that is still connecting.
    let triedWhileConnecting: (() => void) | undefined
    const alice = await openSide(relay, 'alice', (link) => (url) => {
      const socket = link.webSocket(url)
      return new Proxy(socket, {
        get(target, property) {
          if (property === 'readyState' && target.readyState === 0) triedWhileConnecting?.()
          const value = Reflect.get(target, property)
          return typeof value === 'function' ? value.bind(target) : value
        },
        set: (target, property, value) => Reflect.set(target, property, value),
      })
    })
    const bob = await openSide(relay, 'bob')
    bob.client.connect()
    await bob.client.waitUntilOnline()
    const sent = Array.from({ length: 30 }, (_, i) => `queued ${i}`)
    for (const text of sent) await alice.client.send('bob', text)

    alice.client.connect()
    await relay.waitFor((f) => f.username === 'alice' && f.frame.type === 'send')
    // The network drops under the flush of what was queued, and the app reconnects at once (as the
    // PWA does when the browser says it is online again). The new socket opens only once the first
    // connection's flush, still going through the outbox, has tried its next entry on it (or has had
    // ample time to: a flush that stops with its connection never tries).
    const offline = eventOf(alice.client, 'connection', ({ state }) => state === 'offline')
    alice.link.goOffline()
    await offline
    relay.pause()
    alice.link.goOnline()
    const tried = new Promise<void>((resolve) => {
      triedWhileConnecting = resolve
    })
    alice.client.connect()
    await Promise.race([tried, eventLoopTurns(OLD_FLUSH_GRACE_TURNS)])
    triedWhileConnecting = undefined
    relay.resume()
    await alice.client.waitUntilOnline()
    await alice.client.flush()
    await relay.settle()
    const received = (await bob.client.history('alice', { limit: 100 })).filter((m) => m.direction === 'in')
    expect(received.map((m) => m.text)).toEqual(sent)
    await Promise.all([alice.client.close(), bob.client.close()])
  })

  it('messages queued offline keep their order when several flushes run at once', async () => {
    const relay = registered.relay.fork()
    const alice = await openSide(relay, 'alice')
    const bob = await openSide(relay, 'bob')
    bob.client.connect()
    await bob.client.waitUntilOnline()
    const sent: string[] = []
    // Long and short messages alternate: a long one takes longer to unseal, so a flush holding it
    // is overtaken by one holding the short one after it, unless flushes take turns. Each round is
    // another chance.
    for (let round = 0; round < CONCURRENT_FLUSH_ROUNDS; round++) {
      await alice.client.disconnect()
      for (let i = 0; i < 20; i++) {
        sent.push(`${round}.${i} ${i % 2 === 0 ? 'long '.repeat(3_000) : 'short'}`)
        await alice.client.send('bob', sent.at(-1)!)
      }
      alice.client.connect()
      await alice.client.waitUntilOnline()
      // Connecting flushes the outbox; a script's flush(), a send, a receipt and a retry answer may
      // each flush it meanwhile.
      await Promise.all(Array.from({ length: 16 }, () => alice.client.flush()))
      await relay.settle()
    }
    const received = (await bob.client.history('alice', { limit: 1_000 })).filter((m) => m.direction === 'in')
    expect(received.map((m) => m.text.slice(0, 12))).toEqual(sent.map((text) => text.slice(0, 12)))
    await Promise.all([alice.client.close(), bob.client.close()])
  })
})
