/**
 * The windowed message list in Chromium: a conversation of 10,000 messages keeps a few dozen rows
 * in the DOM wherever it is scrolled, shows the right ones, asks for older messages near the top,
 * keeps the view still when they are prepended, follows new messages at the bottom, and renders
 * message text as text; notices of every kind stand in their messages' places, and give way to the
 * message when it arrives.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { type MessageKind, type MessageView, noticeText } from '../../../shared/client/chat-client.js'
import type { MessageList } from './message-list.js'
import './message-list.js'

const START = Date.UTC(2025, 0, 1, 9, 0, 0)
const MINUTE = 60_000

function messages(count: number, firstOrder = 1, stepMs = 7 * MINUTE): MessageView[] {
  return Array.from({ length: count }, (_, i) => {
    const order = firstOrder + i
    return {
      id: `m${order}`,
      peer: 'ann',
      direction: order % 3 === 0 ? 'out' : 'in',
      text:
        order % 7 === 0
          ? `Message ${order}\nwith a second line\nand a third`
          : `Message ${order} ${'lorem ipsum '.repeat(order % 5)}`,
      sentAt: START + order * stepMs,
      serverAt: START + order * stepMs,
      state: order % 3 === 0 ? 'delivered' : 'received',
      order,
      kind: 'text',
    }
  })
}

const mounted: HTMLElement[] = []

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
})

/** Lets scroll events, Lit updates and the follow-up measuring pass run. */
async function settle(list: MessageList): Promise<void> {
  for (let i = 0; i < 4; i++) {
    await new Promise((resolve) => requestAnimationFrame(() => resolve(undefined)))
    await list.updateComplete
  }
}

async function mount(
  items: MessageView[],
  options: { hasOlder?: boolean; width?: number } = {},
): Promise<MessageList> {
  const list = document.createElement('sc-message-list')
  list.style.display = 'block'
  list.style.height = '600px'
  list.style.width = `${options.width ?? 420}px`
  list.peer = 'ann'
  list.messages = items
  list.hasOlder = options.hasOlder ?? false
  document.body.append(list)
  mounted.push(list)
  await settle(list)
  return list
}

function viewport(list: MessageList): HTMLElement {
  return list.shadowRoot!.querySelector('.viewport') as HTMLElement
}

/** Ids of the messages at least partly inside the viewport. */
function visibleIds(list: MessageList): string[] {
  const box = viewport(list).getBoundingClientRect()
  return [...list.shadowRoot!.querySelectorAll<HTMLElement>('.message')]
    .filter((row) => {
      const rect = row.getBoundingClientRect()
      return rect.bottom > box.top && rect.top < box.bottom
    })
    .map((row) => row.dataset.id ?? '')
}

async function scrollTo(list: MessageList, top: number): Promise<void> {
  viewport(list).scrollTop = top
  viewport(list).dispatchEvent(new Event('scroll'))
  await settle(list)
}

