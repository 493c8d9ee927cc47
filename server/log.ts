/**
 * Logger settings (Fastify's pino). Requests are logged as method, route, status and timing only:
 * no headers, no bodies, and no path parameters (usernames). Redaction is the second line of defence for anything that still
 * reaches a log line: credentials, tokens, keys and message bodies become "[redacted]", by pino's
 * path redaction (which sees what serializers made, but only to the depth its paths name) and by a
 * walk over the logged object's plain data (which finds the same field names at any depth).
 */
import type { DestinationStream, LoggerOptions } from 'pino'
import type { LogLevel } from './config.js'

export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["sec-websocket-protocol"]',
  'headers.authorization',
  'authorization',
  'password',
  'loginSecret',
  'newLoginSecret',
  'token',
  'encryptedToken',
  'loginKey',
  'deviceProof',
  'challenge',
  'body',
  '*.password',
  '*.loginSecret',
  '*.newLoginSecret',
  '*.token',
  '*.encryptedToken',
  '*.loginKey',
  '*.deviceProof',
  '*.challenge',
  '*.body',
  '*.oneTimePreKeys',
  '*.signedPreKey',
  '*.identity',
]

/** Field names whose values never reach a log line, at whatever depth of plain data they appear. */
export const REDACTED_KEYS: ReadonlySet<string> = new Set([
  'authorization',
  'cookie',
  'sec-websocket-protocol',
  'password',
  'loginSecret',
  'newLoginSecret',
  'token',
  'encryptedToken',
  'loginKey',
  'deviceProof',
  'challenge',
  'body',
  'oneTimePreKeys',
  'signedPreKey',
  'identity',
])

export const REDACTED = '[redacted]'

/** Nesting walked at most; anything deeper is dropped rather than written unchecked. */
const MAX_REDACT_DEPTH = 10

function isPlainObject(value: object): value is Record<string, unknown> {
  const prototype = Object.getPrototypeOf(value)
  return prototype === Object.prototype || prototype === null
}

/**
 * A copy of plain objects and arrays with the value of every REDACTED_KEYS field replaced. Other
 * objects (requests, replies, errors, buffers) are left to their serializers and to the redaction
 * paths, and are not walked: they can be large or cyclic.
 */
export function redactDeep(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null) return value
  const walkable = Array.isArray(value) || isPlainObject(value)
  if (!walkable) return value
  if (depth >= MAX_REDACT_DEPTH) return REDACTED
  if (Array.isArray(value)) return value.map((item) => redactDeep(item, depth + 1))
  const copy: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value)) {
    copy[key] = REDACTED_KEYS.has(key) ? REDACTED : redactDeep(field, depth + 1)
  }
  return copy
}

export interface LogSettings {
  readonly level?: LogLevel
  /** Where lines go (default stdout); tests pass a collecting stream. */
  readonly stream?: DestinationStream
}

interface LoggedRequest {
  method: string
  url: string
  ip?: string
  id?: string
  /** Fastify's request: the route the URL matched (absent when none did). */
  routeOptions?: { url?: string }
}

export function loggerOptions(settings: LogSettings = {}): LoggerOptions & { stream?: DestinationStream } {
  return {
    level: settings.level ?? 'info',
    redact: { paths: REDACTED_PATHS, censor: REDACTED },
    formatters: { log: (object) => redactDeep(object) as Record<string, unknown> },
    serializers: {
      req: (request: LoggedRequest) => ({
        id: request.id,
        method: request.method,
        // The route's pattern (`/api/v1/users/:username/bundle`), not the path: a path names whose
        // bundle or identity a requester fetched, and the log would keep who looks up whom. An
        // unrouted path is logged without its query string (queries are user input).
        path: request.routeOptions?.url ?? request.url.split('?', 1)[0],
        ip: request.ip,
      }),
      res: (reply: { statusCode: number }) => ({ statusCode: reply.statusCode }),
    },
    ...(settings.stream ? { stream: settings.stream } : {}),
  }
}
