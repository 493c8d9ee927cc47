/**
 * Sessions that never lose a message (issue 9), as a property: two real client cores, Alice and
 * Bob, over the in-memory relay (test/memory-relay.ts), driven by a random sequence of what people
 * and networks do: either side sends (both at once too, so first messages cross); connects and
 * disconnects; loses its network and gets it back; is closed and reopened from its records (each
 * opening gets its own store, which refuses to work once closed, as IndexedDB and SQLite do); loses
 * a frame on the wire (`deliver`, `accepted`, `ack` or `send`, its socket dying with it, as a TCP
 * connection does); or loses its session record with the other (simulated corruption, recovered by
 * a retry request, docs/protocol.md §8.6). The wire can be held (`hold` … `release`), so that
 * frames are in flight while other things happen. Then both come online and settle, and:
 *
 *   - every text each side sent is in the other's history exactly once, by id and text, as a text
 *     (no notice left: nothing undecryptable, nothing lost), in the order it was sent: a message
 *     recovered by a retry takes its notice's place, which is where it arrived (nothing here marks
 *     a conversation read, so the notice is always unread and always replaced in place);
 *   - nothing is left in either outbox, and every text is "delivered" in its sender's history,
 *     except those sent before the receiver lost its session record or was closed, which may stay
 *     "accepted" (their receipts can be lost; see `mayStayAccepted`).
 *
 * Time: the clients' clock and every timer they set (the relay link's reconnect backoff, the
 * retries' RETRY_REQUEST_INTERVAL_MS, receipts' zero delay, flush's poll) are vitest's fake timers,
 * so a retry due in 60 s and a reconnect due in 30 s cost nothing: the `wait` op and the final phase
 * move the clock on. The fake clock also runs with real time (shouldAdvanceTime), so work that
 * polls goes on between the steps the test takes. The relay keeps the real clock (it was made before
 * the fake one, and nothing of it depends on time passing). Corruption is limited to
 * MAX_CORRUPTIONS_PER_RUN per run; with the clock under the test's control a second retry request
 * within RETRY_REQUEST_INTERVAL_MS is simply waited for.
 *
 * A failure prints the op sequence (shrunk), and the assertion's message both histories and what
 * the clients reported. To replay or widen a search: FC_OPS="connect(alice),send(alice),…" (with
 * FC_REPEAT=n to run it n times: interleavings of crypto on the thread pool vary), FC_SEED, FC_PATH,
 * FC_RUNS, FC_CORRUPTIONS (more session losses per run); FC_FRAMES=1 adds the relay's frames to the
 * message, FC_STATS=1 prints how many runs went through each case (a lost frame, a reopen, a
 * retry, crossed first messages...).
 *
 * The second half holds what the property found, reduced to deterministic cases, each of them a
 * defect that was then fixed.
 */

import fc from 'fast-check'
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { strongPassword } from '../server/test/harness.js'
import type { ConversationId } from '../shared/address.js'
import { fromBase64Url } from '../shared/bytes.js'
import {
  ChatClient,
  type ChatClientOptions,
  type MessageView,
  RECONNECT_MAX_DELAY_MS,
} from '../shared/client/chat-client.js'
import { isClientError } from '../shared/client/errors.js'
import {
  type ClientStore,
  MemoryStore,
  type StoreOperation,
  type StoreRecord,
  type StoreTable,
} from '../shared/client/store.js'
import type { WebSocketFactory } from '../shared/client/transport.js'
import type { ClientEvents } from '../shared/client/views.js'
import { RETRY_REQUEST_INTERVAL_MS } from '../shared/limits.js'
import { TEST_KDF_ITERATIONS } from './client-helpers.js'
import { copyStore, MemoryRelay, type NetworkLink } from './memory-relay.js'

type Party = 'alice' | 'bob'
const PARTIES: readonly Party[] = ['alice', 'bob']
const other = (party: Party): Party => (party === 'alice' ? 'bob' : 'alice')

/** Frames whose loss the relay can simulate, each taking its socket with it. */
type LostFrame = 'deliver' | 'accepted' | 'ack' | 'send.devices'

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
  | { readonly kind: 'hold' }
  | { readonly kind: 'release' }