describe('sc-message-list', () => {
  it('renders a few dozen rows of 10,000 messages, starting at the newest', async () => {
    const list = await mount(messages(10_000))
    expect(list.renderedMessageCount).toBeGreaterThan(0)
    expect(list.renderedMessageCount).toBeLessThan(80)
    expect(visibleIds(list)).toContain('m10000')
    const element = viewport(list)
    expect(element.scrollHeight - element.scrollTop - element.clientHeight).toBeLessThan(2)
  })

  it('shows the right messages wherever it is scrolled, with the DOM staying small', async () => {
    const list = await mount(messages(10_000))
    const element = viewport(list)
    for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
      await scrollTo(list, (element.scrollHeight - element.clientHeight) * fraction)
      const visible = visibleIds(list).map((id) => Number(id.slice(1)))
      expect(visible.length).toBeGreaterThan(0)
      expect(list.renderedMessageCount).toBeLessThan(80)
      // Consecutive messages, in order.
      for (let i = 1; i < visible.length; i++) expect(visible[i]).toBe((visible[i - 1] as number) + 1)
      if (fraction === 0) expect(visible[0]).toBe(1)
      if (fraction === 1) expect(visible.at(-1)).toBe(10_000)
    }
  })

  it('scrolls through 10,000 messages frame by frame, keeping the DOM small (and reports the cost)', async () => {
    const list = await mount(messages(10_000))
    const element = viewport(list)
    const STEP_PX = 150
    const FRAMES = 400
    const work: number[] = []
    const intervals: number[] = []
    let last = performance.now()
    for (let frame = 0; frame < FRAMES; frame++) {
      const started = performance.now()
      element.scrollTop = Math.max(0, element.scrollTop - STEP_PX)
      element.dispatchEvent(new Event('scroll'))
      await list.updateComplete
      // Layout is part of the frame's cost: force it here rather than leave it to the next paint.
      void element.scrollHeight
      work.push(performance.now() - started)
      await new Promise((resolve) => requestAnimationFrame(() => resolve(undefined)))
      const now = performance.now()
      intervals.push(now - last)
      last = now
      expect(list.renderedMessageCount).toBeLessThan(80)
      const visible = visibleIds(list).map((id) => Number(id.slice(1)))
      expect(visible.length).toBeGreaterThan(0)
      for (let i = 1; i < visible.length; i++) expect(visible[i]).toBe((visible[i - 1] as number) + 1)
    }
    // It really moved: from the newest messages to far older ones.
    expect(Math.min(...visibleIds(list).map((id) => Number(id.slice(1))))).toBeLessThan(10_000 - FRAMES)
    const percentile = (values: number[], p: number) =>
      [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((values.length * p) / 100))]!
    // A measurement for people, not a pass mark: printed, never asserted (machines differ).
    console.log(
      `scrolling 10,000 messages, ${FRAMES} frames of ${STEP_PX}px: work per frame p50 ${percentile(work, 50).toFixed(2)} ms, p95 ${percentile(work, 95).toFixed(2)} ms, max ${Math.max(...work).toFixed(2)} ms; frame interval p50 ${percentile(intervals, 50).toFixed(1)} ms, p95 ${percentile(intervals, 95).toFixed(1)} ms`,
    )
  })

  it('asks for older messages near the top, and keeps the view still when they arrive', async () => {
    const list = await mount(messages(200, 10_001), { hasOlder: true })
    let asked = 0
    list.addEventListener('load-older', () => asked++)
    await scrollTo(list, 150)
    expect(asked).toBeGreaterThan(0)
    const anchorId = visibleIds(list)[1] as string
    const anchor = () => list.shadowRoot!.querySelector<HTMLElement>(`[data-id="${anchorId}"]`)!
    const before = anchor().getBoundingClientRect().top

    list.messages = [...messages(200, 9_801), ...list.messages]
    await settle(list)
    expect(Math.abs(anchor().getBoundingClientRect().top - before)).toBeLessThanOrEqual(1)
    expect(list.renderedMessageCount).toBeLessThan(80)
  })

  it('follows new messages at the bottom, and offers a jump when scrolled up', async () => {
    const list = await mount(messages(500))
    list.messages = [...list.messages, ...messages(1, 501)]
    await settle(list)
    expect(visibleIds(list)).toContain('m501')

    await scrollTo(list, 0)
    const incoming = { ...messages(1, 502)[0]!, direction: 'in' as const }
    list.messages = [...list.messages, incoming]
    await settle(list)
    expect(visibleIds(list)).not.toContain('m502')
    const jump = list.shadowRoot!.querySelector<HTMLButtonElement>('button.jump')
    expect(jump?.textContent).toContain('New messages')
    jump?.click()
    await settle(list)
    expect(visibleIds(list)).toContain('m502')
  })

  it('renders message text as text, never as HTML', async () => {
    const hostile = '<img src=x onerror="window.__listPwned=1"><b>bold</b>'
    const list = await mount([{ ...messages(1)[0]!, text: hostile }])
    const text = list.shadowRoot!.querySelector('.message .text')!
    expect(text.textContent).toBe(hostile)
    expect(text.querySelector('img, b')).toBeNull()
    expect((window as { __listPwned?: number }).__listPwned).toBeUndefined()
  })

  it('shows bidirectional overrides and isolates visibly (U+FFFD), keeping right-to-left marks', async () => {
    // "invoice<RLO>fdp.exe" would read as "invoiceexe.pdf"; an isolate hides what it encloses.
    const hostile = 'invoice\u202Efdp.exe \u2067isolated\u2069 שלום\u200F!'
    const list = await mount([{ ...messages(1)[0]!, text: hostile }])
    const text = list.shadowRoot!.querySelector('.message .text') as HTMLElement
    expect(text.textContent).toBe('invoice\uFFFDfdp.exe \uFFFDisolated\uFFFD שלום\u200F!')
    expect(text.textContent).not.toMatch(/[\u202A-\u202E\u2066-\u2069]/)
    // Each message takes its direction from its own text, and none of it leaks past the bubble.
    expect(text.dir).toBe('auto')
    expect(getComputedStyle(text).unicodeBidi).toBe('isolate')
  })

  it('separates days and marks delivery for outgoing messages', async () => {
    const list = await mount(messages(400, 1, 180 * MINUTE))
    const element = viewport(list)
    await scrollTo(list, element.scrollHeight / 2)
    const separators = list.shadowRoot!.querySelectorAll('.day')
    expect(separators.length).toBeGreaterThan(0)
    const marks = [...list.shadowRoot!.querySelectorAll('.message.out .state')]
    expect(marks.length).toBeGreaterThan(0)
    expect(marks.every((mark) => mark.textContent?.includes('Delivered'))).toBe(true)
  })
})

