/**
 * The app shell in Chromium, signed in over a stand-in for the client core (the conversation fake
 * plus what Settings and linking call): a history transfer started from Settings › Link a device
 * belongs to the shell, not to the screen. Its progress shows in a banner on every screen (here
 * a conversation, after leaving Settings while the parts are still going), Settings shows the same
 * transfer when it is open again, and the banner ends with "History sent to …", dismissed by hand.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { cdp, commands, page } from 'vitest/browser'
import type {
  ChatClient,
  ContactView,
  DeviceView,
  LinkApproval,
  MessageView,
} from '../../../shared/client/chat-client.js'
import type { OpenAccount } from '../session.js'
import type { AppShell } from './app-shell.js'
import { FakeConversationClient } from './fake-conversation-client.js'
import '../styles/global.css'
import './app-shell.js'

/** The sizes e2e/browser.ts screenshots the app at: one pane at a time on the phone. */
const SIZES = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 800 } } as const
/** Relative to the repository (where vitest's file commands start), as e2e/browser.ts writes them. */
const SCREENSHOT_DIR = 'test-artifacts/screenshots'

const mounted: HTMLElement[] = []
/** What the test was waiting for, and what the page said meanwhile, for a test that times out. */
let waitingFor: { what: string; seen: string } | undefined

afterEach((context) => {
  if (context.task.result?.state === 'fail' && waitingFor) {
    console.error(`was waiting for ${waitingFor.what}; the page said: ${waitingFor.seen}`)
  }
  waitingFor = undefined
  for (const element of mounted.splice(0)) element.remove()
  location.hash = ''
})

/** Every element under `root`, through open shadow roots. */
function* deep(root: ParentNode): Generator<Element> {
  if (root instanceof Element && root.shadowRoot) yield* deep(root.shadowRoot)
  for (const element of root.querySelectorAll('*')) {
    yield element
    if (element.shadowRoot) yield* deep(element.shadowRoot)
  }
}

function find(root: ParentNode, selector: string): HTMLElement | undefined {
  for (const element of deep(root)) if (element.matches(selector)) return element as HTMLElement
  return undefined
}

/** The visible text under `root`, through shadow roots, with whitespace folded. */
function deepText(root: ParentNode): string {
  const parts: string[] = []
  const walk = (node: Node) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) parts.push(child.textContent ?? '')
      else walk(child)
    }
    if (node instanceof Element && node.shadowRoot) walk(node.shadowRoot)
  }
  walk(root)
  return parts.join(' ').replace(/\s+/g, ' ')
}

