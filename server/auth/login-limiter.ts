/**
 * Counts failed log-ins in memory so that guessing is slow for attackers while users get in.
 *
 * An attempt from an unknown device (no device proof, see device-proof.ts) is checked, in order:
 *   - per address (an IPv6 /64, client-address.ts), across accounts: a hard refusal beyond
 *     `failuresPerAddress`, against one address spraying a common password over many names;
 *   - per (account, address): a hard refusal beyond `failuresPerAccountAddress`, which shuts out
 *     only the guesser's own address, never the user's;
 *   - per account, across addresses: beyond `accountDelayAfter` failures each attempt waits a
 *     delay after the last failure that doubles with every failure (capped): slowed, not locked.
 *     Reinstall, which replaces the keys with the password alone, and account deletion, which
 *     destroys the account, keep the strict limit instead:
 *     refused beyond `failuresPerAccount` until the failures stop for a window.
 * An attempt from a device that proved it holds the account's login key skips all of these: only
 * its own failures count (`failuresPerDevice`), which nobody else can add to.
 *
 * In memory rather than in the database: failures then cost no disk writes (a password-spraying
 * attacker cannot turn them into write load), and the counters are only a brake, not a record.
 * The price: a restart forgets them. Nodes of a cluster count together in Redis instead
 * (redis-login-limiter.ts), with the same rules. Entries are bounded (LOGIN_LIMITER_MAX_ENTRIES).
 *
 * Accounts are keyed by the normalised name whether or not the user exists, so a refusal says
 * nothing about existence.
 */
export interface LoginLimits {
  readonly failuresPerAddress: number
  readonly failuresPerAccountAddress: number
  readonly failuresPerAccount: number
  readonly accountDelayAfter: number
  readonly accountDelayBaseMs: number
  readonly accountDelayMaxMs: number
  readonly failuresPerDevice: number
  readonly windowMs: number
  readonly maxEntries: number
}

interface Counter {
  count: number
  windowEnds: number
  /** Per-account counters: when an unknown device may try next (0: no wait). */
  nextAttemptAt: number
}

export type LimitScope = 'address' | 'account-address' | 'account' | 'device'

export type LimitDecision = { allowed: true } | { allowed: false; retryAfterMs: number; scope: LimitScope }

export interface LoginAttempt {
  /** The normalised username (or a key for an invalid one). */
  readonly account: string
  /** The client's address key (client-address.ts `addressKey`). */
  readonly address: string
  /** Reinstall and account deletion act on the password alone and keep the strict per-account limit. */
  readonly kind: 'login' | 'reinstall' | 'delete'
  /** The request carried a valid proof of the account's login key. */
  readonly knownDevice: boolean
}

/**
 * What the routes ask of a limiter: LoginLimiter answers at once from memory, RedisLoginLimiter
 * (redis-login-limiter.ts) for a whole cluster, later.
 */
export interface LoginLimiting {
  attempt(attempt: LoginAttempt): LimitDecision | Promise<LimitDecision>
  succeeded(attempt: LoginAttempt): void | Promise<void>
  released(attempt: LoginAttempt): void | Promise<void>
}

export class LoginLimiter implements LoginLimiting {
  private readonly counters = new Map<string, Counter>()

  constructor(
    private readonly limits: LoginLimits,
    private readonly now: () => number,
  ) {}