describe('sc-message-list notices', () => {
  const NOTICE_KINDS: readonly Exclude<MessageKind, 'text'>[] = [
    'undecryptable',
    'unreadable',
    'unsupported',
    'lost',
    'outdated',
  ]

  /**
   * Messages from ann a minute apart (one group, were it not for the notices), m1…m11, with a
   * notice of each kind in place of m2, m4, m6, m8 and m10.
   */
  function withNotices(): MessageView[] {
    return messages(11, 1, MINUTE).map((message, i) => {
      const kind = i % 2 === 1 ? NOTICE_KINDS[(i - 1) / 2] : undefined
      return { ...message, direction: 'in', state: 'received', ...(kind ? { text: '', kind } : {}) }
    })
  }

  /** The rows in the DOM, in order: each message's id and what it shows. */
  function rows(list: MessageList): { id: string; note: string | null; text: string | null }[] {
    return [...list.shadowRoot!.querySelectorAll<HTMLElement>('.row[data-id]')].map((row) => ({
      id: row.dataset.id ?? '',
      note:
        row.getAttribute('role') === 'note' ? (row.querySelector('.notice-text')?.textContent ?? '') : null,
      text: row.querySelector('.bubble .text')?.textContent ?? null,
    }))
  }

  it('shows each kind of notice as a note with its sentence, in its place between the messages', async () => {
    const items = withNotices()
    // Wide enough that all five notices and the messages between them fit on one screen.
    const list = await mount(items, { width: 640 })
    expect(rows(list)).toEqual(
      items.map((message) =>
        message.kind === 'text'
          ? { id: message.id, note: null, text: message.text }
          : { id: message.id, note: noticeText(message), text: null },
      ),
    )
    const notes = [...list.shadowRoot!.querySelectorAll<HTMLElement>('[role="note"]')]
    expect(notes.map((note) => note.querySelector('.notice-text')?.textContent)).toEqual([
      'A message from ann could not be decrypted. Asked ann to send it again.',
      'A message from ann could not be read: it decrypted, but its content was damaged.',
      'ann sent a kind of message this version cannot display. Update secure-chat to see it.',
      "A message from ann could not be decrypted, and ann's device no longer has it to send again.",
      "A message from ann could not be decrypted: ann's app is out of date. ann's app must be updated, then the message sent again.",
    ])
    // Each notice is on screen, with its icon and time, and is not drawn as a bubble.
    const box = viewport(list).getBoundingClientRect()
    for (const note of notes) {
      const rect = note.getBoundingClientRect()
      expect(rect.top).toBeGreaterThanOrEqual(box.top)
      expect(rect.bottom).toBeLessThanOrEqual(box.bottom)
      expect(note.querySelector('.notice-card .icon')).not.toBeNull()
      expect(note.querySelector('time')?.dateTime).toBe(
        new Date(START + Number(note.dataset.id!.slice(1)) * MINUTE).toISOString(),
      )
      expect(note.querySelector('.bubble')).toBeNull()
    }
    // A notice stands apart: the message after it begins a group of its own.
    for (const id of ['m3', 'm5', 'm7', 'm9', 'm11']) {
      expect(
        list.shadowRoot!.querySelector(`.message[data-id="${id}"]`)?.classList.contains('group-start'),
      ).toBe(true)
    }
  })

  it('shows the message and no notice once the message replaces its notice (same id, a new array)', async () => {
    const items = withNotices()
    const list = await mount(items)
    const replaced = items.map((message) =>
      message.id === 'm2' ? { ...message, kind: 'text' as const, text: 'sent again: here it is' } : message,
    )
    list.messages = replaced
    await settle(list)
    const shown = rows(list)
    expect(shown.map((row) => row.id)).toEqual(items.map((message) => message.id))
    expect(shown.find((row) => row.id === 'm2')).toEqual({
      id: 'm2',
      note: null,
      text: 'sent again: here it is',
    })
    expect(list.shadowRoot!.querySelector('[role="note"][data-id="m2"]')).toBeNull()
    expect(list.shadowRoot!.querySelectorAll('[role="note"]')).toHaveLength(4)
  })
})

