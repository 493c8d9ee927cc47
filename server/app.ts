/**
 * `build(options)` makes the whole HTTP application without listening: tests drive it through
 * `inject` or `listen` on port 0, and main.ts listens for real. Features are Fastify plugins:
 *
 *   security headers (helmet: strict CSP, HSTS) → rate limits → error handling →
 *   /health, /ready (plugins/health.ts) → /metrics, only with a token (plugins/metrics.ts) →
 *   /ws: the relay (ws/relay.ts; authenticated by its first frame) →
 *   /api/v1: health, accounts, keys (authenticated), users (authenticated), blocks (authenticated),
 *            provisioning channels (routes/provisioning.ts: linking a device)
 *
 * Every route has request and response schemas from shared/codec/api.ts; requests are validated by
 * TypeBox's compiler (the same one shared/codec/schema.ts `decode` uses), responses serialised
 * through their schema so no field outside it can leak.
 */

import type { Server as TlsServer } from 'node:tls'
import helmet from '@fastify/helmet'
import rateLimit from '@fastify/rate-limit'
import { TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { API_PREFIX, HealthResponse } from '../shared/codec/api.js'
import { PROVISIONING_POLL_WAIT_MS } from '../shared/limits.js'
import { DEVICE_PROOF_KEY_PURPOSE, DeviceProofs } from './auth/device-proof.js'
import { LoginLimiter, type LoginLimiting, type LoginLimits } from './auth/login-limiter.js'
import { RedisLoginLimiter } from './auth/redis-login-limiter.js'
import type { ServerContext, ServerLimits } from './context.js'
import { purgeExpiredLinkTokens } from './db/devices.js'
import { claimsKeptMs, purgeOneTimePreKeyClaims } from './db/prekeys.js'
import { purgeExpiredProvisioningChannels } from './db/provisioning.js'
import { countAllQueued } from './db/queue.js'
import { dialectOf, openQueueRepository } from './db/queue-repository.js'
import { RelationsKey } from './db/relations.js'
import type { Db } from './db/schema.js'
import { purgeEndedTokens, purgeExpiredTokens } from './db/tokens.js'
import { purgeEndedUsernameHolds } from './db/users.js'
import { ServerError, ServerErrorCode } from './errors.js'
import {
  AUTH_TIMEOUT_MS,
  BCRYPT_COST,
  BUNDLE_RATE_LIMIT,
  BUNDLE_REFETCH_WINDOW_MS,
  DELIVERY_WINDOW,
  FRAME_RATE_PER_CONNECTION,
  HEARTBEAT_INTERVAL_MS,
  HTTP_BODY_LIMIT_BYTES,
  HTTP_REQUEST_TIMEOUT_MS,
  LINK_TOKEN_TTL_MS,
  LOGIN_ACCOUNT_DELAY_AFTER,
  LOGIN_ACCOUNT_DELAY_BASE_MS,
  LOGIN_ACCOUNT_DELAY_MAX_MS,
  LOGIN_FAILURE_WINDOW_MS,
  LOGIN_FAILURES_PER_ACCOUNT,
  LOGIN_FAILURES_PER_ACCOUNT_ADDRESS,
  LOGIN_FAILURES_PER_ADDRESS,
  LOGIN_FAILURES_PER_DEVICE,
  LOGIN_LIMITER_MAX_ENTRIES,
  LOGIN_PROOF_PERIOD_MS,
  LOGIN_RATE_LIMIT,
  MAINTENANCE_INTERVAL_MS,
  MAX_BAD_FRAMES_PER_CONNECTION,
  MAX_CONNECTIONS_PER_USER,
  MAX_DEVICES_PER_ACCOUNT,
  MAX_LINK_TOKENS_PER_ACCOUNT,
  MAX_ONE_TIME_PREKEYS_PER_USER,
  MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS,
  MAX_QUEUED_BYTES_PER_RECIPIENT,
  MAX_QUEUED_BYTES_PER_SENDER,
  MAX_QUEUED_MESSAGES_PER_RECIPIENT,
  MAX_QUEUED_MESSAGES_PER_SENDER,
  MAX_TLS_HANDSHAKES_IN_PROGRESS_PER_ADDRESS,
  MAX_TOKENS_PER_DEVICE,
  MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS,
  MESSAGE_TTL_MS,
  ONE_TIME_PREKEY_CLAIMS_PER_TARGET,
  PROVISIONING_CHANNEL_TTL_MS,
  PROVISIONING_OPEN_RATE_LIMIT,
  PROVISIONING_POLL_INTERVAL_MS,
  PROVISIONING_RATE_LIMIT,
  QUEUE_DEPTH_SCRAPE_BOUND,
  REGISTER_RATE_LIMIT,
  RELAY_RECHECK_INTERVAL_MS,
  RELAY_SESSION_RECHECK_INTERVAL_MS,
  SEND_RATE_PER_USER,
  SIGNED_PREKEYS_KEPT,
  TLS_HANDSHAKE_LIMITER_MAX_ADDRESSES,
  TLS_HANDSHAKE_RATE_PER_ADDRESS,
  TLS_HANDSHAKE_TIMEOUT_MS,
  TOKEN_LIFETIME_MS,
} from './limits.js'
import { type LogSettings, loggerOptions } from './log.js'
import { ServerMetrics } from './metrics.js'
import { addressKey } from './plugins/client-address.js'
import { installErrorHandling } from './plugins/errors.js'
import { busCheck, databaseCheck, healthRoutes, Readiness, type ReadinessCheck } from './plugins/health.js'
import { metricsRoute } from './plugins/metrics.js'
import { warnOnUntrustedProxy } from './plugins/proxy-check.js'
import { limitTlsHandshakes, proxyPeers, TlsHandshakeLimiter } from './plugins/tls-handshakes.js'
import { limitUnauthenticatedSockets, UnauthenticatedSockets } from './plugins/unauthenticated-sockets.js'
import { webApp } from './plugins/web-app.js'
import { accountRoutes } from './routes/accounts.js'
import { blockRoutes } from './routes/blocks.js'
import { errorResponses } from './routes/common.js'
import { deviceRoutes } from './routes/devices.js'
import { keyRoutes } from './routes/keys.js'
import { provisioningRoutes } from './routes/provisioning.js'
import { userRoutes } from './routes/users.js'
import { HSTS_MAX_AGE_SECONDS, type httpsOptions } from './tls.js'
import { type ClusterPresence, RedisClusterPresence } from './ws/cluster-presence.js'
import { RelayHub } from './ws/hub.js'
import { InProcessRelayBus } from './ws/in-process-bus.js'
import {
  DEFAULT_REDIS_CHANNEL_PREFIX,
  nodeRedisOptions,
  RedisRelayBus,
  RedisUnreachableError,
  redisAddressForLog,
} from './ws/redis-bus.js'
import { installRelay, RELAY_PATH } from './ws/relay.js'
import type { RelayBus } from './ws/relay-bus.js'

export const DEFAULT_LIMITS: ServerLimits = {
  registerRateLimit: REGISTER_RATE_LIMIT,
  loginRateLimit: LOGIN_RATE_LIMIT,
  bundleRateLimit: BUNDLE_RATE_LIMIT,
  oneTimePreKeyClaimsPerTarget: ONE_TIME_PREKEY_CLAIMS_PER_TARGET,
  bundleRefetchWindowMs: BUNDLE_REFETCH_WINDOW_MS,
  loginFailuresPerAccount: LOGIN_FAILURES_PER_ACCOUNT,
  loginFailuresPerAddress: LOGIN_FAILURES_PER_ADDRESS,
  loginFailureWindowMs: LOGIN_FAILURE_WINDOW_MS,
  loginFailuresPerAccountAddress: LOGIN_FAILURES_PER_ACCOUNT_ADDRESS,
  loginAccountDelayAfter: LOGIN_ACCOUNT_DELAY_AFTER,
  loginAccountDelayBaseMs: LOGIN_ACCOUNT_DELAY_BASE_MS,
  loginAccountDelayMaxMs: LOGIN_ACCOUNT_DELAY_MAX_MS,
  loginFailuresPerDevice: LOGIN_FAILURES_PER_DEVICE,
  maxUnauthenticatedSocketsPerAddress: MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS,
  tlsHandshakeTimeoutMs: TLS_HANDSHAKE_TIMEOUT_MS,
  maxTlsHandshakesInProgressPerAddress: MAX_TLS_HANDSHAKES_IN_PROGRESS_PER_ADDRESS,
  tlsHandshakeRatePerAddress: TLS_HANDSHAKE_RATE_PER_ADDRESS,
  maxOneTimePreKeysPerUser: MAX_ONE_TIME_PREKEYS_PER_USER,
  signedPreKeysKept: SIGNED_PREKEYS_KEPT,
  maxTokensPerDevice: MAX_TOKENS_PER_DEVICE,
  maxDevicesPerAccount: MAX_DEVICES_PER_ACCOUNT,
  linkTokenTtlMs: LINK_TOKEN_TTL_MS,
  maxLinkTokensPerAccount: MAX_LINK_TOKENS_PER_ACCOUNT,
  tokenLifetimeMs: TOKEN_LIFETIME_MS,
  maxQueuedMessagesPerRecipient: MAX_QUEUED_MESSAGES_PER_RECIPIENT,
  maxQueuedBytesPerRecipient: MAX_QUEUED_BYTES_PER_RECIPIENT,
  maxQueuedMessagesPerSender: MAX_QUEUED_MESSAGES_PER_SENDER,
  maxQueuedBytesPerSender: MAX_QUEUED_BYTES_PER_SENDER,
  messageTtlMs: MESSAGE_TTL_MS,
  maxConnectionsPerUser: MAX_CONNECTIONS_PER_USER,
  sendRatePerUser: SEND_RATE_PER_USER,
  frameRatePerConnection: FRAME_RATE_PER_CONNECTION,
  authTimeoutMs: AUTH_TIMEOUT_MS,
  heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
  deliveryWindow: DELIVERY_WINDOW,
  relayRecheckIntervalMs: RELAY_RECHECK_INTERVAL_MS,
  relaySessionRecheckIntervalMs: RELAY_SESSION_RECHECK_INTERVAL_MS,
  maxBadFramesPerConnection: MAX_BAD_FRAMES_PER_CONNECTION,
  provisioningChannelTtlMs: PROVISIONING_CHANNEL_TTL_MS,
  provisioningOpenRateLimit: PROVISIONING_OPEN_RATE_LIMIT,
  maxOpenProvisioningChannelsPerAddress: MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS,
  provisioningRateLimit: PROVISIONING_RATE_LIMIT,
  provisioningPollWaitMs: PROVISIONING_POLL_WAIT_MS,
  provisioningPollIntervalMs: PROVISIONING_POLL_INTERVAL_MS,
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The relay bus this app runs on: its `status`, `ready()` and `counters` are for health and metrics. */
    readonly relayBus: RelayBus
  }
}

