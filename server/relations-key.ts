/**
 * The relations key on disk (db/relations.ts): 32 random bytes in `<data dir>/relations.key`, mode
 * 0600, made on the first start. It is kept out of the database on purpose: a copy of the database
 * alone then says nothing about who shares presence with or blocked whom. Several server processes
 * on one PostgreSQL database need the same file. A lost file loses the blocks and presence grants
 * (clients share presence again when they next connect, and repeat the blocks they keep), once
 * the operator says so (below).
 *
 * The database keeps a check value of the key (`bindRelationsKey`, table key_checks), recorded by
 * the first node that starts on it: a node whose file is another key (not copied to it, lost, or
 * restored from another backup than the database) refuses to start and says what to do, instead of
 * quietly writing relations nobody else can read and missing the ones they wrote. Only
 * `--replace-relations-key`, given once by hand, puts a new key in place; the relations stored
 * under the old one are unreadable then and are deleted with it.
 */
import { timingSafeEqual } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { RELATIONS_KEY_BYTES, RelationsKey } from './db/relations.js'
import type { Db } from './db/schema.js'

export const RELATIONS_KEY_FILE = 'relations.key'

export class RelationsKeyError extends Error {
  override readonly name = 'RelationsKeyError'
}

/** The key_checks row of the relations key. */
export const RELATIONS_KEY_CHECK_NAME = 'relations'
/** What the check value is derived for (RelationsKey.deriveKey): nothing else uses this purpose. */
const CHECK_PURPOSE = 'key check'

/** How the key and the database stand after `bindRelationsKey`. */
export type RelationsKeyBinding =
  /** The database had no check yet (a new database, or one from before checks): this key's is recorded. */
  | { readonly kind: 'recorded' }
  /** The key is the one the database was set up with. */
  | { readonly kind: 'matched' }
  /** `replace` was given and the key differed: the old relations are gone, this key's check recorded. */
  | { readonly kind: 'replaced'; readonly relationsDeleted: number }

/** The first characters of a check value, enough for an operator to tell two keys apart. */
const shortCheck = (value: Uint8Array) => Buffer.from(value).toString('hex').slice(0, 12)

/**
 * Ties the key to the database: records its check value if the database has none, or compares
 * with the one it has. A different key throws RelationsKeyError naming both checks and the way
 * out, unless `replace` (then the relations stored under the old key are deleted, since no node
 * could read them any more, and this key's check takes the old one's place).
 */
export async function bindRelationsKey(
  db: Db,
  key: RelationsKey,
  options: { readonly file: string; readonly replace: boolean; readonly now: number },
): Promise<RelationsKeyBinding> {
  const check = key.deriveKey(CHECK_PURPOSE)
  return db.transaction().execute(async (trx) => {
    // Two nodes starting at once on a new database: one insert wins, the other compares with it.
    const inserted = await trx
      .insertInto('key_checks')
      .values({ name: RELATIONS_KEY_CHECK_NAME, check_value: check, recorded_at: options.now })
      .onConflict((conflict) => conflict.column('name').doNothing())
      .executeTakeFirst()
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) return { kind: 'recorded' as const }
    const stored = await trx
      .selectFrom('key_checks')
      .select('check_value')
      .where('name', '=', RELATIONS_KEY_CHECK_NAME)
      .executeTakeFirstOrThrow()
    const recorded = new Uint8Array(stored.check_value)
    if (recorded.length === check.length && timingSafeEqual(recorded, check)) {
      return { kind: 'matched' as const }
    }
    if (!options.replace) {
      throw new RelationsKeyError(
        `${options.file}: expected the relations key this database was set up with (check ${shortCheck(recorded)}…), ` +
          `got another (check ${shortCheck(check)}…). Copy relations.key from a node that serves this database, ` +
          'or restore the one backed up with it, and start again; to start over without the blocks and presence ' +
          'grants stored under the other key, start this node once with --replace-relations-key',
      )
    }
    const deleted = await trx.deleteFrom('relations').executeTakeFirst()
    await trx
      .updateTable('key_checks')
      .set({ check_value: check, recorded_at: options.now })
      .where('name', '=', RELATIONS_KEY_CHECK_NAME)
      .execute()
    return { kind: 'replaced' as const, relationsDeleted: Number(deleted.numDeletedRows) }
  })
}

export async function loadRelationsKey(dataDir: string): Promise<{ key: RelationsKey; created: boolean }> {
  const file = join(dataDir, RELATIONS_KEY_FILE)
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    await mkdir(dataDir, { recursive: true })
    const key = RelationsKey.random()
    // 'wx': never overwrite a key another process has just written.
    await writeFile(file, key.exportForFile(), { mode: 0o600, flag: 'wx' }).catch(async (cause: unknown) => {
      if ((cause as NodeJS.ErrnoException).code !== 'EEXIST') throw cause
    })
    return { key: new RelationsKey(await readFile(file)), created: true }
  }
  if (bytes.length !== RELATIONS_KEY_BYTES) {
    throw new RelationsKeyError(
      `${file}: expected ${RELATIONS_KEY_BYTES} bytes, got ${bytes.length}; restore it from a backup, or delete it to start without blocks and presence grants`,
    )
  }
  return { key: new RelationsKey(bytes), created: false }
}
