/**
 * Settings: who is logged in and where the keys are, linking another device and the account's
 * devices (sc-link-approve, sc-devices), changing the password, notifications,
 * installing the app, logging out (optionally erasing this account from the browser), and deleting
 * the account for good (after its name is typed and its password given; the app shell does the
 * deleting).
 */
import { css, html, LitElement, nothing, type TemplateResult } from 'lit'
import { customElement, property, state } from 'lit/decorators.js'
import type { ChatClient, ConnectionState } from '../../../shared/client/chat-client.js'
import type { HistorySender } from '../history-send.js'
import { describeError } from '../session.js'
import { avatar } from './avatar.js'
import type { DevicesClient } from './devices-view.js'
import { icons } from './icons.js'
import type { LinkClient } from './link-approve.js'
import { cardPage, pane } from './shared-styles.js'
import { base } from './theme.js'
import './devices-view.js'
import './link-approve.js'

export interface InstallPrompt extends Event {
  prompt(): Promise<void>
  readonly userChoice: Promise<{ outcome: 'accepted' | 'dismissed' }>
}

const CONNECTION_LABELS: Record<ConnectionState, string> = {
  online: 'Connected',
  connecting: 'Connecting…',
  offline: 'Offline: messages are kept and sent when the connection is back',
  'logged-out': 'Session ended: log out and log in again',
}

@customElement('sc-settings')
export class SettingsView extends LitElement {
  static override styles = [
    base,
    pane,
    cardPage,
    css`
      .content {
        gap: 16px;
      }
      .card {
        gap: 14px;
        padding: 20px 22px;
      }
      .card h3 {
        display: flex;
        align-items: center;
        gap: 8px;
      }
      .account {
        display: flex;
        align-items: center;
        gap: 14px;
      }
      .account .name {
        font-size: 18px;
        font-weight: 700;
      }
      .account .server {
        font-size: 13px;
        color: var(--text-3);
        word-break: break-all;
      }
      .connection {
        display: flex;
        align-items: center;
        gap: 8px;
        font-size: 14px;
        color: var(--text-2);
      }
      .connection .light {
        width: 9px;
        height: 9px;
        border-radius: 50%;
        background: var(--text-3);
      }
      .connection.online .light {
        background: var(--online);
      }
      .check {
        display: flex;
        align-items: flex-start;
        gap: 10px;
        font-size: 14px;
        color: var(--text-2);
      }
      .check input {
        width: 18px;
        height: 18px;
        margin: 2px 0 0;
        accent-color: var(--danger);
      }
      .danger-zone {
        border: 1px solid var(--danger-soft);
      }
      form {
        display: grid;
        gap: 12px;
      }
      progress {
        width: 100%;
      }
      .check.plain input {
        accent-color: var(--accent);
      }
      .delete-form {
        display: flex;
        flex-direction: column;
        gap: 12px;
      }
    `,
  ]

  @property() username = ''
  @property({ attribute: false }) connection: ConnectionState = 'offline'
  @property({ attribute: false }) installPrompt: InstallPrompt | undefined
  @property({ type: Boolean }) narrow = false

  /** The account's devices and linking (the ChatClient); those cards are hidden without it. */
  @property({ attribute: false }) devicesClient: (DevicesClient & LinkClient) | undefined
  /** The app shell's history transfers, which linking a device may start (see sc-link-approve). */
  @property({ attribute: false }) history: HistorySender | undefined
  /** The id of a device just approved here, which the list of devices waits for. */
  @state() private linkedDevice: number | undefined

  /** The account's password change (ChatClient.changePassword); the card is hidden without it. */
  @property({ attribute: false }) changePassword: ChatClient['changePassword'] | undefined

  @state() private wipe = false
  @state() private currentPassword = ''
  @state() private newPassword = ''
  @state() private repeatPassword = ''
  @state() private endOtherSessions = false
  /** While a change runs: how far re-sealing this browser's data has come. */
  @state() private changing: { done: number; total: number } | undefined
  @state() private passwordOutcome: { ok: boolean; text: string } | undefined

