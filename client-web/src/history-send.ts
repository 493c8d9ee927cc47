/**
 * Sending this device's conversations to a device it just approved (docs/protocol.md §13.10).
 * The app shell owns one of these for as long as the account is open, so a transfer outlives the
 * screen it was started from: Settings › Link a device starts it and shows it while open, the
 * shell shows it in a banner on every screen. It does not know about either screen: it holds the
 * transfer's state and says when it changed ('change' events).
 *
 * One transfer is shown at a time: a later approval's takes the place of an earlier one, which goes
 * on unseen (its parts are in the outbox either way, and the outbox keeps sending them).
 */
import type { ChatClient } from '../../shared/client/chat-client.js'
import { describeError, isDeviceRemoved } from './session.js'

/** What sending the history needs of the client core. */
export type HistorySendClient = Pick<ChatClient, 'waitForDevice' | 'sendHistory'>

/**
 * How long the approved device may take to finish linking (its user types the password there)
 * before the history is given up: the approval's link token lives 10 minutes (docs/protocol.md
 * §13.8), so it cannot register any later.
 */
export const NEW_DEVICE_WAIT_MS = 10 * 60_000

interface Transfer {
  /** The device the history goes to. */
  readonly deviceId: number
  /** Its name, as it asked to be linked; undefined when it gave none. */
  readonly deviceName: string | undefined
}

/** A transfer, from the approval until every part is with the server (or it failed). */
export type HistorySend = Transfer &
  (
    | { readonly kind: 'waiting' }
    | { readonly kind: 'sending'; readonly sent: number; readonly parts: number }
    | { readonly kind: 'sent'; readonly messages: number; readonly leftOut: number }
    | { readonly kind: 'failed'; readonly text: string }
  )

/** The device as a sentence names it: “Laptop”, or "the new device". */
export function historyDevice(transfer: Transfer): string {
  return transfer.deviceName ? `“${transfer.deviceName}”` : 'the new device'
}

export function isFinished(transfer: HistorySend | undefined): boolean {
  return transfer?.kind === 'sent' || transfer?.kind === 'failed'
}

export class HistorySender extends EventTarget {
  #current: HistorySend | undefined
  /** The transfer on screen (the newest); an earlier one still going is no longer heard. */
  #shown: object | undefined
  /** Aborted when the account closes: every wait for a device ends. */
  readonly #closing = new AbortController()

  constructor(
    private readonly client: HistorySendClient,
    /** Called when the server says this device was removed: the shell locks the app. */
    private readonly onDeviceRemoved: () => void = () => {},
  ) {
    super()
  }

  /** The transfer on screen, undefined when there is none or it was dismissed. */
  get current(): HistorySend | undefined {
    return this.#current
  }

  /**
   * Waits (up to NEW_DEVICE_WAIT_MS) for device `deviceId` to finish linking, then sends it this
   * device's conversations. Returns at once; `current` says how it goes.
   */
  start(deviceId: number, deviceName: string | undefined): void {
    if (this.#closing.signal.aborted) return
    const token = {}
    this.#shown = token
    void this.run({ deviceId, deviceName }, token)
  }

  /** Takes a finished transfer off the screen; one still going stays. */
  dismiss(): void {
    if (isFinished(this.#current)) this.set(undefined)
  }

  /** The account closed: nothing more is shown, and a wait for a device ends. */
  stop(): void {
    this.#closing.abort()
    this.#shown = undefined
    this.#current = undefined
  }

  private set(next: HistorySend | undefined): void {
    this.#current = next
    this.dispatchEvent(new Event('change'))
  }

  private async run(transfer: Transfer, token: object): Promise<void> {
    const signal = this.#closing.signal
    const show = (next: HistorySend) => {
      if (this.#shown === token) this.set(next)
    }
    show({ ...transfer, kind: 'waiting' })
    try {
      const linked = await this.client.waitForDevice(transfer.deviceId, {
        timeoutMs: NEW_DEVICE_WAIT_MS,
        signal,
      })
      if (signal.aborted) return
      if (!linked) {
        show({
          ...transfer,
          kind: 'failed',
          text: `${sentenceStart(historyDevice(transfer))} did not finish linking within ${NEW_DEVICE_WAIT_MS / 60_000} minutes, so the conversations were not sent. Link it again with a new code to send them.`,
        })
        return
      }
      const sent = await this.client.sendHistory({
        onProgress: (done, parts) => show({ ...transfer, kind: 'sending', sent: done, parts }),
      })
      show({ ...transfer, kind: 'sent', messages: sent.messages, leftOut: sent.leftOut })
    } catch (error) {
      if (signal.aborted) return
      if (isDeviceRemoved(error)) {
        this.onDeviceRemoved()
        return
      }
      show({
        ...transfer,
        kind: 'failed',
        text: `The conversations could not all be sent to ${historyDevice(transfer)}: ${describeError(error)}`,
      })
    }
  }
}

function sentenceStart(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1)
}