/** Polls until `check` holds; the test's own timeout is the only bound. */
async function until(check: () => boolean, what: string, root: ParentNode): Promise<void> {
  while (!check()) {
    waitingFor = { what, seen: deepText(root) }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  waitingFor = undefined
}

function button(root: ParentNode, name: string): HTMLButtonElement {
  for (const element of deep(root)) {
    if (
      element instanceof HTMLButtonElement &&
      (element.textContent?.trim() === name || element.getAttribute('aria-label') === name)
    ) {
      return element
    }
  }
  throw new Error(`expected a button "${name}", got ${deepText(root)}`)
}

const NOW = Date.UTC(2026, 11, 4, 15, 0)

const bob: ContactView = {
  username: 'bob',
  verified: false,
  identityChanged: false,
  unread: 0,
  lastMessageAt: NOW,
  online: false,
  blocked: false,
  accountDeleted: false,
}

/**
 * The shell's client: a conversation with bob, this account's devices, and a link whose new device
 * finishes linking and takes the history's parts when the test says so.
 */
class FakeShellClient {
  /** The conversations, as sc-conversation reads them. */
  readonly chat = new FakeConversationClient()
  readonly username = this.chat.username
  readonly events = this.chat.events
  readonly connection = 'online'
  readonly loggedIn = true
  registered: (found: boolean) => void = () => {}
  progress: (sent: number, parts: number) => void = () => {}
  done: (result: { parts: number; messages: number; leftOut: number }) => void = () => {}
  historyAsked = false

  get asClient(): ChatClient {
    return this as unknown as ChatClient
  }
  history(peer: string, options?: { limit?: number; beforeOrder?: number }): Promise<MessageView[]> {
    return this.chat.history(peer, options)
  }
  markRead(peer: string, upToOrder?: number): Promise<void> {
    return this.chat.markRead(peer, upToOrder)
  }
  connect(): void {}
  async conversations(): Promise<ContactView[]> {
    return [bob]
  }
  async devices(): Promise<DeviceView[]> {
    return [{ id: 1, name: 'Phone', createdAt: NOW, lastSeenAt: NOW, current: true }]
  }
  async changePassword(): Promise<void> {}
  async approveLink(): Promise<LinkApproval> {
    return {
      check: '042 917',
      deviceName: 'Tablet',
      approve: async () => ({ deviceId: 2, omittedContacts: 0 }),
      refuse: async () => {},
    }
  }
  waitForDevice(): Promise<boolean> {
    return new Promise((resolve) => {
      this.registered = resolve
    })
  }
  sendHistory(options?: {
    onProgress?: (sent: number, parts: number) => void
  }): Promise<{ parts: number; messages: number; leftOut: number }> {
    this.historyAsked = true
    this.progress = (sent, parts) => options?.onProgress?.(sent, parts)
    return new Promise((resolve) => {
      this.done = resolve
    })
  }
}

async function signedInShell(client: FakeShellClient): Promise<AppShell> {
  location.hash = '#/'
  const shell = document.createElement('sc-app')
  document.body.append(shell)
  mounted.push(shell)
  await shell.updateComplete
  const auth = shell.shadowRoot?.querySelector('sc-auth')
  if (!auth) throw new Error('expected the log-in screen first')
  const account = { client: client.asClient, offline: false, close: async () => {} }
  auth.dispatchEvent(
    new CustomEvent('signed-in', {
      detail: account as unknown as OpenAccount,
      bubbles: true,
      composed: true,
    }),
  )
  await until(() => find(shell, 'sc-contact-list') !== undefined, 'the chats', shell)
  return shell
}

async function frames(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => requestAnimationFrame(resolve))
}

/** The test's frame as a PNG at twice the CSS pixel density (as notice-look.browser.test.ts). */
async function screenshot(name: string): Promise<void> {
  await frames(2)
  const frame = window.frameElement!.getBoundingClientRect()
  const shownAt = frame.width / window.innerWidth
  const shot = (await cdp().send('Page.captureScreenshot', {
    format: 'png',
    clip: { x: frame.x, y: frame.y, width: frame.width, height: frame.height, scale: 2 / shownAt },
  })) as { data: string }
  await commands.writeFile(`${SCREENSHOT_DIR}/${name}.png`, shot.data, { encoding: 'base64' })
}

/** The banner is drawn inside the window, and the pane under it still fits (its header on screen). */
function onScreen(element: HTMLElement): boolean {
  const box = element.getBoundingClientRect()
  return element.checkVisibility() && box.top >= 0 && box.bottom <= window.innerHeight && box.height > 0
}

function go(hash: string): void {
  location.hash = hash
  window.dispatchEvent(new HashChangeEvent('hashchange'))
}

