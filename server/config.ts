/**
 * Server options from command-line flags and environment variables (a flag wins over its variable).
 * Validation happens here, once, so the rest of the server receives a complete, checked value.
 *
 * | flag          | variable     | default                          |
 * |---------------|--------------|----------------------------------|
 * | --host        | HOST         | localhost (both 127.0.0.1 and ::1; loopback only, so a first run
 * |               |              | exposes nothing; use 0.0.0.0 or :: to serve a network) |
 * | --port        | PORT         | 8443                             |
 * | --data-dir    | DATA_DIR     | ./data (the SQLite file lives here) |
 * | --cert-dir    | CERT_DIR     | ./certs (the first-run self-signed certificate) |
 * | --cert        | TLS_CERT     | none: a self-signed localhost certificate is made |
 * | --key         | TLS_KEY      | none (must be given together with --cert) |
 * | (none)        | DATABASE_URL | none: SQLite at <data-dir>/secure-chat.sqlite; postgres://… selects PostgreSQL |
 * | --redis-url   | REDIS_URL    | none: one node, relay events within the process; redis:// or rediss:// |
 * |               |              | makes this node a cluster member (needs DATABASE_URL on PostgreSQL) |
 * | --redis-prefix | REDIS_PREFIX | secure-chat: (the start of every Redis key and channel of this |
 * |               |              | deployment; another prefix lets two deployments share one Redis) |
 * | --trust-proxy | TRUST_PROXY  | false; true, a hop count or addresses/CIDRs of the reverse proxy |
 * |               |              | (without it behind a proxy, every client shares the proxy's address
 * |               |              | for every per-address limit; plugins/proxy-check.ts warns once; |
 * |               |              | the TLS handshake limits spare the peers it names, and every peer |
 * |               |              | with true or a hop count: plugins/tls-handshakes.ts) |
 * | --log-level   | LOG_LEVEL    | info                             |
 * | --metrics-port | METRICS_PORT | none: no metrics listener; a port serves GET /metrics over plain |
 * |               |              | HTTP on the metrics host (plugins/metrics.ts) |
 * | --metrics-host | METRICS_HOST | 127.0.0.1 (loopback: the metrics port has no TLS) |
 * | (none)        | METRICS_TOKEN | none; at least 32 characters: GET /metrics on the main port to |
 * |               |              | requests bearing it (and required on the metrics port too). Only |
 * |               |              | a variable: a flag would show in every `ps` listing |
 * | --max-devices | MAX_DEVICES_PER_ACCOUNT | 6 (limits.ts): devices one account may have, 1–64 |
 * | --replace-relations-key | (none) | off; on: a relations key other than the database's replaces |
 * |               |              | it, and the relations stored under the old one are deleted |
 * |               |              | (relations-key.ts). Only a flag, given once by hand: left in an |
 * |               |              | environment file it would let any node with a stray key wipe them |
 *
 * `describeConfig` is what main.ts prints at start: every option, with the database URL's password
 * masked and the metrics token never shown.
 */
import { accessSync, constants } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { MAX_DEVICES_LIMIT } from '../shared/limits.js'

export const DEFAULT_HOST = 'localhost'
export const DEFAULT_PORT = 8443
export const SQLITE_FILE_NAME = 'secure-chat.sqlite'
export const DEFAULT_METRICS_HOST = '127.0.0.1'
/** ws/redis-bus.ts DEFAULT_REDIS_CHANNEL_PREFIX (not imported: configuration comes before any server module). */
export const DEFAULT_REDIS_PREFIX = 'secure-chat:'
/** Read from the environment only: a command-line flag would show the token in every `ps` listing. */
const METRICS_TOKEN_VARIABLE = 'METRICS_TOKEN'
/** A shorter token could be guessed; 32 random characters is ~190 bits from base64url. */
export const METRICS_TOKEN_MIN_LENGTH = 32

export type DatabaseConfig = { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string }

export interface ServerConfig {
  host: string
  port: number
  dataDir: string
  certDir: string
  /** Operator-supplied certificate and key (e.g. Let's Encrypt); undefined means self-signed. */
  tls: { certFile: string; keyFile: string } | undefined
  database: DatabaseConfig
  /**
   * Redis for the relay bus between nodes (ws/redis-bus.ts); undefined: a single node.
   * `channelPrefix` starts every key and channel (the same on every node of one deployment).
   */
  redis: { url: string; channelPrefix: string } | undefined
  trustProxy: boolean | number | string
  logLevel: LogLevel
  metrics: MetricsConfig
  /** Take this node's relations key even if the database was set up with another (relations-key.ts). */
  replaceRelationsKey: boolean
  /** Devices one account may have (limits.ts MAX_DEVICES_PER_ACCOUNT unless set). */
  maxDevicesPerAccount: number | undefined
}

