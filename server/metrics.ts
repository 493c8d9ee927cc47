/**
 * The server's Prometheus metrics, in a registry of their own per app (never prom-client's global
 * one), so several apps in one process (tests, a benchmark) count apart. Where they are served
 * is plugins/metrics.ts's business; what is counted where is here:
 *
 * | metric | type | what it is |
 * |---|---|---|
 * | secure_chat_connections_open | gauge | WebSocket connections this process holds, authenticated or not |
 * | secure_chat_users_connected | gauge | distinct users with at least one authenticated connection here |
 * | secure_chat_messages_accepted_total | counter | sends committed as a new queue row (duplicates and refusals not counted) |
 * | secure_chat_messages_delivered_total | counter | `deliver` frames written to sockets (a redelivery counts again) |
 * | secure_chat_queue_depth | gauge | rows in the message queue of all recipients, counted at scrape time, at most QUEUE_DEPTH_SCRAPE_BOUND |
 * | secure_chat_drain_seconds | histogram | from a connection's authentication until it is first caught up with its queue |
 * | secure_chat_bus_published_total{kind} | counter | relay bus events the transport took |
 * | secure_chat_bus_publish_failures_total{kind} | counter | relay bus events the transport refused |
 * | secure_chat_bus_received_total{kind} | counter | relay bus events handed to a listener in this process |
 * | secure_chat_bus_lag_seconds | histogram | from publish until a listener got the event (where the transport knows it) |
 * | secure_chat_login_failures_total{kind,reason} | counter | refused log-ins, reinstalls and deletions, by ServerErrorCode |
 *
 * With `processMetrics`, prom-client's default process metrics too: nodejs_eventloop_lag_* (the
 * event-loop delay, from perf_hooks.monitorEventLoopDelay), CPU, memory, heap, GC, handles. They
 * start monitors that are never stopped, so only a server that serves its metrics asks for them.
 *
 * No metric has a label that names a user, an address or a token: labels are event kinds and error
 * codes, fixed sets.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { RelayEvent } from './ws/relay-bus.js'
import type { RelayBusMetrics, RelayMetrics } from './ws/relay-metrics.js'

/** Drains take milliseconds for an empty queue and up to minutes for a long backlog on a slow link. */
const DRAIN_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

/** In-process hand-overs take microseconds; one across a network, a fraction of a millisecond up. */
const BUS_LAG_BUCKETS_SECONDS = [
  0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
]

/**
 * A counter's collect: what `count` says now, added to what was reported before. Messages and bus
 * events are counted with a plain `+= 1` where they pass (each passes several per message; a
 * prom-client `inc`, labels hashed each time, was a tenth of the relay's cost per message) and
 * handed over only when someone scrapes.
 */
function reportCount(count: () => number) {
  let reported = 0
  return function (this: Counter) {
    const now = count()
    if (now > reported) this.inc(now - reported)
    reported = now
  }
}

/** A counter by relay event kind, counted the same way: one plain number per kind. */
function kindCounter(name: string, help: string, registers: Registry[]): (kind: RelayEvent['kind']) => void {
  const counts = new Map<string, number>()
  const reported = new Map<string, number>()
  new Counter({
    name,
    help,
    labelNames: ['kind'] as const,
    registers,
    collect: function (this: Counter<'kind'>) {
      for (const [kind, count] of counts) {
        const before = reported.get(kind) ?? 0
        if (count > before) this.inc({ kind }, count - before)
        reported.set(kind, count)
      }
    },
  })
  return (kind) => {
    counts.set(kind, (counts.get(kind) ?? 0) + 1)
  }
}

/** Which attempt a login failure belongs to (routes/accounts.ts `authenticate`). */
export type LoginKind = 'login' | 'reinstall' | 'delete'

/** What the gauges read at scrape time; the app (app.ts) supplies them once. */
export interface MetricSources {
  connectionsOpen(): number
  usersConnected(): number
  /** Queue rows, at most the bound; NaN when the database did not answer. */
  queueDepth(): Promise<number>
}

export interface ServerMetricsOptions {
  /** Also collect prom-client's default process metrics (event-loop delay among them). */
  readonly processMetrics?: boolean
}

