/**
 * Probes for whatever runs the server (an orchestrator, a load balancer, a process manager):
 *
 *   GET /health   200 {"status":"ok"} whenever the process answers HTTP at all (liveness)
 *   GET /ready    200 {"status":"ready","checks":{…}} when every dependency answers; otherwise 503
 *                 {"status":"unavailable","checks":{"database":"failed",…}} naming which did not
 *
 * A dependency contributes a ReadinessCheck: the database always (a `select 1`), the relay bus when
 * it has `ready()` (ws/relay-bus.ts), and whatever the app is given (BuildOptions.readinessChecks).
 * The answer names each check and says "ok" or "failed", nothing more: the reason goes to the log,
 * since an error's text can carry a host name or worse, and these routes need no authentication.
 *
 * Each check gives up after READY_CHECK_TIMEOUT_MS, and a check still running is shared by the
 * probes that arrive meanwhile, so a dependency that hangs holds one query, not one per probe.
 * GET /api/v1/health stays what it was (clients use it); it answers like /health.
 */
import type { FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import { HealthResponse } from '../../shared/codec/api.js'
import { Type } from '../../shared/codec/schema.js'
import type { Db } from '../db/schema.js'
import { READY_CHECK_TIMEOUT_MS } from '../limits.js'
import { errorResponses } from '../routes/common.js'
import type { RelayBus } from '../ws/relay-bus.js'

export const HEALTH_PATH = '/health'
export const READY_PATH = '/ready'

/** One dependency /ready asks about. */
export interface ReadinessCheck {
  /** Names it in the answer: lowercase letters, digits and dashes. */
  readonly name: string
  /** Resolves true when the dependency answers; false, a rejection or no answer in time is "failed". */
  check(): Promise<boolean>
}

const CHECK_NAME = /^[a-z][a-z0-9-]{0,31}$/

export function databaseCheck(db: Db): ReadinessCheck {
  return {
    name: 'database',
    check: async () => {
      await sql`select 1`.execute(db)
      return true
    },
  }
}

/** The bus's own check, if it has one (a bus without `ready` is taken as always reachable). */
export function busCheck(bus: RelayBus): ReadinessCheck | undefined {
  const ready = bus.ready?.bind(bus)
  return ready && { name: 'bus', check: ready }
}

type CheckStatus = 'ok' | 'failed'

export const ReadyResponse = Type.Object(
  {
    status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
    checks: Type.Record(
      Type.String({ pattern: CHECK_NAME.source }),
      Type.Union([Type.Literal('ok'), Type.Literal('failed')]),
    ),
  },
  { additionalProperties: false },
)

export interface ReadinessOptions {
  readonly checks: readonly ReadinessCheck[]
  readonly timeoutMs?: number
  /** Told why a check failed (the answer does not say). */
  readonly failed?: (name: string, error: unknown) => void
}

/** Runs the checks, each at most once at a time (see above). */
export class Readiness {
  private readonly running = new Map<string, Promise<boolean>>()
  private readonly timeoutMs: number

  constructor(private readonly options: ReadinessOptions) {
    const names = new Set<string>()
    for (const { name } of options.checks) {
      if (!CHECK_NAME.test(name) || names.has(name)) {
        throw new RangeError(`readiness check: expected a new lowercase name, got "${name}"`)
      }
      names.add(name)
    }
    this.timeoutMs = options.timeoutMs ?? READY_CHECK_TIMEOUT_MS
  }

  async run(): Promise<{ ready: boolean; checks: Record<string, CheckStatus> }> {
    const results = await Promise.all(this.options.checks.map((check) => this.one(check)))
    const checks: Record<string, CheckStatus> = {}
    this.options.checks.forEach((check, index) => {
      checks[check.name] = results[index] ? 'ok' : 'failed'
    })
    return { ready: results.every(Boolean), checks }
  }

  private one(check: ReadinessCheck): Promise<boolean> {
    let running = this.running.get(check.name)
    if (!running) {
      running = Promise.resolve()
        .then(() => check.check())
        .then(
          (ok) => {
            if (!ok) this.options.failed?.(check.name, new Error('expected true, got false'))
            return ok === true
          },
          (error: unknown) => {
            this.options.failed?.(check.name, error)
            return false
          },
        )
        .finally(() => this.running.delete(check.name))
      this.running.set(check.name, running)
    }
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        this.options.failed?.(
          check.name,
          new Error(`expected an answer within ${this.timeoutMs} ms, got none`),
        )
        resolve(false)
      }, this.timeoutMs)
      timer.unref()
    })
    return Promise.race([running, late]).finally(() => clearTimeout(timer))
  }
}

export async function healthRoutes(
  app: FastifyInstance,
  { readiness }: { readiness: Readiness },
): Promise<void> {
  app.get(
    HEALTH_PATH,
    { schema: { response: { 200: HealthResponse, ...errorResponses } } },
    async (_request, reply) => {
      reply.header('cache-control', 'no-store')
      return { status: 'ok' as const }
    },
  )
  app.get(
    READY_PATH,
    { schema: { response: { 200: ReadyResponse, 503: ReadyResponse, ...errorResponses } } },
    async (_request, reply) => {
      const { ready, checks } = await readiness.run()
      reply.header('cache-control', 'no-store')
      reply.code(ready ? 200 : 503)
      return { status: ready ? ('ready' as const) : ('unavailable' as const), checks }
    },
  )
}
