/**
 * The application: signed out it shows the register / log in screen; signed in, the contact list
 * and the open conversation side by side on a wide screen, one at a time on a phone. Routes live in
 * the URL fragment (#/, #/chat/<user>, #/chat/<user>/details, #/settings) so the back button works.
 *
 * It owns the open account and listens to the client core's events: it keeps the contact list
 * fresh, the tab title's unread count, notifications, and the key-change warning. When the server
 * says this device was removed from the account, it locks the app and shows the removed screen
 * (sc-device-removed) in place of the log-in screen until the user erases the data or goes back.
 * While another of the account's devices sends this one its history (at link time: docs/protocol.md
 * §13.10), a banner over the contact list counts the parts, then says how many messages came.
 * The other way round, the history this device sends a device approved in Settings › Link a device
 * is the shell's too (a HistorySender, history-send.ts): it goes on when Settings is left, and a
 * banner on every screen (over the chats, or over the open pane where the chats are hidden) counts
 * its parts until "History sent to …", which stays until dismissed.
 */
import { css, html, LitElement, nothing, type TemplateResult } from 'lit'
import { customElement, query, state } from 'lit/decorators.js'
import type { ConnectionState, ContactView } from '../../../shared/client/chat-client.js'
import { normalizeUsername } from '../../../shared/username.js'
import { notifyNewMessage, titleFor } from '../attention.js'
import { HistorySender, historyDevice } from '../history-send.js'
import { describeError, type OpenAccount } from '../session.js'
import { avatar } from './avatar.js'
import type { ContactPreview } from './contact-list.js'
import type { ConversationView } from './conversation-view.js'
import { icons } from './icons.js'
import { progressBar } from './progress-bar.js'
import type { InstallPrompt } from './settings-view.js'
import { base } from './theme.js'
import './auth-view.js'
import './contact-details.js'
import './contact-list.js'
import './conversation-view.js'
import './device-removed-view.js'
import './key-change-dialog.js'
import './settings-view.js'

export type Route =
  | { readonly view: 'list' }
  | { readonly view: 'chat'; readonly peer: string }
  | { readonly view: 'details'; readonly peer: string }
  | { readonly view: 'settings' }

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/')
  if (parts[0] === 'settings') return { view: 'settings' }
  if (parts[0] === 'chat' && parts[1]) {
    try {
      const peer = normalizeUsername(decodeURIComponent(parts[1]))
      return parts[2] === 'details' ? { view: 'details', peer } : { view: 'chat', peer }
    } catch {
      return { view: 'list' }
    }
  }
  return { view: 'list' }
}

/** Below this width one pane shows at a time. */
const WIDE_QUERY = '(min-width: 800px)'

/** How long "History received" stays once the last part of a transfer is stored. */
const HISTORY_DONE_MS = 5_000

/**
 * How long the banner waits for a transfer's next part before it goes: parts arrive within
 * milliseconds of each other, and those stored before a reload are not counted again after it, so
 * a count that stopped short would otherwise stay on screen for good.
 */
const HISTORY_QUIET_MS = 60_000

/** A history transfer from another of our devices, as its parts arrive (in any order). */
interface Incoming {
  readonly parts: number
  readonly received: ReadonlySet<number>
  readonly messages: number
}

const CONNECTION_TEXT: Record<ConnectionState, string> = {
  online: 'Connected',
  connecting: 'Connecting…',
  offline: 'Offline',
  'logged-out': 'Session ended',
}

