/**
 * The relations key on disk (db/relations.ts): 32 random bytes in `<data dir>/relations.key`, mode
 * 0600, made on the first start. It is kept out of the database on purpose: a copy of the database
 * alone then says nothing about who shares presence with or blocked whom. Several server processes
 * on one PostgreSQL database need the same file. A lost file loses the blocks and presence grants
 * (clients share presence again when they next connect, and repeat the blocks they keep).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { RELATIONS_KEY_BYTES, RelationsKey } from './db/relations.js'

export const RELATIONS_KEY_FILE = 'relations.key'

export class RelationsKeyError extends Error {
  override readonly name = 'RelationsKeyError'
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
