/** Small helpers every repository shares: composable transactions and constraint-error detection. */
import type { Db } from './schema.js'

/**
 * Runs `work` in a transaction: a new one on a root handle, or the caller's when `db` already is
 * one, so repository functions compose into larger atomic changes.
 */
export function inTransaction<T>(db: Db, work: (trx: Db) => Promise<T>): Promise<T> {
  return db.isTransaction ? work(db) : db.transaction().execute(work)
}

/** True for a UNIQUE or PRIMARY KEY violation from either driver (better-sqlite3 or pg). */
export function isUniqueViolation(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || !('code' in error)) return false
  const { code } = error as { code: unknown }
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505'
}

/**
 * True for a FOREIGN KEY violation from either driver: a row named an account (or another row)
 * that was deleted after it was looked up.
 */
export function isForeignKeyViolation(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || !('code' in error)) return false
  const { code } = error as { code: unknown }
  return code === 'SQLITE_CONSTRAINT_FOREIGNKEY' || code === '23503'
}

/**
 * Takes the per-user write lock: an UPDATE of a non-key column locks the user's row in PostgreSQL
 * (FOR NO KEY UPDATE, which does not block foreign-key checks from other tables) until the
 * transaction ends, so two concurrent uploads for one user cannot both pass a count check. In SQLite
 * every write transaction is already serialised, and the statement is harmless.
 */
export async function lockUser(trx: Db, userId: number): Promise<boolean> {
  const result = await trx
    .updateTable('users')
    .set((eb) => ({ identity_changed_at: eb.ref('identity_changed_at') }))
    .where('id', '=', userId)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}