@customElement('sc-app')
export class AppShell extends LitElement {
  static override styles = [
    base,
    css`
      :host {
        display: block;
        height: 100%;
      }
      .layout {
        display: grid;
        height: 100%;
        grid-template-columns: 1fr;
      }
      .layout.wide {
        grid-template-columns: minmax(300px, 360px) 1fr;
      }
      aside {
        display: flex;
        flex-direction: column;
        min-height: 0;
        background: var(--surface);
        border-right: 1px solid var(--border);
      }
      .side-head {
        display: flex;
        align-items: center;
        gap: 12px;
        padding: 14px 12px 10px 16px;
      }
      .me {
        flex: 1;
        min-width: 0;
        display: grid;
      }
      .me h1 {
        font-size: 20px;
        font-weight: 800;
        letter-spacing: -0.01em;
      }
      .conn {
        display: flex;
        align-items: center;
        gap: 6px;
        font-size: 12.5px;
        color: var(--text-3);
        white-space: nowrap;
        overflow: hidden;
        text-overflow: ellipsis;
      }
      .conn .light {
        width: 8px;
        height: 8px;
        border-radius: 50%;
        background: var(--text-3);
        flex: none;
      }
      .conn .retry {
        margin-left: 2px;
        padding: 0 4px;
        border: 0;
        border-radius: 6px;
        background: transparent;
        color: var(--accent-text);
        font-size: 12.5px;
        font-weight: 600;
      }
      .conn .retry:hover {
        background: var(--accent-soft);
      }
      .conn.online .light {
        background: var(--online);
      }
      .conn.connecting .light {
        background: #d99a00;
      }
      sc-contact-list {
        flex: 1;
      }
      main {
        display: flex;
        flex-direction: column;
        min-width: 0;
        min-height: 0;
        height: 100%;
      }
      /* The pane fills what the banner above it (if any) leaves. */
      main > :not(.main-banner) {
        flex: 1 1 0;
        min-height: 0;
      }
      .main-banner {
        flex: none;
        margin: 10px 12px;
      }
      .side-banner {
        margin: 0 12px 10px;
      }
      .history-banner {
        display: grid;
        gap: 8px;
        transition: opacity 600ms ease;
      }
      .history-banner.fading {
        opacity: 0;
      }
      @media (prefers-reduced-motion: reduce) {
        .history-banner {
          transition: none;
        }
      }
      .history-banner .count {
        white-space: nowrap;
      }
      .history-banner .bar {
        height: 6px;
        border-radius: 999px;
        background: var(--surface);
        overflow: hidden;
      }
      .history-banner .fill {
        height: 100%;
        border-radius: inherit;
        background: var(--accent);
        transition: width 200ms ease;
      }
      .history-banner .line {
        display: flex;
        align-items: center;
        gap: 8px;
      }
      .history-banner .line > span {
        flex: 1;
        min-width: 0;
      }
      .history-banner .line .icon {
        flex: none;
        width: 18px;
        height: 18px;
      }
      .history-banner .dismiss {
        display: inline-grid;
        place-items: center;
        flex: none;
        width: 28px;
        height: 28px;
        margin: -4px -6px -4px 0;
        border: 0;
        border-radius: 50%;
        background: transparent;
        color: inherit;
      }
      .history-banner .dismiss:hover {
        background: var(--surface);
      }
      .history-banner .dismiss .icon {
        width: 16px;
        height: 16px;
      }
      .side-banner .btn {
        min-height: 34px;
        margin-top: 8px;
      }
      .welcome {
        display: grid;
        place-items: center;
        height: 100%;
        padding: 24px;
        text-align: center;
      }
      .welcome-inner {
        display: grid;
        justify-items: center;
        gap: 12px;
        max-width: 380px;
        color: var(--text-2);
      }
      .welcome .logo {
        width: 72px;
        height: 72px;
      }
      .welcome h2 {
        font-size: 22px;
        color: var(--text);
      }
      .welcome .e2e {
        display: inline-flex;
        gap: 6px;
        align-items: center;
        margin-top: 8px;
        font-size: 13px;
        color: var(--text-3);
      }
      .welcome .e2e .icon {
        width: 16px;
        height: 16px;
      }
      .toast {
        position: fixed;
        left: 50%;
        bottom: 24px;
        transform: translateX(-50%);
        max-width: min(520px, calc(100vw - 32px));
        padding: 12px 16px;
        border-radius: 12px;
        background: #1f2937;
        color: #fff;
        font-size: 14px;
        box-shadow: var(--shadow-2);
        z-index: 10;
      }
    `,
  ]

