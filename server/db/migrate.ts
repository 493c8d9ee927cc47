/**
 * Schema migrations through Kysely's Migrator with an inline provider: every migration is imported
 * here by name (FileMigrationProvider cannot load .ts files under vitest), in date order.
 *
 * Before migrating, the database's own record is compared with this list: a database that has run
 * a migration this code does not know was written by a newer server, and opening it could corrupt
 * data, so the server refuses with MigrationError instead.
 *
 * Transactions: PostgreSQL runs all pending migrations in one transaction (Kysely does this where
 * DDL is transactional). Kysely runs SQLite migrations without one, so each SQLite migration is
 * wrapped in its own transaction here; only the bookkeeping row Kysely writes afterwards lies
 * outside it.
 */
import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from 'kysely'
import * as initial from './migrations/2026-11-26-01-initial.js'
import * as messageTombstones from './migrations/2026-11-26-02-message-tombstones.js'
import * as messageIdFirst from './migrations/2026-11-26-03-message-id-first.js'
import * as messageMetadata from './migrations/2026-12-02-01-message-metadata.js'
import * as loginSecret from './migrations/2026-12-03-01-login-secret.js'
import * as oneTimePreKeyClaims from './migrations/2026-12-03-02-one-time-prekey-claims.js'
import * as relations from './migrations/2026-12-03-03-relations.js'
import * as deletedUsernames from './migrations/2026-12-03-04-deleted-usernames.js'
import * as uniqueIdentityKeys from './migrations/2026-12-03-05-unique-identity-keys.js'
import * as keyChecks from './migrations/2026-12-03-06-key-checks.js'
import * as endedTokens from './migrations/2026-12-03-07-ended-tokens.js'
import * as devices from './migrations/2026-12-03-08-devices.js'
import * as provisioningChannels from './migrations/2026-12-03-09-provisioning-channels.js'
import * as provisioningClosedBy from './migrations/2026-12-06-01-provisioning-closed-by.js'
import type { SqlDialect } from './schema.js'

interface DialectMigration {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and take Kysely<any>
  up(db: Kysely<any>, dialect: SqlDialect): Promise<void>
  // biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and take Kysely<any>
  down?(db: Kysely<any>, dialect: SqlDialect): Promise<void>
}

/** Every migration, by name. Names sort in the order they run (date prefix). */
export const MIGRATIONS: Readonly<Record<string, DialectMigration>> = {
  '2026-11-26-01-initial': initial,
  '2026-11-26-02-message-tombstones': messageTombstones,
  '2026-11-26-03-message-id-first': messageIdFirst,
  '2026-12-02-01-message-metadata': messageMetadata,
  '2026-12-03-01-login-secret': loginSecret,
  '2026-12-03-02-one-time-prekey-claims': oneTimePreKeyClaims,
  '2026-12-03-03-relations': relations,
  '2026-12-03-04-deleted-usernames': deletedUsernames,
  '2026-12-03-05-unique-identity-keys': uniqueIdentityKeys,
  '2026-12-03-06-key-checks': keyChecks,
  '2026-12-03-07-ended-tokens': endedTokens,
  '2026-12-03-08-devices': devices,
  '2026-12-03-09-provisioning-channels': provisioningChannels,
  '2026-12-06-01-provisioning-closed-by': provisioningClosedBy,
}

export const MIGRATION_TABLE = 'kysely_migration'
export const MIGRATION_LOCK_TABLE = 'kysely_migration_lock'

export class MigrationError extends Error {
  override readonly name = 'MigrationError'
}

class InlineMigrationProvider implements MigrationProvider {
  constructor(private readonly dialect: SqlDialect) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const out: Record<string, Migration> = {}
    for (const [name, migration] of Object.entries(MIGRATIONS)) {
      const wrap =
        // biome-ignore lint/suspicious/noExplicitAny: see DialectMigration
          (step: (db: Kysely<any>, dialect: SqlDialect) => Promise<void>) =>
          // biome-ignore lint/suspicious/noExplicitAny: see DialectMigration
          async (db: Kysely<any>) => {
            if (this.dialect === 'sqlite') await db.transaction().execute((trx) => step(trx, this.dialect))
            else await step(db, this.dialect)
          }
      out[name] = { up: wrap(migration.up), ...(migration.down ? { down: wrap(migration.down) } : {}) }
    }
    return out
  }
}

