/**
 * Opens the database: SQLite through better-sqlite3 (the default) or PostgreSQL through a pg Pool,
 * behind one Kysely query layer, so repositories and migrations are shared.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { CompiledQuery, type Driver, Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely'
import pg from 'pg'
import type { DatabaseConfig } from '../config.js'
import { startCheckpointer } from './checkpointer.js'
import type { Database, Db, SqlDialect } from './schema.js'

/**
 * How long a SQLite writer waits for another process's lock before failing (e.g. a backup tool or a
 * second server started by mistake): long enough to ride out a checkpoint, short enough to surface.
 */
export const SQLITE_BUSY_TIMEOUT_MS = 5_000

/**
 * SQLite synchronous=FULL: in WAL mode every commit is fsynced before it returns, so a message is on
 * disk before the sender hears "accepted" even across a power cut (NORMAL survives a process crash
 * but may lose the last commits on power loss). Batching commits amortises the fsync.
 */
export const SQLITE_SYNCHRONOUS = 'FULL'

/**
 * SQLite page cache of the main connection: 64 MiB instead of the default 2 MiB, so the queue's
 * indexes (the UNIQUE (message id, sender) one grows with every message kept for the idempotency
 * window) stay in memory instead of being re-read from the OS on every insert.
 */
export const SQLITE_CACHE_KIB = 64 * 1024

/** How often the checkpoint thread copies the WAL back into the database (db/checkpointer.ts). */
export const SQLITE_CHECKPOINT_INTERVAL_MS = 250

/**
 * WAL pages after which a commit checkpoints by itself (SQLite's default is 1,000). Only a safety
 * net behind the checkpoint thread, which keeps the log far below it.
 */
export const SQLITE_AUTOCHECKPOINT_PAGES = 20_000

/** PostgreSQL connections per server process. */
export const POSTGRES_POOL_SIZE = 10

/**
 * How long opening the database waits for PostgreSQL to accept a connection. A host behind a
 * firewall that drops packets never answers, and without a limit the server would hang at startup
 * without a word. Only the startup probe has it: on the pool it would also bound waits for a free
 * connection under load.
 */
export const POSTGRES_CONNECT_TIMEOUT_MS = 10_000

/** Network errors meaning that nothing answered at the address (not a refusal by PostgreSQL). */
const UNREACHABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EADDRNOTAVAIL',
])

/** The database could not be opened; the message names the address, never the URL's credentials. */
export class DatabaseOpenError extends Error {
  override readonly name = 'DatabaseOpenError'
}

/** Where a PostgreSQL URL points (host:port, as pg reads it), for messages: no user, no password. */
export function postgresAddress(url: string): string {
  const parsed = new URL(url)
  const host = parsed.searchParams.get('host') || parsed.hostname || process.env.PGHOST || 'localhost'
  const port = parsed.searchParams.get('port') || parsed.port || process.env.PGPORT || '5432'
  const shown = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
  return `${shown}:${port}`
}

/** The message of a failure to reach or use PostgreSQL at `url`, with its password taken out. */
function describePostgresFailure(error: unknown, url: string): DatabaseOpenError {
  const address = postgresAddress(url)
  const code = (error as { code?: unknown }).code
  const message = error instanceof Error ? error.message : String(error)
  if ((typeof code === 'string' && UNREACHABLE_CODES.has(code)) || message === 'timeout expired') {
    const why = typeof code === 'string' ? code : `no answer within ${POSTGRES_CONNECT_TIMEOUT_MS / 1000} s`
    return new DatabaseOpenError(
      `PostgreSQL is unreachable at ${address} (${why}); is it running, and does DATABASE_URL name the right host and port?`,
    )
  }
  let detail = message.split(url).join('<DATABASE_URL>')
  const password = new URL(url).password
  let decoded = password
  try {
    decoded = decodeURIComponent(password)
  } catch {
    // A stray "%" in the password: pg reads it as written, so the raw form is the one to remove.
  }
  for (const secret of new Set([password, decoded])) {
    if (secret !== '') detail = detail.split(secret).join('***')
  }
  return new DatabaseOpenError(`PostgreSQL at ${address} refused to open the database: ${detail}`)
}

/** One connection with a time limit, before the pool (which has none) is made. */
async function probePostgres(url: string): Promise<void> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: POSTGRES_CONNECT_TIMEOUT_MS,
  })
  // A failed connection also emits 'error'; the rejected connect() below is where it is handled.
  client.on('error', () => {})
  try {
    await client.connect()
  } catch (error) {
    throw describePostgresFailure(error, url)
  } finally {
    await client.end().catch(() => {})
  }
}