  @state() private account: OpenAccount | undefined
  @state() private contacts: ContactView[] = []
  /** The newest message of each conversation, for the contact list. */
  @state() private previews: ReadonlyMap<string, ContactPreview> = new Map()
  @state() private connection: ConnectionState = 'offline'
  /** The server said this account was deleted (here, with the answer lost, or on another device). */
  @state() private accountGone = false
  /** This device was removed from this account (on another of its devices): the removed screen shows. */
  @state() private removedFrom: string | undefined
  @state() private route: Route = parseRoute(location.hash)
  @state() private wide = matchMedia(WIDE_QUERY).matches
  @state() private keyChangePeer: string | undefined
  @state() private installPrompt: InstallPrompt | undefined
  @state() private notice = ''
  @state() private toast = ''
  /** History transfers under way, by transfer id. */
  @state() private incoming: ReadonlyMap<string, Incoming> = new Map()
  /** What the last finished transfer brought, shown for HISTORY_DONE_MS then faded out. */
  @state() private historyDone: { readonly messages: number; readonly fading: boolean } | undefined

  @query('sc-conversation') private conversation!: ConversationView | null

  /** The history this device sends a device it approved; one per open account. */
  private historySender: HistorySender | undefined

  private unsubscribe: (() => void)[] = []
  private refreshQueued = false
  /** Senders of messages that arrived this turn, each to be announced once (see announce). */
  private readonly arrivedFrom = new Set<string>()
  /** What each preview was read for (last activity and unread count), so unchanged ones are kept. */
  private toastTimer: ReturnType<typeof setTimeout> | undefined
  private historyTimers: ReturnType<typeof setTimeout>[] = []
  private historyQuiet: ReturnType<typeof setTimeout> | undefined
  /** Transfers whose every part is here: a part repeated later (a redelivery) starts nothing. */
  private readonly finishedTransfers = new Set<string>()
  private readonly wideQuery = matchMedia(WIDE_QUERY)
  /** Aborted on disconnect, which removes every listener added with its signal. */
  private listening: AbortController | undefined

  override connectedCallback(): void {
    super.connectedCallback()
    this.listening = new AbortController()
    const options = { signal: this.listening.signal }
    window.addEventListener('hashchange', this.onHashChange, options)
    this.wideQuery.addEventListener('change', this.onWideChange, options)
    window.addEventListener('beforeinstallprompt', this.onInstallPrompt, options)
    navigator.serviceWorker?.addEventListener('message', this.onWorkerMessage, options)
    window.addEventListener('online', this.reconnect, options)
    document.addEventListener('visibilitychange', this.onVisibility, options)
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    this.listening?.abort()
  }

  /**
   * Tries the server now instead of waiting out the core's backoff (up to 30 s): when the browser
   * says the network is back, when the app comes to the front, or when the user asks.
   */
  private reconnect = (): void => {
    const client = this.account?.client
    if (!client?.loggedIn) return
    if (client.connection === 'offline' || client.connection === 'connecting') client.connect()
  }

  private onVisibility = (): void => {
    if (document.visibilityState === 'visible') this.reconnect()
  }

  private onHashChange = (): void => {
    this.route = parseRoute(location.hash)
    this.checkKeyChange()
    if (this.route.view === 'chat' && this.wide) this.conversation?.focusComposer()
  }

  private onWideChange = (event: MediaQueryListEvent): void => {
    this.wide = event.matches
  }

  private onInstallPrompt = (event: Event): void => {
    event.preventDefault()
    this.installPrompt = event as InstallPrompt
  }

  private onWorkerMessage = (event: MessageEvent): void => {
    const data = event.data as { type?: unknown; peer?: unknown } | null
    if (data?.type === 'open-chat' && typeof data.peer === 'string') {
      location.hash = `#/chat/${encodeURIComponent(data.peer)}`
    }
  }

  // --- Account ----------------------------------------------------------------------------------