/**
 * PostgreSQL: the schema that holds Kysely's bookkeeping tables, named explicitly. Left unnamed,
 * Kysely looks for its table in every schema of the database and may find another one's.
 */
async function migrationSchema<DB>(db: Kysely<DB>, dialect: SqlDialect): Promise<string | undefined> {
  if (dialect === 'sqlite') return undefined
  const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(db)
  const schema = rows[0]?.schema
  if (!schema)
    throw new MigrationError('database schema: expected a current schema on the search_path, got none')
  return schema
}

async function migratorFor<DB>(db: Kysely<DB>, dialect: SqlDialect): Promise<Migrator> {
  const schema = await migrationSchema(db, dialect)
  return new Migrator({
    db,
    provider: new InlineMigrationProvider(dialect),
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
    ...(schema === undefined ? {} : { migrationTableSchema: schema }),
  })
}

/** Names of the migrations this database has run, oldest first. */
export async function appliedMigrations<DB>(db: Kysely<DB>, dialect: SqlDialect): Promise<string[]> {
  const schema = await migrationSchema(db, dialect)
  const tables = await db.introspection.getTables({ withInternalKyselyTables: true })
  const exists = tables.some(
    (table) => table.name === MIGRATION_TABLE && (schema === undefined || table.schema === schema),
  )
  if (!exists) return []
  const table = schema === undefined ? sql.table(MIGRATION_TABLE) : sql.table(`${schema}.${MIGRATION_TABLE}`)
  const { rows } = await sql<{ name: string }>`select name from ${table} order by name`.execute(db)
  return rows.map((row) => row.name)
}

/**
 * Brings the schema up to date. Returns the names of the migrations it ran. Throws MigrationError for
 * a database from the future or when a migration fails (the failed one is named).
 */
export async function migrateToLatest<DB>(db: Kysely<DB>, dialect: SqlDialect): Promise<string[]> {
  const applied = await appliedMigrations(db, dialect)
  const unknown = applied.filter((name) => !Object.hasOwn(MIGRATIONS, name))
  if (unknown.length > 0) {
    const known = Object.keys(MIGRATIONS).sort()
    throw new MigrationError(
      `database schema: expected migrations up to "${known.at(-1)}", got unknown migration(s) ${unknown
        .map((name) => `"${name}"`)
        .join(', ')}: this database was written by a newer server. Run that version, or restore a backup.`,
    )
  }
  const { error, results } = await (await migratorFor(db, dialect)).migrateToLatest()
  if (error) {
    const failed = results?.find((result) => result.status === 'Error')?.migrationName ?? 'unknown'
    throw new MigrationError(`database schema: migration "${failed}" failed: ${(error as Error).message}`, {
      cause: error,
    })
  }
  return (results ?? []).filter((result) => result.status === 'Success').map((result) => result.migrationName)
}

/** Migrates up or down to exactly the named migration (tests use it to write older layouts). */
export async function migrateTo<DB>(db: Kysely<DB>, dialect: SqlDialect, name: string): Promise<void> {
  const { error } = await (await migratorFor(db, dialect)).migrateTo(name)
  if (error)
    throw new MigrationError(`database schema: migrating to "${name}" failed: ${(error as Error).message}`)
}

/** Reverts the newest migration (tests use it to check each migration's down step). */
export async function migrateDown<DB>(db: Kysely<DB>, dialect: SqlDialect): Promise<void> {
  const { error } = await (await migratorFor(db, dialect)).migrateDown()
  if (error) throw new MigrationError(`database schema: migrating down failed: ${(error as Error).message}`)
}
