/**
 * "Use an existing device", the new device's side of a link (docs/protocol.md §13.6–§13.8): the
 * user names this browser, it shows the link code (a QR code, and the text to copy) with the time
 * left, then the check once the other device has read the code, and once the other device
 * approved, asks for the account's password, which seals this browser's copy of the account as
 * registering does. Expiry, refusal, cancelling and failures each end on a screen that says what
 * happened, with a way to start again.
 *
 * The steps that talk to the server come in as `steps` (session.ts's by default), so component
 * tests drive the screens with a fake link.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import { ClientErrorCode, isClientError } from '../../../shared/client/errors.js'
import { completeDeviceLink, describeError, type OpenAccount, startDeviceLink } from '../session.js'
import { icons } from './icons.js'
import { base } from './theme.js'
import './qr-code.js'
import { spinner } from './shared-styles.js'

/** What the screens need of a started link (the core's PendingLink, or a test's fake). */
export interface LinkInProgress {
  readonly code: string
  readonly expiresAt: number
  waitForCheck(signal?: AbortSignal): Promise<string>
  waitForProvisioning(signal?: AbortSignal): Promise<{ username: string; deviceId: number }>
  cancel(): Promise<void>
}

/** The server's side of linking, as the screens use it. */
export interface LinkSteps<Link extends LinkInProgress = LinkInProgress> {
  start(name: string): Promise<Link>
  complete(link: Link, username: string, password: string, onLost: () => void): Promise<OpenAccount>
}

export const browserLinkSteps: LinkSteps<Awaited<ReturnType<typeof startDeviceLink>>> = {
  start: startDeviceLink,
  complete: completeDeviceLink,
}

/** How long a code lives when the server's clock and ours disagree (its TTL, docs/protocol.md §13.7). */
const CODE_LIFETIME_MS = 10 * 60 * 1000

/** A name for this browser the other device shows: "Chrome on Linux", from what the browser says. */
export function browserDeviceName(userAgent = navigator.userAgent): string {
  const browser = /Edg\//.test(userAgent)
    ? 'Edge'
    : /Firefox\//.test(userAgent)
      ? 'Firefox'
      : /Chromium\//.test(userAgent)
        ? 'Chromium'
        : /Chrome\//.test(userAgent)
          ? 'Chrome'
          : /Safari\//.test(userAgent)
            ? 'Safari'
            : 'Browser'
  const system = /Android/.test(userAgent)
    ? 'Android'
    : /iPhone|iPad/.test(userAgent)
      ? 'iOS'
      : /Windows/.test(userAgent)
        ? 'Windows'
        : /Mac OS X/.test(userAgent)
          ? 'macOS'
          : /CrOS/.test(userAgent)
            ? 'ChromeOS'
            : /Linux/.test(userAgent)
              ? 'Linux'
              : ''
  return system ? `${browser} on ${system}` : browser
}

type Step =
  | { readonly kind: 'name' }
  | { readonly kind: 'starting' }
  | { readonly kind: 'code'; readonly link: LinkInProgress; readonly check?: string }
  | { readonly kind: 'password'; readonly link: LinkInProgress; readonly username: string }
  | { readonly kind: 'ended'; readonly title: string; readonly detail: string }

