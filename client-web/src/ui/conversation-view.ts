/**
 * One conversation: its header, the windowed message list (paging older messages in from the
 * local database as the user scrolls up), and the composer. Enter sends, Shift+Enter starts a new
 * line. Sending is blocked while the contact's key change is unacknowledged. Our messages written
 * on another of our devices are marked with that device's name, read from the account's device
 * list (ChatClient.devices) once such a message shows, and again for a device not seen before.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import type { ChatClient, ContactView, MessageView } from '../../../shared/client/chat-client.js'
import { MAX_MESSAGE_TEXT_LENGTH } from '../../../shared/client/content.js'
import { ClientErrorCode, isClientError } from '../../../shared/client/errors.js'
import { accountDeletedText } from '../../../shared/client/views.js'
import { describeError } from '../session.js'
import { avatar } from './avatar.js'
import { icons } from './icons.js'
import type { MessageList } from './message-list.js'
import { pane } from './shared-styles.js'
import { base } from './theme.js'
import './message-list.js'

/** Messages read from the local database per page. */
export const HISTORY_PAGE = 100
/** The composer grows with its text up to this height, then scrolls. */
const COMPOSER_MAX_HEIGHT_PX = 160

@customElement('sc-conversation')
export class ConversationView extends LitElement {
  static override styles = [
    base,
    pane,
    css`
      .who {
        display: flex;
        align-items: center;
        gap: 12px;
        min-width: 0;
        flex: 1;
        padding: 4px 6px;
        border: 0;
        border-radius: 10px;
        background: transparent;
        text-align: left;
      }
      .who:hover {
        background: var(--surface-2);
      }
      .who-text {
        display: grid;
        min-width: 0;
      }
      h2 {
        overflow: hidden;
        text-overflow: ellipsis;
        white-space: nowrap;
      }
      /* On a phone the verified chip goes below rather than break "End-to-end encrypted" in two. */
      .status {
        display: flex;
        flex-wrap: wrap;
        align-items: center;
        gap: 2px 6px;
        font-size: 13px;
        color: var(--text-3);
      }
      .status .online {
        color: var(--success);
        font-weight: 600;
      }
      .status .e2e {
        display: inline-flex;
        white-space: nowrap;
        align-items: center;
        gap: 4px;
      }
      .status .e2e .icon {
        width: 14px;
        height: 14px;
      }
      .notice {
        padding: 10px 16px 0;
      }
      .notice .banner {
        max-width: 820px;
        margin: 0 auto;
        align-items: center;
      }
      .notice .banner > span {
        flex: 1;
      }
      sc-message-list {
        flex: 1;
      }
      form {
        padding: 10px 16px 14px;
        background: var(--surface);
        border-top: 1px solid var(--border);
      }
      .composer {
        display: flex;
        align-items: flex-end;
        gap: 10px;
        max-width: 820px;
        margin: 0 auto;
      }
      .composer .field {
        flex: 1;
        gap: 4px;
      }
      .composer label {
        padding-left: 4px;
        font-size: 12px;
      }
      textarea {
        display: block;
        resize: none;
        min-height: 46px;
        max-height: ${COMPOSER_MAX_HEIGHT_PX}px;
        padding: 11px 14px;
        border-radius: 14px;
        line-height: 1.4;
        background: var(--surface-2);
      }
      .send {
        min-height: 46px;
        border-radius: 14px;
      }
      .error {
        max-width: 820px;
        margin: 0 auto 8px;
        font-size: 13px;
        color: var(--danger);
      }
      .hint {
        max-width: 820px;
        margin: 6px auto 0;
        font-size: 12px;
      }
      @media (max-width: 520px) {
        .send .send-text {
          display: none;
        }
        .send {
          width: 46px;
          padding: 0;
        }
        .hint {
          display: none;
        }
      }
    `,
  ]

