/**
 * The PWA linked as the second device of an account made in the terminal client, against the real
 * server over TLS: Playwright drives the browser and the real CLI runs beside it as separate
 * processes (`client-terminal/bin.mjs`, what `secure-chat` runs). Alice registers in the
 * terminal and Bob (another CLI) becomes her contact; the PWA shows a link code, Alice's terminal
 * approves it with `approve-link <code> --yes` and prints the check the page shows; the PWA asks
 * for her password and opens the account. Bob's message then reaches both of Alice's devices (read
 * in the terminal, it is read in the PWA too); what the PWA sends reaches Bob from device 2 and is
 * in the terminal's history as Alice's own; and `remove-device 2` in the terminal puts the PWA on
 * its removed-device screen.
 */
import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TEST_KDF_ITERATIONS_ENV } from '../../client-terminal/accounts.js'
import {
  type CliResult,
  type RunningCli,
  type RunOptions,
  TestAccount,
  TestWorkspace,
} from '../../client-terminal/test/e2e-helpers.js'
import { bubbles, contactButton, openChat, send, waitFor } from './browser.js'
import { serverWithBrowsers } from './fixtures.js'

const world = serverWithBrowsers({ desktop: {} })
const { desktop: web } = world.devices
let workspace: TestWorkspace

beforeAll(() => {
  workspace = new TestWorkspace(world.server.origin, world.server.ca)
})

afterAll(() => {
  workspace?.dispose()
})

/**
 * A terminal account whose keys are derived at the production cost. The PWA always derives the
 * login secret that way, and it logs in with the password of an account it is linked to: the
 * terminal's test-only cheap derivation (which e2e-helpers sets for every run) would give the
 * terminal a login secret the PWA never computes.
 */
class ProductionKdfAccount extends TestAccount {
  override run(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
    return super.run(args, this.productionKdf(options))
  }

  override start(args: readonly string[], options: RunOptions = {}): RunningCli {
    return super.start(args, this.productionKdf(options))
  }

  private productionKdf(options: RunOptions): RunOptions {
    // Empty means unset to the CLI (accounts.ts kdfOverride): the core's default applies.
    return { ...options, env: { [TEST_KDF_ITERATIONS_ENV]: '', ...options.env } }
  }
}

function jsonLines<T>(stdout: string): T[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as T)
}

/**
 * Starts keeping, in the page, every check the link screen (sc-link-view) shows. `approve-link
 * --yes` approves as soon as it has printed the check, so the page may have moved on to the
 * password step before the test could look: a MutationObserver on the screen's shadow root sees
 * each render (Lit commits one in a microtask, and the next step waits for the network).
 */
async function recordLinkChecks(page: Page): Promise<void> {
  await page.evaluate(() => {
    const find = (root: Document | ShadowRoot): Element | undefined => {
      for (const element of root.querySelectorAll('*')) {
        if (element.localName === 'sc-link-view') return element
        const inner = element.shadowRoot ? find(element.shadowRoot) : undefined
        if (inner) return inner
      }
      return undefined
    }
    const view = find(document)?.shadowRoot
    if (!view) throw new Error('expected the link screen (sc-link-view) on the page, got none')
    const seen: string[] = []
    ;(window as { __linkChecks?: string[] }).__linkChecks = seen
    const look = () => {
      const check = view.querySelector('[data-testid="link-check"]')?.textContent ?? undefined
      if (check !== undefined && seen.at(-1) !== check) seen.push(check)
    }
    new MutationObserver(look).observe(view, { subtree: true, childList: true, characterData: true })
    look()
  })
}

function recordedLinkChecks(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as { __linkChecks?: string[] }).__linkChecks ?? [])
}

interface HistoryLine {
  readonly direction: 'in' | 'out'
  readonly text: string
  readonly device: number
}

interface DeviceLine {
  readonly id: number
  readonly name: string | null
  readonly current: boolean
}