export interface BuildOptions {
  readonly db: Db
  /** TLS settings (tls.ts `httpsOptions`); without them the app speaks plain HTTP (inject tests). */
  readonly https?: ReturnType<typeof httpsOptions>
  /** bcrypt cost for new hashes; default 12. Tests lower it to keep registration fast. */
  readonly bcryptCost?: number
  /** The clock, in milliseconds since the epoch. */
  readonly now?: () => number
  /** Logging; false for none. */
  readonly log?: LogSettings | false
  /** Which X-Forwarded-For hops to trust (behind a reverse proxy); default none. */
  readonly trustProxy?: boolean | number | string
  readonly limits?: Partial<ServerLimits>
  /** How often expired rows are purged; default hourly. */
  readonly maintenanceIntervalMs?: number
  /**
   * How relay events reach the processes holding sockets (ws/relay-bus.ts); default one within this
   * process, which the app closes. A bus given here is the caller's to close.
   */
  readonly relayBus?: RelayBus
  /**
   * Without `relayBus`: relay events travel over this Redis (ws/redis-bus.ts), which makes the
   * node a member of a cluster sharing one PostgreSQL database. build() connects before it
   * returns (throwing RedisUnreachableError if it cannot) and closes the bus with the app.
   */
  readonly redis?: { readonly url: string; readonly channelPrefix?: string }
  /**
   * Who is connected on every node (ws/cluster-presence.ts), for presence and the per-user
   * connection limit across a cluster; a store given here is the caller's to close. Without it,
   * `redis` makes one on the same Redis and prefix (closed with the app); with neither, presence
   * and the limit are this node's alone (a single node).
   */
  readonly clusterPresence?: ClusterPresence
  /**
   * The secret presence grants and blocks are hashed under (db/relations.ts). main.ts keeps one in
   * the data directory; without it a random key is made, and relations stored under an earlier key
   * are no longer found (clients share presence again on their next connection, and blocks are
   * lost): tests that restart a server pass the same key.
   */
  readonly relationsKey?: RelationsKey
  /**
   * Where the app counts (server/metrics.ts); default a registry of its own. main.ts makes it first,
   * to serve it on a metrics port too and to hand `metrics.bus` to a bus it builds.
   */
  readonly metrics?: ServerMetrics
  /** Serves GET /metrics on this app to requests bearing this token; without it, no /metrics here. */
  readonly metricsToken?: string
  /** More dependencies for /ready, beside the database and the relay bus (plugins/health.ts). */
  readonly readinessChecks?: readonly ReadinessCheck[]
}

