/**
 * The confirmation before starting over in this browser as an account whose keys were lost: what
 * it does to the account's contacts and to messages in flight, said before anything happens. A
 * modal dialog over the log-in screen; the log-in form keeps the password, and its owner does the
 * work (and shows errors) when the user confirms.
 */
import { css, html, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property } from 'lit/decorators.js'
import { WarningDialog } from './warning-dialog.js'

@customElement('sc-start-over-dialog')
export class StartOverDialog extends WarningDialog<string> {
  static override styles = [
    WarningDialog.styles,
    css`
      h2 {
        overflow-wrap: anywhere;
      }
      li {
        color: var(--text-2);
        font-size: 14.5px;
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
    `,
  ]

  /** The account to start over as; the dialog is open while this is set. */
  @property({ attribute: false }) username: string | undefined
  /** Starting over is under way: the buttons wait. */
  @property({ type: Boolean }) busy = false

  protected override updated(changed: PropertyValues<this>): void {
    if (changed.has('username')) this.showWhileSet(this.username)
  }

  private confirm(): void {
    this.dispatchEvent(new CustomEvent('start-over-confirmed', { bubbles: true, composed: true }))
  }

  /** Closed by the user (Cancel, Escape); a close asked for by its owner is not told (WarningDialog). */
  private onClose(): void {
    this.dispatchEvent(new CustomEvent('start-over-cancelled', { bubbles: true, composed: true }))
  }

  override render(): TemplateResult {
    const name = this.username ?? ''
    return this.renderDialog({
      id: 'start-over',
      title: `Start over as ${name} on this device?`,
      text: html`<p>
          Do this only if the device that held ${name}'s keys is lost or wiped. New keys will be made in
          this browser and replace the old ones on the server.
        </p>
        <ul>
          <li>
            <strong>Your contacts will be told your safety number changed.</strong> Each must accept the
            new one before they can send you messages again.
          </li>
          <li>
            <strong>Messages sent to your old keys cannot be read here.</strong> This browser asks each
            sender to send them again; their app does so once they accept your new safety number (for
            messages up to a week old).
          </li>
          <li>
            Your old conversations are not brought over, and the old device can no longer log in as
            ${name}.
          </li>
        </ul>`,
      actions: html`<button class="btn secondary" autofocus ?disabled=${this.busy} @click=${() => this.dialog.close()}>
          Cancel
        </button>
        <button class="btn danger" ?disabled=${this.busy} @click=${this.confirm}>
          ${this.busy ? 'Making new keys…' : 'Start over'}
        </button>`,
      onClose: () => this.onClose(),
      onCancel: (event) => {
        // Escape cancels, except while the new keys are being made.
        if (this.busy) event.preventDefault()
      },
    })
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-start-over-dialog': StartOverDialog
  }
}