  /**
   * Deletes the account on the server and here, given its password and the name the user typed
   * (the app shell's; it locks the app once done). Rejects with the reason when refused.
   */
  @property({ attribute: false }) deleteAccount:
    | ((password: string, typedUsername: string) => Promise<void>)
    | undefined

  @state() private deleteOpen = false
  @state() private deleteTyped = ''
  @state() private deletePassword = ''
  @state() private deleting = false
  @state() private deleteError = ''
  @state() private permission: NotificationPermission | 'unsupported' =
    'Notification' in window ? Notification.permission : 'unsupported'

  private async enableNotifications(): Promise<void> {
    if (!('Notification' in window)) return
    this.permission = await Notification.requestPermission()
  }

  private async install(): Promise<void> {
    const prompt = this.installPrompt
    if (!prompt) return
    await prompt.prompt()
    await prompt.userChoice.catch(() => undefined)
    this.dispatchEvent(new CustomEvent('install-prompt-used', { bubbles: true, composed: true }))
  }

  private logout(): void {
    this.dispatchEvent(
      new CustomEvent('logout', { detail: { wipe: this.wipe }, bubbles: true, composed: true }),
    )
  }

  /** The typed name matches this account (as the core will check again, case aside). */
  private get deleteConfirmed(): boolean {
    return this.deleteTyped.trim().toLowerCase() === this.username.toLowerCase()
  }

  private async submitDelete(event: Event): Promise<void> {
    event.preventDefault()
    if (!this.deleteAccount || !this.deleteConfirmed || this.deletePassword === '' || this.deleting) return
    this.deleting = true
    this.deleteError = ''
    try {
      await this.deleteAccount(this.deletePassword, this.deleteTyped)
    } catch (error) {
      this.deleteError = describeError(error)
    } finally {
      this.deleting = false
      this.deletePassword = ''
    }
  }

  private renderDelete(): TemplateResult {
    if (!this.deleteOpen) {
      return html`<div class="actions">
        <button class="btn secondary" @click=${() => {
          this.deleteOpen = true
        }}>Delete account…</button>
      </div>`
    }
    return html`<form class="delete-form" @submit=${this.submitDelete} novalidate>
      <div class="field">
        <label for="delete-username">Type ${this.username} to confirm</label>
        <input
          id="delete-username"
          type="text"
          autocomplete="off"
          autocapitalize="off"
          spellcheck="false"
          .value=${this.deleteTyped}
          @input=${(event: Event) => {
            this.deleteTyped = (event.target as HTMLInputElement).value
          }}
        />
      </div>
      <div class="field">
        <label for="delete-password">Password</label>
        <input
          id="delete-password"
          type="password"
          autocomplete="current-password"
          .value=${this.deletePassword}
          @input=${(event: Event) => {
            this.deletePassword = (event.target as HTMLInputElement).value
          }}
        />
      </div>
      ${
        this.deleteError
          ? html`<div class="banner error" role="alert">${icons.alert()}<span>${this.deleteError}</span></div>`
          : nothing
      }
      <div class="actions">
        <button
          class="btn secondary"
          type="button"
          @click=${() => {
            this.deleteOpen = false
            this.deleteTyped = ''
            this.deletePassword = ''
            this.deleteError = ''
          }}
        >
          Cancel
        </button>
        <button
          class="btn danger"
          type="submit"
          ?disabled=${!this.deleteConfirmed || this.deletePassword === '' || this.deleting}
        >
          ${this.deleting ? 'Deleting…' : 'Delete account for good'}
        </button>
      </div>
    </form>`
  }

  private async submitPassword(event: Event): Promise<void> {
    event.preventDefault()
    if (!this.changePassword || this.changing) return
    if (this.newPassword !== this.repeatPassword) {
      this.passwordOutcome = { ok: false, text: 'The two new passwords differ. Nothing was changed.' }
      return
    }
    this.passwordOutcome = undefined
    this.changing = { done: 0, total: 0 }
    try {
      const { endedSessions } = await this.changePassword(this.currentPassword, this.newPassword, {
        endOtherSessions: this.endOtherSessions,
        onProgress: (done, total) => {
          this.changing = { done, total }
        },
      })
      this.passwordOutcome = {
        ok: true,
        text: `Password changed, in this browser and on the server. Use the new one from now on.${
          this.endOtherSessions
            ? ` ${endedSessions} other session${endedSessions === 1 ? '' : 's'} signed out.`
            : ''
        }`,
      }
      this.currentPassword = ''
      this.newPassword = ''
      this.repeatPassword = ''
    } catch (error) {
      this.passwordOutcome = { ok: false, text: describeError(error) }
    } finally {
      this.changing = undefined
    }
  }

