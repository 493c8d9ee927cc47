/**
 * One server node for `npm run bench:cluster`: what server/main.ts does (the same flags and
 * variables through parseConfig, the same database, migrations, relations key, TLS and Redis),
 * with the limits of bench/relay-kit.ts BENCH_LIMITS raised, which the real entry cannot be told
 * to do. It prints the same `listening on` line and stops on SIGTERM.
 */
import type { AddressInfo } from 'node:net'
import { build } from '../server/app.js'
import { parseConfig } from '../server/config.js'
import { openDatabase } from '../server/db/connect.js'
import { migrateToLatest } from '../server/db/migrate.js'
import { bindRelationsKey, loadRelationsKey } from '../server/relations-key.js'
import { httpsOptions, loadTls } from '../server/tls.js'
import { BENCH_LIMITS } from './relay-kit.js'

const parsed = parseConfig(process.argv.slice(2), process.env)
if (parsed.help) throw new Error('bench/cluster-node.ts: expected options, got --help')
const { config } = parsed
const tls = await loadTls(config.tls, config.certDir)
const database = await openDatabase(config.database)
await migrateToLatest(database.db, database.dialect)
const relations = await loadRelationsKey(config.dataDir)
await bindRelationsKey(database.db, relations.key, {
  file: `${config.dataDir}/relations.key`,
  replace: config.replaceRelationsKey,
  now: Date.now(),
})
const app = await build({
  db: database.db,
  https: httpsOptions(tls),
  log: { level: config.logLevel },
  relationsKey: relations.key,
  redis: config.redis,
  limits: BENCH_LIMITS,
})
await app.listen({ host: config.host, port: config.port })
const { port } = app.server.address() as AddressInfo

process.once('SIGTERM', async () => {
  await app.close()
  await database.close()
  process.exit(0)
})
process.stdout.write(`secure-chat listening on https://${config.host}:${port}\n`)