  private signedIn(account: OpenAccount): void {
    this.account = account
    this.notice = ''
    const client = account.client
    this.connection = client.connection
    this.accountGone = false
    const sender = new HistorySender(client, () => void this.deviceRemoved())
    const historyChanged = () => this.requestUpdate()
    sender.addEventListener('change', historyChanged)
    this.historySender = sender
    this.unsubscribe = [
      () => {
        sender.removeEventListener('change', historyChanged)
        sender.stop()
      },
      client.events.on('problem', ({ code, id }) => {
        // Without an id the server speaks of this account's own session (docs/protocol.md §13.4).
        if (code === 'E2E_ERR_ACCOUNT_DELETED' && id === undefined) this.accountGone = true
        if (code === 'E2E_ERR_DEVICE_REMOVED' && id === undefined) void this.deviceRemoved()
      }),
      client.events.on('connection', ({ state }) => {
        this.connection = state
        if (state === 'online') this.scheduleRefresh()
      }),
      client.events.on('message', (message) => {
        this.scheduleRefresh()
        if (message.direction === 'in') this.announce(message.peer)
      }),
      client.events.on('presence', () => this.scheduleRefresh()),
      client.events.on('identity-changed', () => this.scheduleRefresh()),
      client.events.on('account-deleted', () => this.scheduleRefresh()),
      client.events.on('delivery', ({ state }) => {
        if (state === 'failed') this.showToast('A message could not be delivered.')
      }),
      client.events.on('removed', () => this.scheduleRefresh()),
      // Another of this account's devices read a conversation or verified a contact.
      client.events.on('contact-updated', () => this.scheduleRefresh()),
      client.events.on('history', (part) => this.historyPart(part)),
    ]
    if (account.offline) this.showToast('The server cannot be reached. Showing the messages stored here.')
    this.scheduleRefresh()
  }

  private async signOut(options: { wipe?: boolean; notice?: string } = {}): Promise<void> {
    if (!this.account) return
    await this.lock(
      options.notice ??
        (options.wipe ? 'Logged out. This account was erased from this browser.' : 'Logged out.'),
      { wipe: options.wipe === true },
    )
    location.hash = '#/'
  }

  /**
   * The server said this device was removed from the account: the session has ended for good, so
   * the app locks (the store closes, which lets the removed screen erase it) and says so.
   */
  private async deviceRemoved(): Promise<void> {
    const account = this.account
    if (!account) return
    const username = account.client.username
    await this.lock('')
    this.removedFrom = username
    location.hash = '#/'
  }

  private onRemovedClosed(event: CustomEvent<{ erased: boolean }>): void {
    const username = this.removedFrom
    this.removedFrom = undefined
    this.notice = event.detail.erased
      ? `This device's copy of ${username} was erased from this browser.`
      : `This device was removed from ${username}: it can no longer log in as ${username}. Link it again to use the account here.`
  }

  /**
   * Deletes the account on the server and in this browser (the core wipes the store; closing it
   * deletes the database), then locks the app. A refusal rejects and leaves everything as it was.
   */
  private async deleteAccount(password: string, typedUsername: string): Promise<void> {
    const account = this.account
    if (!account) return
    const username = account.client.username
    await account.client.deleteAccount(password, typedUsername)
    await this.lock(`${username} was deleted, on the server and in this browser.`)
    location.hash = '#/'
  }

  /**
   * Locks the app. With `logout`, logs out on the server first (and erases the account from this
   * browser if asked); without, the server is not told (the database went away, or the session ended).
   */
  private async lock(notice: string, logout?: { wipe: boolean }): Promise<void> {
    const account = this.account
    if (!account) return
    for (const stop of this.unsubscribe) stop()
    this.unsubscribe = []
    if (logout) {
      try {
        await account.client.logout(logout)
      } catch {
        // Logging out on the server is best effort; the local lock below is what matters.
      }
    }
    await account.close().catch(() => undefined)
    this.account = undefined
    this.historySender = undefined
    this.contacts = []
    this.previews = new Map()
    this.keyChangePeer = undefined
    this.incoming = new Map()
    this.historyDone = undefined
    for (const timer of this.historyTimers) clearTimeout(timer)
    clearTimeout(this.historyQuiet)
    document.title = titleFor(0)
    this.notice = notice
  }

