/**
 * The screen of a device removed from its account on another of its devices (the server said
 * E2E_ERR_DEVICE_REMOVED, on the relay, at log-in or on a request): it can no longer sign in. What
 * it stored is still in this browser, sealed under the password; the screen offers to erase it
 * (the account's IndexedDB database) or to go back to the log-in screen and keep it.
 */
import { css, html, LitElement, nothing, type TemplateResult } from 'lit'
import { customElement, property, state } from 'lit/decorators.js'
import { eraseLocalAccount } from '../session.js'
import { icons } from './icons.js'
import { base } from './theme.js'

@customElement('sc-device-removed')
export class DeviceRemovedView extends LitElement {
  static override styles = [
    base,
    css`
      :host {
        display: grid;
        place-items: center;
        min-height: 100%;
        padding: 32px 16px;
        background: var(--bg);
      }
      .card {
        display: grid;
        gap: 16px;
        width: min(460px, 100%);
        padding: 28px;
        border-radius: 20px;
        background: var(--surface);
        box-shadow: var(--shadow-2);
      }
      .badge {
        display: grid;
        place-items: center;
        width: 52px;
        height: 52px;
        border-radius: 50%;
        background: var(--warning-soft);
        color: var(--warning);
      }
      .badge .icon {
        width: 28px;
        height: 28px;
      }
      h1 {
        font-size: 22px;
        font-weight: 750;
        overflow-wrap: anywhere;
      }
      p {
        color: var(--text-2);
        font-size: 14.5px;
      }
      .actions {
        display: grid;
        gap: 10px;
      }
    `,
  ]

  /** The account this device was removed from. */
  @property() username = ''
  /** Deletes the account's database (session.ts's unless a test gives its own). */
  @property({ attribute: false }) erase: (username: string) => Promise<void> = eraseLocalAccount

  @state() private busy = false
  @state() private error = ''

  private done(erased: boolean): void {
    this.dispatchEvent(
      new CustomEvent('device-removed-closed', { detail: { erased }, bubbles: true, composed: true }),
    )
  }

  private async eraseData(): Promise<void> {
    if (this.busy) return
    this.busy = true
    this.error = ''
    try {
      await this.erase(this.username)
      this.done(true)
    } catch {
      this.error = 'This browser did not erase the data. Close the app in every other tab, then try again.'
    } finally {
      this.busy = false
    }
  }

  override render(): TemplateResult {
    return html`<main class="card" aria-labelledby="removed-title">
      <span class="badge">${icons.device()}</span>
      <h1 id="removed-title">This device was removed</h1>
      <p>
        It was removed from <strong>${this.username}</strong> on another of the account's devices, and can
        no longer send or receive messages as ${this.username}.
      </p>
      <p>
        Its keys and conversations are still stored in this browser, encrypted under the password. Erase
        them unless you still need them; to use the account here again, link this browser anew from the
        log-in screen.
      </p>
      ${this.error ? html`<div class="banner error" role="alert">${icons.alert()}<span>${this.error}</span></div>` : nothing}
      <div class="actions">
        <button class="btn danger block" ?disabled=${this.busy} @click=${this.eraseData}>
          ${this.busy ? 'Erasing…' : "Erase this device's data"}
        </button>
        <button class="btn secondary block" ?disabled=${this.busy} @click=${() => this.done(false)}>
          Back to the log-in screen
        </button>
      </div>
    </main>`
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-device-removed': DeviceRemovedView
  }
}
