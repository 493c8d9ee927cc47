/**
 * Usernames the relay resolves (send recipients, presence subscriptions), cached in memory: users
 * are never renamed, so a name once found stays right until its account is deleted, when the relay
 * forgets it (`forget`, from the `account.deleted` event). Names not found are not cached, since
 * they may be registered later; each miss costs one indexed query (sends are rate-limited), and a
 * send's miss one more to tell a deleted account from a name nobody has (`isDeleted`).
 *
 * In a cluster the `account.deleted` event may be lost, so entries are trusted for `entryTtlMs`
 * only (DIRECTORY_CLUSTER_ENTRY_TTL_MS), and a send the database refuses because its recipient is
 * gone (group-commit.ts `sendFailure`) makes the relay forget that id at once (`forgetId`).
 */
import type { Db } from '../db/schema.js'
import { isUsernameHeld } from '../db/users.js'

export interface DirectoryEntry {
  readonly id: number
  readonly username: string
}

interface CachedEntry extends DirectoryEntry {
  /** When it was read (the clock's milliseconds). */
  readonly cachedAt: number
}

export class UserDirectory {
  private readonly byName = new Map<string, CachedEntry>()

  /** `entryTtlMs`: how long an entry is trusted; default for ever (a single node hears every deletion). */
  constructor(
    private readonly db: Db,
    private readonly maxEntries: number,
    private readonly now: () => number,
    private readonly entryTtlMs: number = Number.POSITIVE_INFINITY,
  ) {}

  /** The account with this normalised name was deleted: it must no longer resolve. */
  forget(username: string): void {
    this.byName.delete(username)
  }

  /** The account with this id was found deleted (a refused send): it must no longer resolve. */
  forgetId(id: number): void {
    for (const [username, entry] of this.byName) {
      if (entry.id === id) this.byName.delete(username)
    }
  }

  /** True when nobody has the normalised name because its account was deleted (and it is held). */
  isDeleted(username: string): Promise<boolean> {
    return isUsernameHeld(this.db, username, this.now())
  }

  /** The user with this normalised name, if it is cached. */
  cached(username: string): DirectoryEntry | undefined {
    const entry = this.byName.get(username)
    if (!entry) return undefined
    if (this.now() - entry.cachedAt >= this.entryTtlMs) {
      this.byName.delete(username)
      return undefined
    }
    return { id: entry.id, username: entry.username }
  }

  remember(entry: DirectoryEntry): void {
    if (this.byName.size >= this.maxEntries) this.byName.clear()
    this.byName.set(entry.username, { id: entry.id, username: entry.username, cachedAt: this.now() })
  }

  /** The users among these normalised names that exist (one query for those not cached). */
  async lookup(usernames: readonly string[]): Promise<Map<string, DirectoryEntry>> {
    const found = new Map<string, DirectoryEntry>()
    const missing: string[] = []
    for (const username of usernames) {
      const entry = this.cached(username)
      if (entry) found.set(username, entry)
      else missing.push(username)
    }
    if (missing.length > 0) {
      const rows = await this.db
        .selectFrom('users')
        .select(['id', 'username'])
        .where('username', 'in', missing)
        .execute()
      for (const row of rows) {
        const entry = { id: row.id, username: row.username }
        this.remember(entry)
        found.set(row.username, entry)
      }
    }
    return found
  }
}