/** How an op prints in a counterexample: `send(alice)`, `lose(bob, deliver)`, `wait(61000)`. */
function describeOp(op: Op): string {
  switch (op.kind) {
    case 'send-both':
    case 'settle':
    case 'hold':
    case 'release':
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
    if (kind === 'send-both' || kind === 'settle' || kind === 'hold' || kind === 'release')
      return printable<Op>({ kind })
    return printable({ kind, who: first } as Op)
  })
}

function printable<T extends Op>(op: T): T {
  return Object.assign(op, { [fc.toStringMethod]: () => describeOp(op) })
}

/**
 * At most this many session records deleted per run. Each loss is recovered by one retry request
 * and one resend; a second loss that catches the resend itself is recovered by a request for the
 * resend (the last describe below), and the sender resends a message at most
 * MAX_RESENDS_PER_MESSAGE (2) times, so a third loss of the same message may end as "lost".
 */
const MAX_CORRUPTIONS_PER_RUN = Number(process.env.FC_CORRUPTIONS ?? 2)
/**
 * How far the clock moves while a side is closed and reopened: more than the positions a run's
 * entries can run ahead of the clock (each at least one past the last, at most a few hundred).
 */
const REOPEN_TAKES_MS = 1_000
/** Ops per run: enough for a loss, a recovery and more traffic after it. */
const MAX_OPS_PER_RUN = 24
/**
 * How long one round's flush waits for the outbox to empty. The fake clock runs with real time
 * while it waits, so this is also real time: a stuck outbox costs seconds, not the default 30 s.
 */
const FLUSH_ROUND_MS = 2_000
/**
 * A failing case is shrunk for at most this long (each candidate replays its ops and settles, a few
 * seconds when an outbox is stuck); passing runs take a few seconds in all.
 */
const SHRINK_TIME_LIMIT_MS = 240_000
/** Rounds of "time passes, everyone settles" the final phase allows before it gives up. */
const MAX_SETTLE_ROUNDS = 6

const party = fc.constantFrom<Party>(...PARTIES)
const simple = (kind: Exclude<Op['kind'], 'send-both' | 'lose' | 'wait' | 'settle' | 'hold' | 'release'>) =>
  party.map((who) => printable({ kind, who }) as Op)
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: simple('send') },
  { weight: 2, arbitrary: fc.constant(null).map(() => printable<Op>({ kind: 'send-both' })) },
  { weight: 4, arbitrary: simple('connect') },
  { weight: 2, arbitrary: simple('disconnect') },
  { weight: 1, arbitrary: simple('network-down') },
  { weight: 1, arbitrary: simple('network-up') },
  { weight: 1, arbitrary: simple('reopen') },
  { weight: 1, arbitrary: simple('corrupt') },
  {
    weight: 2,
    arbitrary: fc
      .record({ who: party, frame: fc.constantFrom<LostFrame>('deliver', 'accepted', 'ack', 'send.devices') })
      .map(({ who, frame }) => printable<Op>({ kind: 'lose', who, frame })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(1_000, RECONNECT_MAX_DELAY_MS, RETRY_REQUEST_INTERVAL_MS + 1)
      .map((ms) => printable<Op>({ kind: 'wait', ms })),
  },
  { weight: 2, arbitrary: fc.constant(null).map(() => printable<Op>({ kind: 'settle' })) },
  { weight: 2, arbitrary: fc.constant(null).map(() => printable<Op>({ kind: 'hold' })) },
  { weight: 1, arbitrary: fc.constant(null).map(() => printable<Op>({ kind: 'release' })) },
)
const opsArbitrary = fc
  .array(opArbitrary, { minLength: 1, maxLength: MAX_OPS_PER_RUN, size: 'max' })
  .filter((ops) => ops.filter((op) => op.kind === 'corrupt').length <= MAX_CORRUPTIONS_PER_RUN)

/**
 * One opening of a device's database, over its records (`disk`): it refuses to work once closed,
 * as the IndexedDB and SQLite stores do, and a client reopened later gets a new one over the same
 * records. (A MemoryStore keeps working after close(), which no real store does.)
 */
