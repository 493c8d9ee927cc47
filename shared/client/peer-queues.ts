/**
 * One queue per contact, so work on a contact's session runs one job at a time: two jobs that both
 * read the session, advance the ratchet and store it would otherwise overwrite each other's state.
 * Jobs for different contacts still run side by side. Each client has its own queues.
 */
export class PeerQueues {
  /** The tail of each contact's queue; dropped once it settles with nothing queued behind it. */
  private readonly tails = new Map<string, Promise<unknown>>()

  /** Resolves once no job is queued or running for any contact (e.g. before the store closes). */
  async idle(): Promise<void> {
    while (this.tails.size > 0) await Promise.all([...this.tails.values()])
  }

  /** Runs `work` after every job queued before it for `peer`, whether those succeeded or failed. */
  run<T>(peer: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(peer) ?? Promise.resolve()
    const result = previous.then(work, work)
    const settled = result.then(
      () => undefined,
      () => undefined,
    )
    this.tails.set(peer, settled)
    void settled.then(() => {
      if (this.tails.get(peer) === settled) this.tails.delete(peer)
    })
    return result
  }
}
