/**
 * The conversation's messages, windowed: only the rows in and near the viewport are in the DOM,
 * whatever the length of the conversation (10,000 messages render as a few dozen nodes).
 *
 * Rows (a header, day separators, messages) have their height measured once rendered and
 * estimated until then; two spacers stand in for everything above and below the window. Scroll
 * position is kept by an anchor, the first visible row and how far into it the viewport starts, so
 * prepending older messages or correcting an estimate never makes the view jump. A view at the
 * bottom stays at the bottom as messages arrive.
 *
 * Message text is only ever a Lit text binding: it is never parsed as HTML. Its bidirectional
 * controls are shown by the rule both UIs share (shared/display-text.ts), and each text takes its
 * direction from its own first strong letter (dir="auto"), isolated from the bubble around it.
 *
 * Our own messages written on another of our devices (MessageView.device) say so in their meta
 * line, "from Laptop" (or "from device 2" when the name is not known); the list needs to be told
 * which device this is (`thisDevice`), and marks nothing until it is.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit'
import { customElement, property, query, state } from 'lit/decorators.js'
import { repeat } from 'lit/directives/repeat.js'
import {
  type DeliveryState,
  type MessageKind,
  type MessageView,
  messageTime,
  noticeText,
} from '../../../shared/client/chat-client.js'
import { displayText } from '../../../shared/display-text.js'
import { dayStart, formatDay, formatFull, formatTime } from './format.js'
import { icons } from './icons.js'
import { styleProps } from './style-props.js'
import { base } from './theme.js'

/** Rows rendered beyond each edge of the viewport, in pixels, so fast scrolling meets no blank. */
const OVERSCAN_PX = 800
/** Within this distance of the bottom the list counts as "at the bottom" and follows new messages. */
const BOTTOM_SLACK_PX = 32
/** Within this distance of the top, older messages are asked for. */
const LOAD_OLDER_PX = 600
/** Consecutive messages from one side closer than this are drawn as a group. */
const GROUP_GAP_MS = 5 * 60 * 1000

type Row =
  | { readonly kind: 'top'; readonly key: string }
  | { readonly kind: 'day'; readonly key: string; readonly time: number }
  | {
      readonly kind: 'message'
      readonly key: string
      readonly message: MessageView
      readonly time: number
      readonly groupStart: boolean
    }

/** When a message happened, as shown: the server's time for incoming ones, ours for our own. */
/** The time shown for a message: the core's rule, the same in both UIs. */
export const displayTime = messageTime

const DELIVERY_LABELS: Record<DeliveryState, string> = {
  sending: 'Sending',
  accepted: 'Sent',
  delivered: 'Delivered',
  received: 'Received',
  failed: 'Not sent',
}

/**
 * A notice's icon says what happens next: the message is on its way again (a clock), this version
 * cannot show it (information), or it is gone or damaged, or refused until its sender updates (a
 * warning).
 */
const NOTICE_ICONS: Record<Exclude<MessageKind, 'text'>, () => TemplateResult> = {
  undecryptable: icons.clock,
  unsupported: icons.info,
  lost: icons.alert,
  unreadable: icons.alert,
  outdated: icons.alert,
}

function deliveryMark(state: DeliveryState): TemplateResult {
  const icon =
    state === 'sending'
      ? icons.clock()
      : state === 'accepted'
        ? icons.check()
        : state === 'delivered'
          ? icons.checks()
          : icons.failed()
  return html`<span class="state ${state}" title=${DELIVERY_LABELS[state]}
    >${icon}<span class="visually-hidden">${DELIVERY_LABELS[state]}</span></span
  >`
}

