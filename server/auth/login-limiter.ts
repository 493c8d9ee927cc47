/**
 * Counts failed logins per account and per client address in fixed windows, in memory.
 *
 * In memory rather than in the database: failures then cost no disk writes (a password-spraying
 * attacker cannot turn them into write load), and the counters are only a brake, not a record.
 * The price: a restart forgets them, and with several server processes each keeps its own counts
 * (an attacker gets the allowance once per process). Entries are bounded (LOGIN_LIMITER_MAX_ENTRIES).
 *
 * Accounts are keyed by the normalised name whether or not the user exists, so a lockout says
 * nothing about existence. A locked account is refused before any password check, so the correct
 * password does not get through a lockout either.
 */
export interface LoginLimits {
  readonly failuresPerAccount: number
  readonly failuresPerAddress: number
  readonly windowMs: number
  readonly maxEntries: number
}

interface Counter {
  count: number
  windowEnds: number
}

export type LimitDecision =
  | { allowed: true }
  | { allowed: false; retryAfterMs: number; scope: 'account' | 'address' }

export class LoginLimiter {
  private readonly counters = new Map<string, Counter>()

  constructor(
    private readonly limits: LoginLimits,
    private readonly now: () => number,
  ) {}

  /**
   * Decides whether a login attempt may proceed and, if so, counts it as a failure right away:
   * the password check takes a while (bcrypt), and counting only afterwards would let a burst of
   * parallel attempts all pass the check before any failure was recorded. `succeeded` takes the
   * count back.
   */
  attempt(account: string, address: string): LimitDecision {
    const now = this.now()
    const byAddress = this.live(`ip:${address}`, now)
    if (byAddress && byAddress.count >= this.limits.failuresPerAddress) {
      return { allowed: false, retryAfterMs: byAddress.windowEnds - now, scope: 'address' }
    }
    const byAccount = this.live(`user:${account}`, now)
    if (byAccount && byAccount.count >= this.limits.failuresPerAccount) {
      return { allowed: false, retryAfterMs: byAccount.windowEnds - now, scope: 'account' }
    }
    this.bump(`user:${account}`, now)
    this.bump(`ip:${address}`, now)
    return { allowed: true }
  }

  /**
   * The attempt was right: the account's failures are cleared (only the password's holder can do
   * that) and the address gets back the one attempt counted in advance.
   */
  succeeded(account: string, address: string): void {
    this.counters.delete(`user:${account}`)
    const byAddress = this.live(`ip:${address}`, this.now())
    if (byAddress) byAddress.count = Math.max(0, byAddress.count - 1)
  }

  get size(): number {
    return this.counters.size
  }

  private live(key: string, now: number): Counter | undefined {
    const counter = this.counters.get(key)
    if (counter && counter.windowEnds <= now) {
      this.counters.delete(key)
      return undefined
    }
    return counter
  }

  private bump(key: string, now: number): void {
    const counter = this.live(key, now)
    if (counter) {
      counter.count += 1
      return
    }
    if (this.counters.size >= this.limits.maxEntries) this.evict(now)
    this.counters.set(key, { count: 1, windowEnds: now + this.limits.windowMs })
  }

  /** Drops expired counters; if none were, the oldest (Map order is insertion order). */
  private evict(now: number): void {
    for (const [key, counter] of this.counters) {
      if (counter.windowEnds <= now) this.counters.delete(key)
    }
    if (this.counters.size < this.limits.maxEntries) return
    const oldest = this.counters.keys().next()
    if (!oldest.done) this.counters.delete(oldest.value)
  }
}
