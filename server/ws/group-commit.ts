/**
 * Group commit: every send and acknowledgement that arrives within one turn of the event loop goes
 * into one database transaction (so one fsync), flushed from a setImmediate callback, after all the
 * socket reads of that turn. While a transaction runs, new work gathers for the next one, so there
 * is never more than one in flight and the batches grow with the load. Nobody is told "accepted"
 * before the transaction holding their message has committed.
 *
 * A send is one message to one or several devices (`messages`: one queue row each), stored all or
 * none: a batch that fails is retried in parts, but never splits a send, and a refusal of one of
 * its rows refuses all of them (QueueBatch.groups).
 *
 * A batch may first be checked (`checkDevices`): a send whose device lists differ from the
 * accounts' devices is left out and comes back as a `mismatch`. It may then be screened
 * (`screen`): rows it marks are left out of the transaction and come back as `dropped` (the relay
 * drops sends from a user the recipient blocked).
 */
import {
  type NewMessage,
  type QueueAck,
  type QueueRepository,
  queueKey,
  type SendOutcome,
} from '../db/queue.js'
import { isForeignKeyViolation } from '../db/transaction.js'
import { ServerErrorCode } from '../errors.js'

/** Which devices a send names, to compare with the accounts' devices before it is stored. */
export interface DeviceListCheck {
  readonly senderId: number
  readonly senderDevice: number
  readonly recipientId: number
  /** The recipient's devices the send has a row for (the sender's other ones when it is to itself). */
  readonly recipientDevices: readonly number[]
  /** The sender's other devices the send has a sent copy for. */
  readonly ownDevices: readonly number[]
}

/** How a send's device lists differ from the accounts' devices; nothing of it was stored. */
export interface DeviceMismatch {
  readonly kind: 'mismatch'
  readonly recipient: DeviceListDifference
  readonly own: DeviceListDifference
}

export interface DeviceListDifference {
  readonly missing: readonly number[]
  readonly extra: readonly number[]
  readonly stale: readonly number[]
}

export interface PendingSend<Origin> {
  /** One row per destination device, stored all or none, in this order. */
  readonly messages: readonly NewMessage[]
  /** Compared with the accounts' devices first, when the send names its devices. */
  readonly devices?: DeviceListCheck
  /** Whatever the caller needs to answer this send once it is committed. */
  readonly origin: Origin
}

/** A row's outcome: the queue's, or `dropped` when the screen left it out of the batch. */
export type RelayOutcome = SendOutcome | { readonly kind: 'dropped' }
const DROPPED: RelayOutcome = { kind: 'dropped' }

/** A send's outcome: one per row, or the mismatch that kept all of them out. */
export type SendResult = readonly RelayOutcome[] | DeviceMismatch

/** What the sender of a failed send is told, and whether the failure is the server's own. */
export interface SendFailure {
  readonly code: ServerErrorCode
  readonly message: string
  /** False for a failure the server expects now and then (nothing to log as an error). */
  readonly internal: boolean
}

/**
 * The answer to a send whose transaction failed. A send narrowed down to alone that still breaks a
 * foreign key names an account deleted between the relay's name lookup and the commit (a sender's
 * own deletion closes its sockets): the recipient is gone, as a send after the deletion is told.
 * Anything else is the server's failure, and the message may be sent again.
 */
export function sendFailure(error: unknown): SendFailure {
  if (isForeignKeyViolation(error)) {
    return {
      code: ServerErrorCode.AccountDeleted,
      message: 'expected a registered recipient, got an account deleted while the message was on its way',
      internal: false,
    }
  }
  return {
    code: ServerErrorCode.Internal,
    message: 'expected to store the message, got an internal error; retry',
    internal: true,
  }
}

export interface GroupCommitHandlers<Origin> {
  /** Called with every send of a committed batch and its outcome, in order. */
  committed(sends: readonly PendingSend<Origin>[], outcomes: readonly SendResult[]): void
  /** Called when a batch failed and nothing of it was stored. */
  failed(sends: readonly PendingSend<Origin>[], error: unknown): void
  /** For each row of a batch, true to leave it out (it is neither stored nor counted). */
  screen?(messages: readonly NewMessage[]): Promise<readonly boolean[]>
  /** For each check, how the send's device lists differ from the accounts' devices, if they do. */
  checkDevices?(checks: readonly DeviceListCheck[]): Promise<readonly (DeviceMismatch | undefined)[]>
}

