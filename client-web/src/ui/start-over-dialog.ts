/**
 * The confirmation before starting over in this browser as an account whose keys were lost: what
 * it does to the account's contacts and to messages in flight, said before anything happens. A
 * modal dialog over the log-in screen; the log-in form keeps the password, and its owner does the
 * work (and shows errors) when the user confirms.
 */
import { css, html, LitElement, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query } from 'lit/decorators.js'
import { icons } from './icons.js'
import { base } from './theme.js'

@customElement('sc-start-over-dialog')
export class StartOverDialog extends LitElement {
  static override styles = [
    base,
    css`
      dialog {
        width: min(480px, calc(100vw - 32px));
        padding: 0;
        border: 0;
        border-radius: 18px;
        background: var(--surface);
        color: var(--text);
        box-shadow: var(--shadow-2);
      }
      dialog::backdrop {
        background: rgb(10 15 25 / 55%);
      }
      .body {
        display: grid;
        gap: 14px;
        padding: 26px 24px 22px;
      }
      .badge {
        display: grid;
        place-items: center;
        width: 48px;
        height: 48px;
        border-radius: 50%;
        background: var(--warning-soft);
        color: var(--warning);
      }
      .badge .icon {
        width: 26px;
        height: 26px;
      }
      h2 {
        font-size: 19px;
        font-weight: 700;
        overflow-wrap: anywhere;
      }
      p,
      li {
        color: var(--text-2);
        font-size: 14.5px;
      }
      .text {
        display: grid;
        gap: 10px;
      }
      ul {
        display: grid;
        gap: 8px;
        margin: 0;
        padding-left: 20px;
      }
      li strong {
        color: var(--text);
        font-weight: 650;
      }
      .actions {
        display: flex;
        flex-wrap: wrap-reverse;
        justify-content: flex-end;
        gap: 10px;
        padding-top: 6px;
      }
    `,
  ]

  /** The account to start over as; the dialog is open while this is set. */
  @property({ attribute: false }) username: string | undefined
  /** Starting over is under way: the buttons wait. */
  @property({ type: Boolean }) busy = false

  @query('dialog') private dialog!: HTMLDialogElement

  protected override updated(changed: PropertyValues<this>): void {
    if (!changed.has('username')) return
    if (this.username && !this.dialog.open) this.dialog.showModal()
    else if (!this.username && this.dialog.open) this.dialog.close()
  }

  private confirm(): void {
    this.dispatchEvent(new CustomEvent('start-over-confirmed', { bubbles: true, composed: true }))
  }

  private onClose(): void {
    if (!this.username) return
    this.dispatchEvent(new CustomEvent('start-over-cancelled', { bubbles: true, composed: true }))
  }

  override render(): TemplateResult {
    const name = this.username ?? ''
    return html`<dialog
      aria-labelledby="start-over-title"
      aria-describedby="start-over-text"
      @close=${this.onClose}
      @cancel=${(event: Event) => {
        // Escape cancels, except while the new keys are being made.
        if (this.busy) event.preventDefault()
      }}
    >
      <div class="body">
        <span class="badge">${icons.alert()}</span>
        <h2 id="start-over-title">Start over as ${name} on this device?</h2>
        <div id="start-over-text" class="text">
          <p>
            Do this only if the device that held ${name}'s keys is lost or wiped. New keys will be made in
            this browser and replace the old ones on the server.
          </p>
          <ul>
            <li>
              <strong>Your contacts will be told your safety number changed.</strong> Each must accept the
              new one before they can send you messages again.
            </li>
            <li>
              <strong>Messages sent to your old keys cannot be read.</strong> Those still waiting on the
              server are dropped when they arrive here.
            </li>
            <li>
              Your old conversations are not brought over, and the old device can no longer log in as
              ${name}.
            </li>
          </ul>
        </div>
        <div class="actions">
          <button class="btn secondary" autofocus ?disabled=${this.busy} @click=${() => this.dialog.close()}>
            Cancel
          </button>
          <button class="btn danger" ?disabled=${this.busy} @click=${this.confirm}>
            ${this.busy ? 'Making new keys…' : 'Start over'}
          </button>
        </div>
      </div>
    </dialog>`
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-start-over-dialog': StartOverDialog
  }
}