class OpenedStore implements ClientStore {
  private closed = false

  constructor(private readonly disk: MemoryStore) {}

  private open(): MemoryStore {
    if (this.closed) throw new Error('test: expected an open store, got one that was closed')
    return this.disk
  }

  async get(table: StoreTable, key: string): Promise<StoreRecord | undefined> {
    return this.open().get(table, key)
  }

  async getMany(table: StoreTable, keys: readonly string[]): Promise<(StoreRecord | undefined)[]> {
    return this.open().getMany(table, keys)
  }

  async list(table: StoreTable): Promise<StoreRecord[]> {
    return this.open().list(table)
  }

  async listMessages(
    conversation: ConversationId,
    options: { limit: number; beforeOrder?: number },
  ): Promise<StoreRecord[]> {
    return this.open().listMessages(conversation, options)
  }

  async commit(operations: readonly StoreOperation[]): Promise<void> {
    return this.open().commit(operations)
  }

  async wipe(): Promise<void> {
    return this.open().wipe()
  }

  async close(): Promise<void> {
    this.closed = true
  }
}

interface Side {
  readonly name: Party
  /** The device's records; each client opens its own OpenedStore over them. */
  readonly disk: MemoryStore
  readonly link: NetworkLink
  /** The current client's options (a reopened client gets a new store over `disk`). */
  options: ChatClientOptions
  client: ChatClient
  /** connect() called and disconnect() not since (kept across a reopen). */
  connected: boolean
  /** What this side sent, in the order its sends returned. */
  readonly sent: { id: string; text: string }[]
  /**
   * How many of `sent` may stay "accepted": those sent before the other side last lost its session
   * record, or was last closed. A receipt goes only on a session (docs/protocol.md §7.7), so one
   * due when the record is gone is dropped; and the runs do not count on one due across a close()
   * (the cases below check that one is sent once reopened). The message itself still arrives.
   */
  mayStayAccepted: number
  /** Problems and undecryptable deliveries the clients reported, for the failure message. */
  readonly log: string[]
}

/**
 * The seed: FC_SEED, or under CI=true a fixed one, so CI runs the same cases every time. A wider,
 * random search (locally, FC_RUNS=500) once found messages of one sender arriving out of order
 * after a lost socket while the wire was held, under heavy load only: see the issue notes for the
 * replay (FC_OPS). A random search must keep looking for it; CI must not fail on a case it found
 * once and could not replay when the machine was quiet.
 */
const CI_SEED = 20261201
const PROPERTY_SEED = process.env.FC_SEED ?? (process.env.CI === 'true' ? String(CI_SEED) : undefined)

/** Alice and Bob registered once: the core makes an RSA-3072 key pair per account. */
let registered: { relay: MemoryRelay; stores: Record<Party, MemoryStore>; password: string }

