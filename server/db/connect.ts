/**
 * Opens the database: SQLite through better-sqlite3 (the default) or PostgreSQL through a pg Pool,
 * behind one Kysely query layer, so repositories and migrations are shared.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely'
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
  } catch (error) {
    connection.close()
    throw error
  }
  const checkpointer = startCheckpointer(file, SQLITE_CHECKPOINT_INTERVAL_MS)
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: connection }) })
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

const PG_INT8_OID = 20

async function openPostgres(url: string, options: OpenOptions): Promise<OpenDatabase> {
  const { searchPath } = options
  if (searchPath !== undefined && !/^[a-z_][a-z0-9_]*$/.test(searchPath)) {
    throw new Error(`search path: expected a plain lower-case schema name, got "${searchPath}"`)
  }
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
    throw error
  }
  return { db, dialect: 'postgres', close: () => db.destroy() }
}
