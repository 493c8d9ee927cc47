/**
 * Register and log in. Registering makes the account's keys in this browser; logging in unlocks
 * this browser's copy of an account with its password; "Use an existing device" links this
 * browser to an account signed in elsewhere (sc-link-view). A log-in refused because this device
 * was removed from its account is passed up as `device-removed` (the app shows the removed screen). The password policy is explained while the
 * user types: long enough (with a count), no composition rules, and the server refuses easily
 * guessed ones (the obvious ones, such as a common password or the username, are flagged at once).
 *
 * For a username this browser does not hold, the log-in screen offers to start over: after a
 * confirmation dialog that says what it does (sc-start-over-dialog), new keys made here replace the
 * account's lost ones on the server, the password proving the account.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import { isClientError } from '../../../shared/client/errors.js'
import { PASSWORD_MIN_LENGTH } from '../../../shared/limits.js'
import {
  DeviceRemovedError,
  describeError,
  normalizeForForm,
  type OpenAccount,
  registerAccount,
  reinstallAccount,
  unlockAccount,
} from '../session.js'
import { localAccounts } from '../store/idb-store.js'
import { icons } from './icons.js'
import { guessableReason } from './password-hint.js'
import { base } from './theme.js'
import './link-view.js'
import './start-over-dialog.js'

type Mode = 'login' | 'register'

@customElement('sc-auth')
export class AuthView extends LitElement {
  static override styles = [
    base,
    css`
      :host {
        display: grid;
        place-items: center;
        min-height: 100%;
        padding: 32px 16px;
        background:
          radial-gradient(1200px 500px at 50% -10%, var(--accent-soft), transparent 70%),
          var(--bg);
      }
      .panel {
        width: min(440px, 100%);
      }
      .brand {
        display: flex;
        align-items: center;
        gap: 12px;
        margin-bottom: 22px;
        justify-content: center;
      }
      .brand .logo {
        width: 44px;
        height: 44px;
      }
      .brand span {
        font-size: 24px;
        font-weight: 800;
        letter-spacing: -0.02em;
      }
      .card {
        display: grid;
        gap: 18px;
        padding: 28px;
        border-radius: 20px;
        background: var(--surface);
        box-shadow: var(--shadow-2);
      }
      h1 {
        font-size: 22px;
        font-weight: 750;
        letter-spacing: -0.01em;
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
      .password {
        display: flex;
        gap: 8px;
      }
      .password input {
        flex: 1;
      }
      .password .btn {
        min-width: 72px;
        padding: 0 12px;
      }
      .policy {
        display: grid;
        gap: 6px;
        margin: 2px 0 0;
        padding: 0;
        list-style: none;
        font-size: 13px;
        color: var(--text-2);
      }
      .policy li {
        display: flex;
        gap: 8px;
        align-items: flex-start;
      }
      .policy .icon {
        width: 16px;
        height: 16px;
        margin-top: 2px;
        color: var(--text-3);
      }
      .policy .met {
        color: var(--success);
      }
      .policy .met .icon {
        color: var(--success);
      }
      .policy .unmet,
      .policy .unmet .icon {
        color: var(--warning);
      }
      .error-text {
        display: grid;
        gap: 4px;
      }
      .error-text strong {
        font-weight: 700;
      }
      .switch {
        display: flex;
        flex-wrap: wrap;
        align-items: center;
        justify-content: center;
        gap: 4px;
        font-size: 14px;
        color: var(--text-2);
      }
      .accounts {
        display: flex;
        flex-wrap: wrap;
        gap: 8px;
        align-items: center;
        font-size: 13px;
        color: var(--text-2);
      }
      .account-chip {
        padding: 6px 12px;
        border-radius: 999px;
        border: 1px solid var(--border);
        background: var(--surface-2);
        font-size: 13px;
        font-weight: 600;
      }
      .account-chip:hover {
        border-color: var(--accent);
      }
      .start-over {
        display: grid;
        gap: 10px;
        padding: 14px 16px;
        border-radius: var(--radius);
        border: 1px dashed var(--border);
        font-size: 13.5px;
        color: var(--text-2);
      }
      .start-over strong,
      .link-device strong {
        color: var(--text);
        font-weight: 650;
      }
      .link-device {
        display: grid;
        gap: 10px;
        padding: 14px 16px;
        border-radius: var(--radius);
        background: var(--surface-2);
        font-size: 13.5px;
        color: var(--text-2);
      }
      .note {
        display: flex;
        gap: 10px;
        align-items: flex-start;
        font-size: 13px;
        color: var(--text-3);
      }
      .note .icon {
        width: 18px;
        height: 18px;
        margin-top: 1px;
      }
      .footer {
        margin-top: 18px;
        text-align: center;
        font-size: 12.5px;
        color: var(--text-3);
      }
      @media (max-width: 480px) {
        :host {
          place-items: start center;
          padding-top: 28px;
        }
        .card {
          padding: 22px 18px;
        }
      }
    `,
  ]

  /** A note shown above the form (e.g. why the user was signed out). */
  @property() notice = ''

  @state() private mode: Mode = 'login'
  @state() private accounts: string[] = []
  @state() private username = ''
  @state() private password = ''
  @state() private showPassword = false
  @state() private busy = false
  @state() private error: { title: string; detail: string } | undefined
  /** The account the start-over dialog asks about (open while set). */
  @state() private startOverName: string | undefined
  /** "Use an existing device": the link screens (sc-link-view) in place of the form. */
  @state() private linking = false

  @query('#username') private usernameInput!: HTMLInputElement
  @query('#password') private passwordInput!: HTMLInputElement
  /**
   * Whether the accounts this browser holds are known. Until then no form is shown: the first
   * guess (log in) would flip to "Create your account" a moment later for a new browser, under
   * the user's pointer, and a click on "Create an account" could land on nothing.
   */
  @state() private ready = false

  override connectedCallback(): void {
    super.connectedCallback()
    void this.loadAccounts()
  }

  private async loadAccounts(): Promise<void> {
    this.accounts = await localAccounts().catch(() => [])
    if (!this.ready) {
      this.ready = true
      this.mode = this.accounts.length > 0 ? 'login' : 'register'
      if (this.accounts.length === 1) this.username = this.accounts[0] as string
      // The form appears now: the field left to type gets the focus (the password when the only
      // account is filled in).
      await this.updateComplete
      ;(this.username ? this.passwordInput : this.usernameInput)?.focus()
    }
  }

  protected override updated(changed: PropertyValues): void {
    if (changed.has('mode')) {
      const target = this.username ? this.passwordInput : this.usernameInput
      target?.focus()
    }
  }

  private setMode(mode: Mode): void {
    this.mode = mode
    this.error = undefined
  }

  private async submit(event: Event): Promise<void> {
    event.preventDefault()
    if (this.busy) return
    this.error = undefined
    this.busy = true
    const username = this.username.trim()
    const password = this.password
    const onLost = () =>
      this.dispatchEvent(new CustomEvent('account-lost', { bubbles: true, composed: true }))
    try {
      const account: OpenAccount =
        this.mode === 'register'
          ? await registerAccount(username, password, onLost)
          : await unlockAccount(username, password, onLost)
      this.password = ''
      this.dispatchEvent(new CustomEvent('signed-in', { detail: account, bubbles: true, composed: true }))
    } catch (error) {
      if (error instanceof DeviceRemovedError) {
        this.password = ''
        this.dispatchEvent(
          new CustomEvent('device-removed', { detail: error.username, bubbles: true, composed: true }),
        )
        return
      }
      this.error = this.describe(error)
      await this.loadAccounts()
      this.passwordInput?.focus()
    } finally {
      this.busy = false
    }
  }

  private describe(error: unknown): { title: string; detail: string } {
    const detail = describeError(error)
    if (isClientError(error) && error.serverCode === 'E2E_ERR_USERNAME_TAKEN') {
      return {
        title: 'Could not register',
        detail: `${detail} If it is yours and the device with its keys is lost, choose “Use an existing account”, then “Start over on this device”.`,
      }
    }
    if (
      isClientError(error, 'E2E_ERR_WEAK_PASSWORD') ||
      (isClientError(error) && error.serverCode === 'E2E_ERR_WEAK_PASSWORD')
    ) {
      return { title: 'Choose a stronger password', detail }
    }
    if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_USERNAME') {
      return { title: 'Choose another username', detail }
    }
    return { title: this.mode === 'register' ? 'Could not register' : 'Could not log in', detail }
  }

  /** The username as typed, normalised; undefined while it is not a valid one. */
  private get typedName(): string | undefined {
    try {
      return normalizeForForm(this.username.trim())
    } catch {
      return undefined
    }
  }

  /** Checks what starting over needs (a username and the account's password), then asks. */
  private askStartOver(): void {
    if (this.busy) return
    this.error = undefined
    let name: string
    try {
      name = normalizeForForm(this.username.trim())
    } catch (error) {
      this.error = { title: 'Enter your username', detail: describeError(error) }
      this.usernameInput?.focus()
      return
    }
    if (this.password === '') {
      this.error = {
        title: 'Enter your password first',
        detail: `Starting over needs ${name}'s password: it proves the account is yours.`,
      }
      this.passwordInput?.focus()
      return
    }
    this.startOverName = name
  }

  private async startOver(): Promise<void> {
    const name = this.startOverName
    if (!name || this.busy) return
    this.busy = true
    const onLost = () =>
      this.dispatchEvent(new CustomEvent('account-lost', { bubbles: true, composed: true }))
    try {
      const account = await reinstallAccount(name, this.password, onLost)
      this.password = ''
      this.startOverName = undefined
      this.dispatchEvent(new CustomEvent('signed-in', { detail: account, bubbles: true, composed: true }))
    } catch (error) {
      this.startOverName = undefined
      this.error = { title: 'Could not start over', detail: describeError(error) }
      await this.loadAccounts()
      this.passwordInput?.focus()
    } finally {
      this.busy = false
    }
  }

  private openLink(): void {
    if (this.busy) return
    this.error = undefined
    this.linking = true
  }

  /** On the log-in screen, for a username this browser does not hold: the way to start over here. */
  private renderStartOver(): TemplateResult | typeof nothing {
    if (this.mode !== 'login') return nothing
    const name = this.typedName
    if (name !== undefined && this.accounts.includes(name)) return nothing
    return html`<section class="start-over" aria-labelledby="start-over-lead">
      <p id="start-over-lead">
        <strong>${name ? `No account named ${name} in this browser.` : 'Lost the device with your keys?'}</strong>
        If ${name ? 'it is yours and its' : 'your account’s'} keys were on a device that is lost or wiped, you
        can start over here with new keys. Your contacts will be told.
      </p>
      <button type="button" class="btn secondary block" ?disabled=${this.busy} @click=${this.askStartOver}>
        ${icons.device()} Start over on this device
      </button>
    </section>`
  }

  private renderPolicy(): TemplateResult {
    const length = [...this.password].length
    const longEnough = length >= PASSWORD_MIN_LENGTH
    const guessable = guessableReason(this.password, this.username)
    return html`<ul class="policy" id="password-policy" aria-live="polite">
      <li class=${longEnough ? 'met' : ''}>
        ${longEnough ? icons.check() : icons.info()}
        <span
          >At least ${PASSWORD_MIN_LENGTH} characters
          (${longEnough ? 'done' : `${length} of ${PASSWORD_MIN_LENGTH}`})</span
        >
      </li>
      <li>
        ${icons.info()}
        <span>No rules about digits, capitals or symbols: a few unrelated words make a strong one.</span>
      </li>
      ${
        guessable
          ? html`<li class="unmet">
              ${icons.alert()}<span>Easy to guess: ${guessable} The server will refuse it.</span>
            </li>`
          : html`<li>
              ${icons.info()}<span>Common and easily guessed passwords are refused by the server.</span>
            </li>`
      }
      <li>
        ${icons.lock()}
        <span>It unlocks your keys on this device and cannot be reset: keep it safe.</span>
      </li>
    </ul>`
  }

  private renderAccounts(): TemplateResult | typeof nothing {
    if (this.mode !== 'login' || this.accounts.length === 0) return nothing
    return html`<div class="accounts" aria-label="Accounts on this browser">
      <span>On this browser:</span>
      ${this.accounts.map(
        (name) => html`<button
          type="button"
          class="account-chip"
          aria-pressed=${this.username === name ? 'true' : 'false'}
          @click=${() => {
            this.username = name
            this.passwordInput?.focus()
          }}
        >
          ${name}
        </button>`,
      )}
    </div>`
  }

  override render(): TemplateResult {
    // Only the brand while the accounts are read (a few milliseconds): no form to guess wrong.
    if (!this.ready) {
      return html`<main class="panel" aria-busy="true">
        <div class="brand">${icons.logo()}<span>secure-chat</span></div>
      </main>`
    }
    if (this.linking) {
      return html`<main class="panel">
        <div class="brand">${icons.logo()}<span>secure-chat</span></div>
        <div class="card">
          <sc-link-view
            @link-closed=${() => {
              this.linking = false
              void this.loadAccounts()
            }}
          ></sc-link-view>
        </div>
        <p class="footer">End-to-end encrypted · the server relays the link and cannot read it</p>
      </main>`
    }
    const register = this.mode === 'register'
    return html`<main class="panel">
      <div class="brand">${icons.logo()}<span>secure-chat</span></div>
      <div class="card">
        <div>
          <h1>${register ? 'Create your account' : 'Welcome back'}</h1>
          <p class="lead">
            ${
              register
                ? 'Your keys are made here, in this browser. Messages are end-to-end encrypted: the server only ever sees ciphertext.'
                : 'Unlock the account stored in this browser with its password.'
            }
          </p>
        </div>
        ${this.notice ? html`<p class="banner info" role="status">${this.notice}</p>` : nothing}
        ${
          !register && this.accounts.length === 0
            ? html`<p class="banner info" role="status">
                This browser holds no account yet. Signed in on another device? Use an existing device to
                link this browser to your account. If that device is lost, start over here.
              </p>`
            : nothing
        }
        ${this.renderAccounts()}
        <form @submit=${this.submit} novalidate>
          <div class="field">
            <label for="username">Username</label>
            <input
              id="username"
              type="text"
              autocomplete="username"
              autocapitalize="off"
              spellcheck="false"
              required
              minlength="3"
              maxlength="32"
              aria-describedby="username-hint"
              .value=${this.username}
              @input=${(event: Event) => {
                this.username = (event.target as HTMLInputElement).value
              }}
            />
            <span class="hint" id="username-hint">
              ${
                register
                  ? '3–32 characters: letters, digits, and . _ - . Others find you by it.'
                  : 'The username you registered with in this browser.'
              }
            </span>
          </div>
          <div class="field">
            <label for="password">Password</label>
            <div class="password">
              <input
                id="password"
                type=${this.showPassword ? 'text' : 'password'}
                autocomplete=${register ? 'new-password' : 'current-password'}
                required
                aria-describedby=${register ? 'password-policy' : nothing}
                .value=${this.password}
                @input=${(event: Event) => {
                  this.password = (event.target as HTMLInputElement).value
                }}
              />
              <button
                type="button"
                class="btn secondary"
                aria-pressed=${this.showPassword ? 'true' : 'false'}
                aria-controls="password"
                @click=${() => {
                  this.showPassword = !this.showPassword
                }}
              >
                ${this.showPassword ? 'Hide' : 'Show'}
              </button>
            </div>
            ${register ? this.renderPolicy() : nothing}
          </div>
          ${
            this.error
              ? html`<div class="banner error" role="alert">
                  ${icons.alert()}
                  <div class="error-text"><strong>${this.error.title}</strong><span>${this.error.detail}</span></div>
                </div>`
              : nothing
          }
          <button class="btn primary block" type="submit" ?disabled=${this.busy}>
            ${
              this.busy ? (register ? 'Creating your keys…' : 'Unlocking…') : register ? 'Register' : 'Log in'
            }
          </button>
        </form>
        <section class="link-device" aria-labelledby="link-lead">
          <p id="link-lead">
            <strong>Signed in on another device?</strong> Link this browser to your account: it gets your
            keys and contacts from that device, by QR code.
          </p>
          <button type="button" class="btn secondary block" ?disabled=${this.busy} @click=${this.openLink}>
            ${icons.device()} Use an existing device
          </button>
        </section>
        ${this.renderStartOver()}
        <p class="switch">
          ${
            register
              ? html`Already registered in this browser?
                  <button type="button" class="btn ghost" @click=${() => this.setMode('login')}>
                    Use an existing account
                  </button>`
              : html`New here?
                  <button type="button" class="btn ghost" @click=${() => this.setMode('register')}>
                    Create an account
                  </button>`
          }
        </p>
        ${
          register
            ? html`<p class="note">
                ${icons.device()}
                <span>Registering creates a new, separate account. Already have one on another device?
                  Use an existing device to link this browser to it instead.</span>
              </p>`
            : nothing
        }
      </div>
      <p class="footer">End-to-end encrypted · X3DH and the Double Ratchet</p>
      <sc-start-over-dialog
        .username=${this.startOverName}
        ?busy=${this.busy}
        @start-over-confirmed=${this.startOver}
        @start-over-cancelled=${() => {
          this.startOverName = undefined
        }}
      ></sc-start-over-dialog>
    </main>`
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-auth': AuthView
  }
}
