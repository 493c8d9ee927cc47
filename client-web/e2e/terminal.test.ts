/**
 * The PWA with the other clients: a user of the terminal client (its non-interactive commands,
 * run as separate processes, as a script would) chatting with a browser user and comparing safety
 * numbers; and a long conversation, sent through the client core, paging in from IndexedDB as the
 * browser user scrolls back to its first message.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { registerClient } from '../../test/client-helpers.js'
import {
  contactButton,
  openChat,
  register,
  safetyNumberGroups,
  send,
  waitFor,
  waitForBubbles,
} from './browser.js'
import { serverWithBrowsers, strongPassword, uniqueName } from './fixtures.js'

const TERMINAL_CLIENT = fileURLToPath(new URL('../../client-terminal/bin.mjs', import.meta.url))

const world = serverWithBrowsers({ web: {} })
const { web: browser } = world.devices
let workDir: string
const webUser = uniqueName('web')
const webPassword = strongPassword()

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'secure-chat-terminal-'))
  await writeFile(join(workDir, 'ca.pem'), world.server.ca)
  await browser.goto('/')
  await register(browser, webUser, webPassword)
})

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true })
})

interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs one command of the terminal client (`secure-chat <args>`) against the test server. */
function terminal(password: string, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [
        TERMINAL_CLIENT,
        ...args,
        '--server',
        world.server.origin,
        '--ca',
        join(workDir, 'ca.pem'),
        '--data-dir',
        join(workDir, 'data'),
      ],
      {
        env: {
          ...process.env,
          SECURE_CHAT_PASSWORD: password,
          // The terminal client's own test-only switch for fast key derivation.
          SECURE_CHAT_TEST_KDF_ITERATIONS: '1000',
        },
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0
        resolve({ code, stdout, stderr })
      },
    )
  })
}

describe('with the terminal client', () => {
  it('a terminal user and a browser user chat both ways and see the same safety number', async () => {
    const termUser = uniqueName('term')
    const termPassword = strongPassword()
    const registered = await terminal(termPassword, 'register', termUser)
    expect(registered.code, registered.stderr).toBe(0)

    const sent = await terminal(termPassword, 'send', webUser, 'Hello from the terminal 🖥️')
    expect(sent.code, sent.stderr).toBe(0)

    const page = browser.page
    await contactButton(browser, termUser).waitFor()
    await openChat(browser, termUser)
    expect(await waitForBubbles(browser, 1)).toEqual([{ direction: 'in', text: 'Hello from the terminal 🖥️' }])
    await send(browser, 'Hello from the browser 🌐\nin two lines')

    // The terminal client reads what arrived (each run catches up with the server, then exits).
    let received: { from: string; text: string }[] = []
    await waitFor(async () => {
      const read = await terminal(termPassword, 'read', '--from', webUser, '--json')
      expect(read.code, read.stderr).toBe(0)
      received = [
        ...received,
        ...read.stdout
          .split('\n')
          .filter((line) => line.length > 0)
          .map((line) => JSON.parse(line) as { from: string; text: string }),
      ]
      return received.length > 0
    }, 200)
    expect(received.map(({ from, text }) => ({ from, text }))).toEqual([
      { from: webUser, text: 'Hello from the browser 🌐\nin two lines' },
    ])

    // Both sides compute the same 60 digits.
    const verify = await terminal(termPassword, 'verify', webUser, '--json')
    expect(verify.code, verify.stderr).toBe(0)
    const fromTerminal = JSON.parse(verify.stdout) as { groups: string[] }
    await page.getByRole('button', { name: 'Contact details', exact: true }).click()
    expect(await safetyNumberGroups(page)).toEqual(fromTerminal.groups)
    await page.getByRole('button', { name: 'Back to conversation' }).click()
    expect(browser.errors).toEqual([])
  })
})

describe('a long conversation', () => {
  it('pages older messages in from IndexedDB while scrolling back, rendering only a window', async () => {
    const { client: peer } = await registerClient(world.server)
    peer.connect()
    await peer.waitUntilOnline()
    const total = 260
    for (let i = 1; i <= total; i++) await peer.send(webUser, `Long conversation, message ${i}`)

    await browser.goto('/#/')
    const contact = contactButton(browser, peer.username)
    await waitFor(async () =>
      (await contact.count()) > 0
        ? (await contact.textContent())?.includes(`${total} unread`) === true
        : false,
    )
    await openChat(browser, peer.username)
    const newest = await waitForBubbles(browser, 1)
    expect(newest.at(-1)?.text).toBe(`Long conversation, message ${total}`)

    // Scroll to the top until the first message shows; each time near the top loads a page.
    const list = browser.page.locator('sc-message-list')
    const first = browser.page.locator('sc-message-list .message .text', {
      hasText: /^Long conversation, message 1$/,
    })
    await waitFor(async () => {
      await list.evaluate((element) => {
        const viewport = element.shadowRoot?.querySelector('.viewport')
        if (viewport) viewport.scrollTop = 0
      })
      return (await first.count()) === 1
    }, 100)
    const rendered = await list.evaluate(
      (element) => element.shadowRoot?.querySelectorAll('.message').length ?? 0,
    )
    expect(rendered).toBeLessThan(100)
    await peer.close()
    expect(browser.errors).toEqual([])
  })
})