  private renderPassword(): TemplateResult | typeof nothing {
    if (!this.changePassword) return nothing
    const changing = this.changing
    const input = (
      id: string,
      label: string,
      value: string,
      set: (value: string) => void,
      autocomplete: string,
    ) =>
      html`<div class="field">
        <label for=${id}>${label}</label>
        <input
          id=${id}
          type="password"
          autocomplete=${autocomplete}
          required
          ?disabled=${changing !== undefined}
          .value=${value}
          @input=${(event: Event) => set((event.target as HTMLInputElement).value)}
        />
      </div>`
    return html`<section class="card" aria-labelledby="password-heading">
      <h3 id="password-heading">${icons.lock()} Password</h3>
      <p>
        Your password never leaves this browser: the server gets only a key derived from it, which cannot
        unlock what is stored here. Changing it encrypts this browser's copy of your account again under
        the new password.
      </p>
      <form @submit=${this.submitPassword} novalidate aria-label="Change password">
        ${input(
          'current-password',
          'Current password',
          this.currentPassword,
          (v) => {
            this.currentPassword = v
          },
          'current-password',
        )}
        ${input(
          'new-password',
          'New password',
          this.newPassword,
          (v) => {
            this.newPassword = v
          },
          'new-password',
        )}
        ${input(
          'repeat-password',
          'Repeat the new password',
          this.repeatPassword,
          (v) => {
            this.repeatPassword = v
          },
          'new-password',
        )}
        <label class="check plain">
          <input
            type="checkbox"
            .checked=${this.endOtherSessions}
            ?disabled=${changing !== undefined}
            @change=${(event: Event) => {
              this.endOtherSessions = (event.target as HTMLInputElement).checked
            }}
          />
          <span>Also sign out my other sessions</span>
        </label>
        ${
          changing
            ? html`<div role="status" class="changing">
                <progress
                  aria-label="Re-encrypting this browser's data"
                  max=${Math.max(1, changing.total)}
                  .value=${changing.done}
                ></progress>
                <p>${changing.total === 0 ? 'Deriving keys…' : `Re-encrypting this browser's data: ${changing.done} of ${changing.total}`}</p>
              </div>`
            : nothing
        }
        ${
          this.passwordOutcome
            ? html`<p class="banner ${this.passwordOutcome.ok ? 'info' : 'error'}" role=${this.passwordOutcome.ok ? 'status' : 'alert'}>
                ${this.passwordOutcome.text}
              </p>`
            : nothing
        }
        <div class="actions">
          <button
            class="btn secondary"
            type="submit"
            ?disabled=${changing !== undefined || !this.currentPassword || !this.newPassword || !this.repeatPassword}
          >
            ${icons.lock()} Change password
          </button>
        </div>
      </form>
    </section>`
  }

  private renderNotifications(): TemplateResult {
    switch (this.permission) {
      case 'granted':
        return html`<p>On. You are told about new messages while this app is in the background. The
          notification names the sender, never the message.</p>`
      case 'denied':
        return html`<p>Blocked in this browser's site settings. Allow notifications there to be told about
          new messages.</p>`
      case 'unsupported':
        return html`<p>This browser does not support notifications.</p>`
      default:
        return html`<p>Get told about new messages while the app is in the background. The notification
            names the sender, never the message.</p>
          <div class="actions">
            <button class="btn secondary" @click=${this.enableNotifications}>
              ${icons.bell()} Enable notifications
            </button>
          </div>`
    }
  }

