/**
 * The relay against the relay bus contract (relay-bus.ts), over TLS with real `ws` clients: the
 * server runs on an in-process bus that behaves as another transport may (a commit signal without
 * the message's copy; a subscription that goes live late), and the durable queue must make up for
 * it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, type RelaySocket } from '../test/ws-client.js'
import { InProcessRelayBus } from './in-process-bus.js'
import type { Address, RelayBus, RelayEvent, RelayListener } from './relay-bus.js'

/** The in-process bus, with what a networked one may do instead of the best case. */
class UnluckyBus implements RelayBus {
  private readonly inner = new InProcessRelayBus({ error: () => {} })
  /** Commit signals passed on without their copy. */
  stripped = 0
  /** While set, subscriptions take effect at once but are reported live only when it resolves. */
  gate: Promise<void> | undefined
  readonly lossy = false
  readonly counters = this.inner.counters

  get status() {
    return this.inner.status
  }

  ready(): Promise<boolean> {
    return this.inner.ready()
  }

  onResumed(callback: () => void): void {
    this.inner.onResumed(callback)
  }

  publish(event: RelayEvent): Promise<void> {
    if (event.kind === 'message.committed' && event.copy) {
      const { copy: _copy, ...signal } = event
      this.stripped += 1
      return this.inner.publish(signal)
    }
    return this.inner.publish(event)
  }

  subscribe(address: Address, listener: RelayListener): Promise<void> {
    const live = this.inner.subscribe(address, listener)
    const gate = this.gate
    return gate ? Promise.all([live, gate]).then(() => undefined) : live
  }

  unsubscribe(address: Address, listener: RelayListener): Promise<void> {
    return this.inner.unsubscribe(address, listener)
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

describe('relay on a bus that does less than the in-process one', () => {
  const bus = new UnluckyBus()
  const sockets: RelaySocket[] = []
  let server: TestServer

  beforeAll(async () => {
    server = await startServer({ relayBus: bus })
  })

  afterAll(async () => {
    for (const socket of sockets) await socket.close()
    await server.close()
    await bus.close()
  })

  it('a caught-up recipient reads a message from the queue when the signal carries no copy', async () => {
    const [alice, bob] = await Promise.all([signUp(server), signUp(server)])
    const a = await connect(server, alice.token, 'alice')
    sockets.push(a)

    // Queued while bob is offline: his first read finds it, and ends with him caught up.
    const queuedId = a.sendMessage(bob.client.username)
    await a.next('accepted')
    const b = await connect(server, bob.token, 'bob')
    sockets.push(b)
    expect(b.ready.queued).toBe(1)
    expect((await b.next('deliver')).id).toBe(queuedId)

    const strippedBefore = bus.stripped
    const liveId = a.sendMessage(bob.client.username)
    await a.next('accepted')
    const live = await b.next('deliver')
    expect(live.id).toBe(liveId)
    expect(live.from).toBe(alice.client.username)
    expect(bus.stripped).toBe(strippedBefore + 1)
  })

  it('a connection reads its queue only once its subscription is live, and then misses nothing', async () => {
    const [alice, bob] = await Promise.all([signUp(server), signUp(server)])
    const a = await connect(server, alice.token, 'alice')
    sockets.push(a)
    const firstId = a.sendMessage(bob.client.username)
    await a.next('accepted')

    let goLive = () => {}
    bus.gate = new Promise<void>((resolve) => {
      goLive = resolve
    })
    try {
      const b = await connect(server, bob.token, 'bob')
      sockets.push(b)
      expect(b.ready.queued).toBe(1)
      // Committed while bob's subscription is not yet reported live: no read has started.
      const secondId = a.sendMessage(bob.client.username)
      await a.next('accepted')
      expect(b.all('deliver')).toEqual([])

      goLive()
      const delivered = await b.take('deliver', 2)
      expect(delivered.map((frame) => frame.id)).toEqual([firstId, secondId])
    } finally {
      bus.gate = undefined
      goLive()
    }
  })
})
