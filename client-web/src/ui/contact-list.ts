/**
 * The sidebar's list: conversations (unread counts, online dots, last activity) filtered by the
 * search field, and below them the server's users whose names start with what was typed, to
 * start a new conversation with.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, state } from 'lit/decorators.js'
import type { ChatClient, ContactView } from '../../../shared/client/chat-client.js'
import { displayText } from '../../../shared/display-text.js'
import { USER_SEARCH_MIN_LENGTH } from '../../../shared/limits.js'
import { describeError } from '../session.js'
import { avatar } from './avatar.js'
import { formatListTime } from './format.js'
import { icons } from './icons.js'
import { base } from './theme.js'

export interface ContactPreview {
  readonly text: string
  readonly direction: 'in' | 'out'
  /** messageTime of the newest entry (shown beside the name). */
  readonly time?: number
}

/** Wait this long after the last keystroke before asking the server (one request per pause). */
const SEARCH_DEBOUNCE_MS = 250

@customElement('sc-contact-list')
export class ContactList extends LitElement {
  static override styles = [
    base,
    css`
      :host {
        display: flex;
        flex-direction: column;
        min-height: 0;
      }
      .search {
        padding: 4px 16px 12px;
      }
      .search-box {
        position: relative;
      }
      .search-box .icon {
        position: absolute;
        left: 12px;
        top: 50%;
        transform: translateY(-50%);
        color: var(--text-3);
        pointer-events: none;
      }
      .search-box input {
        padding-left: 40px;
        background: var(--surface-2);
        border-color: transparent;
      }
      .search-box input:focus {
        background: var(--surface);
        border-color: var(--accent);
      }
      .scroll {
        flex: 1;
        overflow-y: auto;
        padding: 0 8px 16px;
      }
      h3 {
        padding: 12px 12px 6px;
        font-size: 12px;
        font-weight: 700;
        letter-spacing: 0.04em;
        text-transform: uppercase;
        color: var(--text-3);
      }
      ul {
        list-style: none;
        margin: 0;
        padding: 0;
      }
      .contact {
        display: flex;
        align-items: center;
        gap: 12px;
        width: 100%;
        padding: 10px 12px;
        border: 0;
        border-radius: 12px;
        background: transparent;
        text-align: left;
      }
      .contact:hover {
        background: var(--surface-2);
      }
      .contact[aria-current='true'] {
        background: var(--accent-soft);
      }
      .contact .text {
        flex: 1;
        min-width: 0;
        display: grid;
        gap: 2px;
      }
      .line {
        display: flex;
        align-items: baseline;
        gap: 8px;
      }
      .name {
        flex: 1;
        min-width: 0;
        overflow: hidden;
        text-overflow: ellipsis;
        white-space: nowrap;
        font-weight: 600;
      }
      .time {
        font-size: 12px;
        color: var(--text-3);
      }
      .unread .time {
        color: var(--accent-text);
        font-weight: 600;
      }
      .sub {
        flex: 1;
        min-width: 0;
        font-size: 13px;
        color: var(--text-3);
        overflow: hidden;
        text-overflow: ellipsis;
        white-space: nowrap;
      }
      .you {
        color: var(--text-2);
      }
      .unread .sub {
        color: var(--text-2);
      }
      .verified .icon {
        width: 15px;
        height: 15px;
        margin-left: 4px;
        vertical-align: -2px;
        color: var(--success);
      }
      .sub.warning {
        color: var(--warning);
        font-weight: 600;
      }
      .badge {
        min-width: 22px;
        height: 22px;
        padding: 0 7px;
        border-radius: 999px;
        background: var(--accent);
        color: var(--on-accent);
        font-size: 12px;
        font-weight: 700;
        line-height: 22px;
        text-align: center;
      }
      .start {
        margin-left: auto;
        font-size: 13px;
        font-weight: 600;
        color: var(--accent-text);
        white-space: nowrap;
      }
      .empty {
        display: grid;
        justify-items: center;
        gap: 10px;
        padding: 40px 24px;
        text-align: center;
        color: var(--text-3);
        font-size: 14px;
      }
      .empty .icon {
        width: 36px;
        height: 36px;
        color: var(--text-3);
      }
      .status {
        padding: 8px 12px;
        font-size: 13px;
        color: var(--text-3);
      }
      .status.error {
        color: var(--danger);
      }
    `,
  ]

  @property({ attribute: false }) client!: ChatClient
  @property({ attribute: false }) contacts: readonly ContactView[] = []
  @property({ attribute: false }) previews: ReadonlyMap<string, ContactPreview> = new Map()
  @property({ attribute: false }) selected: string | undefined

  @state() private query = ''
  @state() private results: string[] = []
  @state() private searching = false
  @state() private searchError = ''