function deviceOptions(relay: MemoryRelay, link: NetworkLink, store: ClientStore): ChatClientOptions {
  return {
    serverUrl: relay.serverUrl,
    http: link.http,
    webSocket: link.webSocket,
    store,
    storageKeyIterations: TEST_KDF_ITERATIONS,
    minimumStorageKeyIterations: TEST_KDF_ITERATIONS,
    loginSecretIterations: TEST_KDF_ITERATIONS,
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
  const disk = await copyStore(registered.stores[name])
  const options = {
    ...deviceOptions(relay, link, new OpenedStore(disk)),
    ...(webSocket ? { webSocket: webSocket(link) } : {}),
  }
  const client = await ChatClient.open(options, registered.password)
  const side: Side = {
    name,
    disk,
    link,
    options,
    client,
    connected: false,
    sent: [],
    mayStayAccepted: 0,
    log: [],
  }
  watch(side)
  return side
}

/**
 * Flushes; false when the connection was cut meanwhile, or the outbox did not empty within
 * FLUSH_ROUND_MS of the clients' clock (the next round tries again; what is left is asserted on).
 */
async function flushed(client: ChatClient): Promise<boolean> {
  try {
    await client.flush(FLUSH_ROUND_MS)
    return true
  } catch (error) {
    if (isClientError(error, 'E2E_ERR_NETWORK')) return false
    throw error
  }
}

class World {
  private counter = 0
  /** What this run went through, for the coverage that FC_STATS prints. */
  readonly seen = new Set<string>()
  /** The relay's wire is paused (`hold`): frames wait on it until `release`. */
  private held = false

  constructor(
    readonly relay: MemoryRelay,
    readonly sides: Record<Party, Side>,
  ) {}

  async send(who: Party): Promise<void> {
    const side = this.sides[who]
    const text = `${who} ${++this.counter}`
    // A first message written before this side has read the other's (which is on its way).
    if (
      this.sides[other(who)].sent.length > 0 &&
      !(await this.history(who)).some((m) => m.direction === 'in')
    )
      this.seen.add('crossed first messages')
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
    if (op.kind === 'hold') {
      this.held = true
      this.relay.pause()
      return
    }
    if (op.kind === 'release') {
      this.held = false
      this.relay.resume()
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
        // Online before the next op when nothing stands in the way, so that ops after it act on a
        // connection (and a counterexample replays alike).
        if (side.link.online && !this.held) await side.client.waitUntilOnline()
        return
      case 'disconnect':
        if (this.held && side.client.connection === 'online' && (await side.disk.list('outbox')).length > 0)
          this.seen.add('disconnect with sends held')
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
        // Receipts due across the restart are not counted on here (the cases below check them):
        // what the other side sent so far may stay "accepted".
        this.sides[other(op.who)].mayStayAccepted = this.sides[other(op.who)].sent.length
        await side.client.close()
        // Restarting takes a while: the clock moves past the last entry's position (a client
        // reopened with its clock behind is a case below).
        await vi.advanceTimersByTimeAsync(REOPEN_TAKES_MS)
        side.options = { ...side.options, store: new OpenedStore(side.disk) }
        side.client = await ChatClient.open(side.options, registered.password)
        watch(side)
        if (side.connected) side.client.connect()
        return
      case 'corrupt':
        // The record is lost from the disk, and noticed when the app next loads it: a running client
        // keeps its records in memory as last committed, so the damage shows after a restart.
        this.sides[other(op.who)].mayStayAccepted = this.sides[other(op.who)].sent.length
        await side.client.close()
        await side.disk.commit([{ op: 'delete', table: 'sessions', key: `${other(op.who)}:1` }])
        await vi.advanceTimersByTimeAsync(REOPEN_TAKES_MS)
        side.options = { ...side.options, store: new OpenedStore(side.disk) }
        side.client = await ChatClient.open(side.options, registered.password)
        watch(side)
        if (side.connected) side.client.connect()
        return
      case 'lose':
        this.relay.dropNext(op.frame, { username: op.who, close: true })
        return
    }
  }

  /** Both online; then time passes and everyone settles until nothing is left to do. */
  async bringTogether(): Promise<void> {
    this.held = false
    this.relay.resume()
    for (const side of Object.values(this.sides)) {
      side.link.goOnline()
      side.connected = true
      side.client.connect()
    }
    let framesBefore = -1
    for (let round = 0; round < MAX_SETTLE_ROUNDS; round++) {
      // A round in which nothing moved at all (every timer that was due has fired) is the end of it.
      if (this.relay.frames.length === framesBefore) return
      framesBefore = this.relay.frames.length
      // Any reconnect backoff is over.
      await vi.advanceTimersByTimeAsync(RECONNECT_MAX_DELAY_MS * 1.2)
      await Promise.all(Object.values(this.sides).map(({ client }) => client.waitUntilOnline()))
      await this.relay.settle()
      // A frame lost on the way (a drop armed by a `lose` op fires now) closes the socket under
      // flush: the next round reconnects and flushes again.
      const done = await Promise.all(Object.values(this.sides).map(({ client }) => flushed(client)))
      await this.relay.settle()
      if (done.every(Boolean) && (await this.finished())) return
      // A retry request waits for RETRY_REQUEST_INTERVAL_MS after the previous one to the same peer.
      await vi.advanceTimersByTimeAsync(RETRY_REQUEST_INTERVAL_MS)
    }
  }

  /** Nothing queued on the relay, nothing in an outbox, no notice, every sent message delivered. */
  private async finished(): Promise<boolean> {
    for (const side of Object.values(this.sides)) {
      if (this.relay.queued(side.name).length > 0) return false
      if ((await side.disk.list('outbox')).length > 0) return false
      const history = await this.history(side.name)
      if (history.some((m) => m.kind !== 'text')) return false
      const own = history.filter((m) => m.direction === 'out')
      if (own.some((m, i) => i >= side.mayStayAccepted && m.state !== 'delivered')) return false
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
        lines.push(
          `  #${f.socket} ${f.username} ${f.direction} ${f.frame.type} ${f.frame.id ?? ''} ${f.frame.seq ?? f.frame.upTo ?? ''} ${f.frame.from ?? f.frame.to ?? ''}`,
        )
      }
    }
    return lines.join('\n')
  }
}

