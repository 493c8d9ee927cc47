/** What every route plugin receives: the database, the clock and the tunable limits. */
import type { LoginLimiter } from './auth/login-limiter.js'
import type { Db } from './db/schema.js'

export interface RateLimit {
  readonly max: number
  readonly timeWindowMs: number
}

export interface ServerLimits {
  readonly registerRateLimit: RateLimit
  readonly loginRateLimit: RateLimit
  readonly bundleRateLimit: RateLimit
  readonly loginFailuresPerAccount: number
  readonly loginFailuresPerAddress: number
  readonly loginFailureWindowMs: number
  readonly maxOneTimePreKeysPerUser: number
  readonly signedPreKeysKept: number
  readonly maxTokensPerUser: number
  readonly tokenLifetimeMs: number
}

export interface ServerContext {
  readonly db: Db
  readonly now: () => number
  readonly bcryptCost: number
  readonly limits: ServerLimits
  readonly loginLimiter: LoginLimiter
}
