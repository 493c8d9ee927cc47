/**
 * Usernames the relay resolves (send recipients, presence subscriptions), cached in memory: users
 * are never renamed, so a name once found stays right until its account is deleted, when the relay
 * forgets it (`forget`, from the `account.deleted` event). Names not found are not cached, since
 * they may be registered later; each miss costs one indexed query (sends are rate-limited), and a
 * send's miss one more to tell a deleted account from a name nobody has (`isDeleted`).
 */
import type { Db } from '../db/schema.js'
import { isUsernameHeld } from '../db/users.js'

export interface DirectoryEntry {
  readonly id: number
  readonly username: string
}

export class UserDirectory {
  private readonly byName = new Map<string, DirectoryEntry>()

  constructor(
    private readonly db: Db,
    private readonly maxEntries: number,
    private readonly now: () => number,
  ) {}

  /** The account with this normalised name was deleted: it must no longer resolve. */
  forget(username: string): void {
    this.byName.delete(username)
  }

  /** True when nobody has the normalised name because its account was deleted (and it is held). */
  isDeleted(username: string): Promise<boolean> {
    return isUsernameHeld(this.db, username, this.now())
  }

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