  /**
   * One notification per sender for everything that arrived in this turn: a backlog arrives in
   * batches of hundreds, and each notification replaces the previous one from the same sender anyway
   * (one tag per sender). Asking the browser about permission once per message cost ~0.2 ms each.
   */
  private announce(peer: string): void {
    const scheduled = this.arrivedFrom.size > 0
    this.arrivedFrom.add(peer)
    if (scheduled) return
    setTimeout(() => {
      const peers = [...this.arrivedFrom]
      this.arrivedFrom.clear()
      for (const from of peers) {
        // A notification that cannot be shown is not worth interrupting anything for, but say so.
        notifyNewMessage(from).catch((error: unknown) =>
          console.warn('secure-chat: could not show a notification:', String(error)),
        )
      }
    }, 0)
  }

  private scheduleRefresh(): void {
    if (this.refreshQueued) return
    this.refreshQueued = true
    setTimeout(() => {
      this.refreshQueued = false
      void this.refreshContacts()
    }, 0)
  }

  private async refreshContacts(): Promise<void> {
    const account = this.account
    if (!account) return
    try {
      // One call: the core keeps each conversation's newest entry with the contact.
      const contacts = await account.client.conversations()
      if (account !== this.account) return
      this.contacts = contacts
      this.previews = new Map(
        contacts.flatMap((contact) =>
          contact.preview ? [[contact.username, contact.preview] as const] : [],
        ),
      )
      document.title = titleFor(contacts.reduce((sum, contact) => sum + contact.unread, 0))
      this.checkKeyChange()
    } catch (error) {
      this.showToast(describeError(error))
    }
  }

  /** Opens the warning when the conversation on screen belongs to a contact whose key changed. */
  private checkKeyChange(): void {
    const route = this.route
    if (route.view !== 'chat' && route.view !== 'details') return
    const contact = this.contacts.find((candidate) => candidate.username === route.peer)
    if (contact?.identityChanged) this.keyChangePeer = route.peer
  }

  private async openChat(username: string): Promise<void> {
    const account = this.account
    if (!account) return
    try {
      if (!this.contacts.some((contact) => contact.username === username)) {
        await account.client.addContact(username)
        await this.refreshContacts()
      }
      location.hash = `#/chat/${encodeURIComponent(username)}`
    } catch (error) {
      this.showToast(describeError(error))
    }
  }

  private onKeyChangeClosed(event: CustomEvent<{ peer: string | undefined; accepted: boolean }>): void {
    this.keyChangePeer = undefined
    if (event.detail.accepted) {
      this.scheduleRefresh()
      this.conversation?.focusComposer()
    } else {
      location.hash = '#/'
    }
  }

  /** One stored part of a history transfer (the conversations themselves refresh on contact-updated). */
  private historyPart({
    transfer,
    part,
    parts,
    messages,
  }: {
    transfer: string
    part: number
    parts: number
    messages: number
  }): void {
    if (this.finishedTransfers.has(transfer)) return
    const known = this.incoming.get(transfer)
    if (known?.received.has(part)) return
    const next: Incoming = {
      parts,
      received: new Set([...(known?.received ?? []), part]),
      messages: (known?.messages ?? 0) + messages,
    }
    const incoming = new Map(this.incoming)
    clearTimeout(this.historyQuiet)
    if (next.received.size < parts) {
      incoming.set(transfer, next)
      this.incoming = incoming
      this.historyQuiet = setTimeout(() => {
        this.incoming = new Map()
      }, HISTORY_QUIET_MS)
      return
    }
    incoming.delete(transfer)
    this.incoming = incoming
    this.finishedTransfers.add(transfer)
    for (const timer of this.historyTimers) clearTimeout(timer)
    this.historyDone = { messages: next.messages, fading: false }
    this.historyTimers = [
      setTimeout(() => {
        if (this.historyDone) this.historyDone = { ...this.historyDone, fading: true }
      }, HISTORY_DONE_MS),
      setTimeout(() => {
        this.historyDone = undefined
      }, HISTORY_DONE_MS + 700),
    ]
  }