/**
 * The better-sqlite3 connection behind each SQLite Kysely handle, for the queue's fast path
 * (db/queue-sqlite.ts), which runs cached prepared statements on it while holding Kysely's
 * connection lock. Keyed weakly, so a destroyed handle is forgotten with it.
 */
const sqliteConnections = new WeakMap<Db, BetterSqlite3.Database>()

/** The better-sqlite3 connection of a SQLite handle made by openDatabase, or undefined. */
export function sqliteConnectionOf(db: Db): BetterSqlite3.Database | undefined {
  return sqliteConnections.get(db)
}

export interface OpenDatabase {
  readonly db: Db
  readonly dialect: SqlDialect
  close(): Promise<void>
}

export interface OpenOptions {
  /** PostgreSQL only: schema to put first on the search_path (tests use a fresh one per run). */
  readonly searchPath?: string
}

export async function openDatabase(config: DatabaseConfig, options: OpenOptions = {}): Promise<OpenDatabase> {
  return config.kind === 'sqlite' ? openSqlite(config.file) : openPostgres(config.url, options)
}

function openSqlite(file: string): OpenDatabase {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  // Create the file private to this user; SQLite gives its -wal and -shm files the same mode.
  closeSync(openSync(file, 'a', 0o600))
  const connection = new BetterSqlite3(file)
  try {
    const mode = connection.pragma('journal_mode = WAL', { simple: true })
    if (mode !== 'wal') throw new Error(`SQLite journal_mode: expected wal, got ${String(mode)}`)
    connection.pragma(`synchronous = ${SQLITE_SYNCHRONOUS}`)
    connection.pragma('foreign_keys = ON')
    connection.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`)
    connection.pragma(`cache_size = -${SQLITE_CACHE_KIB}`)
    connection.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`)
    // Deleted rows (acknowledged messages: who wrote to whom) are zeroed in their pages rather than
    // left in free space for anyone who reads the file; FAST costs no extra I/O.
    connection.pragma('secure_delete = FAST')
  } catch (error) {
    connection.close()
    throw error
  }
  const checkpointer = startCheckpointer(file, SQLITE_CHECKPOINT_INTERVAL_MS)
  const db = new Kysely<Database>({ dialect: new ImmediateSqliteDialect({ database: connection }) })
  sqliteConnections.set(db, connection)
  return {
    db,
    dialect: 'sqlite',
    close: async () => {
      await checkpointer.stop()
      await db.destroy()
    },
  }
}

/**
 * SQLite transactions begin IMMEDIATE: they take the write lock at BEGIN, waiting up to
 * SQLITE_BUSY_TIMEOUT_MS for it. A deferred transaction that reads and then writes (a bundle claim
 * reads the signed prekey, then deletes a one-time prekey) cannot upgrade its lock once another
 * connection (the queue worker's) has committed since its read: SQLite then answers SQLITE_BUSY at
 * once, without waiting, and the request failed with a 500. Every transaction here writes, and
 * this process's transactions are serialised on its one connection anyway, so nothing is lost.
 */
class ImmediateSqliteDialect extends SqliteDialect {
  override createDriver(): Driver {
    const driver = super.createDriver()
    driver.beginTransaction = async (connection) => {
      await connection.executeQuery(CompiledQuery.raw('begin immediate'))
    }
    return driver
  }
}

const PG_INT8_OID = 20

async function openPostgres(url: string, options: OpenOptions): Promise<OpenDatabase> {
  const { searchPath } = options
  if (searchPath !== undefined && !/^[a-z_][a-z0-9_]*$/.test(searchPath)) {
    throw new Error(`search path: expected a plain lower-case schema name, got "${searchPath}"`)
  }
  await probePostgres(url)
  const pool = new pg.Pool({
    connectionString: url,
    max: POSTGRES_POOL_SIZE,
    ...(searchPath === undefined ? {} : { options: `-c search_path=${searchPath}` }),
    // int8 columns (ids, sequence numbers, millisecond times) as JS numbers: every value the server
    // stores stays far below 2^53.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === PG_INT8_OID && format !== 'binary'
          ? (value: string) => Number(value)
          : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  try {
    await sql`select 1`.execute(db)
  } catch (error) {
    await db.destroy()
    throw describePostgresFailure(error, url)
  }
  return { db, dialect: 'postgres', close: () => db.destroy() }
}
