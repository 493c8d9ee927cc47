/**
 * The modal warnings (WarningDialog: the key-change warning, the start-over confirmation) in
 * Chromium, where a dialog's `close` event comes a task after `close()`: a dialog closed and
 * opened again before that event must stay open, and say nothing of the close that came before
 * (it once said "cancelled" or "not now", and its owner closed the new one); a warning whose
 * subject changes while it is open is the new subject's (its safety number read again).
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { ChatClient } from '../../../shared/client/chat-client.js'
import type { SafetyNumber } from '../../../shared/safety-number.js'
import type { KeyChangeDialog } from './key-change-dialog.js'
import type { StartOverDialog } from './start-over-dialog.js'
import './key-change-dialog.js'
import './start-over-dialog.js'

const mounted: HTMLElement[] = []

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
})

function dialogOf(element: HTMLElement): HTMLDialogElement {
  const dialog = element.shadowRoot?.querySelector('dialog')
  if (!dialog) throw new Error('expected a <dialog>')
  return dialog
}

/** Resolves once the dialog's next `close` event has been dispatched to every listener. */
function nextClose(dialog: HTMLDialogElement): Promise<void> {
  return new Promise((resolve) =>
    dialog.addEventListener('close', () => setTimeout(resolve, 0), { once: true }),
  )
}

function heard(element: HTMLElement, type: string): unknown[] {
  const events: unknown[] = []
  element.addEventListener(type, (event) => events.push((event as CustomEvent).detail ?? type))
  return events
}

describe('the start-over confirmation', () => {
  it('opened again before the close event of its previous closing stays open, and is not cancelled', async () => {
    const view = document.createElement('sc-start-over-dialog') as StartOverDialog
    document.body.append(view)
    mounted.push(view)
    const cancelled = heard(view, 'start-over-cancelled')
    view.username = 'alice'
    await view.updateComplete
    const dialog = dialogOf(view)
    expect(dialog.open).toBe(true)

    // Its owner closes it (starting over failed) and the user asks again at once.
    const closed = nextClose(dialog)
    view.username = undefined
    await view.updateComplete
    view.username = 'alice'
    await view.updateComplete
    await closed
    expect(dialog.open).toBe(true)
    expect(cancelled).toEqual([])

    // Cancelled by the user: said once.
    const cancelledNow = nextClose(dialog)
    ;[...dialog.querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Cancel')?.click()
    await cancelledNow
    expect(cancelled).toEqual(['start-over-cancelled'])
  })
})

describe('the key-change warning', () => {
  function safetyOf(peer: string): SafetyNumber {
    const digits = (peer === 'bob' ? '1' : '2').repeat(60)
    return {
      digits,
      groups: Array.from({ length: 12 }, (_, i) => digits.slice(i * 5, i * 5 + 5)),
      qrPayload: new Uint8Array(0),
    }
  }

  async function mount(): Promise<{ view: KeyChangeDialog; asked: string[] }> {
    const asked: string[] = []
    const view = document.createElement('sc-key-change-dialog') as KeyChangeDialog
    view.client = {
      async safetyNumber(peer: string) {
        asked.push(peer)
        return safetyOf(peer)
      },
    } as unknown as ChatClient
    document.body.append(view)
    mounted.push(view)
    await view.updateComplete
    return { view, asked }
  }

  const shownDigits = (view: KeyChangeDialog) =>
    view.shadowRoot?.querySelector('sc-safety-number')?.shadowRoot?.textContent?.replace(/\s+/g, '') ?? ''

  it("closed by Not now and opened for another contact before the close event: stays open, and says nothing of the other's", async () => {
    const { view } = await mount()
    const closedEvents = heard(view, 'key-change-closed')
    view.peer = 'bob'
    await view.updateComplete
    const dialog = dialogOf(view)
    expect(dialog.open).toBe(true)

    const closed = nextClose(dialog)
    ;[...dialog.querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Not now')?.click()
    view.peer = 'carol'
    await view.updateComplete
    await closed
    expect(dialog.open).toBe(true)
    // Carol's warning was not closed; the close that came before was bob's, and bob's is over.
    expect(closedEvents.filter((detail) => (detail as { peer?: string }).peer === 'carol')).toEqual([])
  })

  it('shows the new contact’s safety number when the contact changes while it is open', async () => {
    const { view, asked } = await mount()
    view.peer = 'bob'
    await view.updateComplete
    while (shownDigits(view) !== '1'.repeat(60)) await new Promise((resolve) => setTimeout(resolve, 0))
    view.peer = 'carol'
    await view.updateComplete
    while (asked.length < 2 || shownDigits(view) === '1'.repeat(60)) {
      await new Promise((resolve) => setTimeout(resolve, 0))
    }
    expect(asked).toEqual(['bob', 'carol'])
    expect(shownDigits(view)).toBe('2'.repeat(60))
    expect(dialogOf(view).open).toBe(true)
  })
})