describe('sc-message-list, messages from our other devices', () => {
  function fromDevices(): MessageView[] {
    const at = (order: number) => START + order * MINUTE
    const entry = (
      order: number,
      direction: 'in' | 'out',
      device: number | undefined,
      text: string,
    ): MessageView => ({
      id: `d${order}`,
      peer: 'ann',
      direction,
      text,
      sentAt: at(order),
      serverAt: at(order),
      state: direction === 'out' ? 'delivered' : 'received',
      order,
      kind: 'text',
      ...(device !== undefined ? { device } : {}),
    })
    return [
      entry(1, 'out', undefined, 'written on device 1'),
      entry(2, 'out', 2, 'written on the laptop'),
      entry(3, 'in', 2, 'ann, from her device 2'),
      entry(4, 'out', 3, 'written on a device without a name'),
      entry(5, 'out', 1, 'written on device 1 again'),
    ]
  }

  /** Each bubble's id and its "from …" marker, if it has one. */
  function markers(list: MessageList): [string, string | null][] {
    return [...list.shadowRoot!.querySelectorAll<HTMLElement>('.message[data-id]')].map((row) => [
      row.dataset.id ?? '',
      row.querySelector('.meta .from')?.textContent?.trim() ?? null,
    ])
  }

  it('marks our messages sent from another of our devices, by name where known, and no others', async () => {
    const list = await mount(fromDevices(), { width: 640 })
    // Which device this is not known yet: nothing is marked.
    expect(markers(list).every(([, marker]) => marker === null)).toBe(true)

    list.thisDevice = 1
    list.deviceNames = new Map([
      [1, 'Phone'],
      [2, 'Laptop'],
    ])
    await settle(list)
    expect(markers(list)).toEqual([
      ['d1', null],
      ['d2', 'from Laptop'],
      ['d3', null],
      ['d4', 'from device 3'],
      ['d5', null],
    ])
    // In the meta line, beside the time and the ticks, with the full words for a pointer or a reader.
    const marker = list.shadowRoot!.querySelector<HTMLElement>('.message[data-id="d2"] .meta .from')!
    expect(marker.parentElement?.querySelector('time')).not.toBeNull()
    expect(marker.compareDocumentPosition(marker.parentElement!.querySelector('time')!)).toBe(
      Node.DOCUMENT_POSITION_FOLLOWING,
    )
    expect(marker.title).toBe('Sent from Laptop (device 2)')

    // On the laptop, the same conversation: what the phone wrote is marked instead.
    list.thisDevice = 2
    await settle(list)
    expect(markers(list)).toEqual([
      ['d1', 'from Phone'],
      ['d2', null],
      ['d3', null],
      ['d4', 'from device 3'],
      ['d5', 'from Phone'],
    ])
  })
})