  @property({ attribute: false }) client!: ChatClient
  @property({ attribute: false }) peer = ''
  @property({ attribute: false }) contact: ContactView | undefined
  /** Narrow layout: the header gets a back button to the contact list. */
  @property({ type: Boolean }) narrow = false

  @state() private messages: MessageView[] = []
  @state() private hasOlder = false
  @state() private loadingOlder = false
  @state() private error = ''
  @state() private sending = false
  /** The account's device names, by id, for the "from Laptop" marks (see wantDeviceNames). */
  @state() private deviceNames: ReadonlyMap<number, string | undefined> = new Map()

  @query('textarea') private textarea!: HTMLTextAreaElement
  @query('sc-message-list') private list!: MessageList

  private unsubscribe: (() => void)[] = []
  private loadGeneration = 0
  /** Devices whose names were asked for (once each: a device without a name stays "device 2"). */
  private namesAsked = new Set<number>()

  override connectedCallback(): void {
    super.connectedCallback()
    document.addEventListener('visibilitychange', this.onVisibility)
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    document.removeEventListener('visibilitychange', this.onVisibility)
    this.stopListening()
  }

  private stopListening(): void {
    for (const stop of this.unsubscribe) stop()
    this.unsubscribe = []
  }

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('client')) {
      this.deviceNames = new Map()
      this.namesAsked = new Set()
    }
    if ((changed.has('peer') || changed.has('client')) && this.client && this.peer) void this.load()
    // A state, not a property: PropertyValues<this> does not list it.
    if ((changed as PropertyValues).has('messages')) this.wantDeviceNames()
  }

  /**
   * Reads the account's device names when a message of ours from another device shows whose name
   * is not known yet. Unreachable (offline), the marks say "device 2" until the view opens again.
   */
  private wantDeviceNames(): void {
    const client = this.client
    if (!client) return
    const thisDevice = client.deviceId
    const wanted = new Set<number>()
    for (const message of this.messages) {
      const device = message.device ?? 1
      if (message.direction === 'out' && device !== thisDevice && !this.namesAsked.has(device)) {
        wanted.add(device)
      }
    }
    if (wanted.size === 0) return
    for (const device of wanted) this.namesAsked.add(device)
    client
      .devices()
      .then((devices) => {
        if (client !== this.client) return
        this.deviceNames = new Map(devices.map((device) => [device.id, device.name]))
      })
      .catch(() => undefined)
  }

  private async load(): Promise<void> {
    const generation = ++this.loadGeneration
    const peer = this.peer
    this.stopListening()
    this.messages = []
    this.hasOlder = false
    this.error = ''
    const client = this.client
    this.unsubscribe = [
      client.events.on('message', (message) => {
        if (message.peer !== peer) return
        this.upsert(message)
        if (message.direction === 'in') this.markRead(true)
      }),
      client.events.on('removed', ({ peer: from, id }) => {
        if (from === peer) this.messages = this.messages.filter((message) => message.id !== id)
      }),
      // Another device of the account changed this conversation: history it sent this one, a
      // read position. The newest page is read again and merged.
      client.events.on('contact-updated', ({ peer: changed }) => {
        if (changed === peer) void this.refreshNewest(generation)
      }),
      client.events.on('delivery', ({ peer: from, id, state }) => {
        if (from !== peer) return
        const index = this.messages.findIndex((message) => message.id === id)
        const existing = this.messages[index]
        if (!existing) return
        const messages = [...this.messages]
        messages[index] = { ...existing, state }
        this.messages = messages
      }),
    ]
    const page = await client.history(peer, { limit: HISTORY_PAGE })
    if (generation !== this.loadGeneration) return
    // Messages that arrived while the page loaded are kept (upsert dedupes by id).
    const loadedIds = new Set(page.map((message) => message.id))
    this.messages = [...page, ...this.messages.filter((message) => !loadedIds.has(message.id))]
    this.hasOlder = page.length === HISTORY_PAGE
    this.markRead()
  }

  private async refreshNewest(generation: number): Promise<void> {
    const page = await this.client.history(this.peer, { limit: HISTORY_PAGE })
    if (generation !== this.loadGeneration) return
    for (const message of page) this.upsert(message)
  }

  /** Adds or replaces a message by id, at its position (a notice's message may move to the end). */
  private upsert(message: MessageView): void {
    const messages = this.messages.filter((existing) => existing.id !== message.id)
    let at = messages.length
    while (at > 0 && messages[at - 1]!.order > message.order) at--
    messages.splice(at, 0, message)
    this.messages = messages
  }

  private async loadOlder(): Promise<void> {
    if (this.loadingOlder || !this.hasOlder) return
    const oldest = this.messages[0]
    if (!oldest) return
    const generation = this.loadGeneration
    this.loadingOlder = true
    try {
      const page = await this.client.history(this.peer, { limit: HISTORY_PAGE, beforeOrder: oldest.order })
      if (generation !== this.loadGeneration) return
      this.messages = [...page, ...this.messages]
      this.hasOlder = page.length === HISTORY_PAGE
    } finally {
      this.loadingOlder = false
    }
  }

  private onVisibility = (): void => {
    if (document.visibilityState === 'visible') this.markRead()
  }

  /** Clears the unread count while the user can see the conversation. */
  private markRead(arrived = false): void {
    if (document.visibilityState !== 'visible') return
    if (!arrived && (this.contact?.unread ?? 0) === 0) return
    // Read up to what is on screen: a message arriving meanwhile stays unread.
    const newest = this.messages.at(-1)
    void this.client
      .markRead(this.peer, newest?.order)
      .then(() => this.dispatchEvent(new CustomEvent('contacts-changed', { bubbles: true, composed: true })))
      .catch(() => undefined)
  }

  /** Sending is paused: a key change to review first, a contact we blocked, or a deleted account. */
  private get blocked(): boolean {
    return this.contact?.identityChanged === true || this.contact?.blocked === true || this.deleted
  }

  /** The contact deleted their account: the history stays, marked, and nothing can be sent. */
  private get deleted(): boolean {
    return this.contact?.accountDeleted === true
  }

  private async send(): Promise<void> {
    const text = this.textarea.value
    if (text.trim().length === 0 || this.sending || this.blocked) return
    this.sending = true
    this.error = ''
    try {
      this.list?.scrollToBottom()
      await this.client.send(this.peer, text)
      this.textarea.value = ''
      this.resizeComposer()
      this.dispatchEvent(new CustomEvent('contacts-changed', { bubbles: true, composed: true }))
    } catch (error) {
      if (isClientError(error, ClientErrorCode.AccountDeleted)) {
        // The banner says it once the contact list is re-read.
        this.dispatchEvent(new CustomEvent('contacts-changed', { bubbles: true, composed: true }))
      } else if (isClientError(error, ClientErrorCode.IdentityChanged)) {
        // The banner and the dialog say it; the text stays in the composer for after the review.
        this.dispatchEvent(
          new CustomEvent('identity-warning', { detail: this.peer, bubbles: true, composed: true }),
        )
      } else {
        this.error = describeError(error)
      }
    } finally {
      this.sending = false
      this.textarea?.focus()
    }
  }

  private onKeydown(event: KeyboardEvent): void {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault()
      void this.send()
    }
  }

  private resizeComposer(): void {
    const textarea = this.textarea
    if (!textarea) return
    textarea.style.height = 'auto'
    textarea.style.height = `${Math.min(textarea.scrollHeight + 2, COMPOSER_MAX_HEIGHT_PX)}px`
  }

  /** Puts the cursor in the composer (the app calls it when the conversation opens). */
  focusComposer(): void {
    void this.updateComplete.then(() => this.textarea?.focus())
  }

  private renderHeader(): TemplateResult {
    const contact = this.contact
    const online = contact?.online === true
    return html`<header>
      ${
        this.narrow
          ? html`<button class="icon-btn" aria-label="Back to chats" @click=${() => this.go('#/')}>
              ${icons.back()}
            </button>`
          : nothing
      }
      <button
        class="who"
        aria-label="Contact details for ${this.peer}"
        @click=${() => this.go(`#/chat/${encodeURIComponent(this.peer)}/details`)}
      >
        ${avatar(this.peer, { online })}
        <span class="who-text">
          <h2>${this.peer}</h2>
          <span class="status">
            ${
              online
                ? html`<span class="online">online</span>`
                : html`<span class="e2e">${icons.lock()} End-to-end encrypted</span>`
            }
            ${
              contact?.verified
                ? html`<span class="chip verified">${icons.shield()} Verified</span>`
                : nothing
            }
          </span>
        </span>
      </button>
      <button
        class="icon-btn"
        aria-label="Contact details"
        title="Contact details and safety number"
        @click=${() => this.go(`#/chat/${encodeURIComponent(this.peer)}/details`)}
      >
        ${icons.info()}
      </button>
    </header>`
  }

  private go(hash: string): void {
    location.hash = hash
  }

  override render(): TemplateResult {
    return html`
      ${this.renderHeader()}
      ${
        this.deleted
          ? html`<div class="notice">
              <div class="banner warning" role="status" data-testid="account-deleted">
                ${icons.alert()}
                <span>${accountDeletedText(this.peer)}</span>
              </div>
            </div>`
          : this.contact?.blocked
            ? html`<div class="notice">
              <div class="banner warning" role="status" data-testid="blocked-banner">
                ${icons.alert()}
                <span
                  >You blocked ${this.peer}. Their messages are not delivered to you and they cannot see
                  when you are online; this conversation stays here.</span
                >
                <button class="btn secondary" @click=${() => this.go(`#/chat/${encodeURIComponent(this.peer)}/details`)}>
                  Unblock…
                </button>
              </div>
            </div>`
            : this.blocked
              ? html`<div class="notice">
              <div class="banner warning" role="alert">
                ${icons.alert()}
                <span
                  >${this.peer}'s safety number has changed. Sending is paused until you review the
                  change.</span
                >
                <button
                  class="btn secondary"
                  @click=${() =>
                    this.dispatchEvent(
                      new CustomEvent('identity-warning', {
                        detail: this.peer,
                        bubbles: true,
                        composed: true,
                      }),
                    )}
                >
                  Review
                </button>
              </div>
            </div>`
              : nothing
      }
      <sc-message-list
        .messages=${this.messages}
        .peer=${this.peer}
        .thisDevice=${this.client.deviceId}
        .deviceNames=${this.deviceNames}
        ?hasOlder=${this.hasOlder}
        ?loadingOlder=${this.loadingOlder}
        @load-older=${() => void this.loadOlder()}
      ></sc-message-list>
      <form
        @submit=${(event: Event) => {
          event.preventDefault()
          void this.send()
        }}
      >
        ${this.error ? html`<p class="error" role="alert">${this.error}</p>` : nothing}
        <div class="composer">
          <div class="field">
            <label for="message">Message</label>
            <textarea
              id="message"
              rows="1"
              maxlength=${MAX_MESSAGE_TEXT_LENGTH}
              autocomplete="off"
              placeholder=${
                this.deleted
                  ? 'This account was deleted'
                  : this.contact?.blocked
                    ? `Unblock ${this.peer} to send messages`
                    : this.blocked
                      ? 'Review the key change to send messages'
                      : `Write to ${this.peer}`
              }
              ?disabled=${this.blocked}
              @keydown=${this.onKeydown}
              @input=${this.resizeComposer}
            ></textarea>
          </div>
          <button class="btn primary send" type="submit" ?disabled=${this.blocked} aria-label="Send">
            ${icons.send()}<span class="send-text">Send</span>
          </button>
        </div>
        <p class="hint">Enter to send · Shift+Enter for a new line</p>
      </form>
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-conversation': ConversationView
  }
}
