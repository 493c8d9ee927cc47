/** A token bucket: `burst` tokens at most, refilled at `perSecond`; the clock is an argument. */
export interface Rate {
  readonly perSecond: number
  readonly burst: number
}

export class TokenBucket {
  private tokens: number
  private updatedAt: number

  constructor(
    private readonly rate: Rate,
    now: number,
  ) {
    this.tokens = rate.burst
    this.updatedAt = now
  }

  /** Takes `cost` tokens if there are that many; false (and nothing taken) otherwise. */
  take(now: number, cost = 1): boolean {
    if (now > this.updatedAt) {
      this.tokens = Math.min(
        this.rate.burst,
        this.tokens + ((now - this.updatedAt) * this.rate.perSecond) / 1000,
      )
      this.updatedAt = now
    }
    if (this.tokens < cost) return false
    this.tokens -= cost
    return true
  }

  /** True when the bucket has refilled completely by `now`: forgetting it then changes nothing. */
  isFull(now: number): boolean {
    const elapsed = Math.max(0, now - this.updatedAt)
    return this.tokens + (elapsed * this.rate.perSecond) / 1000 >= this.rate.burst
  }
}