/**
 * Content-Security-Policy for the API and the future PWA served from the same origin: only this
 * origin's scripts, styles, workers, manifest and connections (WebSocket included); images may also
 * be data: or blob: URLs (avatars, QR codes); no plugins, no framing, no <base> rewriting.
 */
export const CONTENT_SECURITY_POLICY = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:', 'blob:'],
  fontSrc: ["'self'"],
  connectSrc: ["'self'"],
  workerSrc: ["'self'"],
  manifestSrc: ["'self'"],
  mediaSrc: ["'self'", 'blob:'],
  objectSrc: ["'none'"],
  frameSrc: ["'none'"],
  frameAncestors: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'self'"],
  upgradeInsecureRequests: [],
}

/**
 * Deletes expired session tokens and link tokens, the holds on deleted accounts' names that ended,
 * expired provisioning channels, and expired messages (undelivered ones past their lifetime and tombstones
 * past their idempotency window) at startup and then periodically. Failures are logged
 * and retried next time; they never stop the server.
 */
function installMaintenance(
  app: FastifyInstance,
  context: ServerContext,
  hub: RelayHub,
  intervalMs: number,
): void {
  let timer: NodeJS.Timeout | undefined
  const purge = async () => {
    try {
      const tokens = await purgeExpiredTokens(context.db, context.now())
      if (tokens > 0) app.log.info({ event: 'purge', tokens }, 'expired tokens deleted')
    } catch (error) {
      app.log.error({ err: error }, 'purging expired tokens failed')
    }
    try {
      const ended = await purgeEndedTokens(context.db, context.now())
      if (ended > 0)
        app.log.info({ event: 'purge', endedTokens: ended }, 'ended tokens past their expiry deleted')
    } catch (error) {
      app.log.error({ err: error }, 'purging ended tokens failed')
    }
    try {
      const linkTokens = await purgeExpiredLinkTokens(context.db, context.now())
      if (linkTokens > 0) app.log.info({ event: 'purge', linkTokens }, 'expired link tokens deleted')
    } catch (error) {
      app.log.error({ err: error }, 'purging expired link tokens failed')
    }
    try {
      const holds = await purgeEndedUsernameHolds(context.db, context.now())
      if (holds > 0) app.log.info({ event: 'purge', usernameHolds: holds }, 'ended username holds deleted')
    } catch (error) {
      app.log.error({ err: error }, 'purging ended username holds failed')
    }
    try {
      // Claims of targets nobody fetches any more (a fetch purges its own target's old claims).
      await purgeOneTimePreKeyClaims(context.db, context.now(), claimsKeptMs(context.limits))
    } catch (error) {
      app.log.error({ err: error }, 'purging prekey claims failed')
    }
    try {
      const channels = await purgeExpiredProvisioningChannels(context.db, context.now())
      if (channels > 0)
        app.log.info(
          { event: 'purge', provisioningChannels: channels },
          'expired provisioning channels deleted',
        )
    } catch (error) {
      app.log.error({ err: error }, 'purging provisioning channels failed')
    }
    try {
      const messages = await hub.purgeExpired(context.now())
      if (messages > 0) app.log.info({ event: 'purge', messages }, 'expired messages deleted')
    } catch (error) {
      app.log.error({ err: error }, 'purging expired messages failed')
    }
  }
  app.addHook('onReady', async () => {
    await purge()
    timer = setInterval(() => void purge(), intervalMs)
    timer.unref()
  })
  app.addHook('onClose', async () => {
    clearInterval(timer)
  })
}