  private showToast(message: string): void {
    this.toast = message
    clearTimeout(this.toastTimer)
    this.toastTimer = setTimeout(() => {
      this.toast = ''
    }, 6000)
  }

  // --- Rendering --------------------------------------------------------------------------------

  private renderHistory(): TemplateResult | typeof nothing {
    const [receiving] = this.incoming.values()
    if (receiving) {
      const got = receiving.received.size
      return html`<div class="banner info side-banner history-banner" role="status" data-testid="history-banner">
        <span
          >Receiving history from your other device:
          <span class="count">${got} of ${receiving.parts}</span></span
        >
        ${progressBar('Receiving history', got, receiving.parts)}
      </div>`
    }
    const done = this.historyDone
    if (!done) return nothing
    return html`<div
      class="banner info side-banner history-banner ${done.fading ? 'fading' : ''}"
      role="status"
      data-testid="history-banner"
    >
      <span>History received: ${done.messages.toLocaleString('en')} ${done.messages === 1 ? 'message' : 'messages'}</span>
    </div>`
  }

  /** The history this device sends a device it approved, on every screen (see render). */
  private renderHistorySend(placement: 'side-banner' | 'main-banner'): TemplateResult | typeof nothing {
    const sending = this.historySender?.current
    if (!sending) return nothing
    const device = historyDevice(sending)
    const dismiss = html`<button
      class="dismiss"
      aria-label="Dismiss"
      title="Dismiss"
      @click=${() => this.historySender?.dismiss()}
    >
      ${icons.close()}
    </button>`
    switch (sending.kind) {
      case 'waiting':
        return html`<div class="banner info ${placement} history-banner" role="status" data-testid="history-send-banner">
          <span>Sending history to ${device} once it has finished linking…</span>
        </div>`
      case 'sending': {
        return html`<div class="banner info ${placement} history-banner" role="status" data-testid="history-send-banner">
          <span
            >Sending history to ${device}:
            <span class="count">${sending.sent} of ${sending.parts}</span></span
          >
          ${progressBar('Sending history', sending.sent, sending.parts)}
        </div>`
      }
      case 'sent':
        return html`<div class="banner info ${placement} history-banner" role="status" data-testid="history-send-banner">
          <div class="line">${icons.check()}<span>History sent to ${device}</span>${dismiss}</div>
        </div>`
      case 'failed':
        return html`<div class="banner error ${placement} history-banner" role="alert" data-testid="history-send-banner">
          <div class="line"><span>${sending.text}</span>${dismiss}</div>
        </div>`
    }
  }

  private renderSidebar(account: OpenAccount): TemplateResult {
    const selected = this.route.view === 'chat' || this.route.view === 'details' ? this.route.peer : undefined
    return html`<aside aria-label="Conversations">
      <div class="side-head">
        ${avatar(account.client.username, { size: 'small' })}
        <div class="me">
          <h1>Chats</h1>
          <span class="conn ${this.connection}" role="status">
            <span class="light"></span>${account.client.username} · ${CONNECTION_TEXT[this.connection]}
            ${
              this.connection === 'offline' && account.client.loggedIn
                ? html`<button class="retry" @click=${this.reconnect}>Reconnect</button>`
                : nothing
            }
          </span>
        </div>
        <button
          class="icon-btn"
          aria-label="Settings"
          title="Settings"
          @click=${() => {
            location.hash = '#/settings'
          }}
        >
          ${icons.settings()}
        </button>
      </div>
      ${
        this.connection === 'logged-out' && this.accountGone
          ? html`<div class="banner warning side-banner" role="alert" data-testid="own-account-deleted">
              <div>
                This account was deleted, in this browser or on another device. Its conversations are
                still here until you erase them.
                <div>
                  <button
                    class="btn secondary"
                    @click=${() => {
                      location.hash = '#/settings'
                    }}
                  >
                    Erase them from this browser
                  </button>
                </div>
              </div>
            </div>`
          : this.connection === 'logged-out'
            ? html`<div class="banner warning side-banner" role="alert">
              <div>
                Your session has ended on the server. Log in again to send and receive messages.
                <div>
                  <button
                    class="btn secondary"
                    @click=${() => this.lock('Your session ended. Log in again to continue.')}
                  >
                    Log in again
                  </button>
                </div>
              </div>
            </div>`
            : nothing
      }
      ${this.renderHistory()} ${this.renderHistorySend('side-banner')}
      <sc-contact-list
        .client=${account.client}
        .contacts=${this.contacts}
        .previews=${this.previews}
        .selected=${selected}
        @open-chat=${(event: CustomEvent<string>) => this.openChat(event.detail)}
      ></sc-contact-list>
    </aside>`
  }