  private searchTimer: ReturnType<typeof setTimeout> | undefined
  private searchGeneration = 0

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    clearTimeout(this.searchTimer)
  }

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('client')) {
      this.query = ''
      this.results = []
    }
  }

  private onInput(event: Event): void {
    this.query = (event.target as HTMLInputElement).value
    clearTimeout(this.searchTimer)
    const query = this.query.trim().toLowerCase()
    this.searchError = ''
    // The directory answers prefixes of USER_SEARCH_MIN_LENGTH characters or more (renderResults says so).
    if (query.length < USER_SEARCH_MIN_LENGTH) {
      this.results = []
      this.searching = false
      return
    }
    this.searching = true
    this.searchTimer = setTimeout(() => void this.search(query), SEARCH_DEBOUNCE_MS)
  }

  private async search(query: string): Promise<void> {
    const generation = ++this.searchGeneration
    try {
      const users = await this.client.searchUsers(query)
      if (generation !== this.searchGeneration) return
      this.results = users
    } catch (error) {
      if (generation !== this.searchGeneration) return
      this.results = []
      this.searchError = describeError(error)
    } finally {
      if (generation === this.searchGeneration) this.searching = false
    }
  }

  private open(username: string): void {
    this.dispatchEvent(new CustomEvent('open-chat', { detail: username, bubbles: true, composed: true }))
  }

  private renderContact(contact: ContactView): TemplateResult {
    const preview = this.previews.get(contact.username)
    const sub = contact.accountDeleted
      ? html`<span class="sub warning">Account deleted</span>`
      : contact.blocked
        ? html`<span class="sub blocked" data-testid="blocked">Blocked</span>`
        : contact.identityChanged
          ? html`<span class="sub warning">Safety number changed</span>`
          : preview
            ? html`<span class="sub"
            >${preview.direction === 'out' ? html`<span class="you">You: </span>` : nothing}<bdi
              >${displayText(preview.text.split('\n', 1)[0] ?? '')}</bdi
            ></span
          >`
            : html`<span class="sub">${contact.verified ? 'Verified' : 'No messages yet'}</span>`
    return html`<li>
      <button
        class="contact ${contact.unread > 0 ? 'unread' : ''}"
        aria-current=${this.selected === contact.username ? 'true' : 'false'}
        data-username=${contact.username}
        @click=${() => this.open(contact.username)}
      >
        ${avatar(contact.username, { online: contact.online })}
        <span class="text">
          <span class="line">
            <span class="name"
              >${contact.username}${
                contact.verified
                  ? html`<span class="verified" title="Verified">${icons.shield()}<span class="visually-hidden">
                        (verified)</span
                      ></span>`
                  : nothing
              }${contact.online ? html`<span class="visually-hidden"> (online)</span>` : nothing}</span
            >
            ${
              (this.previews.get(contact.username)?.time ?? contact.lastMessageAt)
                ? html`<span class="time">${formatListTime(this.previews.get(contact.username)?.time ?? contact.lastMessageAt!)}</span>`
                : nothing
            }
          </span>
          <span class="line">
            ${sub}
            ${
              contact.unread > 0
                ? html`<span class="badge" aria-hidden="true">${contact.unread}</span
                    ><span class="visually-hidden"
                      >${contact.unread} unread ${contact.unread === 1 ? 'message' : 'messages'}</span
                    >`
                : nothing
            }
          </span>
        </span>
      </button>
    </li>`
  }

  private renderResults(): TemplateResult | typeof nothing {
    const query = this.query.trim().toLowerCase()
    if (query.length === 0) return nothing
    const known = new Set(this.contacts.map((contact) => contact.username))
    const people = this.results.filter((username) => !known.has(username))
    return html`<section aria-label="People on this server">
      <h3>People on this server</h3>
      ${
        query.length < USER_SEARCH_MIN_LENGTH
          ? html`<p class="status">Type at least ${USER_SEARCH_MIN_LENGTH} characters of a username to find people on this server.</p>`
          : this.searchError
            ? html`<p class="status error" role="alert">${this.searchError}</p>`
            : this.searching && people.length === 0
              ? html`<p class="status">Searching…</p>`
              : people.length === 0
                ? html`<p class="status">No one else matches “${query}”.</p>`
                : html`<ul>
                  ${people.map(
                    (username) => html`<li>
                      <button
                        class="contact"
                        data-username=${username}
                        aria-label="Start a chat with ${username}"
                        @click=${() => this.open(username)}
                      >
                        ${avatar(username)}
                        <span class="name">${username}</span>
                        <span class="start" aria-hidden="true">Start chat</span>
                      </button>
                    </li>`,
                  )}
                </ul>`
      }
    </section>`
  }

  override render(): TemplateResult {
    const query = this.query.trim().toLowerCase()
    const contacts = query
      ? this.contacts.filter((contact) => contact.username.includes(query))
      : this.contacts
    return html`
      <div class="search field">
        <label for="search">Search</label>
        <div class="search-box">
          ${icons.search()}
          <input
            id="search"
            type="search"
            autocomplete="off"
            autocapitalize="off"
            spellcheck="false"
            placeholder="Contacts or usernames"
            .value=${this.query}
            @input=${this.onInput}
          />
        </div>
      </div>
      <div class="scroll">
        ${
          this.contacts.length === 0 && !query
            ? html`<div class="empty">
                ${icons.chat()}
                <p>No conversations yet.</p>
                <p>Search for someone by their username to start an end-to-end encrypted chat.</p>
              </div>`
            : html`<section aria-label="Chats">
                <h3>Chats</h3>
                ${
                  contacts.length === 0
                    ? html`<p class="status">No chats match “${query}”.</p>`
                    : html`<ul>
                        ${contacts.map((contact) => this.renderContact(contact))}
                      </ul>`
                }
              </section>`
        }
        ${this.renderResults()}
      </div>
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-contact-list': ContactList
  }
}