describe('the PWA linked to an account of the terminal client', () => {
  it('is approved by `approve-link`, gets a contact’s message too, sends as device 2, and is removed by `remove-device`', async () => {
    const base = workspace.account('alice')
    const alice = new ProductionKdfAccount(workspace, base.username, base.password, base.dataDir)
    const bob = workspace.account('bob')
    await alice.register()
    await bob.register()
    await alice.send(bob, 'Hello Bob, from my terminal')
    expect((await bob.read()).map(({ from, text }) => ({ from, text }))).toEqual([
      { from: alice.username, text: 'Hello Bob, from my terminal' },
    ])

    // The PWA shows a code; the terminal approves it and prints the check the page shows.
    const page = web.page
    await web.goto('/')
    await page.getByRole('button', { name: 'Use an existing device' }).click()
    await page.getByLabel('Name this device').fill('Browser')
    await page.getByRole('button', { name: 'Show the link code' }).click()
    await page.getByRole('img', { name: 'Link code QR code' }).waitFor()
    const code = ((await page.getByTestId('link-code').textContent()) ?? '').trim()
    expect(code).toMatch(/^sc1[A-Za-z0-9_-]+$/)
    await recordLinkChecks(page)
    const approved = await alice.run(['approve-link', code, '--yes'])
    expect(approved.stderr).toBe('')
    expect(approved.code).toBe(0)
    const [asks, checkLine, done] = approved.stdout.split('\n')
    expect(asks).toBe(`"Browser" asks to be linked to ${alice.username}`)
    const check = /^check (\d{3} \d{3}): approve only if the new device shows the same check$/.exec(
      checkLine ?? '',
    )?.[1]
    expect(check).toBeDefined()
    expect(done).toBe(`approved: the new device becomes device 2 of ${alice.username}`)
    await page.getByRole('heading', { name: 'Approved' }).waitFor()
    expect(await recordedLinkChecks(page)).toEqual([check])
    await page.getByLabel(`Password of ${alice.username}`).fill(alice.password)
    await page.getByRole('button', { name: 'Finish linking' }).click()
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()

    // Bob writes to Alice: his client learns of device 2 from the server's mismatch answer and
    // sends there too. Read in the terminal first, it is read in the PWA as well.
    await bob.send(alice, 'Hi Alice, on both of your devices')
    let read: { from: string; text: string; device: number }[] = []
    await waitFor(async () => {
      read = [...read, ...(await alice.read()).map(({ from, text, device }) => ({ from, text, device }))]
      return read.length > 0
    }, 200)
    expect(read).toEqual([{ from: bob.username, text: 'Hi Alice, on both of your devices', device: 1 }])
    const bobInList = contactButton(web, bob.username)
    await waitFor(
      async () =>
        (await bobInList.count()) === 1 &&
        (await bobInList.textContent())?.includes('Hi Alice, on both of your devices') === true &&
        (await bobInList.textContent())?.includes('unread') === false,
    )
    await openChat(web, bob.username)
    await waitFor(async () =>
      (await bubbles(web)).some((bubble) => bubble.text === 'Hi Alice, on both of your devices'),
    )

    // The PWA answers: Bob gets it from Alice's device 2, and the terminal has it as Alice's own.
    await send(web, 'Hello Bob, from the browser 🌐')
    let toBob: { from: string; text: string; device: number }[] = []
    await waitFor(async () => {
      toBob = [...toBob, ...(await bob.read()).map(({ from, text, device }) => ({ from, text, device }))]
      return toBob.length > 0
    }, 200)
    expect(toBob).toEqual([{ from: alice.username, text: 'Hello Bob, from the browser 🌐', device: 2 }])
    expect(await bubbles(web)).toEqual([
      { direction: 'in', text: 'Hi Alice, on both of your devices' },
      { direction: 'out', text: 'Hello Bob, from the browser 🌐' },
    ])
    await web.screenshot('desktop-linked-to-terminal-chat')
    // `history` reads this device's store: the terminal connects once (to read) first, and a
    // copy of what the account sent from another device is nothing unread.
    expect(await alice.read()).toEqual([])
    const history = jsonLines<HistoryLine>((await alice.ok(['history', bob.username, '--json'])).stdout)
    expect(history.map(({ direction, text, device }) => ({ direction, text, device }))).toEqual([
      { direction: 'out', text: 'Hello Bob, from my terminal', device: 1 },
      { direction: 'in', text: 'Hi Alice, on both of your devices', device: 1 },
      { direction: 'out', text: 'Hello Bob, from the browser 🌐', device: 2 },
    ])

    // Two devices, the PWA under the name it gave itself; removed in the terminal, it says so.
    const devices = jsonLines<DeviceLine>((await alice.ok(['devices', '--json'])).stdout)
    expect(devices.map(({ id, name, current }) => ({ id, name, current }))).toEqual([
      { id: 1, name: null, current: true },
      { id: 2, name: 'Browser', current: false },
    ])
    await alice.ok(['remove-device', '2'])
    await page.getByRole('heading', { name: 'This device was removed' }).waitFor()
    await web.screenshot('desktop-removed-by-terminal')
    // Chromium logs the refused requests of the ended session (401) as console errors.
    expect(web.errors.filter((error) => !error.includes('status of 401'))).toEqual([])
  })
})
