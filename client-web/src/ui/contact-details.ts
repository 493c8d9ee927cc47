/**
 * A contact's details: the safety number as twelve groups of five digits and as a QR code, whether
 * it has been verified, the action that records a successful comparison, and blocking.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, state } from 'lit/decorators.js'
import type { ChatClient, ContactView } from '../../../shared/client/chat-client.js'
import type { SafetyNumber } from '../../../shared/safety-number.js'
import { describeError } from '../session.js'
import { avatar } from './avatar.js'
import { icons } from './icons.js'
import { cardPage, pane } from './shared-styles.js'
import { base } from './theme.js'
import './qr-code.js'
import './safety-number.js'

@customElement('sc-contact-details')
export class ContactDetails extends LitElement {
  static override styles = [
    base,
    pane,
    cardPage,
    css`
      .content {
        gap: 20px;
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
        gap: 16px;
        padding: 22px;
      }
      sc-safety-number {
        gap: 10px 22px;
        margin: 4px 0;
        padding: 16px;
        font-size: 19px;
        letter-spacing: 0.06em;
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
        sc-safety-number {
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
      // Confirming a changed key's number accepts the new key too (the core's one rule for both UIs).
      if (verified && this.safety) await this.client.confirmSafetyNumber(this.peer, this.safety.digits)
      else await this.client.markVerified(this.peer, false)
      this.dispatchEvent(new CustomEvent('contacts-changed', { bubbles: true, composed: true }))
    } catch (error) {
      this.error = describeError(error)
    } finally {
      this.busy = false
    }
  }

  private async setBlocked(blocked: boolean): Promise<void> {
    this.busy = true
    this.error = ''
    try {
      if (blocked) await this.client.blockContact(this.peer)
      else await this.client.unblockContact(this.peer)
      this.dispatchEvent(new CustomEvent('contacts-changed', { bubbles: true, composed: true }))
    } catch (error) {
      this.error = describeError(error)
    } finally {
      this.busy = false
    }
  }

  private renderBlocking(): TemplateResult {
    const blocked = this.contact?.blocked === true
    return html`<section class="card" aria-labelledby="block-heading">
      <h3 id="block-heading">${blocked ? `${this.peer} is blocked` : 'Block'}</h3>
      <p>
        ${
          blocked
            ? html`Their messages are not delivered to you, they cannot see when you are online, and you
                cannot write to them. They are not told. The conversation stays.`
            : html`Blocking ${this.peer} stops their messages (they are not told: theirs look sent, never
                delivered) and hides when you are online from them. The conversation stays.`
        }
      </p>
      <div class="actions">
        ${
          blocked
            ? html`<span class="chip unverified" data-testid="blocked-chip">Blocked</span>
                <button class="btn secondary" ?disabled=${this.busy} @click=${() => this.setBlocked(false)}>
                  Unblock ${this.peer}
                </button>`
            : html`<button class="btn secondary" ?disabled=${this.busy} @click=${() => this.setBlocked(true)}>
                Block ${this.peer}
              </button>`
        }
      </div>
    </section>`
  }

  private renderVerification(): TemplateResult {
    const contact = this.contact
    if (contact?.identityChanged) {
      return html`<div class="banner warning" role="alert">
          ${icons.alert()}
          <span>Their safety number changed. This is the new number: if it matches ${this.peer}'s screen,
            mark it verified, which also accepts the new key.</span>
        </div>
        <div class="actions">
          <button class="btn primary" ?disabled=${this.busy || !this.safety} @click=${() => this.setVerified(true)}>
            ${icons.shield()} It matches: mark verified
          </button>
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
              <sc-safety-number
                role="group"
                aria-label="Safety number"
                data-testid="safety-number"
                .safety=${this.safety}
              ></sc-safety-number>
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
          ${this.renderBlocking()}
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
