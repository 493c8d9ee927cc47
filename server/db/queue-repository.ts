/** Picks the relay's queue implementation for a database handle. */
import { PostgresAdapter } from 'kysely'
import { sqliteConnectionOf } from './connect.js'
import { KyselyQueueRepository, type QueueLimits, type QueueRepository } from './queue.js'
import { SqliteQueueRepository } from './queue-sqlite.js'
import type { Db, SqlDialect } from './schema.js'

/** The dialect behind a Kysely handle. */
export function dialectOf(db: Db): SqlDialect {
  return db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite'
}

/**
 * On a SQLite handle made by openDatabase (db/connect.ts), the fast path: prepared statements on a
 * worker thread with its own connection to the same file. Kysely otherwise (PostgreSQL, or a SQLite
 * handle made elsewhere). Close the repository before the database.
 */
export function openQueueRepository(db: Db, limits: QueueLimits): QueueRepository {
  const connection = sqliteConnectionOf(db)
  if (connection) return new SqliteQueueRepository(connection.name, limits)
  return new KyselyQueueRepository(db, dialectOf(db), limits)
}