  private renderMain(account: OpenAccount): TemplateResult {
    const route = this.route
    const contactOf = (peer: string) => this.contacts.find((contact) => contact.username === peer)
    switch (route.view) {
      case 'chat':
        return html`<sc-conversation
          .client=${account.client}
          .peer=${route.peer}
          .contact=${contactOf(route.peer)}
          ?narrow=${!this.wide}
        ></sc-conversation>`
      case 'details':
        return html`<sc-contact-details
          .client=${account.client}
          .peer=${route.peer}
          .contact=${contactOf(route.peer)}
        ></sc-contact-details>`
      case 'settings':
        return html`<sc-settings
          .username=${account.client.username}
          .connection=${this.connection}
          .installPrompt=${this.installPrompt}
          .changePassword=${account.client.changePassword.bind(account.client)}
          .devicesClient=${account.client}
          .history=${this.historySender}
          ?narrow=${!this.wide}
          .deleteAccount=${(password: string, typed: string) => this.deleteAccount(password, typed)}
          @logout=${(event: CustomEvent<{ wipe: boolean }>) => this.signOut({ wipe: event.detail.wipe })}
          @install-prompt-used=${() => {
            this.installPrompt = undefined
          }}
        ></sc-settings>`
      case 'list':
        return html`<div class="welcome">
          <div class="welcome-inner">
            ${icons.logo()}
            <h2>secure-chat</h2>
            <p>Choose a chat on the left, or search for someone by their username to start one.</p>
            <span class="e2e">${icons.lock()} Messages are end-to-end encrypted</span>
          </div>
        </div>`
    }
  }

  override render(): TemplateResult {
    const account = this.account
    if (!account && this.removedFrom !== undefined) {
      return html`<sc-device-removed
        .username=${this.removedFrom}
        @device-removed-closed=${this.onRemovedClosed}
      ></sc-device-removed>`
    }
    if (!account) {
      return html`<sc-auth
        .notice=${this.notice}
        @signed-in=${(event: CustomEvent<OpenAccount>) => this.signedIn(event.detail)}
        @device-removed=${(event: CustomEvent<string>) => {
          this.removedFrom = event.detail
        }}
        @account-lost=${() => this.lock('This account was closed in another tab.')}
      ></sc-auth>`
    }
    const showSidebar = this.wide || this.route.view === 'list'
    const showMain = this.wide || this.route.view !== 'list'
    return html`
      <div
        class="layout ${this.wide ? 'wide' : 'narrow'}"
        @contacts-changed=${() => this.scheduleRefresh()}
        @device-removed=${() => this.deviceRemoved()}
        @identity-warning=${(event: CustomEvent<string>) => {
          this.keyChangePeer = event.detail
        }}
      >
        ${showSidebar ? this.renderSidebar(account) : nothing}
        ${
          showMain
            ? html`<main>
                ${showSidebar ? nothing : this.renderHistorySend('main-banner')}${this.renderMain(account)}
              </main>`
            : nothing
        }
      </div>
      <sc-key-change-dialog
        .client=${account.client}
        .peer=${this.keyChangePeer}
        @key-change-closed=${this.onKeyChangeClosed}
      ></sc-key-change-dialog>
      ${this.toast ? html`<div class="toast" role="status">${this.toast}</div>` : nothing}
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-app': AppShell
  }
}
