/**
 * Usernames the relay resolves (send recipients, presence subscriptions), cached in memory: users
 * are never renamed or deleted, so a name once found stays right. Names not found are not cached,
 * since they may be registered later; each miss costs one indexed query (sends are rate-limited).
 */
import type { Db } from '../db/schema.js'

export interface DirectoryEntry {
  readonly id: number
  readonly username: string
}

export class UserDirectory {
  private readonly byName = new Map<string, DirectoryEntry>()

  constructor(
    private readonly db: Db,
    private readonly maxEntries: number,
  ) {}

  /** The user with this normalised name, if it is cached. */
  cached(username: string): DirectoryEntry | undefined {
    return this.byName.get(username)
  }

  remember(entry: DirectoryEntry): void {
    if (this.byName.size >= this.maxEntries) this.byName.clear()
    this.byName.set(entry.username, entry)
  }

  /** The users among these normalised names that exist (one query for those not cached). */
  async lookup(usernames: readonly string[]): Promise<Map<string, DirectoryEntry>> {
    const found = new Map<string, DirectoryEntry>()
    const missing: string[] = []
    for (const username of usernames) {
      const entry = this.byName.get(username)
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
