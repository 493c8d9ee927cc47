/**
 * The conversation view's own bookkeeping, in Chromium, over a stand-in for the client core (only
 * the events and calls the view uses): an entry that comes again with another position moves
 * there (a notice already read gives way to its message at the end of the conversation), one with
 * the same position is replaced where it is, and a 'removed' event takes an entry out. Events
 * about other conversations change nothing. Our messages from another of our devices are marked
 * with its name, the device list read once for the devices seen, again only for a new one.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { MessageView } from '../../../shared/client/chat-client.js'
import type { ConversationView } from './conversation-view.js'
import { FakeConversationClient } from './fake-conversation-client.js'
import type { MessageList } from './message-list.js'
import './conversation-view.js'

const PEER = 'ann'
const START = Date.UTC(2025, 0, 1, 9, 0, 0)
const MINUTE = 60_000

function entry(order: number, overrides: Partial<MessageView> = {}): MessageView {
  return {
    id: `e${order}`,
    peer: PEER,
    direction: 'in',
    text: `message ${order}`,
    sentAt: START + order * MINUTE,
    serverAt: START + order * MINUTE,
    state: 'received',
    order,
    kind: 'text',
    ...overrides,
  }
}

const mounted: HTMLElement[] = []

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
})

async function frames(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => requestAnimationFrame(resolve))
}

function listOf(view: ConversationView): MessageList | null | undefined {
  return view.shadowRoot?.querySelector('sc-message-list')
}

/** Lets the view and its list update and measure. */
async function settle(view: ConversationView): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await view.updateComplete
    await listOf(view)?.updateComplete
    await frames(1)
  }
}

/** What the list shows, in order: each entry's id and its text or notice sentence. */
function shown(view: ConversationView): string[] {
  const list = listOf(view)
  return [...(list?.shadowRoot?.querySelectorAll<HTMLElement>('.row[data-id]') ?? [])].map((row) => {
    const note = row.getAttribute('role') === 'note'
    const text = row.querySelector(note ? '.notice-text' : '.bubble .text')?.textContent ?? ''
    return `${row.dataset.id} ${note ? 'notice' : 'text'}: ${text}`
  })
}

async function mount(
  history: readonly MessageView[],
  setup: (client: FakeConversationClient) => void = () => {},
): Promise<{ view: ConversationView; client: FakeConversationClient }> {
  const client = new FakeConversationClient()
  client.setHistory(PEER, history)
  setup(client)
  const view = document.createElement('sc-conversation')
  view.style.display = 'flex'
  view.style.height = '600px'
  view.style.width = '420px'
  view.client = client.asClient
  view.peer = PEER
  document.body.append(view)
  mounted.push(view)
  while (shown(view).length !== history.length) await frames(1)
  await settle(view)
  return { view, client }
}

describe('sc-conversation', () => {
  it('moves an entry that comes again with a later position, and replaces one in place', async () => {
    const { view, client } = await mount([
      entry(1),
      entry(2, { kind: 'undecryptable', text: '' }),
      entry(3),
      entry(4, { kind: 'undecryptable', text: '' }),
    ])
    expect(shown(view)).toEqual([
      'e1 text: message 1',
      'e2 notice: A message from ann could not be decrypted. Asked ann to send it again.',
      'e3 text: message 3',
      'e4 notice: A message from ann could not be decrypted. Asked ann to send it again.',
    ])

    // e2's notice had been read: its message takes the end of the conversation.
    client.events.emit('message', entry(5, { id: 'e2', text: 'sent again' }))
    // e4's was not: its message takes the notice's place.
    client.events.emit('message', entry(4, { text: 'sent again, in place' }))
    await settle(view)
    expect(shown(view)).toEqual([
      'e1 text: message 1',
      'e3 text: message 3',
      'e4 text: sent again, in place',
      'e2 text: sent again',
    ])

    // A new message arrives after them all.
    client.events.emit('message', entry(6))
    await settle(view)
    expect(shown(view).at(-1)).toBe('e6 text: message 6')
    expect(shown(view)).toHaveLength(5)
  })

  it("takes an entry out on 'removed', and ignores other conversations' events", async () => {
    const { view, client } = await mount([entry(1), entry(2, { kind: 'lost', text: '' }), entry(3)])
    client.events.emit('removed', { peer: 'bob', id: 'e2' })
    client.events.emit('message', entry(4, { peer: 'bob' }))
    await settle(view)
    expect(shown(view)).toEqual([
      'e1 text: message 1',
      "e2 notice: A message from ann could not be decrypted, and ann's device no longer has it to send again.",
      'e3 text: message 3',
    ])

    client.events.emit('removed', { peer: PEER, id: 'e2' })
    await settle(view)
    expect(shown(view)).toEqual(['e1 text: message 1', 'e3 text: message 3'])
    // Removing what is not there changes nothing.
    client.events.emit('removed', { peer: PEER, id: 'e2' })
    await settle(view)
    expect(shown(view)).toEqual(['e1 text: message 1', 'e3 text: message 3'])
  })

  it('marks our messages from our other devices with their names, asking for the list only when needed', async () => {
    const marks = (view: ConversationView) =>
      [...(listOf(view)?.shadowRoot?.querySelectorAll<HTMLElement>('.message[data-id]') ?? [])].map(
        (row) => `${row.dataset.id} ${row.querySelector('.meta .from')?.textContent?.trim() ?? '-'}`,
      )
    const out = { direction: 'out', state: 'delivered' } as const
    const { view, client } = await mount([entry(1, out), entry(2)], (fake) => {
      fake.deviceId = 1
      fake.ownDevices = [
        { id: 1, name: 'Phone', createdAt: START, lastSeenAt: START, current: true },
        { id: 2, name: 'Laptop', createdAt: START, lastSeenAt: START, current: false },
      ]
    })
    // Everything here was written on this device: no marks, and no need for the names.
    expect(marks(view)).toEqual(['e1 -', 'e2 -'])
    expect(client.devicesAsked).toBe(0)

    // A copy of what the laptop sent: marked once the names are in.
    client.events.emit('message', entry(3, { ...out, device: 2 }))
    while (!marks(view).includes('e3 from Laptop')) await settle(view)
    client.events.emit('message', entry(4, { ...out, device: 2 }))
    await settle(view)
    expect(marks(view)).toEqual(['e1 -', 'e2 -', 'e3 from Laptop', 'e4 from Laptop'])
    expect(client.devicesAsked).toBe(1)

    // A device linked since (or removed): asked once more; still no name, so its number.
    client.events.emit('message', entry(5, { ...out, device: 3 }))
    while (client.devicesAsked < 2) await settle(view)
    client.events.emit('message', entry(6, { ...out, device: 3 }))
    await settle(view)
    expect(marks(view).slice(-2)).toEqual(['e5 from device 3', 'e6 from device 3'])
    expect(client.devicesAsked).toBe(2)
  })
})
