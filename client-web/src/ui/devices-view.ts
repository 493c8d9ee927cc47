/**
 * Settings › Devices (docs/protocol.md §13.8): the account's devices with their names, ids, when
 * each was linked and last signed in, this one marked; renaming this one, and removing another
 * after a confirmation that says what removing does. Names are sealed by the account's devices:
 * the server stores them without reading them.
 *
 * A refusal that says this device was removed is passed up as `device-removed` (the app shell
 * shows the removed screen).
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import type { ChatClient, DeviceView } from '../../../shared/client/chat-client.js'
import { describeError, isDeviceRemoved } from '../session.js'
import { formatDay, formatTime } from './format.js'
import { icons } from './icons.js'
import { modalDialog } from './shared-styles.js'
import { base } from './theme.js'

/** What the devices card needs of the client core. */
export type DevicesClient = Pick<ChatClient, 'devices' | 'renameDevice' | 'removeDevice'>

/** "Today at 14:02", "3 December 2026 at 09:10". */
function when(time: number, now: number): string {
  const day = formatDay(time, now)
  // Mid-sentence: "Linked today at 14:02" (weekdays and dates keep their capitals).
  const inSentence = day === 'Today' || day === 'Yesterday' ? day.toLowerCase() : day
  return `${inSentence} at ${formatTime(time)}`
}

/** How often the list is read while an approved device is finishing, and for how long (its link token's life). */
const DEVICE_POLL_MS = 3_000
const DEVICE_JOIN_WAIT_MS = 10 * 60 * 1000

export function deviceLabel(device: Pick<DeviceView, 'id' | 'name'>): string {
  return device.name ?? `Device ${device.id}`
}

@customElement('sc-devices')
export class DevicesView extends LitElement {
  static override styles = [
    base,
    modalDialog,
    css`
      :host {
        display: grid;
        gap: 14px;
      }
      ul {
        display: grid;
        margin: 0;
        padding: 0;
        list-style: none;
        border: 1px solid var(--border);
        border-radius: var(--radius);
      }
      li {
        display: flex;
        gap: 12px;
        align-items: center;
        padding: 12px 14px;
      }
      li + li {
        border-top: 1px solid var(--border);
      }
      .tile {
        display: grid;
        place-items: center;
        flex: none;
        width: 40px;
        height: 40px;
        border-radius: 12px;
        background: var(--surface-2);
        color: var(--text-2);
      }
      li.current .tile {
        background: var(--accent-soft);
        color: var(--accent-text);
      }
      .about {
        flex: 1;
        min-width: 0;
        display: grid;
        gap: 2px;
      }
      .name {
        display: flex;
        flex-wrap: wrap;
        gap: 8px;
        align-items: center;
        font-weight: 650;
        font-size: 15px;
        overflow-wrap: anywhere;
      }
      .name .unnamed {
        color: var(--text-2);
        font-weight: 600;
      }
      .chip.current {
        background: var(--accent-soft);
        color: var(--accent-text);
      }
      .meta {
        font-size: 13px;
        color: var(--text-3);
      }
      .meta .unit {
        white-space: nowrap;
      }
      @media (max-width: 480px) {
        /* A phone's width goes to the name and the times. */
        .tile {
          display: none;
        }
        li {
          padding: 12px;
        }
        .meta .unit {
          display: block;
        }
        .meta .sep {
          display: none;
        }
      }
      .btn.small {
        min-height: 36px;
        padding: 0 12px;
        font-size: 14px;
      }
      form.rename {
        display: flex;
        gap: 8px;
        flex: 1;
        min-width: 0;
      }
      form.rename input {
        min-height: 36px;
        padding: 6px 10px;
      }
      .status {
        font-size: 14px;
        color: var(--text-2);
      }
      dialog {
        width: min(460px, calc(100vw - 32px));
      }
      .dialog-body {
        display: grid;
        gap: 14px;
        padding: 26px 24px 22px;
      }
      .dialog-body h2 {
        font-size: 19px;
        font-weight: 700;
        overflow-wrap: anywhere;
      }
      .dialog-body ul {
        display: grid;
        gap: 8px;
        padding: 0 0 0 20px;
        border: 0;
        list-style: disc;
        color: var(--text-2);
        font-size: 14.5px;
      }
      .dialog-body li {
        display: list-item;
        padding: 0;
        border: 0;
      }
      .badge {
        display: grid;
        place-items: center;
        width: 48px;
        height: 48px;
        border-radius: 50%;
        background: var(--danger-soft);
        color: var(--danger);
      }
      .dialog-actions {
        display: flex;
        flex-wrap: wrap-reverse;
        justify-content: flex-end;
        gap: 10px;
        padding-top: 6px;
      }
    `,
  ]

