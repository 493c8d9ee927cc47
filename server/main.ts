/**
 * The server process: read the configuration and print it (without secrets), make sure a
 * certificate exists, open and migrate the database, connect to Redis if it is a cluster member,
 * listen over HTTPS (and on the metrics port if one is set), print where and with which
 * certificate, and on SIGTERM/SIGINT stop accepting, finish in-flight requests and close the
 * database before exiting.
 */
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { build } from './app.js'
import { ConfigError, describeConfig, parseConfig, type ServerConfig, USAGE } from './config.js'
import { DatabaseOpenError, openDatabase } from './db/connect.js'
import { MigrationError, migrateToLatest } from './db/migrate.js'
import { SHUTDOWN_GRACE_MS } from './limits.js'
import { ServerMetrics } from './metrics.js'
import { buildMetricsServer } from './plugins/metrics.js'
import {
  bindRelationsKey,
  loadRelationsKey,
  RELATIONS_KEY_FILE,
  type RelationsKeyBinding,
  RelationsKeyError,
} from './relations-key.js'
import { httpsOptions, loadTls } from './tls.js'
import { RedisUnreachableError, RedisUnsupportedError } from './ws/redis-bus.js'

/** The address to show: wildcard binds are reachable locally as localhost. */
function publicUrl(host: string, port: number): string {
  const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host
  return `https://${shown.includes(':') ? `[${shown}]` : shown}:${port}`
}

function metricsHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

function describeBinding(binding: RelationsKeyBinding): string {
  switch (binding.kind) {
    case 'recorded':
      return 'its check recorded in the database'
    case 'matched':
      return 'the one the database was set up with'
    case 'replaced':
      return `replaced the database's; ${binding.relationsDeleted} relations stored under the old key deleted: copy this file to every other node`
  }
}

async function start(config: ServerConfig): Promise<void> {
  // First, so that whatever fails next is read against the options it ran with.
  process.stdout.write(
    `configuration:\n${describeConfig(config)
      .map((line) => `  ${line}\n`)
      .join('')}`,
  )
  const tls = await loadTls(config.tls, config.certDir)
  const database = await openDatabase(config.database)
  const applied = await migrateToLatest(database.db, database.dialect)
  const relations = await loadRelationsKey(config.dataDir)
  const relationsFile = join(config.dataDir, RELATIONS_KEY_FILE)
  const binding = await bindRelationsKey(database.db, relations.key, {
    file: relationsFile,
    replace: config.replaceRelationsKey,
    now: Date.now(),
  }).catch(async (error: unknown) => {
    await database.close()
    throw error
  })

  const served = config.metrics.port !== undefined || config.metrics.token !== undefined
  // Process metrics (event-loop delay, memory, GC) start monitors: only when someone can read them.
  const metrics = new ServerMetrics({ processMetrics: served })
  const app = await build({
    db: database.db,
    https: httpsOptions(tls),
    log: { level: config.logLevel },
    trustProxy: config.trustProxy,
    relationsKey: relations.key,
    redis: config.redis,
    metrics,
    ...(config.metrics.token === undefined ? {} : { metricsToken: config.metrics.token }),
    ...(config.maxDevicesPerAccount === undefined
      ? {}
      : { limits: { maxDevicesPerAccount: config.maxDevicesPerAccount } }),
  })
  await app.listen({ host: config.host, port: config.port })
  const { port } = app.server.address() as AddressInfo
  const metricsServer =
    config.metrics.port === undefined
      ? undefined
      : await buildMetricsServer({ metrics, token: config.metrics.token, log: { level: config.logLevel } })
  if (metricsServer) await metricsServer.listen({ host: config.metrics.host, port: config.metrics.port })

  let stopping = false
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`${signal} again: exiting without waiting\n`)
      process.exit(1)
    }
    stopping = true
    app.log.info({ signal }, 'shutting down')
    const deadline = setTimeout(() => {
      process.stderr.write(`shutdown took longer than ${SHUTDOWN_GRACE_MS} ms: exiting\n`)
      process.exit(1)
    }, SHUTDOWN_GRACE_MS)
    deadline.unref()
    try {
      // Stops accepting, lets in-flight requests finish, runs every onClose hook (the relay's too).
      await metricsServer?.close()
      await app.close()
      await database.close()
      process.stdout.write('secure-chat stopped\n')
      process.exit(0)
    } catch (error) {
      process.stderr.write(`shutdown failed: ${(error as Error).message}\n`)
      process.exit(1)
    }
  }
  // A second signal of either kind forces the exit (see `stop`).
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGINT', () => void stop('SIGINT'))

  // Printed only once the signal handlers are in place, so whoever waits for these lines may stop us.
  const where =
    config.database.kind === 'sqlite' ? `SQLite ${config.database.file}` : 'PostgreSQL (DATABASE_URL)'
  const lines = [
    `secure-chat listening on ${publicUrl(config.host, port)}`,
    `database: ${where}${applied.length > 0 ? `, applied migrations: ${applied.join(', ')}` : ''}`,
    `relations key: ${relationsFile}${relations.created ? ' (created now)' : ''}, ${describeBinding(binding)}`,
    `TLS certificate: ${tls.certFile}${tls.selfSigned ? (tls.created ? ' (self-signed, created now)' : ' (self-signed)') : ''}`,
    `TLS certificate SHA-256 fingerprint: ${tls.fingerprint256}`,
    `TLS public key SHA-256 (SPKI, base64): ${tls.spkiSha256}`,
  ]
  if (metricsServer) {
    const { port: shown } = metricsServer.server.address() as AddressInfo
    lines.push(`metrics on http://${metricsHost(config.metrics.host)}:${shown}/metrics`)
  }
  process.stdout.write(`${lines.join('\n')}\n`)
}

async function main(): Promise<void> {
  let config: ServerConfig
  try {
    const parsed = parseConfig(process.argv.slice(2), process.env)
    if (parsed.help) {
      process.stdout.write(`${USAGE}\n`)
      return
    }
    config = parsed.config
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error: ${error.message}\n`)
      process.exit(2)
    }
    throw error
  }
  try {
    await start(config)
  } catch (error) {
    if (error instanceof RedisUnreachableError || error instanceof RedisUnsupportedError) {
      // Its message says it all: "cannot reach Redis at redis://host:port: why", or what is wrong with it.
      process.stderr.write(`${error.message}\n`)
      process.exit(1)
    }
    const prefix =
      error instanceof MigrationError || error instanceof DatabaseOpenError
        ? 'cannot open the database'
        : error instanceof RelationsKeyError
          ? 'cannot use the relations key'
          : 'cannot start'
    process.stderr.write(`${prefix}: ${(error as Error).message}\n`)
    process.exit(1)
  }
}

await main()
