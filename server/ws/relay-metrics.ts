/**
 * What the relay and the relay bus count, as interfaces: server/metrics.ts implements them over
 * prom-client, and the no-op defaults let a hub or a bus run without metrics (tests, benchmarks).
 * A bus implementation (in-process-bus.ts, or one over Redis) takes a RelayBusMetrics and calls it;
 * it knows nothing of Prometheus, and the metric names are server/metrics.ts's.
 */
import type { RelayEvent } from './relay-bus.js'

export interface RelayMetrics {
  /** A send was committed as a new row of its recipient's queue (not a duplicate, not refused). */
  messageAccepted(): void
  /** This many `deliver` frames were written to a socket (pushed or read from the queue). */
  messagesDelivered(count: number): void
  /**
   * A connection just authenticated and starts draining its queue: the function returned is called
   * once, when it is first caught up (the time between is what the drain histogram records).
   */
  drainStarted(): () => void
}

export interface RelayBusMetrics {
  /** The transport took an event (`publish` resolved). */
  published(kind: RelayEvent['kind']): void
  /** The transport refused an event (`publish` rejected). */
  publishFailed(kind: RelayEvent['kind']): void
  /**
   * An event was handed to a listener in this process; `lagSeconds` is the time since it was
   * published, when the transport knows it (one over a network needs the publisher's timestamp
   * in the event, and then measures clock skew as well).
   */
  received(kind: RelayEvent['kind'], lagSeconds?: number): void
}

const NOTHING = () => {}

export const NO_RELAY_METRICS: RelayMetrics = {
  messageAccepted: NOTHING,
  messagesDelivered: NOTHING,
  drainStarted: () => NOTHING,
}

export const NO_BUS_METRICS: RelayBusMetrics = {
  published: NOTHING,
  publishFailed: NOTHING,
  received: NOTHING,
}
