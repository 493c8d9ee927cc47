/**
 * Group commit: every send and acknowledgement that arrives within one turn of the event loop goes
 * into one database transaction (so one fsync), flushed from a setImmediate callback, after all the
 * socket reads of that turn. While a transaction runs, new work gathers for the next one, so there
 * is never more than one in flight and the batches grow with the load. Nobody is told "accepted"
 * before the transaction holding their message has committed.
 *
 * A batch may first be screened (`screen`): sends it marks are left out of the transaction and come
 * back as `dropped` (the relay drops sends from a user the recipient blocked).
 */
import type { NewMessage, QueueRepository, SendOutcome } from '../db/queue.js'

export interface PendingSend<Origin> {
  readonly message: NewMessage
  /** Whatever the caller needs to answer this send once it is committed. */
  readonly origin: Origin
}

/** A send's outcome: the queue's, or `dropped` when the screen left it out of the batch. */
export type RelayOutcome = SendOutcome | { readonly kind: 'dropped' }

export interface GroupCommitHandlers<Origin> {
  /** Called with every send of a committed batch and its outcome, in order. */
  committed(sends: readonly PendingSend<Origin>[], outcomes: readonly RelayOutcome[]): void
  /** Called when a batch failed and nothing of it was stored. */
  failed(sends: readonly PendingSend<Origin>[], error: unknown): void
  /** For each send of a batch, true to leave it out (it is neither stored nor counted). */
  screen?(messages: readonly NewMessage[]): Promise<readonly boolean[]>
}

export class GroupCommit<Origin> {
  private sends: PendingSend<Origin>[] = []
  private acks = new Map<number, number>()
  private scheduled = false
  private running: Promise<void> | undefined

  constructor(
    private readonly queue: QueueRepository,
    private readonly handlers: GroupCommitHandlers<Origin>,
    private readonly now: () => number,
  ) {}

  send(pending: PendingSend<Origin>): void {
    this.sends.push(pending)
    this.schedule()
  }

  /** A cumulative acknowledgement: the recipient's messages up to `upTo` leave the queue. */
  ack(recipientId: number, upTo: number): void {
    const previous = this.acks.get(recipientId)
    if (previous === undefined || upTo > previous) this.acks.set(recipientId, upTo)
    this.schedule()
  }

  /** Resolves once everything handed over so far is committed (or has failed). */
  async idle(): Promise<void> {
    while (this.running || this.sends.length > 0 || this.acks.size > 0) {
      if (!this.running) this.flush()
      await this.running
    }
  }

  private schedule(): void {
    if (this.scheduled || this.running) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      if (!this.running) this.flush()
    })
  }

  private async commitBatch(
    sends: readonly PendingSend<Origin>[],
    acks: ReadonlyMap<number, number>,
  ): Promise<RelayOutcome[]> {
    const messages = sends.map((pending) => pending.message)
    const dropped = this.handlers.screen && messages.length > 0 ? await this.handlers.screen(messages) : []
    const kept = messages.filter((_, index) => !dropped[index])
    const outcomes = await this.queue.commit({ sends: kept, acks, now: this.now() })
    let next = 0
    return messages.map((_, index) => (dropped[index] ? { kind: 'dropped' as const } : outcomes[next++]!))
  }

  private flush(): void {
    if (this.sends.length === 0 && this.acks.size === 0) return
    const sends = this.sends
    const acks = this.acks
    this.sends = []
    this.acks = new Map()
    this.running = this.commitBatch(sends, acks)
      .then(
        (outcomes) => this.handlers.committed(sends, outcomes),
        (error: unknown) => this.handlers.failed(sends, error),
      )
      // A handler that throws must not leave a rejected promise behind: report it, sends already
      // answered or not, and carry on with the next batch.
      .catch((error: unknown) => this.handlers.failed([], error))
      .finally(() => {
        this.running = undefined
        // Work that arrived during this transaction goes into the next one at once.
        if (this.sends.length > 0 || this.acks.size > 0) this.flush()
      })
  }
}