@customElement('sc-message-list')
export class MessageList extends LitElement {
  static override styles = [
    base,
    css`
      :host {
        position: relative;
        display: block;
        min-height: 0;
      }
      .viewport {
        height: 100%;
        overflow-y: auto;
        overflow-anchor: none;
        overscroll-behavior: contain;
        padding: 0 16px;
      }
      .viewport:focus-visible {
        outline-offset: -3px;
      }
      .inner {
        max-width: 820px;
        margin: 0 auto;
      }
      .row {
        display: flow-root;
      }
      .top {
        padding: 28px 0 12px;
        text-align: center;
        color: var(--text-3);
        font-size: 13px;
      }
      .top .lock {
        display: inline-flex;
        gap: 6px;
        align-items: center;
        padding: 8px 14px;
        border-radius: 12px;
        background: var(--surface);
        box-shadow: var(--shadow-1);
        max-width: 420px;
        text-align: left;
      }
      .top .icon {
        width: 16px;
        height: 16px;
        color: var(--accent-text);
      }
      .day {
        display: flex;
        justify-content: center;
        padding: 14px 0 6px;
      }
      .day span {
        padding: 3px 12px;
        border-radius: 999px;
        background: var(--surface-3);
        color: var(--text-2);
        font-size: 12px;
        font-weight: 600;
      }
      .message {
        display: flex;
        padding-top: 2px;
      }
      .message.group-start {
        padding-top: 10px;
      }
      .message.out {
        justify-content: flex-end;
      }
      .bubble {
        max-width: min(78%, 560px);
        padding: 7px 12px 6px;
        border-radius: var(--radius-lg);
        background: var(--bubble-in);
        color: var(--bubble-in-text);
        box-shadow: var(--shadow-1);
      }
      .out .bubble {
        background: var(--bubble-out);
        color: var(--bubble-out-text);
      }
      .in.group-start .bubble {
        border-top-left-radius: 6px;
      }
      .out.group-start .bubble {
        border-top-right-radius: 6px;
      }
      /* Its own direction, from its own first letter; nothing in it reorders what is around it. */
      .text {
        unicode-bidi: isolate;
        white-space: pre-wrap;
        overflow-wrap: anywhere;
        word-break: break-word;
      }
      .meta {
        display: flex;
        justify-content: flex-end;
        align-items: center;
        gap: 4px;
        margin-top: 1px;
        font-size: 11.5px;
        color: var(--text-3);
        user-select: none;
      }
      .out .meta {
        color: var(--bubble-out-meta);
      }
      /* Which of our devices wrote it: as quiet as the time beside it, and never longer than a word or two. */
      .meta .sep {
        margin-right: 1px;
      }
      .meta .from {
        max-width: 16ch;
        overflow: hidden;
        text-overflow: ellipsis;
        white-space: nowrap;
      }
      .state {
        display: inline-flex;
      }
      .state .icon {
        width: 16px;
        height: 16px;
      }
      .state.failed {
        color: #ffd7d3;
      }
      /*
       * A notice stands in a message's place, centred between the bubbles so it is not mistaken
       * for one. Waiting for the message again (undecryptable) or not showing it (unsupported) is
       * neutral, with a dashed edge where the message will be; a message gone for good (lost),
       * damaged (unreadable) or refused until its sender updates (outdated) is tinted as a warning.
       */
      .notice {
        display: flex;
        justify-content: center;
        padding-top: 10px;
      }
      .notice-card {
        display: flex;
        align-items: flex-start;
        gap: 10px;
        max-width: min(92%, 640px);
        padding: 8px 14px 7px 12px;
        border-radius: var(--radius);
        border: 1px dashed var(--notice-edge);
        background: var(--surface);
        color: var(--text-2);
        font-size: 13.5px;
        line-height: 1.4;
        --notice-edge: color-mix(in srgb, var(--text-3) 55%, transparent);
      }
      .notice.lost .notice-card,
      .notice.unreadable .notice-card,
      .notice.outdated .notice-card {
        border: 1px solid var(--warning-border);
        background: var(--warning-soft);
      }
      .notice-card .icon {
        flex: none;
        width: 18px;
        height: 18px;
        color: var(--warning);
      }
      .notice.undecryptable .notice-card .icon,
      .notice.unsupported .notice-card .icon {
        color: var(--accent-text);
      }
      .notice-body {
        min-width: 0;
        overflow-wrap: anywhere;
        text-wrap: pretty;
      }
      /* After the sentence's last line when it fits there, else on a line of its own, on the right. */
      .notice-card time {
        float: right;
        margin: 2px 0 0 12px;
        font-size: 11.5px;
        color: var(--text-3);
        user-select: none;
      }
      .bottom-pad {
        height: 12px;
      }
      .jump {
        position: absolute;
        right: 20px;
        bottom: 16px;
        display: inline-flex;
        align-items: center;
        gap: 6px;
        padding: 8px 14px;
        border-radius: 999px;
        border: 1px solid var(--border);
        background: var(--surface);
        color: var(--accent-text);
        font-weight: 600;
        box-shadow: var(--shadow-2);
      }
    `,
  ]

