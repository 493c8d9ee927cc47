/**
 * Settings › Link a device, the existing device's side of a link (docs/protocol.md §13.6–§13.8):
 * the new device's code is scanned with the camera (through `BarcodeDetector`, where the browser
 * has it: the button is hidden otherwise) or pasted; then a dialog names the device that asks and
 * shows the check, to compare with the new device's screen, with Approve and Refuse. Approving
 * sends the new device the account's identity and contacts, sealed for it; then, unless the user
 * unticked it in the dialog, the app shell's HistorySender (history-send.ts) waits for the new one
 * to finish linking and sends it the conversations stored here (docs/protocol.md §13.10). The
 * transfer is the shell's, not this screen's: leaving Settings lets it go on; while this screen is
 * open it shows the same transfer's progress as the shell's banner.
 */
import {
  css,
  html,
  LitElement,
  nothing,
  type PropertyValues,
  type ReactiveController,
  type ReactiveControllerHost,
  type TemplateResult,
} from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import type { ChatClient, LinkApproval } from '../../../shared/client/chat-client.js'
import { ClientErrorCode, isClientError } from '../../../shared/client/errors.js'
import { MAX_HISTORY_TRANSFER_BYTES } from '../../../shared/limits.js'
import { type HistorySend, type HistorySender, historyDevice, isFinished } from '../history-send.js'
import { describeError, isDeviceRemoved } from '../session.js'
import { icons } from './icons.js'
import { progressBar } from './progress-bar.js'
import { modalDialog, spinner } from './shared-styles.js'
import { base } from './theme.js'

/** What linking needs of the client core (the history goes through the shell's HistorySender). */
export type LinkClient = Pick<ChatClient, 'approveLink'>

/** Updates its host whenever the HistorySender the host is given says its transfer changed. */
class WatchHistory implements ReactiveController {
  private watched: HistorySender | undefined

  constructor(
    private readonly host: ReactiveControllerHost,
    private readonly sender: () => HistorySender | undefined,
  ) {
    host.addController(this)
  }

  private readonly changed = (): void => this.host.requestUpdate()

  /** The transfer the sender shows now. */
  get current(): HistorySend | undefined {
    return this.sender()?.current
  }

  hostConnected(): void {
    this.watch(this.sender())
  }

  hostUpdate(): void {
    if (this.sender() !== this.watched) this.watch(this.sender())
  }

  hostDisconnected(): void {
    this.watch(undefined)
  }

  private watch(sender: HistorySender | undefined): void {
    this.watched?.removeEventListener('change', this.changed)
    this.watched = sender
    sender?.addEventListener('change', this.changed)
  }
}

/** The part of the Barcode Detection API used here (not yet in TypeScript's DOM types). */
interface BarcodeDetectorLike {
  detect(source: CanvasImageSource): Promise<{ rawValue: string }[]>
}
interface BarcodeDetectorConstructor {
  new (options: { formats: string[] }): BarcodeDetectorLike
  getSupportedFormats?(): Promise<string[]>
}

function barcodeDetector(): BarcodeDetectorConstructor | undefined {
  return (globalThis as { BarcodeDetector?: BarcodeDetectorConstructor }).BarcodeDetector
}

/** Whether this browser can scan a QR code with the camera. */
export function canScan(): boolean {
  return barcodeDetector() !== undefined && typeof navigator.mediaDevices?.getUserMedia === 'function'
}