/** In how many runs each thing happened (FC_STATS=1 prints it). */
const coverage = new Map<string, number>()

describe('sessions under random interleavings of two parties', () => {
  it(
    'every text arrives once, in order, readable, and is delivered',
    async () => {
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
            for (const side of Object.values(sides)) {
              if (side.log.some((line) => line.startsWith('undecryptable'))) world.seen.add('retry path')
            }
            for (const op of ops)
              if (['reopen', 'corrupt', 'lose', 'hold'].includes(op.kind)) world.seen.add(op.kind)
            for (const what of world.seen) coverage.set(what, (coverage.get(what) ?? 0) + 1)
            const report = await world.report()
            for (const sender of PARTIES) {
              expect(
                (await sides[sender].disk.list('outbox')).length,
                `${sender}'s outbox is empty\n${report}`,
              ).toBe(0)
              const receiver = other(sender)
              const received = (await world.history(receiver)).filter((m) => m.direction === 'in')
              expect(
                received.map((m) => [m.id, m.kind, m.text]),
                `${receiver} has what ${sender} sent, once each, in order\n${report}`,
              ).toEqual(sides[sender].sent.map(({ id, text }) => [id, 'text', text]))
              const own = (await world.history(sender)).filter((m) => m.direction === 'out')
              const { sent, mayStayAccepted } = sides[sender]
              expect(
                own.map((m, i) => [
                  m.id,
                  i < mayStayAccepted && m.state === 'accepted' ? 'delivered' : m.state,
                ]),
                `${sender}'s messages are delivered (the first ${mayStayAccepted} may stay accepted)\n${report}`,
              ).toEqual(sent.map(({ id }) => [id, 'delivered']))
            }
          } finally {
            await Promise.all(Object.values(sides).map(({ client }) => client.close()))
            vi.useRealTimers()
          }
        }),
        {
          numRuns: Number(process.env.FC_RUNS ?? (process.env.FC_OPS ? (process.env.FC_REPEAT ?? 1) : 25)),
          ...(process.env.FC_OPS
            ? {
                examples: Array.from({ length: Number(process.env.FC_REPEAT ?? 1) }, () => [
                  parseOps(process.env.FC_OPS ?? ''),
                ]),
              }
            : {}),
          ...(PROPERTY_SEED !== undefined ? { seed: Number(PROPERTY_SEED) } : {}),
          ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
          // A failure shrinks for at most this long, then reports the smallest case found so far.
          interruptAfterTimeLimit: SHRINK_TIME_LIMIT_MS,
          markInterruptAsFailure: false,
        },
      )
      if (process.env.FC_STATS) console.log('runs that went through each case:', Object.fromEntries(coverage))
    },
    SHRINK_TIME_LIMIT_MS + 60_000,
  )
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

/**
 * `side` loses its session with the other from its store, and its app restarts on that store (a
 * running client keeps its records in memory as last committed, so the loss shows after a restart).
 */