/** Fastify's types take a hop count only as a function; `true`, addresses and CIDRs pass through. */
function trustProxySetting(value: boolean | number | string | undefined) {
  if (typeof value === 'number') return (_address: string, hop: number) => hop < value
  return value ?? false
}

export async function build(options: BuildOptions): Promise<FastifyInstance> {
  const now = options.now ?? Date.now
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...options.limits }
  const bcryptCost = options.bcryptCost ?? BCRYPT_COST
  if (!Number.isInteger(bcryptCost) || bcryptCost < 4 || bcryptCost > 31) {
    throw new RangeError(`bcryptCost: expected an integer 4–31, got ${bcryptCost}`)
  }

  const app = Fastify({
    logger: options.log === false ? false : loggerOptions(options.log),
    bodyLimit: HTTP_BODY_LIMIT_BYTES,
    trustProxy: trustProxySetting(options.trustProxy),
    requestTimeout: HTTP_REQUEST_TIMEOUT_MS,
    // Node's default handshake timeout is 120 s: far longer than a connection that never finishes
    // its handshake should hold a descriptor (limits.ts TLS_HANDSHAKE_TIMEOUT_MS).
    https: options.https ? { ...options.https, handshakeTimeout: limits.tlsHandshakeTimeoutMs } : null,
  })
  if (options.https) {
    const isProxy = proxyPeers(options.trustProxy)
    limitTlsHandshakes(
      app.server as unknown as TlsServer,
      new TlsHandshakeLimiter(
        {
          maxInProgressPerAddress: limits.maxTlsHandshakesInProgressPerAddress,
          ratePerAddress: limits.tlsHandshakeRatePerAddress,
          maxAddresses: TLS_HANDSHAKE_LIMITER_MAX_ADDRESSES,
        },
        now,
      ),
      {
        isProxy,
        // The address is the client's, as in every per-address log line; debug only, since an
        // attacker decides how many of these there are.
        refused: (address, limit) =>
          app.log.debug({ event: 'tls-handshake-refused', address, limit }, 'TLS handshake refused'),
      },
    )
  }
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // JSON is the only body the API takes; anything else is refused with 415 before parsing.
  app.removeContentTypeParser('text/plain')
  app.decorateRequest('session', null)

  await app.register(helmet, {
    contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_POLICY },
    strictTransportSecurity: { maxAge: HSTS_MAX_AGE_SECONDS, includeSubDomains: false },
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    crossOriginOpenerPolicy: { policy: 'same-origin' },
  })
  app.addHook('onSend', async (request, reply) => {
    // API answers (tokens, keys) must never sit in a browser or proxy cache.
    if (request.url.startsWith(API_PREFIX)) reply.header('cache-control', 'no-store')
  })

  // A cluster member keeps its limits (failed log-ins, requests per route, sends per user) with the
  // other nodes, in Redis: on a connection of their own, next to the relay bus's two.
  const redisPrefix = options.redis?.channelPrefix ?? DEFAULT_REDIS_CHANNEL_PREFIX
  if (options.redis && !options.relayBus && dialectOf(options.db) !== 'postgres') {
    throw new Error(
      'redis: expected the database to be PostgreSQL, got SQLite, which several nodes cannot share',
    )
  }
  let limitsRedis: Redis | undefined
  if (options.redis && !options.relayBus) {
    const redis = new Redis(options.redis.url, {
      ...nodeRedisOptions(),
      connectionName: 'secure-chat-limits',
    })
    // Without a listener ioredis prints every connection error; the bus reports the losses.
    let lastError: string | undefined
    redis.on('error', (error: Error) => {
      lastError = error.message
    })
    try {
      await redis.connect()
    } catch (error) {
      redis.disconnect()
      // ioredis rejects with "Connection is closed."; the error it reported before says why.
      throw new RedisUnreachableError(
        `cannot reach Redis at ${redisAddressForLog(options.redis.url)}: ${lastError ?? (error as Error).message}`,
        { cause: error },
      )
    }
    app.addHook('onClose', async () => {
      redis.disconnect()
    })
    limitsRedis = redis
  }
  await app.register(rateLimit, {
    global: false,
    // Counted for the cluster when there is one; a Redis that does not answer limits nothing
    // rather than refusing everyone.
    ...(limitsRedis ? { redis: limitsRedis, nameSpace: `${redisPrefix}rate-limit:`, skipOnError: true } : {}),
    // Per address, an IPv6 client by its /64 (plugins/client-address.ts).
    keyGenerator: (request) => addressKey(request.ip),
    errorResponseBuilder: (_request, context) =>
      new ServerError(
        ServerErrorCode.RateLimited,
        429,
        `expected at most ${context.max} requests in this window, got more; retry in ${context.after}`,
      ),
  })
  installErrorHandling(app)
  if (!options.trustProxy) warnOnUntrustedProxy(app)

  const metrics = options.metrics ?? new ServerMetrics()
  let bus = options.relayBus
  if (!bus) {
    const ownBus: RelayBus = options.redis
      ? await RedisRelayBus.connect({
          url: options.redis.url,
          channelPrefix: options.redis.channelPrefix,
          log: app.log,
          metrics: metrics.bus,
        })
      : new InProcessRelayBus(app.log, metrics.bus)
    // After the relay's preClose has closed every socket.
    app.addHook('onClose', async () => {
      await ownBus.close()
    })
    bus = ownBus
  }
  app.decorate('relayBus', bus)
  let presence = options.clusterPresence
  if (!presence && options.redis) {
    const ownPresence = await RedisClusterPresence.connect({
      url: options.redis.url,
      prefix: options.redis.channelPrefix,
      log: app.log,
    }).catch(async (error: unknown) => {
      if (!options.relayBus) await bus?.close()
      throw error
    })
    // After the relay's preClose has closed every socket and removed them from Redis.
    app.addHook('onClose', async () => {
      await ownPresence.close()
    })
    presence = ownPresence
  }
  const relationsKey = options.relationsKey ?? RelationsKey.random()
  const unauthenticatedSockets = new UnauthenticatedSockets(limits.maxUnauthenticatedSocketsPerAddress)
  const hub = new RelayHub({
    db: options.db,
    queue: openQueueRepository(options.db, {
      maxMessages: limits.maxQueuedMessagesPerRecipient,
      maxBytes: limits.maxQueuedBytesPerRecipient,
      maxMessagesPerSender: limits.maxQueuedMessagesPerSender,
      maxBytesPerSender: limits.maxQueuedBytesPerSender,
    }),
    limits,
    now,
    log: app.log,
    bus,
    authenticated: (socket) => unauthenticatedSockets.release(socket),
    relationsKey,
    metrics,
    presence,
    ...(limitsRedis ? { limitsRedis: { redis: limitsRedis, prefix: redisPrefix } } : {}),
  })
  metrics.attach({
    connectionsOpen: () => hub.connections.size,
    usersConnected: () => {
      const users = new Set<number>()
      for (const connection of hub.connections) {
        if (connection.state === 'open' && connection.user) users.add(connection.user.id)
      }
      return users.size
    },
    queueDepth: () =>
      countAllQueued(options.db, QUEUE_DEPTH_SCRAPE_BOUND).catch((error: unknown) => {
        app.log.warn({ err: error }, 'counting the queue for /metrics failed')
        return Number.NaN
      }),
  })
  const loginLimits: LoginLimits = {
    failuresPerAddress: limits.loginFailuresPerAddress,
    failuresPerAccountAddress: limits.loginFailuresPerAccountAddress,
    failuresPerAccount: limits.loginFailuresPerAccount,
    accountDelayAfter: limits.loginAccountDelayAfter,
    accountDelayBaseMs: limits.loginAccountDelayBaseMs,
    accountDelayMaxMs: limits.loginAccountDelayMaxMs,
    failuresPerDevice: limits.loginFailuresPerDevice,
    windowMs: limits.loginFailureWindowMs,
    maxEntries: LOGIN_LIMITER_MAX_ENTRIES,
  }
  // A cluster member counts failed log-ins with the other nodes, in Redis.
  const loginLimiter: LoginLimiting = limitsRedis
    ? new RedisLoginLimiter(limitsRedis, loginLimits, now, app.log, redisPrefix)
    : new LoginLimiter(loginLimits, now)
  const context: ServerContext = {
    db: options.db,
    now,
    bcryptCost,
    limits,
    relay: hub,
    relationsKey,
    metrics,
    loginLimiter,
    deviceProofs: new DeviceProofs(
      now,
      LOGIN_PROOF_PERIOD_MS,
      relationsKey.deriveKey(DEVICE_PROOF_KEY_PURPOSE),
    ),
  }

  installMaintenance(app, context, hub, options.maintenanceIntervalMs ?? MAINTENANCE_INTERVAL_MS)
  limitUnauthenticatedSockets(app, RELAY_PATH, unauthenticatedSockets, {
    maxPerAddress: limits.maxUnauthenticatedSocketsPerAddress,
    retryAfterSeconds: Math.ceil(limits.authTimeoutMs / 1000),
  })
  const readiness = new Readiness({
    checks: [
      databaseCheck(options.db),
      ...[busCheck(bus)].filter((check) => check !== undefined),
      ...(options.readinessChecks ?? []),
    ],
    failed: (name, error) => app.log.warn({ err: error, check: name }, 'readiness check failed'),
  })
  await app.register(healthRoutes, { readiness })
  if (options.metricsToken !== undefined) {
    await app.register(metricsRoute, { metrics, token: options.metricsToken })
  }
  await installRelay(app, hub)

  await app.register(
    async (api) => {
      api.get('/health', { schema: { response: { 200: HealthResponse, ...errorResponses } } }, async () => ({
        status: 'ok' as const,
      }))
      await api.register(accountRoutes, context)
      await api.register(keyRoutes, context)
      await api.register(userRoutes, context)
      await api.register(blockRoutes, context)
      await api.register(provisioningRoutes, context)
      await api.register(deviceRoutes, context)
    },
    { prefix: API_PREFIX },
  )
  await app.register(webApp)
  return app
}