/** A link code as it may be pasted: the core ignores whitespace; quotes and the like are trimmed. */
function cleanCode(text: string): string {
  return text.replace(/\s+/g, '').replace(/^["'<]+|["'>.]+$/g, '')
}

type Phase =
  | { readonly kind: 'idle' }
  | { readonly kind: 'connecting' }
  | { readonly kind: 'deciding'; readonly approval: LinkApproval }
  | { readonly kind: 'approving'; readonly approval: LinkApproval }

function plural(count: number, one: string, many: string): string {
  return `${count.toLocaleString('en')} ${count === 1 ? one : many}`
}

@customElement('sc-link-approve')
export class LinkApprove extends LitElement {
  static override styles = [
    base,
    modalDialog,
    spinner,
    css`
      :host {
        display: grid;
        gap: 14px;
      }
      p {
        color: var(--text-2);
        font-size: 14px;
      }
      p strong {
        color: var(--text);
        font-weight: 650;
      }
      .actions {
        display: flex;
        flex-wrap: wrap;
        gap: 10px;
      }
      form {
        display: grid;
        gap: 10px;
      }
      .paste {
        display: flex;
        gap: 8px;
      }
      .paste input {
        flex: 1;
        min-width: 0;
        font-family: var(--mono);
        font-size: 13.5px;
      }
      .or {
        font-size: 13px;
        color: var(--text-3);
      }
      .status {
        display: flex;
        gap: 10px;
        align-items: center;
        font-size: 14px;
        color: var(--text-2);
      }
      .banner.success {
        background: var(--success-soft);
        color: var(--success);
      }
      .history {
        display: grid;
        gap: 8px;
        padding: 14px 16px;
        border-radius: var(--radius);
        background: var(--surface-2);
        font-size: 14px;
      }
      .history .status {
        color: var(--text);
        font-weight: 600;
      }
      .history .note {
        font-size: 13px;
        color: var(--text-3);
      }
      .bar {
        height: 8px;
        border-radius: 999px;
        background: var(--border);
        overflow: hidden;
      }
      .bar .fill {
        height: 100%;
        border-radius: inherit;
        background: var(--accent);
        transition: width 200ms ease;
      }
      .option {
        display: flex;
        align-items: flex-start;
        gap: 10px;
        font-size: 14.5px;
        color: var(--text);
        cursor: pointer;
      }
      .option input {
        width: 18px;
        height: 18px;
        margin: 2px 0 0;
        flex: none;
        accent-color: var(--accent);
      }
      dialog {
        width: min(440px, calc(100vw - 32px));
      }
      .dialog-body {
        display: grid;
        gap: 14px;
        padding: 26px 24px 22px;
      }
      .dialog-body h2 {
        font-size: 19px;
        font-weight: 700;
        overflow-wrap: anywhere;
      }
      .dialog-body p {
        color: var(--text-2);
        font-size: 14.5px;
      }
      .badge {
        display: grid;
        place-items: center;
        width: 48px;
        height: 48px;
        border-radius: 50%;
        background: var(--accent-soft);
        color: var(--accent-text);
      }
      .badge .icon {
        width: 26px;
        height: 26px;
      }
      .check {
        display: grid;
        justify-items: center;
        gap: 4px;
        padding: 16px;
        border-radius: var(--radius);
        background: var(--surface-2);
      }
      .check .label {
        font-size: 13px;
        color: var(--text-2);
      }
      .check .digits {
        font-family: var(--mono);
        font-size: 34px;
        font-weight: 700;
        letter-spacing: 0.08em;
        font-variant-numeric: tabular-nums;
      }
      .dialog-actions {
        display: flex;
        flex-wrap: wrap-reverse;
        justify-content: flex-end;
        gap: 10px;
        padding-top: 6px;
      }
      .camera {
        display: grid;
        gap: 12px;
      }
      video {
        width: 100%;
        aspect-ratio: 1;
        object-fit: cover;
        border-radius: 14px;
        background: #0b1220;
      }
    `,
  ]

  @property({ attribute: false }) client: LinkClient | undefined
  /**
   * The app shell's history transfers: the dialog's box starts one, and this screen shows the
   * one under way. Without it the box is not offered.
   */
  @property({ attribute: false }) history: HistorySender | undefined

  @state() private code = ''
  @state() private phase: Phase = { kind: 'idle' }
  @state() private error = ''
  @state() private outcome = ''
  @state() private scanning = false
  @state() private scanError = ''
  /** The dialog's "send the conversations" box: ticked unless the user unticks it. */
  @state() private withHistory = true
  /** Whether the browser has BarcodeDetector (checked once; a test may set it). */
  @property({ type: Boolean }) scanner = canScan()

  @query('dialog.approval') private approvalDialog!: HTMLDialogElement
  @query('dialog.camera-dialog') private cameraDialog!: HTMLDialogElement
  @query('video') private video!: HTMLVideoElement | null

  private waiting: AbortController | undefined
  private readonly watchHistory = new WatchHistory(this, () => this.history)
  private stream: MediaStream | undefined
  private scanTimer: ReturnType<typeof setTimeout> | undefined

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    this.stopCamera()
    this.waiting?.abort()
    const phase = this.phase
    if (phase.kind === 'deciding') void phase.approval.refuse().catch(() => undefined)
  }

  protected override updated(changed: PropertyValues): void {
    if (changed.has('phase')) {
      const open = this.phase.kind === 'deciding' || this.phase.kind === 'approving'
      if (open && !this.approvalDialog.open) this.approvalDialog.showModal()
      else if (!open && this.approvalDialog.open) this.approvalDialog.close()
    }
  }

  private async submit(event?: Event): Promise<void> {
    event?.preventDefault()
    const code = cleanCode(this.code)
    if (!this.client || this.phase.kind !== 'idle' || code === '') return
    this.error = ''
    this.outcome = ''
    if (isFinished(this.watchHistory.current)) this.history?.dismiss()
    const waiting = new AbortController()
    this.waiting = waiting
    this.phase = { kind: 'connecting' }
    try {
      const approval = await this.client.approveLink(code, { signal: waiting.signal })
      this.phase = { kind: 'deciding', approval }
    } catch (error) {
      this.phase = { kind: 'idle' }
      if (!isClientError(error, ClientErrorCode.Cancelled)) this.failed(error)
    } finally {
      if (this.waiting === waiting) this.waiting = undefined
    }
  }

  private failed(error: unknown): void {
    if (isDeviceRemoved(error)) {
      this.dispatchEvent(new CustomEvent('device-removed', { bubbles: true, composed: true }))
      return
    }
    if (isClientError(error, ClientErrorCode.InvalidInput)) {
      this.error =
        'That is not a link code. Copy the whole code the new device shows under its QR code (it starts with “sc1”).'
      return
    }
    this.error = describeError(error)
  }

  private cancelConnecting(): void {
    this.waiting?.abort()
  }

  private async approve(): Promise<void> {
    const phase = this.phase
    if (phase.kind !== 'deciding') return
    this.phase = { kind: 'approving', approval: phase.approval }
    const name = phase.approval.deviceName
    const history = this.withHistory ? this.history : undefined
    try {
      const { deviceId, omittedContacts } = await phase.approval.approve()
      this.code = ''
      this.outcome = `${name ? `“${name}”` : 'The new device'} is linked as device ${deviceId}. It is finishing on its own screen: it asks for your password there.${
        omittedContacts > 0
          ? ` ${omittedContacts} contact${omittedContacts === 1 ? '' : 's'} did not fit and will appear there once you write to them again.`
          : ''
      }`
      this.dispatchEvent(
        new CustomEvent('device-linked', { detail: deviceId, bubbles: true, composed: true }),
      )
      history?.start(deviceId, name)
    } catch (error) {
      this.failed(error)
    } finally {
      this.phase = { kind: 'idle' }
      this.withHistory = true
    }
  }

  private async refuse(): Promise<void> {
    const phase = this.phase
    if (phase.kind !== 'deciding') return
    this.phase = { kind: 'idle' }
    this.code = ''
    this.outcome = ''
    try {
      await phase.approval.refuse()
      this.error = ''
      this.outcome = 'Refused. Nothing was linked, and the new device was told.'
    } catch (error) {
      this.failed(error)
    }
  }

  // --- The camera ---------------------------------------------------------------------------------

  private async startCamera(): Promise<void> {
    const Detector = barcodeDetector()
    if (!Detector || this.scanning) return
    this.error = ''
    this.outcome = ''
    this.scanError = ''
    this.scanning = true
    await this.updateComplete
    this.cameraDialog.showModal()
    let detector: BarcodeDetectorLike
    try {
      detector = new Detector({ formats: ['qr_code'] })
      this.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: 'environment' },
        audio: false,
      })
    } catch (error) {
      this.scanError =
        error instanceof DOMException && error.name === 'NotAllowedError'
          ? 'The camera is blocked for this site. Allow it in the browser, or paste the code instead.'
          : 'No camera could be opened. Paste the code instead.'
      return
    }
    const video = this.video
    if (!video || !this.scanning) {
      this.stopCamera()
      return
    }
    video.srcObject = this.stream
    await video.play().catch(() => undefined)
    const look = async () => {
      if (!this.scanning) return
      try {
        const found = (await detector.detect(video)).find((code) => code.rawValue.startsWith('sc1'))
        if (found) {
          this.closeCamera()
          this.code = found.rawValue
          await this.submit()
          return
        }
      } catch {
        // A frame that could not be read (the video not ready yet): try the next one.
      }
      this.scanTimer = setTimeout(look, 200)
    }
    void look()
  }

  private stopCamera(): void {
    this.scanning = false
    clearTimeout(this.scanTimer)
    for (const track of this.stream?.getTracks() ?? []) track.stop()
    this.stream = undefined
  }

  private closeCamera(): void {
    this.stopCamera()
    if (this.cameraDialog?.open) this.cameraDialog.close()
  }

  // --- Rendering ----------------------------------------------------------------------------------

  private renderApproval(): TemplateResult {
    const phase = this.phase
    const approval = phase.kind === 'deciding' || phase.kind === 'approving' ? phase.approval : undefined
    const approving = phase.kind === 'approving'
    const name = approval?.deviceName
    return html`<dialog
      class="approval"
      aria-labelledby="approve-title"
      aria-describedby="approve-text"
      @cancel=${(event: Event) => {
        // Escape refuses, except while the approval is on its way.
        event.preventDefault()
        if (!approving) void this.refuse()
      }}
    >
      <div class="dialog-body">
        <span class="badge">${icons.device()}</span>
        <h2 id="approve-title">${name ? html`Link “${name}”?` : 'Link a new device?'}</h2>
        <p id="approve-text">
          ${name ? html`“${name}”` : 'A device without a name'} asks to use your account. Approve only if
          it is yours and its screen shows this same check:
        </p>
        <div class="check" role="group" aria-label="Check">
          <span class="label">Check</span>
          <span class="digits" data-testid="approve-check">${approval?.check ?? ''}</span>
        </div>
        <p>
          It then gets your keys and contacts, and can read and send your messages from now on. If the
          checks differ, refuse: the code did not come from your device.
        </p>
        ${
          this.history
            ? html`<label class="option">
                <input
                  type="checkbox"
                  .checked=${this.withHistory}
                  ?disabled=${approving}
                  @change=${(event: Event) => {
                    this.withHistory = (event.target as HTMLInputElement).checked
                  }}
                />
                <span>Send the conversations on this device to it</span>
              </label>`
            : nothing
        }
        <div class="dialog-actions">
          <button class="btn secondary" ?disabled=${approving} @click=${this.refuse}>Refuse</button>
          <button class="btn primary" autofocus ?disabled=${approving} @click=${this.approve}>
            ${approving ? 'Approving…' : 'Approve'}
          </button>
        </div>
      </div>
    </dialog>`
  }

  private renderHistory(history: HistorySend): TemplateResult {
    switch (history.kind) {
      case 'waiting':
        return html`<div class="history" role="status" data-testid="history-send">
          <span class="status"
            ><span class="spinner" aria-hidden="true"></span>Waiting for the new device to finish linking…</span
          >
          <span class="note">
            Once your password is typed there, this device sends it the conversations stored here. You
            can leave this screen; keep the app open until then.
          </span>
        </div>`
      case 'sending': {
        return html`<div class="history" role="status" data-testid="history-send">
          <span class="status">Sending history: ${history.sent} of ${plural(history.parts, 'part', 'parts')}</span>
          ${progressBar('Sending history', history.sent, history.parts)}
          <span class="note">
            You can leave this screen: the parts wait in this device's outbox, which keeps sending them
            whenever it is online.
          </span>
        </div>`
      }
      case 'sent':
        return html`<p class="banner success" role="status" data-testid="history-send">
          ${icons.check()}<span
            >${
              history.messages === 0
                ? `There were no conversations on this device to send to ${historyDevice(history)}.`
                : `Sent ${plural(history.messages, 'message', 'messages')} to ${historyDevice(history)}.`
            }${
              history.leftOut > 0
                ? ` ${plural(history.leftOut, 'older one was', 'older ones were')} left out: a new device gets at most ${MAX_HISTORY_TRANSFER_BYTES / (1024 * 1024)} MB of history.`
                : ''
            }</span
          >
        </p>`
      case 'failed':
        return html`<div class="banner error" role="alert" data-testid="history-send">
          ${icons.alert()}<span>${history.text}</span>
        </div>`
    }
  }

  private renderCamera(): TemplateResult {
    return html`<dialog class="camera-dialog" aria-labelledby="camera-title" @close=${() => {
      // A task after close(): the camera may have been opened again meanwhile.
      if (!this.cameraDialog.open) this.stopCamera()
    }}>
      <div class="dialog-body camera">
        <h2 id="camera-title">Scan the link code</h2>
        <p>Point the camera at the QR code on the new device's screen.</p>
        ${
          this.scanError
            ? html`<div class="banner error" role="alert">${icons.alert()}<span>${this.scanError}</span></div>`
            : html`<video muted playsinline aria-label="Camera"></video>`
        }
        <div class="dialog-actions">
          <button class="btn secondary" @click=${() => this.closeCamera()}>Cancel</button>
        </div>
      </div>
    </dialog>`
  }

  override render(): TemplateResult {
    const connecting = this.phase.kind === 'connecting'
    return html`
      <p>
        On the new device, choose <strong>Use an existing device</strong> on its log-in screen. It shows a
        QR code: ${
          this.scanner
            ? 'scan it here, or copy the code under it and paste it below.'
            : 'copy the code under it and paste it below (this browser cannot scan QR codes).'
        }
        Then compare the check both screens show before you approve.
      </p>
      ${
        this.scanner
          ? html`<div class="actions">
              <button class="btn secondary" ?disabled=${connecting} @click=${this.startCamera}>
                ${icons.search()} Scan the QR code
              </button>
            </div>
            <p class="or">or paste the code:</p>`
          : nothing
      }
      <form @submit=${this.submit} novalidate aria-label="Link a device">
        <div class="field">
          <label for="link-code">Link code</label>
          <div class="paste">
            <input
              id="link-code"
              type="text"
              autocomplete="off"
              autocapitalize="off"
              spellcheck="false"
              placeholder="sc1…"
              ?disabled=${connecting}
              .value=${this.code}
              @input=${(event: Event) => {
                this.code = (event.target as HTMLInputElement).value
              }}
            />
            <button class="btn primary" type="submit" ?disabled=${connecting || cleanCode(this.code) === ''}>
              Continue
            </button>
          </div>
        </div>
      </form>
      ${
        connecting
          ? html`<p class="status" role="status">
              <span class="spinner" aria-hidden="true"></span>Waiting for the new device to answer…
              <button class="btn ghost" @click=${this.cancelConnecting}>Cancel</button>
            </p>`
          : nothing
      }
      ${this.outcome ? html`<p class="banner success" role="status">${icons.check()}<span>${this.outcome}</span></p>` : nothing}
      ${this.watchHistory.current ? this.renderHistory(this.watchHistory.current) : nothing}
      ${
        this.error
          ? html`<div class="banner error" role="alert">${icons.alert()}<span>${this.error}</span></div>`
          : nothing
      }
      ${this.renderApproval()} ${this.scanner ? this.renderCamera() : nothing}
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-link-approve': LinkApprove
  }
}