/** Where GET /metrics is served (plugins/metrics.ts); neither a port nor a token means nowhere. */
export interface MetricsConfig {
  /** A plain-HTTP listener of its own on `host`; undefined for none. */
  port: number | undefined
  host: string
  /** Bearer token for /metrics on the main port (and the metrics port); undefined for none. */
  token: string | undefined
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
}

export const USAGE = `Usage: npm start -- [options]

  --host <address>      address to listen on (HOST; default ${DEFAULT_HOST})
  --port <number>       TCP port, 0 for any free port (PORT; default ${DEFAULT_PORT})
  --data-dir <path>     directory of the SQLite database (DATA_DIR; default ./data)
  --cert-dir <path>     where the first-run self-signed certificate is kept (CERT_DIR; default ./certs)
  --cert <file>         PEM certificate chain, e.g. Let's Encrypt fullchain.pem (TLS_CERT)
  --key <file>          PEM private key of that certificate (TLS_KEY)
  --redis-url <url>     Redis 7 (or Valkey) shared by several nodes, redis://[user:password@]host:port
                        (REDIS_URL; needs DATABASE_URL on PostgreSQL; default: a single node)
  --redis-prefix <p>    start of every Redis key and channel, the same on every node; another one lets
                        two deployments share a Redis (REDIS_PREFIX; default ${DEFAULT_REDIS_PREFIX})
  --trust-proxy <v>     trust X-Forwarded-For from: true, a hop count, or proxy addresses (TRUST_PROXY)
  --log-level <level>   ${LOG_LEVELS.join(', ')} (LOG_LEVEL; default info)
  --metrics-port <n>    serve GET /metrics over plain HTTP on this port (METRICS_PORT; default none)
  --metrics-host <addr> address of the metrics port (METRICS_HOST; default ${DEFAULT_METRICS_HOST})
  --max-devices <n>     devices one account may have, 1–${MAX_DEVICES_LIMIT} (MAX_DEVICES_PER_ACCOUNT; default 6)
  --replace-relations-key
                        start with this data directory's relations.key although the database was set
                        up with another: the blocks and presence grants stored under that one are
                        deleted (once, by hand; every other node then needs this node's file)
  --help                print this text

  DATABASE_URL=postgres://user@host/db selects PostgreSQL instead of SQLite.
  METRICS_TOKEN=<at least ${METRICS_TOKEN_MIN_LENGTH} characters> serves GET /metrics on the main port to
  requests with "Authorization: Bearer <token>" (and requires it on the metrics port).`

export type ParsedArgs = { help: true } | { help: false; config: ServerConfig }

type Env = Record<string, string | undefined>

/** Parses flags (without the node and script paths) and environment; throws ConfigError on bad input. */
export function parseConfig(argv: readonly string[], env: Env, cwd: string = process.cwd()): ParsedArgs {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'data-dir': { type: 'string' },
        'cert-dir': { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        'redis-url': { type: 'string' },
        'redis-prefix': { type: 'string' },
        'trust-proxy': { type: 'string' },
        'log-level': { type: 'string' },
        'metrics-port': { type: 'string' },
        'metrics-host': { type: 'string' },
        'max-devices': { type: 'string' },
        'replace-relations-key': { type: 'boolean' },
        help: { type: 'boolean' },
      },
    }).values
  } catch (cause) {
    throw new ConfigError(`${(cause as Error).message}\n\n${USAGE}`)
  }
  if (values.help === true) return { help: true }

  const pick = (flag: string, variable: string): string | undefined => {
    const fromFlag = values[flag]
    if (typeof fromFlag === 'string') return fromFlag
    const fromEnv = env[variable]
    return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv
  }

  const host = pick('host', 'HOST') ?? DEFAULT_HOST
  if (!/^[A-Za-z0-9.:_%-]+$/.test(host)) {
    throw new ConfigError(`--host/HOST: expected a hostname or IP address, got "${host}"`)
  }

  const port = parsePort(pick('port', 'PORT'))
  const dataDir = resolve(cwd, pick('data-dir', 'DATA_DIR') ?? 'data')
  const certDir = resolve(cwd, pick('cert-dir', 'CERT_DIR') ?? 'certs')
  const tls = parseTlsFiles(pick('cert', 'TLS_CERT'), pick('key', 'TLS_KEY'), cwd)
  const database = parseDatabaseUrl(env.DATABASE_URL, dataDir)
  const redis = parseRedis(pick('redis-url', 'REDIS_URL'), pick('redis-prefix', 'REDIS_PREFIX'), database)
  const trustProxy = parseTrustProxy(pick('trust-proxy', 'TRUST_PROXY'))

  const logLevel = pick('log-level', 'LOG_LEVEL') ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(
      `--log-level/LOG_LEVEL: expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`,
    )
  }

  const metrics = parseMetrics(
    pick('metrics-port', 'METRICS_PORT'),
    pick('metrics-host', 'METRICS_HOST'),
    env,
  )
  if (metrics.port !== undefined && metrics.port !== 0 && metrics.port === port) {
    throw new ConfigError(
      `--metrics-port/METRICS_PORT: expected a port other than the server's, got ${port} for both`,
    )
  }

  return {
    help: false,
    config: {
      host,
      port,
      dataDir,
      certDir,
      tls,
      database,
      redis,
      trustProxy,
      logLevel: logLevel as LogLevel,
      metrics,
      replaceRelationsKey: values['replace-relations-key'] === true,
      maxDevicesPerAccount: parseMaxDevices(pick('max-devices', 'MAX_DEVICES_PER_ACCOUNT')),
    },
  }
}

