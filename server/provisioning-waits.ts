/**
 * The long polls of provisioning channels waiting on this node (routes/provisioning.ts): at most
 * one per channel side, so a client that asks again before its previous read was answered ends
 * that one (it is answered with what there is) instead of piling reads up. A post on this node
 * wakes the side it is for at once; a post through another node is found by the waiting read's
 * own periodic check of the database. What it does not know: the database, the clock, HTTP.
 */

/** One waiting read. */
export class ProvisioningWait {
  #ended = false
  #woken = false
  #resume: (() => void) | undefined

  /** True once the wait should answer with what there is: replaced, timed out, or shutting down. */
  get ended(): boolean {
    return this.#ended
  }

  /** Something changed: check again now. */
  wake(): void {
    this.#woken = true
    this.#resume?.()
  }

  end(): void {
    this.#ended = true
    this.wake()
  }

  /** Resolves when woken or ended, or after `intervalMs` (the next periodic check). */
  next(intervalMs: number): Promise<void> {
    if (this.#woken || this.#ended) {
      this.#woken = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const resume = () => {
        clearTimeout(timer)
        this.#resume = undefined
        this.#woken = false
        resolve()
      }
      const timer = setTimeout(resume, intervalMs)
      this.#resume = resume
    })
  }
}

export class ProvisioningWaits {
  readonly #waiting = new Map<string, ProvisioningWait>()
  #closing = false

  /** A wait for `key` (a channel side), ending the one that waited there before. */
  enter(key: string): ProvisioningWait {
    this.#waiting.get(key)?.end()
    const wait = new ProvisioningWait()
    // Shutting down: answer at once rather than hold the close up for a whole wait.
    if (this.#closing) wait.end()
    else this.#waiting.set(key, wait)
    return wait
  }

  leave(key: string, wait: ProvisioningWait): void {
    if (this.#waiting.get(key) === wait) this.#waiting.delete(key)
  }

  wake(key: string): void {
    this.#waiting.get(key)?.wake()
  }

  /** Ends every wait, and every one that starts from now on (the server is closing). */
  endAll(): void {
    this.#closing = true
    for (const wait of this.#waiting.values()) wait.end()
    this.#waiting.clear()
  }

  get size(): number {
    return this.#waiting.size
  }
}