/** "9:05" */
function countdown(ms: number): string {
  const seconds = Math.max(0, Math.ceil(ms / 1000))
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`
}

@customElement('sc-link-view')
export class LinkView extends LitElement {
  static override styles = [
    base,
    spinner,
    css`
      :host {
        display: grid;
        gap: 18px;
      }
      h1 {
        font-size: 22px;
        font-weight: 750;
        letter-spacing: -0.01em;
      }
      h1:focus {
        outline: none;
      }
      .lead {
        margin-top: 4px;
        color: var(--text-2);
        font-size: 14.5px;
      }
      form {
        display: grid;
        gap: 16px;
      }
      ol {
        display: grid;
        gap: 6px;
        margin: 0;
        padding-left: 20px;
        color: var(--text-2);
        font-size: 14px;
      }
      ol strong {
        color: var(--text);
        font-weight: 650;
      }
      .qr {
        display: grid;
        justify-items: center;
        gap: 10px;
      }
      sc-qr-code {
        width: min(232px, 70vw);
        height: min(232px, 70vw);
        padding: 10px;
        border-radius: 14px;
        background: #fff;
        box-shadow: 0 0 0 1px var(--border);
      }
      .code {
        display: flex;
        gap: 8px;
        align-items: stretch;
      }
      .code output {
        flex: 1;
        min-width: 0;
        padding: 10px 12px;
        border-radius: 10px;
        background: var(--surface-2);
        font-family: var(--mono);
        font-size: 12.5px;
        line-height: 1.45;
        overflow-wrap: anywhere;
        user-select: all;
      }
      .code .btn {
        min-width: 84px;
        padding: 0 12px;
      }
      .expiry {
        display: flex;
        gap: 6px;
        align-items: center;
        justify-content: center;
        font-size: 13.5px;
        color: var(--text-2);
        font-variant-numeric: tabular-nums;
      }
      .expiry .icon {
        width: 16px;
        height: 16px;
      }
      .expiry.soon {
        color: var(--warning);
      }
      .check {
        display: grid;
        justify-items: center;
        gap: 8px;
        padding: 18px 16px;
        border-radius: var(--radius);
        background: var(--accent-soft);
        color: var(--accent-text);
        text-align: center;
      }
      .check .digits {
        font-family: var(--mono);
        font-size: 34px;
        font-weight: 700;
        letter-spacing: 0.08em;
        color: var(--text);
        font-variant-numeric: tabular-nums;
      }
      .check p {
        font-size: 14px;
      }
      .waiting {
        display: flex;
        gap: 10px;
        align-items: center;
        justify-content: center;
        font-size: 13.5px;
        color: var(--text-3);
      }
      .row {
        display: flex;
        flex-wrap: wrap;
        gap: 10px;
      }
      .row .btn {
        flex: 1;
      }
      .error-text {
        display: grid;
        gap: 4px;
      }
      .error-text strong {
        font-weight: 700;
      }
      .account {
        font-weight: 700;
        color: var(--text);
      }
    `,
  ]

  /** The server's side of linking (session.ts's unless a test gives its own). */
  @property({ attribute: false }) steps: LinkSteps = browserLinkSteps as LinkSteps
  /** Now, for the countdown (a test's clock). */
  @property({ attribute: false }) now: () => number = Date.now

  @state() private step: Step = { kind: 'name' }
  @state() private deviceName = browserDeviceName()
  @state() private password = ''
  @state() private busy = false
  @state() private error = ''
  @state() private copied = false
  @state() private remaining = CODE_LIFETIME_MS

  @query('#device-name') private nameInput!: HTMLInputElement | null
  @query('#link-password') private passwordInput!: HTMLInputElement | null
  @query('h1') private heading!: HTMLHeadingElement | null

  /** Stops the waits of the link on screen (cancel, leaving, expiry). */
  private waiting: AbortController | undefined
  private ticker: ReturnType<typeof setInterval> | undefined
  /** When the code on screen expires, on this device's clock. */
  private expiresAt = 0

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    this.stopWaiting()
    const step = this.step
    if (step.kind === 'code' || step.kind === 'password') void step.link.cancel()
  }

  protected override firstUpdated(): void {
    this.nameInput?.focus()
  }

  protected override updated(changed: PropertyValues): void {
    if (!changed.has('step')) return
    const previous = changed.get('step') as Step | undefined
    const kind = this.step.kind
    if (kind === 'password') this.passwordInput?.focus()
    else if (kind === 'name') this.nameInput?.focus()
    // A new screen in place of the button just pressed: focus moves to its heading (a screen
    // reader reads where the user is), not to the page's start. The check arriving is such a screen.
    else if (kind !== 'starting' && (previous?.kind !== kind || kind === 'code')) this.heading?.focus()
  }

  private stopWaiting(): void {
    this.waiting?.abort()
    this.waiting = undefined
    clearInterval(this.ticker)
    this.ticker = undefined
  }

  private async start(event?: Event): Promise<void> {
    event?.preventDefault()
    if (this.busy) return
    this.error = ''
    this.busy = true
    this.step = { kind: 'starting' }
    let link: LinkInProgress
    try {
      link = await this.steps.start(this.deviceName)
    } catch (error) {
      this.busy = false
      this.end('Could not start linking', describeError(error))
      return
    }
    this.busy = false
    this.copied = false
    const now = this.now()
    const left = link.expiresAt - now
    // The server's clock: trusted for what is left unless it disagrees with ours past the lifetime.
    this.expiresAt = left > 0 && left <= CODE_LIFETIME_MS + 60_000 ? link.expiresAt : now + CODE_LIFETIME_MS
    this.remaining = this.expiresAt - now
    this.step = { kind: 'code', link }
    const waiting = new AbortController()
    this.waiting = waiting
    this.ticker = setInterval(() => this.tick(link), 1000)
    try {
      const check = await link.waitForCheck(waiting.signal)
      if (this.currentLink() !== link) return
      this.step = { kind: 'code', link, check }
      const { username } = await link.waitForProvisioning(waiting.signal)
      if (this.currentLink() !== link) return
      clearInterval(this.ticker)
      this.step = { kind: 'password', link, username }
    } catch (error) {
      if (this.currentLink() !== link) return
      this.stopWaiting()
      this.failed(error)
    }
  }

  private currentLink(): LinkInProgress | undefined {
    const step = this.step
    return step.kind === 'code' || step.kind === 'password' ? step.link : undefined
  }

  private tick(link: LinkInProgress): void {
    this.remaining = this.expiresAt - this.now()
    if (this.remaining > 0 || this.currentLink() !== link) return
    this.stopWaiting()
    void link.cancel()
    this.end('The code expired', 'Link codes last 10 minutes. Start again for a fresh code.')
  }

  private failed(error: unknown): void {
    const code = isClientError(error) ? error.serverCode : undefined
    if (code === 'E2E_ERR_LINK_REFUSED') {
      this.end(
        'Linking was refused',
        'Your other device refused the link (or gave up on it). Nothing was linked. If the two checks matched and you meant to approve, start again.',
      )
    } else if (code === 'E2E_ERR_LINK_USED') {
      this.end(
        'This code was closed',
        'The code was given up on this device (in another tab, say). Nothing was linked. Start again for a fresh code.',
      )
    } else if (code === 'E2E_ERR_LINK_EXPIRED' || code === 'E2E_ERR_LINK_UNKNOWN') {
      this.end('The code expired', 'Link codes last 10 minutes. Start again for a fresh code.')
    } else if (isClientError(error, ClientErrorCode.Cancelled)) {
      this.end('Linking was cancelled', 'Nothing was linked. Start again whenever you like.')
    } else {
      this.end('Could not link this browser', describeError(error))
    }
  }

  private end(title: string, detail: string): void {
    this.step = { kind: 'ended', title, detail }
  }

  private async cancel(): Promise<void> {
    const link = this.currentLink()
    this.stopWaiting()
    this.end('Linking was cancelled', 'Nothing was linked. Start again whenever you like.')
    await link?.cancel()
  }

  private back(): void {
    const link = this.currentLink()
    this.stopWaiting()
    void link?.cancel()
    this.dispatchEvent(new CustomEvent('link-closed', { bubbles: true, composed: true }))
  }

  private async copy(code: string): Promise<void> {
    try {
      await navigator.clipboard.writeText(code)
      this.copied = true
    } catch {
      // No clipboard (permission, or an insecure context): the text stays selectable by hand.
      this.copied = false
    }
  }

  private async finish(event: Event): Promise<void> {
    event.preventDefault()
    const step = this.step
    if (step.kind !== 'password' || this.busy || this.password === '') return
    this.busy = true
    this.error = ''
    const onLost = () =>
      this.dispatchEvent(new CustomEvent('account-lost', { bubbles: true, composed: true }))
    try {
      const account = await this.steps.complete(step.link, step.username, this.password, onLost)
      this.password = ''
      // Linked: the link is done and must not be cancelled when this view goes away.
      this.step = { kind: 'name' }
      this.dispatchEvent(new CustomEvent('signed-in', { detail: account, bubbles: true, composed: true }))
    } catch (error) {
      this.password = ''
      this.end('Could not finish linking', describeError(error))
    } finally {
      this.busy = false
    }
  }

  private renderName(starting: boolean): TemplateResult {
    return html`<div>
        <h1>Link this browser</h1>
        <p class="lead">
          Use your account here too, with its contacts and keys, by approving this browser on a device
          where you are already signed in.
        </p>
      </div>
      <form @submit=${this.start} novalidate>
        <div class="field">
          <label for="device-name">Name this device</label>
          <input
            id="device-name"
            type="text"
            maxlength="64"
            autocomplete="off"
            aria-describedby="device-name-hint"
            .value=${this.deviceName}
            @input=${(event: Event) => {
              this.deviceName = (event.target as HTMLInputElement).value
            }}
          />
          <span class="hint" id="device-name-hint">
            Your other device shows it when asked to approve, and lists it under Devices. Only your
            devices can read it.
          </span>
        </div>
        <button class="btn primary block" type="submit" ?disabled=${starting}>
          ${starting ? 'Getting a code…' : 'Show the link code'}
        </button>
      </form>
      <div class="row">
        <button type="button" class="btn ghost" @click=${this.back}>${icons.back()} Back to log in</button>
      </div>`
  }

  private renderCode(link: LinkInProgress, check: string | undefined): TemplateResult {
    const expiry = html`<p class="expiry ${this.remaining < 60_000 ? 'soon' : ''}" role="timer" aria-live="off">
      ${icons.clock()} Code expires in ${countdown(this.remaining)}
    </p>`
    if (check) {
      return html`<div>
          <h1 tabindex="-1">Compare the check</h1>
          <p class="lead">Your other device has read the code.</p>
        </div>
        <div class="check" role="status" aria-labelledby="check-label">
          <p id="check-label">Check that your other device shows</p>
          <span class="digits" data-testid="link-check">${check}</span>
          <p>and approve there only if it does.</p>
        </div>
        <p class="waiting" role="status"><span class="spinner" aria-hidden="true"></span>Waiting for your approval on the other device…</p>
        ${expiry}
        <button type="button" class="btn secondary block" @click=${this.cancel}>Cancel</button>`
    }
    return html`<div>
        <h1 tabindex="-1">Scan this code with your other device</h1>
      </div>
      <ol>
        <li>On a device where you are signed in, open <strong>Settings › Link a device</strong>.</li>
        <li>Scan this code with its camera, or copy the code below and paste it there.</li>
        <li>Compare the check both screens then show, and approve there.</li>
      </ol>
      <div class="qr">
        <sc-qr-code .payload=${new TextEncoder().encode(link.code)} label="Link code QR code"></sc-qr-code>
        ${expiry}
      </div>
      <div class="field">
        <span class="label" id="code-label">Link code</span>
        <div class="code">
          <output aria-labelledby="code-label" data-testid="link-code">${link.code}</output>
          <button type="button" class="btn secondary" @click=${() => this.copy(link.code)}>
            ${this.copied ? 'Copied' : 'Copy'}
          </button>
        </div>
      </div>
      <p class="waiting" role="status"><span class="spinner" aria-hidden="true"></span>Waiting for your other device…</p>
      <button type="button" class="btn secondary block" @click=${this.cancel}>Cancel</button>`
  }

  private renderPassword(username: string): TemplateResult {
    return html`<div>
        <h1>Approved</h1>
        <p class="lead">
          Your other device approved this browser for <span class="account">${username}</span>. Enter the
          account's password to finish: it encrypts this browser's copy of the account, and unlocks it
          when you log in here. If your other device sends its conversations, they arrive once you are in.
        </p>
      </div>
      <form @submit=${this.finish} novalidate>
        <input type="text" autocomplete="username" .value=${username} hidden readonly />
        <div class="field">
          <label for="link-password">Password of ${username}</label>
          <input
            id="link-password"
            type="password"
            autocomplete="current-password"
            required
            .value=${this.password}
            @input=${(event: Event) => {
              this.password = (event.target as HTMLInputElement).value
            }}
          />
          <span class="hint">The one you log in with on your other device.</span>
        </div>
        ${
          this.error
            ? html`<div class="banner error" role="alert">${icons.alert()}<span>${this.error}</span></div>`
            : nothing
        }
        <button class="btn primary block" type="submit" ?disabled=${this.busy || this.password === ''}>
          ${this.busy ? 'Linking this browser…' : 'Finish linking'}
        </button>
      </form>
      <button type="button" class="btn secondary block" ?disabled=${this.busy} @click=${this.cancel}>Cancel</button>`
  }

  private renderEnded(title: string, detail: string): TemplateResult {
    return html`<div>
        <h1 tabindex="-1">Link this browser</h1>
      </div>
      <div class="banner error" role="alert">
        ${icons.alert()}
        <div class="error-text"><strong>${title}</strong><span>${detail}</span></div>
      </div>
      <div class="row">
        <button type="button" class="btn secondary" @click=${this.back}>Back to log in</button>
        <button type="button" class="btn primary" @click=${() => this.start()}>Start again</button>
      </div>`
  }

  override render(): TemplateResult {
    const step = this.step
    switch (step.kind) {
      case 'name':
        return this.renderName(false)
      case 'starting':
        return this.renderName(true)
      case 'code':
        return this.renderCode(step.link, step.check)
      case 'password':
        return this.renderPassword(step.username)
      case 'ended':
        return this.renderEnded(step.title, step.detail)
    }
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-link-view': LinkView
  }
}