  override render(): TemplateResult {
    return html`
      <header>
        ${
          this.narrow
            ? html`<button class="icon-btn" aria-label="Back to chats" @click=${() => {
                location.hash = '#/'
              }}>
                ${icons.back()}
              </button>`
            : nothing
        }
        <h2>Settings</h2>
      </header>
      <div class="scroll">
        <div class="content">
          <section class="card" aria-label="Account">
            <div class="account">
              ${avatar(this.username, { size: 'large' })}
              <div>
                <p class="name">${this.username}</p>
                <p class="server">${location.host}</p>
              </div>
            </div>
            <p class="connection ${this.connection}" role="status">
              <span class="light"></span>${CONNECTION_LABELS[this.connection]}
            </p>
          </section>

          <section class="card" aria-labelledby="device-heading">
            <h3 id="device-heading">${icons.lock()} Keys on this device</h3>
            <p>
              Your private keys are made on your devices and go only to the devices you link, encrypted
              for each one. Everything stored here is
              encrypted with a key derived from your password, which the server never sees; while the app is unlocked the keys are held
              so that they cannot be read out, only used. There is no copy of your keys on the server: if
              every device of yours is lost, you can start over as this account on another one with your
              password, and your contacts are told your safety number changed.
            </p>
          </section>

          ${
            this.devicesClient
              ? html`<section class="card" aria-labelledby="link-heading">
                    <h3 id="link-heading">${icons.plus()} Link a device</h3>
                    <sc-link-approve
                      .client=${this.devicesClient}
                      .history=${this.history}
                      @device-linked=${(event: CustomEvent<number>) => {
                        this.linkedDevice = event.detail
                      }}
                    ></sc-link-approve>
                  </section>
                  <section class="card" aria-labelledby="devices-heading">
                    <h3 id="devices-heading">${icons.device()} Devices</h3>
                    <p>
                      The devices signed in to ${this.username}. Each has the account's keys; remove one
                      you no longer use or have lost.
                    </p>
                    <sc-devices .client=${this.devicesClient} .expecting=${this.linkedDevice}></sc-devices>
                  </section>`
              : nothing
          }

          ${this.renderPassword()}

          <section class="card" aria-labelledby="notifications-heading">
            <h3 id="notifications-heading">${icons.bell()} Notifications</h3>
            ${this.renderNotifications()}
          </section>

          <section class="card" aria-labelledby="install-heading">
            <h3 id="install-heading">${icons.download()} Install</h3>
            ${
              this.installPrompt
                ? html`<p>Install secure-chat as an app: it opens in its own window and works offline.</p>
                    <div class="actions">
                      <button class="btn secondary" @click=${this.install}>${icons.download()} Install app</button>
                    </div>`
                : html`<p>
                    ${
                      matchMedia('(display-mode: standalone)').matches
                        ? 'secure-chat is installed and running as an app.'
                        : "To install, use your browser's Install option (in Chromium: the install icon in the address bar, or the menu › Install secure-chat)."
                    }
                  </p>`
            }
          </section>

          <section class="card danger-zone" aria-labelledby="logout-heading">
            <h3 id="logout-heading">${icons.logout()} Log out</h3>
            <p>
              Logging out locks this browser's copy of your account; log in again with your password to
              read your messages.
            </p>
            <label class="check">
              <input
                type="checkbox"
                .checked=${this.wipe}
                @change=${(event: Event) => {
                  this.wipe = (event.target as HTMLInputElement).checked
                }}
              />
              <span
                >Also erase this account from this browser: its keys and every message. This cannot be
                undone: using the account again means starting over with new keys.</span
              >
            </label>
            <div class="actions">
              <button class="btn ${this.wipe ? 'danger' : 'secondary'}" @click=${this.logout}>
                ${icons.logout()} Log out
              </button>
            </div>
          </section>

          <section class="card danger-zone" aria-labelledby="delete-heading">
            <h3 id="delete-heading">${icons.alert()} Delete account</h3>
            <p>
              Deletes ${this.username} on the server for good: its keys, its sessions and the messages not
              yet delivered; and everything of it in this browser. Your contacts see that the account was
              deleted, and the server keeps the name from anyone else for a while. This cannot be undone.
            </p>
            ${this.renderDelete()}
          </section>
        </div>
      </div>
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-settings': SettingsView
  }
}
