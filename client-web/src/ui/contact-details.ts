/**
 * A contact's details: the safety number as twelve groups of five digits and as a QR code, whether
 * it has been verified, and the action that records a successful comparison.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, state } from 'lit/decorators.js'
import type { ChatClient, ContactView } from '../../../shared/client/chat-client.js'
import type { SafetyNumber } from '../../../shared/safety-number.js'
import { describeError } from '../session.js'
import { avatar } from './avatar.js'
import { icons } from './icons.js'
import { base } from './theme.js'
import './qr-code.js'

@customElement('sc-contact-details')
export class ContactDetails extends LitElement {
  static override styles = [
    base,
    css`
      :host {
        display: flex;
        flex-direction: column;
        height: 100%;
        min-height: 0;
        background: var(--bg);
      }
      header {
        display: flex;
        align-items: center;
        gap: 10px;
        padding: 10px 12px;
        min-height: 64px;
        background: var(--surface);
        border-bottom: 1px solid var(--border);
      }
      header h2 {
        font-size: 17px;
        font-weight: 700;
      }
      .scroll {
        flex: 1;
        overflow-y: auto;
        padding: 24px 16px 40px;
      }
      .content {
        display: grid;
        gap: 20px;
        max-width: 640px;
        margin: 0 auto;
      }
      .identity {
        display: grid;
        justify-items: center;
        gap: 8px;
        text-align: center;
      }
      .identity h3 {
        font-size: 22px;
        font-weight: 700;
      }
      .card {
        display: grid;
        gap: 16px;
        padding: 22px;
        border-radius: 16px;
        background: var(--surface);
        box-shadow: var(--shadow-1);
      }
      .card h3 {
        font-size: 16px;
        font-weight: 700;
      }
      .card p {
        color: var(--text-2);
        font-size: 14px;
      }
      .number {
        display: grid;
        grid-template-columns: repeat(4, auto);
        justify-content: center;
        gap: 10px 22px;
        margin: 4px 0;
        padding: 16px;
        border-radius: 12px;
        background: var(--surface-2);
        font-family: var(--mono);
        font-size: 19px;
        letter-spacing: 0.06em;
        font-variant-numeric: tabular-nums;
        color: var(--text);
      }
      .qr {
        display: grid;
        justify-items: center;
        gap: 8px;
      }
      sc-qr-code {
        width: 184px;
        height: 184px;
        padding: 8px;
        border-radius: 12px;
        background: #fff;
        box-shadow: inset 0 0 0 1px var(--border);
      }
      .qr .hint {
        text-align: center;
      }
      .actions {
        display: flex;
        flex-wrap: wrap;
        gap: 10px;
        align-items: center;
      }
      .layout {
        display: grid;
        gap: 20px;
        align-items: center;
      }
      @media (min-width: 640px) {
        .layout {
          grid-template-columns: 1fr auto;
        }
      }
      @media (max-width: 400px) {
        .number {
          grid-template-columns: repeat(3, auto);
          font-size: 17px;
          gap: 8px 16px;
        }
      }
    `,
  ]

  @property({ attribute: false }) client!: ChatClient
  @property({ attribute: false }) peer = ''
  @property({ attribute: false }) contact: ContactView | undefined

  @state() private safety: SafetyNumber | undefined
  @state() private error = ''
  @state() private busy = false

  protected override willUpdate(changed: PropertyValues<this>): void {
    const identityChanged =
      changed.has('contact') && changed.get('contact')?.identityChanged !== this.contact?.identityChanged
    if (changed.has('peer') || changed.has('client') || identityChanged) void this.load()
  }

  private async load(): Promise<void> {
    this.safety = undefined
    this.error = ''
    try {
      const peer = this.peer
      const safety = await this.client.safetyNumber(peer)
      if (peer === this.peer) this.safety = safety
    } catch (error) {
      this.error = describeError(error)
    }
  }

  private async setVerified(verified: boolean): Promise<void> {
    this.busy = true
    this.error = ''
    try {
      // The number on screen goes along: if the key changed since it was computed, nothing is marked.
      await this.client.markVerified(this.peer, verified, verified ? this.safety?.digits : undefined)
      this.dispatchEvent(new CustomEvent('contacts-changed', { bubbles: true, composed: true }))
    } catch (error) {
      this.error = describeError(error)
    } finally {
      this.busy = false
    }
  }

  private renderVerification(): TemplateResult {
    const contact = this.contact
    if (contact?.identityChanged) {
      return html`<div class="banner warning" role="alert">
        ${icons.alert()}
        <span>Their safety number changed. Acknowledge the change in the conversation first, then compare
          the new number.</span>
      </div>`
    }
    return html`<div class="actions">
      ${
        contact?.verified
          ? html`<span class="chip verified">${icons.shield()} Verified</span>
              <button class="btn secondary" ?disabled=${this.busy} @click=${() => this.setVerified(false)}>
                Clear verification
              </button>`
          : html`<button class="btn primary" ?disabled=${this.busy || !this.safety} @click=${() => this.setVerified(true)}>
                ${icons.shield()} Mark verified
              </button>
              <span class="chip unverified">Not verified yet</span>`
      }
    </div>`
  }

  override render(): TemplateResult {
    const chat = `#/chat/${encodeURIComponent(this.peer)}`
    return html`
      <header>
        <button class="icon-btn" aria-label="Back to conversation" @click=${() => {
          location.hash = chat
        }}>
          ${icons.back()}
        </button>
        <h2>Contact details</h2>
      </header>
      <div class="scroll">
        <div class="content">
          <div class="identity">
            ${avatar(this.peer, { size: 'large', online: this.contact?.online === true })}
            <h3>${this.peer}</h3>
            ${
              this.contact?.verified
                ? html`<span class="chip verified">${icons.shield()} Verified</span>`
                : nothing
            }
          </div>
          <section class="card" aria-labelledby="safety-heading">
            <h3 id="safety-heading">Safety number</h3>
            <p>
              Compare these digits with ${this.peer}'s screen, in person or over a call you trust, or
              scan each other's code. If they match, nobody is in the middle of your conversation.
            </p>
            ${this.error ? html`<p class="banner error" role="alert">${this.error}</p>` : nothing}
            <div class="layout">
              <div
                class="number"
                role="group"
                aria-label="Safety number"
                data-testid="safety-number"
              >
                ${
                  this.safety
                    ? this.safety.groups.map((group) => html`<span>${group}</span>`)
                    : html`<span>Computing…</span>`
                }
              </div>
              <div class="qr">
                ${
                  this.safety
                    ? html`<sc-qr-code .payload=${this.safety.qrPayload} label="Safety number QR code"></sc-qr-code>`
                    : nothing
                }
              </div>
            </div>
            ${this.renderVerification()}
          </section>
        </div>
      </div>
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-contact-details': ContactDetails
  }
}