  @property({ attribute: false }) client: DevicesClient | undefined
  /**
   * A device just approved here: it joins the list once it has finished on its own screen (after
   * its user typed the password), so the list is read again every few seconds until it shows.
   */
  @property({ type: Number }) expecting: number | undefined
  @property({ attribute: false }) now: () => number = Date.now

  @state() private devices: DeviceView[] | undefined
  @state() private error = ''
  @state() private renaming = false
  @state() private newName = ''
  @state() private busy = false
  /** The device the confirmation asks about (the dialog is open while set). */
  @state() private removing: DeviceView | undefined
  @state() private notice = ''

  @query('dialog') private dialog!: HTMLDialogElement
  @query('#rename-input') private renameInput!: HTMLInputElement | null

  private pollTimer: ReturnType<typeof setTimeout> | undefined

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    clearTimeout(this.pollTimer)
  }

  protected override updated(changed: PropertyValues): void {
    if (changed.has('client')) void this.load()
    if (changed.has('expecting') && this.expecting !== undefined) this.poll(this.expecting, Date.now())
    if (changed.has('removing')) {
      if (this.removing && !this.dialog.open) this.dialog.showModal()
      else if (!this.removing && this.dialog.open) this.dialog.close()
    }
  }

  /** Reads the list again. */
  async load(): Promise<void> {
    const client = this.client
    if (!client) return
    try {
      const devices = await client.devices()
      if (client !== this.client) return
      this.devices = devices
      this.error = ''
    } catch (error) {
      this.failed(error)
    }
  }

  private poll(id: number, since: number): void {
    clearTimeout(this.pollTimer)
    void this.load().then(() => {
      const joined = this.devices?.some((device) => device.id === id)
      if (joined || this.expecting !== id || Date.now() - since > DEVICE_JOIN_WAIT_MS) return
      this.pollTimer = setTimeout(() => this.poll(id, since), DEVICE_POLL_MS)
    })
  }

  private failed(error: unknown): void {
    if (isDeviceRemoved(error)) {
      this.dispatchEvent(new CustomEvent('device-removed', { bubbles: true, composed: true }))
      return
    }
    this.error = describeError(error)
  }

  private async startRename(current: DeviceView): Promise<void> {
    this.renaming = true
    this.newName = current.name ?? ''
    this.notice = ''
    await this.updateComplete
    this.renameInput?.focus()
    this.renameInput?.select()
  }

  private async rename(event: Event): Promise<void> {
    event.preventDefault()
    if (!this.client || this.busy) return
    this.busy = true
    this.error = ''
    try {
      const name = this.newName.trim()
      await this.client.renameDevice(name === '' ? undefined : name)
      this.renaming = false
      this.notice = name === '' ? 'This device has no name now.' : `This device is now called “${name}”.`
      await this.load()
    } catch (error) {
      this.failed(error)
    } finally {
      this.busy = false
    }
  }

  private async confirmRemove(): Promise<void> {
    const device = this.removing
    if (!this.client || !device || this.busy) return
    this.busy = true
    this.error = ''
    try {
      await this.client.removeDevice(device.id)
      this.removing = undefined
      this.notice = `${deviceLabel(device)} was removed. It was signed out at once and can no longer use this account.`
      await this.load()
    } catch (error) {
      this.removing = undefined
      this.failed(error)
    } finally {
      this.busy = false
    }
  }

  private renderDevice(device: DeviceView, now: number): TemplateResult {
    const editing = device.current && this.renaming
    return html`<li class=${device.current ? 'current' : ''} data-device=${device.id}>
      <span class="tile">${icons.device()}</span>
      ${
        editing
          ? html`<form class="rename" @submit=${this.rename} novalidate aria-label="Rename this device">
              <input
                id="rename-input"
                type="text"
                maxlength="64"
                aria-label="Name of this device"
                .value=${this.newName}
                @input=${(event: Event) => {
                  this.newName = (event.target as HTMLInputElement).value
                }}
                @keydown=${(event: KeyboardEvent) => {
                  if (event.key === 'Escape') this.renaming = false
                }}
              />
              <button class="btn primary small" type="submit" ?disabled=${this.busy}>Save</button>
              <button class="btn secondary small" type="button" @click=${() => {
                this.renaming = false
              }}>Cancel</button>
            </form>`
          : html`<div class="about">
                <span class="name">
                  ${device.name ? html`<span>${device.name}</span>` : html`<span class="unnamed">Unnamed device</span>`}
                  ${device.current ? html`<span class="chip current">This device</span>` : nothing}
                </span>
                <span class="meta"
                  ><span class="unit">Device ${device.id}</span><span class="sep"> · </span
                  ><span class="unit">Linked ${when(device.createdAt, now)}</span></span
                >
                <span class="meta">Last signed in ${when(device.lastSeenAt, now)}</span>
              </div>
              ${
                device.current
                  ? html`<button class="btn secondary small" @click=${() => this.startRename(device)}>Rename</button>`
                  : html`<button
                      class="btn secondary small"
                      aria-label="Remove ${deviceLabel(device)}"
                      @click=${() => {
                        this.notice = ''
                        this.removing = device
                      }}
                    >
                      Remove
                    </button>`
              }`
      }
    </li>`
  }

  private renderDialog(): TemplateResult {
    const device = this.removing
    const label = device ? deviceLabel(device) : ''
    return html`<dialog
      aria-labelledby="remove-title"
      aria-describedby="remove-text"
      @close=${() => {
        // The close event comes a task after close(): by then the dialog may be open again, for
        // the same device or another one (a stale event would close that at once).
        if (!this.dialog.open) this.removing = undefined
      }}
      @cancel=${(event: Event) => {
        if (this.busy) event.preventDefault()
      }}
    >
      <div class="dialog-body">
        <span class="badge">${icons.alert()}</span>
        <h2 id="remove-title">Remove ${label}?</h2>
        <div id="remove-text">
          <ul>
            <li>It is signed out at once and can no longer send or receive messages as this account.</li>
            <li>What it stored stays on it until it is erased there: it offers to do so.</li>
            <li>To use it again, link it anew from its log-in screen.</li>
          </ul>
        </div>
        <div class="dialog-actions">
          <button class="btn secondary" autofocus ?disabled=${this.busy} @click=${() => {
            this.removing = undefined
          }}>
            Cancel
          </button>
          <button class="btn danger" ?disabled=${this.busy} @click=${this.confirmRemove}>
            ${this.busy ? 'Removing…' : 'Remove device'}
          </button>
        </div>
      </div>
    </dialog>`
  }

  override render(): TemplateResult {
    const now = this.now()
    const devices = this.devices
    return html`
      ${
        devices === undefined
          ? this.error
            ? nothing
            : html`<p class="status" role="status">Reading the account's devices…</p>`
          : html`<ul aria-label="Devices of this account">
              ${devices.map((device) => this.renderDevice(device, now))}
            </ul>`
      }
      ${this.notice ? html`<p class="banner info" role="status">${this.notice}</p>` : nothing}
      ${
        this.error
          ? html`<div class="banner error" role="alert">${icons.alert()}<span>${this.error}</span></div>`
          : nothing
      }
      ${this.renderDialog()}
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-devices': DevicesView
  }
}
