/**
 * The relay bus within one process: `publish` hands the event to the address's listeners at once,
 * before it returns, so a single server behaves as if there were no bus at all (the frames an
 * event causes leave in the same turn as the ones around them). Several hubs in one process may
 * share it, as if they were server processes.
 *
 * It knows nothing beyond the contract in relay-bus.ts: which listeners want which address. It
 * keeps no event: one published to an address nobody subscribed to is dropped.
 *
 * Counted (relay-metrics.ts): every event published, and every hand-over to a listener, with no
 * lag (a function call; the Redis bus reports the lag from the publishing node's clock).
 */
import type { FastifyBaseLogger } from 'fastify'
import {
  type Address,
  addressKey,
  type RelayBus,
  type RelayBusCounters,
  type RelayBusStatus,
  type RelayEvent,
  type RelayListener,
} from './relay-bus.js'
import { NO_BUS_METRICS, type RelayBusMetrics } from './relay-metrics.js'

const DONE: Promise<void> = Promise.resolve()

export class InProcessRelayBus implements RelayBus {
  private readonly listeners = new Map<string, Set<RelayListener>>()
  private closed = false
  readonly lossy = false
  readonly counters: RelayBusCounters = {
    published: 0,
    publishFailed: 0,
    received: 0,
    dropped: 0,
    resumed: 0,
  }

  /** `log` hears of listeners that throw: as over a network, that is never the publisher's problem. */
  constructor(
    private readonly log: Pick<FastifyBaseLogger, 'error'>,
    private readonly metrics: RelayBusMetrics = NO_BUS_METRICS,
  ) {}

  get status(): RelayBusStatus {
    return this.closed ? 'closed' : 'up'
  }

  /** Always reachable: it is this process. */
  ready(): Promise<boolean> {
    return Promise.resolve(!this.closed)
  }

  /** Nothing is ever lost within one process, so there is nothing to resume from. */
  onResumed(_callback: () => void): void {}

  publish(event: RelayEvent): Promise<void> {
    this.counters.published += 1
    this.metrics.published(event.kind)
    const listeners = this.listeners.get(addressKey(event.address))
    if (!listeners) return DONE
    for (const listener of listeners) {
      // No lag to report: the hand-over is a function call (the Redis bus measures its own).
      this.metrics.received(event.kind)
      try {
        listener(event)
      } catch (error) {
        this.log.error({ err: error, event: event.kind }, 'relay bus listener failed')
      }
    }
    return DONE
  }

  subscribe(address: Address, listener: RelayListener): Promise<void> {
    if (this.closed) return DONE
    const key = addressKey(address)
    let listeners = this.listeners.get(key)
    if (!listeners) {
      listeners = new Set()
      this.listeners.set(key, listeners)
    }
    listeners.add(listener)
    return DONE
  }

  unsubscribe(address: Address, listener: RelayListener): Promise<void> {
    const key = addressKey(address)
    const listeners = this.listeners.get(key)
    if (listeners?.delete(listener) && listeners.size === 0) this.listeners.delete(key)
    return DONE
  }

  /** True while some listener here is subscribed to the address. */
  listening(address: Address): boolean {
    return this.listeners.has(addressKey(address))
  }

  close(): Promise<void> {
    this.closed = true
    this.listeners.clear()
    return DONE
  }
}
