/**
 * Logger settings (Fastify's pino). Requests are logged as method, path, status and timing only:
 * no headers and no bodies. Redaction is the second line of defence for anything that still
 * reaches a log line: credentials, tokens, keys and message bodies become "[redacted]".
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
  'token',
  'encryptedToken',
  'loginKey',
  'body',
  '*.password',
  '*.token',
  '*.encryptedToken',
  '*.loginKey',
  '*.body',
  '*.oneTimePreKeys',
  '*.signedPreKey',
  '*.identity',
]

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
}

export function loggerOptions(settings: LogSettings = {}): LoggerOptions & { stream?: DestinationStream } {
  return {
    level: settings.level ?? 'info',
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: {
      req: (request: LoggedRequest) => ({
        id: request.id,
        method: request.method,
        // The path without its query string: queries are user input and are not needed in logs.
        path: request.url.split('?', 1)[0],
        ip: request.ip,
      }),
      res: (reply: { statusCode: number }) => ({ statusCode: reply.statusCode }),
    },
    ...(settings.stream ? { stream: settings.stream } : {}),
  }
}