  /** The loaded part of the conversation, oldest first. */
  @property({ attribute: false }) messages: readonly MessageView[] = []
  @property({ attribute: false }) peer = ''
  @property({ type: Boolean }) hasOlder = false
  @property({ type: Boolean }) loadingOlder = false
  /** The id of the device this list is shown on; undefined (not known): no message is marked. */
  @property({ attribute: false }) thisDevice: number | undefined
  /** The names of the account's devices, by id, for "from Laptop" (else "from device 2"). */
  @property({ attribute: false }) deviceNames: ReadonlyMap<number, string | undefined> = new Map()

  @state() private range: { start: number; end: number } = { start: 0, end: 0 }
  @state() private newBelow = false

  @query('.viewport') private viewport!: HTMLElement

  private rows: Row[] = []
  private indexByKey = new Map<string, number>()
  private readonly heights = new Map<string, number>()
  private offsets = new Float64Array(1)
  private atBottom = true
  private anchor: { key: string; delta: number } | undefined
  private lastMessageKey: string | undefined
  /** Rows or the viewport changed: the next update puts the scroll position back by the anchor. */
  private layoutDirty = true
  private resizeObserver: ResizeObserver | undefined
  private charsPerLine = 48
  /** Height of each row in `rows`: measured once it was rendered, estimated until then. */
  private sizes = new Float64Array(0)

  /** Scrolls to the newest message and keeps following new ones. */
  scrollToBottom(): void {
    this.atBottom = true
    this.newBelow = false
    this.layoutDirty = true
    this.requestUpdate()
  }

  /** How many message bubbles are in the DOM (the tests check the window stays small). */
  get renderedMessageCount(): number {
    return this.renderRoot.querySelectorAll('.message').length
  }

  override connectedCallback(): void {
    super.connectedCallback()
    this.resizeObserver = new ResizeObserver(() => {
      if (!this.viewport) return
      const charsPerLine = Math.max(16, Math.floor((Math.min(this.viewport.clientWidth, 820) * 0.7) / 8))
      if (charsPerLine !== this.charsPerLine) {
        this.charsPerLine = charsPerLine
        this.estimateHeights()
        this.computeOffsets()
      }
      this.layoutDirty = true
      this.requestUpdate()
    })
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback()
    this.resizeObserver?.disconnect()
  }