export class ServerMetrics implements RelayMetrics {
  readonly registry = new Registry()
  /** What a relay bus counts (hand it to the bus's constructor). */
  readonly bus: RelayBusMetrics
  private sources: MetricSources | undefined

  /** Counted in plain numbers where messages pass, handed to prom-client when scraped. */
  private acceptedCount = 0
  private deliveredCount = 0
  private readonly drain: Histogram
  private readonly loginFailures: Counter<'kind' | 'reason'>

  constructor(options: ServerMetricsOptions = {}) {
    const registers = [this.registry]
    // Before an app attaches (or without one), the gauges read zero.
    const unattached: MetricSources = {
      connectionsOpen: () => 0,
      usersConnected: () => 0,
      queueDepth: async () => 0,
    }
    const sourcesOf = () => this.sources ?? unattached
    new Gauge({
      name: 'secure_chat_connections_open',
      help: 'WebSocket connections this process holds, authenticated or not',
      registers,
      collect: function (this: Gauge) {
        this.set(sourcesOf().connectionsOpen())
      },
    })
    new Gauge({
      name: 'secure_chat_users_connected',
      help: 'Distinct users with at least one authenticated connection to this process',
      registers,
      collect: function (this: Gauge) {
        this.set(sourcesOf().usersConnected())
      },
    })
    new Gauge({
      name: 'secure_chat_queue_depth',
      help: 'Messages queued for all recipients (rows not yet acknowledged or purged), counted at scrape time up to a bound',
      registers,
      collect: async function (this: Gauge) {
        this.set(await sourcesOf().queueDepth())
      },
    })
    new Counter({
      name: 'secure_chat_messages_accepted_total',
      help: 'Sends committed as a new row of the recipient queue',
      registers,
      collect: reportCount(() => this.acceptedCount),
    })
    new Counter({
      name: 'secure_chat_messages_delivered_total',
      help: 'deliver frames written to sockets',
      registers,
      collect: reportCount(() => this.deliveredCount),
    })
    this.drain = new Histogram({
      name: 'secure_chat_drain_seconds',
      help: 'Time from a connection authenticating until it was first caught up with its queue',
      buckets: DRAIN_BUCKETS_SECONDS,
      registers,
    })
    this.loginFailures = new Counter({
      name: 'secure_chat_login_failures_total',
      help: 'Refused log-ins, reinstalls and account deletions, by kind and error code',
      labelNames: ['kind', 'reason'] as const,
      registers,
    })
    const published = kindCounter(
      'secure_chat_bus_published_total',
      'Relay bus events the transport took, by kind',
      registers,
    )
    const publishFailed = kindCounter(
      'secure_chat_bus_publish_failures_total',
      'Relay bus events the transport refused, by kind',
      registers,
    )
    const received = kindCounter(
      'secure_chat_bus_received_total',
      'Relay bus events handed to a listener in this process, by kind',
      registers,
    )
    const lag = new Histogram({
      name: 'secure_chat_bus_lag_seconds',
      help: 'Time from publishing a relay bus event until a listener got it',
      buckets: BUS_LAG_BUCKETS_SECONDS,
      registers,
    })
    this.bus = {
      published,
      publishFailed,
      received: (kind: RelayEvent['kind'], lagSeconds?: number) => {
        received(kind)
        if (lagSeconds !== undefined) lag.observe(lagSeconds)
      },
    }
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry })
  }

  /** The app's gauges read these from now on; one app per ServerMetrics. */
  attach(sources: MetricSources): void {
    if (this.sources) throw new Error('ServerMetrics: expected one app per instance, got a second attach')
    this.sources = sources
  }

  messageAccepted(): void {
    this.acceptedCount += 1
  }

  messagesDelivered(count: number): void {
    this.deliveredCount += count
  }

  drainStarted(): () => void {
    const end = this.drain.startTimer()
    return () => {
      end()
    }
  }

  loginFailed(kind: LoginKind, reason: string): void {
    this.loginFailures.inc({ kind, reason })
  }

  /** The exposition text and its content type, for a GET /metrics. */
  async exposition(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() }
  }
}
