/**
 * The warning shown when a contact's identity key changes: a modal dialog over the conversation.
 * Sending stays blocked (the core refuses, and the composer is disabled) until the user accepts
 * the new key here; closing the dialog any other way leaves the conversation.
 */
import { css, html, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, state } from 'lit/decorators.js'
import type { ChatClient } from '../../../shared/client/chat-client.js'
import type { SafetyNumber } from '../../../shared/safety-number.js'
import { describeError } from '../session.js'
import { WarningDialog } from './warning-dialog.js'
import './safety-number.js'

@customElement('sc-key-change-dialog')
export class KeyChangeDialog extends WarningDialog<string> {
  static override styles = [
    WarningDialog.styles,
    css`
      .error {
        color: var(--danger);
      }
      sc-safety-number {
        gap: 6px 16px;
        padding: 12px;
        font-size: 15px;
        letter-spacing: 0.05em;
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

  private accepted = false

  protected override updated(changed: PropertyValues<this>): void {
    if (!changed.has('peer')) return
    this.showWhileSet(this.peer, (peer) => {
      this.accepted = false
      this.error = ''
      this.safety = undefined
      this.client
        .safetyNumber(peer)
        .then((safety) => {
          if (this.peer === peer) this.safety = safety
        })
        .catch((error: unknown) => {
          this.error = describeError(error)
        })
    })
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

  private onClose(peer: string): void {
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
    return this.renderDialog({
      id: 'key-change',
      title: `${peer}'s safety number has changed`,
      text: html`<p>
          This usually means ${peer} reinstalled the app or started using a new device. It could also
          mean someone is trying to intercept your messages.
        </p>
        <p>
          Sending to ${peer} is paused. Before continuing, confirm with ${peer} through another channel
          (in person or a call) that they changed devices, and compare your new safety number:
        </p>`,
      more: html`<sc-safety-number
          role="group"
          aria-label="New safety number"
          .safety=${this.safety}
        ></sc-safety-number>
        ${this.error ? html`<p class="error" role="alert">${this.error}</p>` : ''}`,
      actions: html`<button class="btn secondary" ?disabled=${this.busy} @click=${() => this.dialog.close()}>
          Not now
        </button>
        <button class="btn primary" ?disabled=${this.busy || !this.safety} @click=${() => this.accept()}>
          Accept the new safety number
        </button>`,
      onClose: (closed) => this.onClose(closed),
      onCancel: (event) => event.preventDefault(),
    })
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-key-change-dialog': KeyChangeDialog
  }
}