function parseMetrics(portText: string | undefined, hostText: string | undefined, env: Env): MetricsConfig {
  let port: number | undefined
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65_535) {
      throw new ConfigError(`--metrics-port/METRICS_PORT: expected an integer 0–65535, got "${portText}"`)
    }
    port = Number(portText)
  }
  const host = hostText ?? DEFAULT_METRICS_HOST
  if (!/^[A-Za-z0-9.:_%-]+$/.test(host)) {
    throw new ConfigError(`--metrics-host/METRICS_HOST: expected a hostname or IP address, got "${host}"`)
  }
  const token = env[METRICS_TOKEN_VARIABLE] === '' ? undefined : env[METRICS_TOKEN_VARIABLE]
  // The token's length and form only, never the token itself.
  if (token !== undefined && (token.length < METRICS_TOKEN_MIN_LENGTH || !/^[\x21-\x7e]+$/.test(token))) {
    throw new ConfigError(
      `METRICS_TOKEN: expected at least ${METRICS_TOKEN_MIN_LENGTH} visible ASCII characters without spaces, got ${token.length} characters${/^[\x21-\x7e]*$/.test(token) ? '' : ' with others among them'}`,
    )
  }
  return { port, host, token }
}

/** plugins/metrics.ts METRICS_PATH (not imported: configuration comes before any server module). */
const METRICS_PATH_SHOWN = '/metrics'

/** What a secret is replaced with wherever the configuration is shown. */
export const MASKED = '***'

/** Query parameters of a URL that may hold a secret (libpq's password, sslpassword, keys). */
const SECRET_PARAMETER = /pass|secret|token|key/i

/**
 * The URL with its password and any secret-looking query parameter replaced by MASKED: a database
 * URL, and any other that may carry credentials (a Redis URL's `redis://user:password@host`).
 */
export function maskUrl(url: string): string {
  const parsed = new URL(url)
  if (parsed.password !== '') parsed.password = MASKED
  for (const name of [...parsed.searchParams.keys()]) {
    if (SECRET_PARAMETER.test(name)) parsed.searchParams.set(name, MASKED)
  }
  return parsed.toString()
}

function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

/** The effective configuration, one option a line, without secrets (main.ts prints it at start). */
export function describeConfig(config: ServerConfig): string[] {
  const { metrics } = config
  const metricsWhere = [
    metrics.port === undefined
      ? undefined
      : `http://${urlHost(metrics.host)}:${metrics.port}${METRICS_PATH_SHOWN}${metrics.token === undefined ? '' : ' (bearer token)'}`,
    metrics.token === undefined
      ? undefined
      : 'on the main port with a bearer token (METRICS_TOKEN, not shown)',
  ].filter((where) => where !== undefined)
  return [
    `host: ${config.host}`,
    `port: ${config.port}`,
    `data directory: ${config.dataDir}`,
    `certificate directory: ${config.certDir}`,
    `TLS: ${config.tls ? `certificate ${config.tls.certFile}, key ${config.tls.keyFile}` : 'self-signed localhost certificate'}`,
    `database: ${config.database.kind === 'sqlite' ? `SQLite ${config.database.file}` : `PostgreSQL ${maskUrl(config.database.url)}`}`,
    `relay bus: ${config.redis ? `Redis ${maskUrl(config.redis.url)} (a cluster member), key prefix ${config.redis.channelPrefix}` : 'in this process (a single node)'}`,
    `trust proxy: ${String(config.trustProxy)}`,
    `log level: ${config.logLevel}`,
    `metrics: ${metricsWhere.length > 0 ? metricsWhere.join('; ') : 'not served (set METRICS_PORT or METRICS_TOKEN)'}`,
    ...(config.maxDevicesPerAccount === undefined
      ? []
      : [`devices per account: at most ${config.maxDevicesPerAccount}`]),
    ...(config.replaceRelationsKey
      ? ["relations key: replacing the database's with this data directory's (--replace-relations-key)"]
      : []),
  ]
}

