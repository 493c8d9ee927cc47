/**
 * How a conversation with notices looks, in Chromium with the app's own stylesheet: a message that
 * could not be decrypted and one that is lost, between bubbles (one of ours written on our laptop,
 * marked "from Laptop"), in the light and the dark scheme,
 * at a phone's and a desktop's width. Each combination is written to test-artifacts/screenshots/
 * (git-ignored) for people to look at; the test checks what can be measured: every notice is on
 * screen, inside the viewport's width, its sentence, its time and its icon readable against the
 * card (WCAG 1.4.3 and 1.4.11, on the colours Chromium computed) and the card set apart from the
 * page; the "from Laptop" mark in its bubble's meta line, as readable there as the time beside it.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { cdp, commands, page } from 'vitest/browser'
import { type MessageView, noticeText } from '../../../shared/client/chat-client.js'
import '../styles/global.css'
import type { ConversationView } from './conversation-view.js'
import { FakeConversationClient } from './fake-conversation-client.js'
import './conversation-view.js'

/** The sizes e2e/browser.ts screenshots the app at. */
const SIZES = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 800 } } as const
const MINUTE = 60_000
/** Relative to the repository (where vitest's file commands start), as e2e/browser.ts writes them. */
const SCREENSHOT_DIR = 'test-artifacts/screenshots'
/** Screenshots at twice the CSS pixel density, as a phone's or a laptop's screen shows the page. */
const PIXEL_RATIO = 2

function conversation(peer: string, now: number): MessageView[] {
  const entries: [direction: 'in' | 'out', kind: MessageView['kind'], text: string, device?: number][] = [
    ['in', 'text', 'Are we still on for Saturday?'],
    ['out', 'text', 'Yes! 7 pm works for me.'],
    ['in', 'undecryptable', ''],
    ['in', 'text', 'Did the address come through?'],
    ['out', 'text', 'Not yet: my app has asked your phone to send it again.'],
    ['in', 'lost', ''],
    ['in', 'text', 'That was my old phone, it is wiped now. It is 12 Harbour Street, by the lighthouse.'],
    ['out', 'text', 'Got it, see you there', 2],
  ]
  return entries.map(([direction, kind, text, device], i) => {
    const at = now - (entries.length - i) * 4 * MINUTE
    return {
      id: `e${i + 1}`,
      peer,
      direction,
      text,
      sentAt: at,
      serverAt: at,
      state: direction === 'out' ? 'delivered' : 'received',
      order: i + 1,
      kind,
      ...(device !== undefined ? { device } : {}),
    }
  })
}

const mounted: HTMLElement[] = []

afterEach(async () => {
  for (const element of mounted.splice(0)) element.remove()
  await cdp().send('Emulation.setEmulatedMedia', { features: [] })
})

async function frames(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => requestAnimationFrame(resolve))
}

async function mountConversation(peer: string, narrow: boolean): Promise<ConversationView> {
  const client = new FakeConversationClient()
  client.setHistory(peer, conversation(peer, Date.now()))
  client.ownDevices = [
    { id: 1, name: 'Phone', createdAt: 0, lastSeenAt: 0, current: true },
    { id: 2, name: 'Laptop', createdAt: 0, lastSeenAt: 0, current: false },
  ]
  const view = document.createElement('sc-conversation')
  view.style.height = '100vh'
  view.client = client.asClient
  view.peer = peer
  // As the app shows it on a phone: one pane at a time, with a back button.
  view.narrow = narrow
  view.contact = {
    username: peer,
    verified: true,
    identityChanged: false,
    accountDeleted: false,
    unread: 0,
    lastMessageAt: undefined,
    online: false,
    blocked: false,
  }
  document.body.append(view)
  mounted.push(view)
  const list = () => view.shadowRoot?.querySelector('sc-message-list')
  // The history loads, the list renders and measures its rows, and scrolls to the bottom.
  while (
    list()?.shadowRoot?.querySelectorAll('[role="note"]').length !== 2 ||
    !list()?.shadowRoot?.querySelector('.meta .from')?.textContent?.includes('Laptop')
  ) {
    await frames(1)
  }
  await frames(4)
  return view
}

/**
 * The test's frame as a PNG. Vitest's own `page.screenshot` captures the frame as the runner shows
 * it, scaled down to fit the runner's 1280×720 page; Chromium renders the clip at any scale instead.
 */
async function screenshot(name: string): Promise<void> {
  await frames(2)
  const frame = window.frameElement!.getBoundingClientRect()
  const shownAt = frame.width / window.innerWidth
  const shot = (await cdp().send('Page.captureScreenshot', {
    format: 'png',
    clip: { x: frame.x, y: frame.y, width: frame.width, height: frame.height, scale: PIXEL_RATIO / shownAt },
  })) as { data: string }
  await commands.writeFile(`${SCREENSHOT_DIR}/${name}.png`, shot.data, { encoding: 'base64' })
}