export class GroupCommit<Origin> {
  private sends: PendingSend<Origin>[] = []
  /** Per device queue (`queueKey`), the highest acknowledgement not yet committed. */
  private acks = new Map<string, QueueAck>()
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
  ack(recipientId: number, recipientDevice: number, upTo: number): void {
    const key = queueKey(recipientId, recipientDevice)
    const previous = this.acks.get(key)
    if (previous === undefined || upTo > previous.upTo)
      this.acks.set(key, { recipientId, recipientDevice, upTo })
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
    acks: readonly QueueAck[],
  ): Promise<SendResult[]> {
    // The common batch (every send one row, no device list: `send` frames) takes the short way.
    if (sends.every((pending) => pending.messages.length === 1 && pending.devices === undefined)) {
      return this.commitSingleRows(sends, acks)
    }
    const results: (SendResult | undefined)[] = new Array(sends.length)
    const checked = sends.flatMap((pending, index) => (pending.devices ? [index] : []))
    if (checked.length > 0 && this.handlers.checkDevices) {
      const mismatches = await this.handlers.checkDevices(checked.map((index) => sends[index]!.devices!))
      for (const [at, index] of checked.entries()) results[index] = mismatches[at]
    }
    const messages: NewMessage[] = []
    for (const [index, pending] of sends.entries()) if (!results[index]) messages.push(...pending.messages)
    const dropped = this.handlers.screen && messages.length > 0 ? await this.handlers.screen(messages) : []
    const kept: NewMessage[] = []
    const groups: number[] = []
    let row = 0
    for (const [index, pending] of sends.entries()) {
      if (results[index]) continue
      let size = 0
      for (let i = 0; i < pending.messages.length; i++) {
        if (!dropped[row + i]) {
          kept.push(pending.messages[i]!)
          size++
        }
      }
      row += pending.messages.length
      if (size > 0) groups.push(size)
    }
    const outcomes = await this.queue.commit({
      sends: kept,
      ...(groups.length < kept.length ? { groups } : {}),
      acks,
      now: this.now(),
    })
    let next = 0
    row = 0
    for (const [index, pending] of sends.entries()) {
      if (results[index]) continue
      results[index] = pending.messages.map((_, i) =>
        dropped[row + i] ? { kind: 'dropped' as const } : outcomes[next++]!,
      )
      row += pending.messages.length
    }
    return results as SendResult[]
  }

  private async commitSingleRows(
    sends: readonly PendingSend<Origin>[],
    acks: readonly QueueAck[],
  ): Promise<SendResult[]> {
    const messages = sends.map((pending) => pending.messages[0]!)
    const dropped = this.handlers.screen && messages.length > 0 ? await this.handlers.screen(messages) : []
    const kept = dropped.length > 0 ? messages.filter((_, index) => !dropped[index]) : messages
    const outcomes = await this.queue.commit({ sends: kept, acks, now: this.now() })
    let next = 0
    return messages.map((_, index) => [dropped[index] ? DROPPED : outcomes[next++]!])
  }

  /**
   * Commits a batch and reports it. A batch that fails is committed again in parts, acknowledgements
   * on their own and the sends in halves, down to the single sends at fault: one bad send (to an
   * account deleted after the relay looked its name up, say) must not fail everyone else's. Each
   * failed transaction stored nothing, and the parts keep the arrival order. When the database itself
   * is down this costs at most twice as many (failing) transactions as the batch has sends.
   */
  private async settle(sends: readonly PendingSend<Origin>[], acks: readonly QueueAck[]): Promise<void> {
    let outcomes: SendResult[]
    try {
      outcomes = await this.commitBatch(sends, acks)
    } catch (error) {
      if (acks.length > 0 && sends.length > 0) {
        await this.settle([], acks)
        await this.settle(sends, [])
      } else if (sends.length > 1) {
        const half = Math.ceil(sends.length / 2)
        await this.settle(sends.slice(0, half), [])
        await this.settle(sends.slice(half), [])
      } else {
        this.report(() => this.handlers.failed(sends, error))
      }
      return
    }
    this.report(() => this.handlers.committed(sends, outcomes))
  }

  /** Runs a handler; one that throws is reported and does not stop the parts of a batch after it. */
  private report(handler: () => void): void {
    try {
      handler()
    } catch (error) {
      this.handlers.failed([], error)
    }
  }

  private flush(): void {
    if (this.sends.length === 0 && this.acks.size === 0) return
    const sends = this.sends
    const acks = [...this.acks.values()]
    this.sends = []
    this.acks = new Map()
    this.running = this.settle(sends, acks)
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