describe.each(['phone', 'desktop'] as const)('history sent to a device just linked, on a %s', (size) => {
  it('goes on after Settings is left, with its progress in a banner on every screen, until sent', async () => {
    await page.viewport(SIZES[size].width, SIZES[size].height)
    const client = new FakeShellClient()
    const shell = await signedInShell(client)
    const banner = () => find(shell, '[data-testid="history-send-banner"]')
    const approve = () => find(shell, 'sc-link-approve')

    go('#/settings')
    await until(() => approve() !== undefined, 'Settings', shell)
    const field = find(approve()!, '#link-code') as HTMLInputElement
    field.value = 'sc1code'
    field.dispatchEvent(new Event('input'))
    await until(() => !button(approve()!, 'Continue').disabled, 'the code typed', shell)
    button(approve()!, 'Continue').click()
    const dialog = () => find(approve()!, 'dialog.approval') as HTMLDialogElement
    await until(() => dialog().open, 'the approval dialog', shell)
    button(dialog(), 'Approve').click()

    // Waiting for the new device: Settings says so, and so does the shell's banner.
    await until(
      () => deepText(approve()!).includes('Waiting for the new device to finish linking…'),
      'the wait in Settings',
      shell,
    )
    await until(() => banner() !== undefined, 'the banner', shell)
    expect(onScreen(banner()!)).toBe(true)
    // On a phone Settings is the only pane: the banner sits over it, the chats are hidden.
    expect(find(shell, '.layout')?.classList.contains(size === 'phone' ? 'narrow' : 'wide')).toBe(true)
    expect(deepText(banner()!)).toContain('“Tablet”')

    client.registered(true)
    await until(() => client.historyAsked, 'the history asked for', shell)
    client.progress(3, 12)
    await until(() => deepText(banner()!).includes('3 of 12'), 'the parts in the banner', shell)
    expect(deepText(approve()!)).toContain('Sending history: 3 of 12 parts')

    // Off to a conversation while the parts go: the banner stays, on that screen too.
    go('#/chat/bob')
    await until(() => find(shell, 'sc-conversation') !== undefined, 'the conversation', shell)
    expect(approve()).toBeUndefined()
    expect(onScreen(banner()!)).toBe(true)
    const conversation = find(shell, 'sc-conversation')!
    expect(conversation.getBoundingClientRect().bottom).toBeLessThanOrEqual(window.innerHeight + 0.5)
    client.progress(8, 12)
    await until(() => deepText(banner()!).includes('8 of 12'), 'more parts in the banner', shell)
    const bar = find(banner()!, '[role="progressbar"]')
    expect(bar?.getAttribute('aria-valuenow')).toBe('8')
    expect(bar?.getAttribute('aria-valuemax')).toBe('12')
    await screenshot(`history-sending-banner-${size}`)

    client.progress(12, 12)
    client.done({ parts: 12, messages: 4_100, leftOut: 0 })
    await until(() => deepText(banner()!).includes('History sent to “Tablet”'), 'the end', shell)
    expect(onScreen(banner()!)).toBe(true)
    await screenshot(`history-sent-banner-${size}`)

    // Settings, opened again, shows the same transfer's outcome.
    go('#/settings')
    await until(() => approve() !== undefined, 'Settings again', shell)
    await until(
      () => deepText(approve()!).includes('Sent 4,100 messages to “Tablet”.'),
      'the outcome in Settings',
      shell,
    )

    // Dismissed: gone from the banner (and from Settings, which showed the same).
    button(banner()!, 'Dismiss').click()
    await until(() => banner() === undefined, 'the banner gone', shell)
    await until(() => !deepText(approve()!).includes('Sent 4,100 messages'), 'Settings cleared', shell)
  })

  it('says so on every screen when the device never finished linking, until dismissed', async () => {
    await page.viewport(SIZES[size].width, SIZES[size].height)
    const client = new FakeShellClient()
    const shell = await signedInShell(client)
    const banner = () => find(shell, '[data-testid="history-send-banner"]')
    const approve = () => find(shell, 'sc-link-approve')
    go('#/settings')
    await until(() => approve() !== undefined, 'Settings', shell)
    const field = find(approve()!, '#link-code') as HTMLInputElement
    field.value = 'sc1code'
    field.dispatchEvent(new Event('input'))
    await until(() => !button(approve()!, 'Continue').disabled, 'the code typed', shell)
    button(approve()!, 'Continue').click()
    const dialog = () => find(approve()!, 'dialog.approval') as HTMLDialogElement
    await until(() => dialog().open, 'the approval dialog', shell)
    button(dialog(), 'Approve').click()
    await until(() => banner() !== undefined, 'the banner', shell)

    go('#/chat/bob')
    await until(() => find(shell, 'sc-conversation') !== undefined, 'the conversation', shell)
    client.registered(false)
    await until(() => banner()?.getAttribute('role') === 'alert', 'the failure', shell)
    expect(deepText(banner()!)).toContain(
      '“Tablet” did not finish linking within 10 minutes, so the conversations were not sent.',
    )
    expect(onScreen(banner()!)).toBe(true)
    expect(client.historyAsked).toBe(false)
    button(banner()!, 'Dismiss').click()
    await until(() => banner() === undefined, 'the banner gone', shell)
  })
})
