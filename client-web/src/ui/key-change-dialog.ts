/**
 * The warning shown when a contact's identity key changes: a modal dialog over the conversation.
 * Sending stays blocked (the core refuses, and the composer is disabled) until the user accepts
 * the new key here; closing the dialog any other way leaves the conversation.
 */
import { css, html, LitElement, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import type { ChatClient } from '../../../shared/client/chat-client.js'
import type { SafetyNumber } from '../../../shared/safety-number.js'
import { describeError } from '../session.js'
import { icons } from './icons.js'
import { base } from './theme.js'

@customElement('sc-key-change-dialog')
export class KeyChangeDialog extends LitElement {
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
      }
      p {
        color: var(--text-2);
        font-size: 14.5px;
      }
      .text {
        display: grid;
        gap: 10px;
      }
      .actions {
        display: flex;
        flex-wrap: wrap-reverse;
        justify-content: flex-end;
        gap: 10px;
        padding-top: 6px;
      }
      .error {
        color: var(--danger);
      }
      .number {
        display: grid;
        grid-template-columns: repeat(4, auto);
        justify-content: center;
        gap: 6px 16px;
        padding: 12px;
        border-radius: 12px;
        background: var(--surface-2);
        font-family: var(--mono);
        font-size: 15px;
        letter-spacing: 0.05em;
        font-variant-numeric: tabular-nums;
      }
      @media (max-width: 400px) {
        .number {
          grid-template-columns: repeat(3, auto);
        }
      }
    `,
  ]

  @property({ attribute: false }) client!: ChatClient
  /** The contact whose key changed; the dialog is open while this is set. */
  @property({ attribute: false }) peer: string | undefined

  @state() private busy = false
  @state() private error = ''
  /** The safety number with the new key: shown, and handed back when accepting. */
  @state() private safety: SafetyNumber | undefined

  @query('dialog') private dialog!: HTMLDialogElement
  private accepted = false

  protected override updated(changed: PropertyValues<this>): void {
    if (!changed.has('peer')) return
    if (this.peer && !this.dialog.open) {
      this.accepted = false
      this.error = ''
      this.safety = undefined
      this.dialog.showModal()
      const peer = this.peer
      this.client
        .safetyNumber(peer)
        .then((safety) => {
          if (this.peer === peer) this.safety = safety
        })
        .catch((error: unknown) => {
          this.error = describeError(error)
        })
    } else if (!this.peer && this.dialog.open) {
      this.dialog.close()
    }
  }

  private async accept(): Promise<void> {
    const peer = this.peer
    if (!peer) return
    this.busy = true
    this.error = ''
    try {
      // If the key changed again since this number was shown, the core accepts nothing.
      await this.client.acceptIdentityChange(peer, this.safety?.digits)
      this.accepted = true
      this.dialog.close()
    } catch (error) {
      this.error = describeError(error)
    } finally {
      this.busy = false
    }
  }

  private onClose(): void {
    const peer = this.peer
    this.dispatchEvent(
      new CustomEvent('key-change-closed', {
        detail: { peer, accepted: this.accepted },
        bubbles: true,
        composed: true,
      }),
    )
  }

  override render(): TemplateResult {
    const peer = this.peer ?? ''
    return html`<dialog
      aria-labelledby="key-change-title"
      aria-describedby="key-change-text"
      @close=${this.onClose}
      @cancel=${(event: Event) => event.preventDefault()}
    >
      <div class="body">
        <span class="badge">${icons.alert()}</span>
        <h2 id="key-change-title">${peer}'s safety number has changed</h2>
        <div id="key-change-text" class="text">
          <p>
            This usually means ${peer} reinstalled the app or started using a new device. It could also
            mean someone is trying to intercept your messages.
          </p>
          <p>
            Sending to ${peer} is paused. Before continuing, confirm with ${peer} through another channel
            (in person or a call) that they changed devices, and compare your new safety number:
          </p>
        </div>
        <div class="number" role="group" aria-label="New safety number">
          ${
            this.safety
              ? this.safety.groups.map((group) => html`<span>${group}</span>`)
              : html`<span>Computing…</span>`
          }
        </div>
        ${this.error ? html`<p class="error" role="alert">${this.error}</p>` : ''}
        <div class="actions">
          <button class="btn secondary" ?disabled=${this.busy} @click=${() => this.dialog.close()}>
            Not now
          </button>
          <button class="btn primary" ?disabled=${this.busy || !this.safety} @click=${() => this.accept()}>
            Accept the new safety number
          </button>
        </div>
      </div>
    </dialog>`
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-key-change-dialog': KeyChangeDialog
  }
}
