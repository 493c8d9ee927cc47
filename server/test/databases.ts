/**
 * Real databases for tests: a SQLite file in a fresh temporary directory, and PostgreSQL in a fresh
 * schema (dropped afterwards) at DATABASE_URL_TEST or the CI machine's default. When PostgreSQL is
 * unreachable, the PostgreSQL variants are skipped and the reason is printed, except under CI=true,
 * where they fail instead.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { type OpenDatabase, openDatabase } from '../db/connect.js'
import { migrateToLatest } from '../db/migrate.js'
import type { SqlDialect } from '../db/schema.js'

export const POSTGRES_TEST_URL = process.env.DATABASE_URL_TEST ?? 'postgres://root@127.0.0.1:5432/test'
export const DIALECTS: readonly SqlDialect[] = ['sqlite', 'postgres']

let probe: Promise<string | undefined> | undefined

/** Undefined when PostgreSQL answers; otherwise why not (printed once per test file). */
export function postgresUnavailable(): Promise<string | undefined> {
  probe ??= (async () => {
    const client = new pg.Client({ connectionString: POSTGRES_TEST_URL, connectionTimeoutMillis: 3_000 })
    try {
      await client.connect()
      await client.query('select 1')
      return undefined
    } catch (error) {
      const reason = `PostgreSQL at ${new URL(POSTGRES_TEST_URL).host} is unreachable (${(error as Error).message})`
      // In CI the service is part of the run (.ci/run starts it): its absence is a failure, never a skip.
      if (process.env.CI === 'true') throw new Error(`CI=true: ${reason}; the PostgreSQL tests must run`)
      console.warn(`[skipped] PostgreSQL variants of these tests were skipped: ${reason}`)
      return reason
    } finally {
      await client.end().catch(() => {})
    }
  })()
  return probe
}

export interface TestDatabase extends OpenDatabase {
  /** SQLite: the database file (to reopen it); PostgreSQL: the schema name. */
  readonly location: string
  /** Opens another handle on the same database (a "restart"). */
  reopen(): Promise<OpenDatabase>
  /** Closes every handle and deletes the file or schema. */
  dispose(): Promise<void>
}

export async function createTestDatabase(
  dialect: SqlDialect,
  options: { migrate?: boolean } = {},
): Promise<TestDatabase> {
  const handles: OpenDatabase[] = []
  const track = (handle: OpenDatabase) => {
    handles.push(handle)
    return handle
  }
  const closeAll = async () => {
    for (const handle of handles.splice(0)) await handle.close().catch(() => {})
  }

  if (dialect === 'sqlite') {
    const dir = await mkdtemp(join(tmpdir(), 'secure-chat-db-'))
    const file = join(dir, 'test.sqlite')
    const open = () => openDatabase({ kind: 'sqlite', file }).then(track)
    const first = await open()
    if (options.migrate !== false) await migrateToLatest(first.db, 'sqlite')
    return {
      ...first,
      location: file,
      reopen: open,
      dispose: async () => {
        await closeAll()
        await rm(dir, { recursive: true, force: true })
      },
    }
  }

  const schema = `t_${randomBytes(8).toString('hex')}`
  const admin = new pg.Client({ connectionString: POSTGRES_TEST_URL })
  await admin.connect()
  try {
    await admin.query(`create schema ${schema}`)
  } finally {
    await admin.end()
  }
  const open = () =>
    openDatabase({ kind: 'postgres', url: POSTGRES_TEST_URL }, { searchPath: schema }).then(track)
  const first = await open()
  if (options.migrate !== false) await migrateToLatest(first.db, 'postgres')
  return {
    ...first,
    location: schema,
    reopen: open,
    dispose: async () => {
      await closeAll()
      const cleanup = new pg.Client({ connectionString: POSTGRES_TEST_URL })
      await cleanup.connect()
      try {
        await cleanup.query(`drop schema if exists ${schema} cascade`)
      } finally {
        await cleanup.end()
      }
    },
  }
}