function parseMaxDevices(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  if (!/^\d{1,2}$/.test(text) || Number(text) < 1 || Number(text) > MAX_DEVICES_LIMIT) {
    throw new ConfigError(
      `--max-devices/MAX_DEVICES_PER_ACCOUNT: expected an integer 1–${MAX_DEVICES_LIMIT}, got "${text}"`,
    )
  }
  return Number(text)
}

function parsePort(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PORT
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65_535) {
    throw new ConfigError(`--port/PORT: expected an integer 0–65535, got "${text}"`)
  }
  return Number(text)
}

function parseTlsFiles(cert: string | undefined, key: string | undefined, cwd: string): ServerConfig['tls'] {
  if (cert === undefined && key === undefined) return undefined
  if (cert === undefined || key === undefined) {
    throw new ConfigError(
      `--cert/TLS_CERT and --key/TLS_KEY: expected both or neither, got only ${cert === undefined ? 'the key' : 'the certificate'}`,
    )
  }
  const certFile = resolve(cwd, cert)
  const keyFile = resolve(cwd, key)
  for (const [what, file] of [
    ['--cert/TLS_CERT', certFile],
    ['--key/TLS_KEY', keyFile],
  ] as const) {
    try {
      accessSync(file, constants.R_OK)
    } catch {
      throw new ConfigError(`${what}: expected a readable file, got "${file}" which cannot be read`)
    }
  }
  return { certFile, keyFile }
}

function parseDatabaseUrl(url: string | undefined, dataDir: string): DatabaseConfig {
  if (url === undefined || url === '') return { kind: 'sqlite', file: resolve(dataDir, SQLITE_FILE_NAME) }
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(
      'DATABASE_URL: expected a URL such as postgres://user@host:5432/db, got an unparsable value',
    )
  }
  if (parsed.protocol === 'postgres:' || parsed.protocol === 'postgresql:') return { kind: 'postgres', url }
  // The scheme only, never the whole URL: it may carry a password.
  throw new ConfigError(
    `DATABASE_URL: expected a postgres:// or postgresql:// URL, got scheme "${parsed.protocol}"`,
  )
}

function parseRedis(
  url: string | undefined,
  prefix: string | undefined,
  database: DatabaseConfig,
): ServerConfig['redis'] {
  if (url === undefined) {
    if (prefix !== undefined) {
      throw new ConfigError(
        '--redis-prefix/REDIS_PREFIX: expected it with --redis-url/REDIS_URL, got it alone',
      )
    }
    return undefined
  }
  // Braces would make a Redis hash tag of the prefix and put every user's keys in one slot.
  if (prefix !== undefined && !/^[A-Za-z0-9._:-]{1,64}$/.test(prefix)) {
    throw new ConfigError(
      `--redis-prefix/REDIS_PREFIX: expected 1–64 letters, digits or . _ : -, got "${prefix}"`,
    )
  }
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(
      '--redis-url/REDIS_URL: expected a URL such as redis://127.0.0.1:6379, got an unparsable value',
    )
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    // The scheme only, never the whole URL: it may carry a password.
    throw new ConfigError(
      `--redis-url/REDIS_URL: expected a redis:// or rediss:// URL, got scheme "${parsed.protocol}"`,
    )
  }
  if (database.kind !== 'postgres') {
    throw new ConfigError(
      '--redis-url/REDIS_URL: expected DATABASE_URL to name PostgreSQL, got the embedded SQLite database, which several nodes cannot share (a single node needs no Redis)',
    )
  }
  return { url, channelPrefix: prefix ?? DEFAULT_REDIS_PREFIX }
}

function parseTrustProxy(text: string | undefined): boolean | number | string {
  if (text === undefined || text === 'false') return false
  if (text === 'true') return true
  if (/^\d+$/.test(text)) return Number(text)
  const items = text.split(',').map((item) => item.trim())
  const valid = items.every(
    (item) =>
      /^[0-9A-Fa-f.:]+(\/\d{1,3})?$/.test(item) || ['loopback', 'linklocal', 'uniquelocal'].includes(item),
  )
  if (!valid) {
    throw new ConfigError(
      `--trust-proxy/TRUST_PROXY: expected true, false, a hop count or comma-separated addresses, got "${text}"`,
    )
  }
  return items.join(',')
}