  override firstUpdated(): void {
    this.resizeObserver?.observe(this.viewport)
  }

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('messages') || changed.has('hasOlder') || changed.has('loadingOlder')) {
      this.buildRows()
      const last = this.messages.at(-1)
      const lastKey = last && `m:${last.id}`
      if (lastKey !== this.lastMessageKey && this.lastMessageKey !== undefined && last) {
        // A new newest message: follow it if at the bottom or if it is ours, else offer a jump.
        if (last.direction === 'out') this.atBottom = true
        else if (!this.atBottom) this.newBelow = true
      }
      this.lastMessageKey = lastKey
      this.computeOffsets()
      this.layoutDirty = true
      this.range = this.visibleRange(this.restoredScrollTop())
    }
  }

  private estimate(row: Row): number {
    if (row.kind === 'top') return 80
    if (row.kind === 'day') return 44
    let lines = 0
    for (const line of (noticeText(row.message) ?? row.message.text).split('\n'))
      lines += Math.max(1, Math.ceil(line.length / this.charsPerLine))
    return 38 + 21 * lines + (row.groupStart ? 8 : 0)
  }

  private buildRows(): void {
    const rows: Row[] = [
      { kind: 'top', key: `top:${this.hasOlder ? (this.loadingOlder ? 'loading' : 'more') : 'start'}` },
    ]
    let previousDay: number | undefined
    let previous: MessageView | undefined
    for (const message of this.messages) {
      const time = displayTime(message)
      const day = dayStart(time)
      let groupStart = false
      if (day !== previousDay) {
        rows.push({ kind: 'day', key: `day:${day}`, time })
        previousDay = day
        groupStart = true
      }
      // The first message, and the first after a notice (which stands apart), begin a group.
      if (
        previous?.kind !== 'text' ||
        previous.direction !== message.direction ||
        time - displayTime(previous) > GROUP_GAP_MS
      ) {
        groupStart = true
      }
      // A notice replaced by its message keeps the id but not the height: the kind is in the key.
      const key = message.kind === 'text' ? `m:${message.id}` : `m:${message.id}:${message.kind}`
      rows.push({ kind: 'message', key, message, time, groupStart })
      previous = message
    }
    this.rows = rows
    this.indexByKey = new Map(rows.map((row, index) => [row.key, index]))
    this.estimateHeights()
  }

  /**
   * Sizes every row once (and again when the width changes), not on every offset pass: the offsets
   * are recomputed whenever scrolling brings new rows into view and they are measured, and
   * estimating 10,000 messages each time (or even looking each one up by key) cost milliseconds
   * per frame.
   */
  private estimateHeights(): void {
    const sizes = new Float64Array(this.rows.length)
    for (let i = 0; i < this.rows.length; i++) {
      const row = this.rows[i] as Row
      sizes[i] = this.heights.get(row.key) ?? this.estimate(row)
    }
    this.sizes = sizes
  }

  /** Offsets of every row from `from` on (the ones above it are unchanged). */
  private computeOffsets(from = 0): void {
    const count = this.rows.length
    if (this.offsets.length !== count + 1) {
      this.offsets = new Float64Array(count + 1)
      from = 0
    }
    const offsets = this.offsets
    const sizes = this.sizes
    for (let i = from; i < count; i++) offsets[i + 1] = (offsets[i] as number) + (sizes[i] as number)
  }

  private get totalHeight(): number {
    return this.offsets[this.rows.length] as number
  }

  /** The first row whose bottom edge is below `y`. */
  private rowAt(y: number): number {
    let low = 0
    let high = this.rows.length - 1
    while (low < high) {
      const middle = (low + high) >> 1
      if ((this.offsets[middle + 1] as number) <= y) low = middle + 1
      else high = middle
    }
    return Math.max(0, low)
  }

  private visibleRange(scrollTop: number): { start: number; end: number } {
    if (this.rows.length === 0) return { start: 0, end: 0 }
    const height = this.viewport?.clientHeight || window.innerHeight
    const start = this.rowAt(Math.max(0, scrollTop - OVERSCAN_PX))
    const end = Math.min(this.rows.length, this.rowAt(scrollTop + height + OVERSCAN_PX) + 1)
    return { start, end }
  }

  /** Where the viewport should be: at the bottom, or where the anchor row now is. */
  private restoredScrollTop(): number {
    const height = this.viewport?.clientHeight ?? 0
    if (this.atBottom) return Math.max(0, this.totalHeight - height)
    const index = this.anchor && this.indexByKey.get(this.anchor.key)
    if (this.anchor && index !== undefined) return (this.offsets[index] as number) + this.anchor.delta
    return this.viewport?.scrollTop ?? 0
  }

  private updateRange(): void {
    const range = this.visibleRange(this.viewport?.scrollTop ?? 0)
    if (range.start !== this.range.start || range.end !== this.range.end) this.range = range
  }

  private onScroll = (): void => {
    const viewport = this.viewport
    const scrollTop = viewport.scrollTop
    this.atBottom = viewport.scrollHeight - scrollTop - viewport.clientHeight <= BOTTOM_SLACK_PX
    if (this.atBottom) this.newBelow = false
    // The anchor is a message or day row, never the header above them (older messages are
    // inserted below the header, and the view must stay with what the user was reading).
    const index = this.rows.length > 1 ? Math.max(1, this.rowAt(scrollTop)) : 0
    const row = this.rows[index]
    this.anchor = row && { key: row.key, delta: scrollTop - (this.offsets[index] as number) }
    this.updateRange()
    this.maybeLoadOlder()
  }

  private maybeLoadOlder(): void {
    if (this.viewport.scrollTop < LOAD_OLDER_PX && this.hasOlder && !this.loadingOlder) {
      this.dispatchEvent(new CustomEvent('load-older'))
    }
  }

  protected override updated(changedProperties: PropertyValues<this>): void {
    // Measure what is rendered; correct the estimates; put the anchor back where it was.
    let changed = false
    let firstChanged = this.rows.length
    for (const element of this.renderRoot.querySelectorAll<HTMLElement>('.row')) {
      const key = element.dataset.key
      if (!key) continue
      const height = element.offsetHeight
      if (height > 0 && this.heights.get(key) !== height) {
        this.heights.set(key, height)
        const index = this.indexByKey.get(key)
        if (index !== undefined) {
          this.sizes[index] = height
          firstChanged = Math.min(firstChanged, index)
        }
        changed = true
      }
    }
    if (changed) {
      this.computeOffsets(firstChanged)
      // The spacers follow the corrected offsets now, so the scroll position below is reachable.
      const before = this.renderRoot.querySelector<HTMLElement>('.spacer.before')
      const after = this.renderRoot.querySelector<HTMLElement>('.spacer.after')
      if (before) before.style.height = `${this.offsets[this.range.start]}px`
      if (after) after.style.height = `${this.totalHeight - (this.offsets[this.range.end] as number)}px`
    }
    if (changed || this.layoutDirty) {
      this.layoutDirty = false
      // At the bottom: the real bottom, padding included (the browser clamps scrollTop).
      const target = this.atBottom ? this.viewport.scrollHeight : Math.round(this.restoredScrollTop())
      if (Math.abs(this.viewport.scrollTop - target) >= 1) this.viewport.scrollTop = target
    }
    const range = this.visibleRange(this.viewport.scrollTop)
    if (range.start !== this.range.start || range.end !== this.range.end) this.range = range
    // Still near the top after a page arrived (short messages, a tall screen): ask for the next.
    if (changedProperties.has('loadingOlder') && !this.loadingOlder) this.maybeLoadOlder()
  }

  /** "from Laptop" on our message written on another of our devices; nothing otherwise. */
  private renderFrom(message: MessageView): TemplateResult | typeof nothing {
    if (message.direction !== 'out' || this.thisDevice === undefined) return nothing
    // Absent: device 1, as MessageView.device says.
    const device = message.device ?? 1
    if (device === this.thisDevice) return nothing
    const name = this.deviceNames.get(device)
    const label = name ?? `device ${device}`
    return html`<span class="from" title=${name ? `Sent from ${name} (device ${device})` : `Sent from device ${device}`}
        >from ${label}</span
      ><span class="sep" aria-hidden="true">·</span>`
  }

  private renderRow(row: Row): TemplateResult {
    switch (row.kind) {
      case 'top':
        return html`<div class="row top" data-key=${row.key}>
          ${
            this.hasOlder
              ? html`<span>${this.loadingOlder ? 'Loading earlier messages…' : ' '}</span>`
              : html`<span class="lock"
                  >${icons.lock()}<span
                    >Messages with ${this.peer} are end-to-end encrypted. Only the two of you can read
                    them.</span
                  ></span
                >`
          }
        </div>`
      case 'day':
        return html`<div class="row day" data-key=${row.key} role="separator">
          <span>${formatDay(row.time)}</span>
        </div>`
      case 'message': {
        const message = row.message
        if (message.kind !== 'text') {
          return html`<div class="row notice ${message.kind}" data-key=${row.key} data-id=${message.id} role="note">
            <div class="notice-card">
              ${NOTICE_ICONS[message.kind]()}
              <p class="notice-body">
                <span class="notice-text">${noticeText(message)}</span>
                <time datetime=${new Date(row.time).toISOString()} title=${formatFull(row.time)}
                  >${formatTime(row.time)}</time
                >
              </p>
            </div>
          </div>`
        }
        return html`<div
          class="row message ${message.direction} ${row.groupStart ? 'group-start' : ''}"
          data-key=${row.key}
          data-id=${message.id}
        >
          <div class="bubble">
            <span class="visually-hidden">${message.direction === 'out' ? 'You:' : `${this.peer}:`}</span>
            <div class="text" dir="auto">${displayText(message.text)}</div>
            <div class="meta">
              ${this.renderFrom(message)}
              <time datetime=${new Date(row.time).toISOString()} title=${formatFull(row.time)}
                >${formatTime(row.time)}</time
              >
              ${message.direction === 'out' ? deliveryMark(message.state) : nothing}
            </div>
          </div>
        </div>`
      }
    }
  }

  override render(): TemplateResult {
    const { start, end } = this.range
    const visible = this.rows.slice(start, end)
    const before = this.offsets[start] ?? 0
    const after = this.totalHeight - (this.offsets[end] ?? this.totalHeight)
    return html`
      <div class="viewport" role="log" aria-label="Messages" tabindex="0" @scroll=${this.onScroll}>
        <div class="inner">
          <div class="spacer before" ${styleProps({ height: `${before}px` })}></div>
          ${repeat(
            visible,
            (row) => row.key,
            (row) => this.renderRow(row),
          )}
          <div class="spacer after" ${styleProps({ height: `${after}px` })}></div>
          <div class="bottom-pad"></div>
        </div>
      </div>
      ${
        this.newBelow
          ? html`<button class="jump" @click=${() => this.scrollToBottom()}>
              ${icons.down()} New messages
            </button>`
          : nothing
      }
    `
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'sc-message-list': MessageList
  }
}