/** [r, g, b, a] of a computed CSS colour ("rgb(…)" or "rgba(…)"). */
function channels(colour: string): [number, number, number, number] {
  const match = /rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/.exec(colour)
  if (!match) throw new Error(`expected an rgb() colour, got ${colour}`)
  return [Number(match[1]), Number(match[2]), Number(match[3]), match[4] === undefined ? 1 : Number(match[4])]
}

function luminance([r, g, b]: readonly number[]): number {
  const linear = (value: number) => {
    const v = value / 255
    return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4
  }
  return 0.2126 * linear(r as number) + 0.7152 * linear(g as number) + 0.0722 * linear(b as number)
}

function contrast(a: readonly number[], b: readonly number[]): number {
  const [high, low] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number]
  return (high + 0.05) / (low + 0.05)
}

/** The opaque background an element is drawn on: its own, or the nearest ancestor's (through shadow roots). */
function backgroundOf(element: Element): [number, number, number, number] {
  let node: Element | null = element
  while (node) {
    const colour = channels(getComputedStyle(node).backgroundColor)
    if (colour[3] === 1) return colour
    const parent: Node | null = node.parentNode
    node = parent instanceof ShadowRoot ? parent.host : (parent as Element | null)
  }
  return channels(getComputedStyle(document.documentElement).backgroundColor)
}

describe.each([
  ['light', 'phone'],
  ['light', 'desktop'],
  ['dark', 'phone'],
  ['dark', 'desktop'],
] as const)('a conversation with notices, %s scheme, %s', (scheme, device) => {
  it('shows each notice readable, in place, within the width', async () => {
    await page.viewport(SIZES[device].width, SIZES[device].height)
    await cdp().send('Emulation.setEmulatedMedia', {
      features: [{ name: 'prefers-color-scheme', value: scheme }],
    })
    expect(matchMedia('(prefers-color-scheme: dark)').matches).toBe(scheme === 'dark')
    const peer = 'jonas'
    const view = await mountConversation(peer, device === 'phone')
    const list = view.shadowRoot!.querySelector('sc-message-list')!
    const rows = [...list.shadowRoot!.querySelectorAll<HTMLElement>('.row[data-id]')]
    expect(rows.map((row) => row.dataset.id)).toEqual(['e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8'])
    const viewport = list.shadowRoot!.querySelector('.viewport')!.getBoundingClientRect()
    for (const [id, kind] of [
      ['e3', 'undecryptable'],
      ['e6', 'lost'],
    ] as const) {
      const note = list.shadowRoot!.querySelector<HTMLElement>(`[role="note"][data-id="${id}"]`)!
      const card = note.querySelector<HTMLElement>('.notice-card')!
      const text = note.querySelector<HTMLElement>('.notice-text')!
      const icon = note.querySelector<SVGElement>('.icon')!
      const time = note.querySelector<HTMLElement>('time')!
      expect(text.textContent).toBe(noticeText({ kind, peer }))
      const box = card.getBoundingClientRect()
      expect(box.top).toBeGreaterThanOrEqual(viewport.top)
      expect(box.bottom).toBeLessThanOrEqual(viewport.bottom)
      expect(box.left).toBeGreaterThanOrEqual(viewport.left)
      expect(box.right).toBeLessThanOrEqual(viewport.right)
      const cardColour = backgroundOf(card)
      expect(contrast(channels(getComputedStyle(text).color), cardColour)).toBeGreaterThanOrEqual(4.5)
      expect(contrast(channels(getComputedStyle(time).color), cardColour)).toBeGreaterThanOrEqual(4.5)
      expect(contrast(channels(getComputedStyle(icon).color), cardColour)).toBeGreaterThanOrEqual(3)
      // The card is a surface of its own, not text floating on the page.
      expect(cardColour).not.toEqual(backgroundOf(list.shadowRoot!.querySelector('.viewport')!))
    }
    // Our message from the laptop: marked in its meta line, inside the bubble, readable on it.
    const from = list.shadowRoot!.querySelector<HTMLElement>('.message[data-id="e8"] .meta .from')!
    expect(from.textContent?.trim()).toBe('from Laptop')
    const bubble = from.closest('.bubble')!.getBoundingClientRect()
    const mark = from.getBoundingClientRect()
    expect(mark.left).toBeGreaterThanOrEqual(bubble.left)
    expect(mark.right).toBeLessThanOrEqual(bubble.right)
    const bubbleColour = backgroundOf(from)
    const time = from.parentElement!.querySelector('time')!
    expect(contrast(channels(getComputedStyle(from).color), bubbleColour)).toBeGreaterThanOrEqual(
      contrast(channels(getComputedStyle(time).color), bubbleColour),
    )
    await screenshot(`notices-${device}-${scheme}`)
  })
})
