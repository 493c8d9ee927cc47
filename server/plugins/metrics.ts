/**
 * GET /metrics: server/metrics.ts's registry in the Prometheus text format. Never public by
 * default; it is served only where the operator asked for it:
 *
 *   - on the main HTTPS listener when a metrics token is set (METRICS_TOKEN), to requests that
 *     carry `Authorization: Bearer <token>`; any other gets 401 E2E_ERR_UNAUTHENTICATED;
 *   - on a listener of its own (METRICS_PORT, plain HTTP, 127.0.0.1 unless METRICS_HOST says
 *     otherwise) made by `buildMetricsServer`; with a token set as well, it is required there too.
 *
 * Without either the route does not exist (404, like any unknown path). The token is compared in
 * constant time (SHA-256 of both sides, then timingSafeEqual: neither its bytes nor its length
 * show in the timing) and never logged (log.ts redacts the authorization header).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { serverErrors } from '../errors.js'
import { type LogSettings, loggerOptions } from '../log.js'
import type { ServerMetrics } from '../metrics.js'
import { errorResponses } from '../routes/common.js'
import { installErrorHandling } from './errors.js'

export const METRICS_PATH = '/metrics'

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest()

/** True when the request carries exactly this bearer token (the scheme's case is free: RFC 9110 §11.1). */
export function hasBearerToken(request: FastifyRequest, expectedDigest: Buffer): boolean {
  const header = request.headers.authorization
  const match = typeof header === 'string' ? /^Bearer ([^\s]+)$/i.exec(header) : null
  // Hashed even when absent, so a request without the header takes the same path.
  return timingSafeEqual(sha256(match?.[1] ?? ''), expectedDigest) && match !== null
}

export interface MetricsRouteOptions {
  readonly metrics: ServerMetrics
  /** Required as a bearer token when set. */
  readonly token?: string | undefined
}

export async function metricsRoute(app: FastifyInstance, options: MetricsRouteOptions): Promise<void> {
  const digest = options.token === undefined ? undefined : sha256(options.token)
  app.get(
    METRICS_PATH,
    // The 200 answer is text, which Fastify's serialiser leaves alone: errors keep their schema.
    { schema: { response: errorResponses } },
    async (request, reply) => {
      if (digest && !hasBearerToken(request, digest)) {
        reply.header('www-authenticate', 'Bearer')
        throw serverErrors.unauthenticated(
          'expected Authorization: Bearer <metrics token>, got none or another token',
        )
      }
      const { contentType, text } = await options.metrics.exposition()
      return reply.header('cache-control', 'no-store').type(contentType).send(text)
    },
  )
}

export interface MetricsServerOptions extends MetricsRouteOptions {
  readonly log?: LogSettings | false
}

/** The plain-HTTP listener that serves only /metrics (the caller listens and closes it). */
export async function buildMetricsServer(options: MetricsServerOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: options.log === false ? false : loggerOptions(options.log) })
  installErrorHandling(app)
  await app.register(metricsRoute, { metrics: options.metrics, token: options.token })
  return app
}