async function restartWithoutSession(side: Side): Promise<void> {
  await side.client.close()
  await side.disk.commit([{ op: 'delete', table: 'sessions', key: `${other(side.name)}:1` }])
  side.options = { ...side.options, store: new OpenedStore(side.disk) }
  side.client = await ChatClient.open(side.options, registered.password)
  side.client.connect()
  await side.client.waitUntilOnline()
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
    // Bob loses his session with alice (his app restarts on a store without it): her next message
    // cannot be decrypted, and he asks again.
    await bob.client.close()
    await bob.disk.commit([{ op: 'delete', table: 'sessions', key: 'alice:1' }])
    bob.options = { ...bob.options, store: new OpenedStore(bob.disk) }
    bob.client = await ChatClient.open(bob.options, registered.password)
    bob.client.connect()
    await bob.client.waitUntilOnline()
    const mark = relay.frames.length
    const lost = await alice.client.send('bob', 'after the loss')
    const retry = await relay.waitFor(
      (f, i = relay.frames.indexOf(f)) =>
        i >= mark && f.direction === 'received' && f.username === 'alice' && f.frame.type === 'deliver',
    )
    await relay.waitFor(
      (f) => f.username === 'alice' && f.frame.type === 'ack' && f.frame.upTo >= retry.frame.seq,
    )
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
    // (A third copy can go out when its `accepted` crosses the listing of a later flush.)
    const copies = relay.of('sent', 'send.devices', 'alice').filter((frame) => frame.id === inFlight.id)
    expect(copies.length).toBeGreaterThanOrEqual(2)
    expect(await alice.disk.list('outbox')).toEqual([])
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
    await relay.waitFor((f) => f.username === 'alice' && f.frame.type === 'send.devices')
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

/**
 * Bugs the property found, now fixed (close() writes the receipts still gathering and waits for the
 * work in the contacts' queues). They were:
 *
 * ChatClient.close() resolved while work it started went on: the receipt for a message just stored
 * (written after a zero-delay timer), an answer to a retry request (in the contact's queue). That
 * work then writes to a store that was closed: the IndexedDB and SQLite stores refuse, and the
 * receipt or the answer is lost for good (the message that asked for it was already acknowledged to
 * the server, and the peer does not ask again). A store that still works after close() (MemoryStore)
 * takes writes from the closed client and the reopened one, each with its own per-contact queue, so
 * both can advance the same session from the same state.
 */
describe('close() waits for the work it started', () => {
  it('a receipt due when close() resolves is still sent once the client is reopened', async () => {
    const { relay, alice, bob } = await talking()
    const ping = await bob.client.send('alice', 'ping')
    await eventOf(alice.client, 'message', (m) => m.id === ping.id)
    // Stored and acknowledged; its receipt waits for a zero-delay timer.
    await alice.client.close()
    alice.options = { ...alice.options, store: new OpenedStore(alice.disk) }
    alice.client = await ChatClient.open(alice.options, registered.password)
    alice.client.connect()
    await alice.client.waitUntilOnline()
    await alice.client.flush()
    await relay.settle()
    expect((await inHistory(bob, ping.id))?.state).toBe('delivered')
    await Promise.all([alice.client.close(), bob.client.close()])
  })

  it('an answer to a retry request still being written when close() resolves is sent once reopened', async () => {
    const { relay, alice, bob } = await talking()
    // Bob loses his session with alice: her next message cannot be decrypted, and he asks again.
    await restartWithoutSession(bob)
    const mark = relay.frames.length
    const lost = await alice.client.send('bob', 'after the loss')
    const retry = await relay.waitFor(
      (f) =>
        relay.frames.indexOf(f) >= mark &&
        f.direction === 'received' &&
        f.username === 'alice' &&
        f.frame.type === 'deliver',
    )
    await relay.waitFor(
      (f) => f.username === 'alice' && f.frame.type === 'ack' && f.frame.upTo >= retry.frame.seq,
    )
    // The request is stored and acknowledged; alice's answer (the message again) is being written.
    await alice.client.close()
    alice.options = { ...alice.options, store: new OpenedStore(alice.disk) }
    alice.client = await ChatClient.open(alice.options, registered.password)
    alice.client.connect()
    await alice.client.waitUntilOnline()
    await alice.client.flush()
    await relay.settle()
    // Bob asked once; nobody asks again, so the notice would stay for good.
    expect((await inHistory(bob, lost.id))?.kind).toBe('text')
    await Promise.all([alice.client.close(), bob.client.close()])
  })
})

/**
 * A bug the property found (as ties in a history after a reopen), now fixed (the last position is
 * restored from the store on open): a client numbered conversation entries from `lastOrder`, kept
 * in memory only, so a client reopened while its clock was behind the last number (the clock was
 * set back, or a burst of entries ran ahead of it) gave new entries positions before old ones,
 * although `order` is meant to be strictly increasing on the device.
 */
describe('the order of entries after a reopen', () => {
  it('an entry made after a reopen comes after those made before it, whatever the clock says', async () => {
    const { alice, bob } = await talking()
    // A clock that stands still from here on (as one set back to this moment would be).
    const now = Date.now() + 60_000
    const reopen = async () => {
      await alice.client.close()
      alice.options = { ...alice.options, store: new OpenedStore(alice.disk), now: () => now }
      alice.client = await ChatClient.open(alice.options, registered.password)
    }
    await reopen()
    await alice.client.send('bob', 'one')
    await alice.client.send('bob', 'two')
    await reopen()
    await alice.client.send('bob', 'three')
    const texts = (await alice.client.history('bob')).filter((m) => m.direction === 'out').map((m) => m.text)
    expect(texts).toEqual(['hello bob', 'one', 'two', 'three'])
    await Promise.all([alice.client.close(), bob.client.close()])
  })
})

/**
 * A resend that cannot be decrypted either (docs/protocol.md §8.6): the receiver lost its session
 * again before the resend arrived, so it asks for the resend's id in turn. The sender keeps that id
 * as another name of the original and answers with the original once more (`answers` naming the
 * resend), and the receiver ends with the message in its place and no notice left.
 */
describe('a resend that cannot be decrypted either', () => {
  it('is asked for in turn and answered with the original again: the message shows once, no notice is left', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], shouldAdvanceTime: true })
    const { relay, alice, bob } = await talking()
    await restartWithoutSession(bob)
    // The resend (the first delivery to bob after his retry request, his first send from here on)
    // is kept from him for now: it stays queued, unacknowledged, until he reconnects.
    let stage: 'before the request' | 'before the resend' | 'resend held' = 'before the request'
    relay.filter = (f) => {
      if (stage === 'before the request' && f.username === 'bob' && f.frame.type === 'send.devices') {
        stage = 'before the resend'
      } else if (stage === 'before the resend' && f.username === 'bob' && f.frame.type === 'deliver') {
        stage = 'resend held'
        return 'drop'
      }
      return 'pass'
    }
    const lost = await alice.client.send('bob', 'after the loss')
    await until(async () => stage === 'resend held')
    // Bob loses his session with alice again; the resend comes back when he reconnects.
    await restartWithoutSession(bob)
    for (let round = 0; round < 4; round++) {
      await relay.settle()
      await Promise.all([alice.client.flush(), bob.client.flush()])
      await relay.settle()
      // The second request waits out RETRY_REQUEST_INTERVAL_MS.
      await vi.advanceTimersByTimeAsync(RETRY_REQUEST_INTERVAL_MS + 1)
    }
    const history = await bob.client.history('alice')
    expect(history.filter((m) => m.direction === 'in' && m.kind !== 'text')).toEqual([])
    expect(history.filter((m) => m.text === 'after the loss').map((m) => [m.id, m.kind])).toEqual([
      [lost.id, 'text'],
    ])
    // Bob asked twice: for the message, then for its resend.
    const requests = relay
      .of('sent', 'send.devices', 'bob')
      .filter((frame) =>
        frame.messages.some((message: { body: string }) => fromBase64Url(message.body)[1] === 2),
      )
    expect(requests.length).toBeGreaterThanOrEqual(2)
    // Unread: 'hello bob' and this message, not the resend's notice as well.
    expect((await bob.client.conversations())[0]?.unread).toBe(2)
    await Promise.all([alice.client.close(), bob.client.close()])
  })
})