  /**
   * Decides whether an attempt may proceed and, if so, counts it as a failure right away: the
   * password check takes a while (bcrypt), and counting only afterwards would let a burst of
   * parallel attempts all pass the check before any failure was recorded. `succeeded` takes the
   * count back.
   */
  attempt(attempt: LoginAttempt): LimitDecision {
    const now = this.now()
    if (attempt.knownDevice) {
      const device = this.live(deviceKey(attempt), now)
      if (device && device.count >= this.limits.failuresPerDevice) {
        return { allowed: false, retryAfterMs: device.windowEnds - now, scope: 'device' }
      }
      this.bump(deviceKey(attempt), now)
      return { allowed: true }
    }
    const byAddress = this.live(addressKeyOf(attempt), now)
    if (byAddress && byAddress.count >= this.limits.failuresPerAddress) {
      return { allowed: false, retryAfterMs: byAddress.windowEnds - now, scope: 'address' }
    }
    const byPair = this.live(pairKey(attempt), now)
    if (byPair && byPair.count >= this.limits.failuresPerAccountAddress) {
      return { allowed: false, retryAfterMs: byPair.windowEnds - now, scope: 'account-address' }
    }
    const byAccount = this.live(accountKey(attempt), now)
    if (byAccount) {
      if (attempt.kind !== 'login' && byAccount.count >= this.limits.failuresPerAccount) {
        return { allowed: false, retryAfterMs: byAccount.windowEnds - now, scope: 'account' }
      }
      if (byAccount.nextAttemptAt > now) {
        return { allowed: false, retryAfterMs: byAccount.nextAttemptAt - now, scope: 'account' }
      }
    }
    this.bump(addressKeyOf(attempt), now)
    this.bump(pairKey(attempt), now)
    // The account's count lasts while failures keep coming, so a steady attack stays slowed.
    const account = this.bump(accountKey(attempt), now, true)
    account.nextAttemptAt = now + this.delay(account.count)
    return { allowed: true }
  }

  /**
   * The attempt was right: the attempt counted in advance is taken back, and the failures at this
   * address for this account (the user's own typos) or of this device are cleared. The account's
   * count stays: a user getting in does not end an attack on the account.
   */
  succeeded(attempt: LoginAttempt): void {
    const now = this.now()
    if (attempt.knownDevice) {
      this.counters.delete(deviceKey(attempt))
      return
    }
    this.counters.delete(pairKey(attempt))
    const byAddress = this.live(addressKeyOf(attempt), now)
    if (byAddress) byAddress.count = Math.max(0, byAddress.count - 1)
    const account = this.live(accountKey(attempt), now)
    if (account) {
      account.count = Math.max(0, account.count - 1)
      // Below the threshold again: the wait this attempt set is lifted; during an attack it stays.
      if (account.count < this.limits.accountDelayAfter) account.nextAttemptAt = 0
    }
  }

  /**
   * The attempt was neither right nor wrong (the server asked for another form of the credential
   * before checking it): only the count taken in advance is given back, nothing is cleared.
   */
  released(attempt: LoginAttempt): void {
    const now = this.now()
    const keys = attempt.knownDevice
      ? [deviceKey(attempt)]
      : [addressKeyOf(attempt), pairKey(attempt), accountKey(attempt)]
    for (const key of keys) {
      const counter = this.live(key, now)
      if (counter) counter.count = Math.max(0, counter.count - 1)
    }
  }

  get size(): number {
    return this.counters.size
  }

  /** The wait after the `count`th failure: none up to accountDelayAfter, then doubling, capped. */
  private delay(count: number): number {
    if (count < this.limits.accountDelayAfter) return 0
    const steps = Math.min(count - this.limits.accountDelayAfter, 30)
    return Math.min(this.limits.accountDelayBaseMs * 2 ** steps, this.limits.accountDelayMaxMs)
  }

  private live(key: string, now: number): Counter | undefined {
    const counter = this.counters.get(key)
    if (counter && counter.windowEnds <= now) {
      this.counters.delete(key)
      return undefined
    }
    return counter
  }

  private bump(key: string, now: number, sliding = false): Counter {
    const counter = this.live(key, now)
    if (counter) {
      counter.count += 1
      if (sliding) counter.windowEnds = now + this.limits.windowMs
      return counter
    }
    if (this.counters.size >= this.limits.maxEntries) this.evict(now)
    const created = { count: 1, windowEnds: now + this.limits.windowMs, nextAttemptAt: 0 }
    this.counters.set(key, created)
    return created
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

// A NUL never occurs in an address key, so (address, account) pairs cannot collide.
const addressKeyOf = (attempt: LoginAttempt) => `ip:${attempt.address}`
const pairKey = (attempt: LoginAttempt) => `pair:${attempt.address}\u0000${attempt.account}`
const accountKey = (attempt: LoginAttempt) => `user:${attempt.account}`
const deviceKey = (attempt: LoginAttempt) => `device:${attempt.account}`
