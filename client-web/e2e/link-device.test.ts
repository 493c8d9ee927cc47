/**
 * Linking the PWA as a device of an account, against the real server over TLS. The account's
 * other device is a ChatClient in this process: it approves the PWA with the code read from the
 * page, both show the same check, the PWA asks for the password and enters the app; Settings ›
 * Devices lists both with "This device" on the PWA's; the other device removes the PWA, which says
 * so and erases its data. Then the other way round: the PWA approves a device (a ChatClient's
 * link) from Settings › Link a device, and refuses bad codes with words that say why; a link
 * refused on the other device ends on a screen that says so; a mistyped password at link time is
 * caught at once; and a device removed while it was locked hears it when it is unlocked again.
 * History at link time (docs/protocol.md §13.10), both ways: the PWA approving a device sends it
 * its conversation, started from Settings and going on after Settings is left for a conversation
 * (the shell's banner says "History sent to …"), and Settings, opened again, says how many messages
 * went; the PWA linked by a device that sends its history shows the conversation, with a banner
 * that counted the parts, and what the phone wrote marked "from Phone".
 * With the terminal client as the other device, and messages on both: link-terminal.test.ts.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { ChatClient } from '../../shared/client/chat-client.js'
import { startLink } from '../../shared/client/link.js'
import { MemoryStore } from '../../shared/client/store.js'
import { generateX25519KeyPair } from '../../shared/crypto/primitives.js'
import { encodeLinkCode } from '../../shared/provisioning.js'
import { clientOptions } from '../../test/client-helpers.js'
import {
  bubbles,
  logIn,
  openChat,
  PHONE,
  register,
  send,
  startChat,
  waitFor,
  waitForBubbles,
} from './browser.js'
import { serverWithBrowsers, strongPassword, uniqueName } from './fixtures.js'

const world = serverWithBrowsers({ desktop: {} })
const { desktop: web } = world.devices
const cores: ChatClient[] = []

afterAll(async () => {
  for (const client of cores) await client.close().catch(() => undefined)
})

/**
 * An account registered through the client core. Its login secret is derived at the production
 * cost, as the PWA derives it: the PWA logs in with the same password once linked.
 */
async function coreAccount(): Promise<{ client: ChatClient; password: string }> {
  const password = strongPassword()
  const client = await ChatClient.register(
    clientOptions(world.server, { loginSecretIterations: undefined }),
    uniqueName('acct'),
    password,
  )
  cores.push(client)
  client.connect()
  await client.waitUntilOnline()
  return { client, password }
}

async function databases(): Promise<(string | undefined)[]> {
  return web.page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name))
}

/** Switches to the dark scheme and lets the buttons' 120 ms colour transitions finish. */
async function darkScheme(): Promise<void> {
  await web.page.emulateMedia({ colorScheme: 'dark' })
  await new Promise((resolve) => setTimeout(resolve, 300))
}

/** The log-in screen's "Use an existing device", named `name`, up to the code on screen. */
async function showLinkCode(name: string): Promise<string> {
  const page = web.page
  await page.getByRole('button', { name: 'Use an existing device' }).click()
  const field = page.getByLabel('Name this device')
  expect(await field.inputValue()).toMatch(/ on /)
  await field.fill(name)
  await page.getByRole('button', { name: 'Show the link code' }).click()
  const code = page.getByTestId('link-code')
  await code.waitFor()
  await page.getByRole('img', { name: 'Link code QR code' }).waitFor()
  return ((await code.textContent()) ?? '').trim()
}

describe('the PWA as a linked device', () => {
  it('shows a code the other device approves, enters the app, lists both devices, and hears it was removed', async () => {
    const { client: phone, password } = await coreAccount()
    await phone.renameDevice('Phone')
    await web.goto('/')
    const page = web.page

    const code = await showLinkCode('Work browser')
    expect(code).toMatch(/^sc1[A-Za-z0-9_-]{66}$/)
    expect(await page.getByRole('timer').textContent()).toMatch(/Code expires in (10:00|9:[0-5]\d)/)
    await web.screenshot('desktop-link-code')
    await page.setViewportSize(PHONE)
    await web.screenshot('phone-link-code')

    // The phone reads the code from the page; both screens show the same check.
    const approval = await phone.approveLink(code)
    expect(approval.deviceName).toBe('Work browser')
    const check = page.getByTestId('link-check')
    await check.waitFor()
    expect(await check.textContent()).toBe(approval.check)
    await web.screenshot('phone-link-check')
    await darkScheme()
    await web.screenshot('phone-link-check-dark')
    await page.emulateMedia({ colorScheme: 'light' })
    await page.setViewportSize({ width: 1280, height: 800 })

    // Approved there: the PWA asks for the account's password, then opens the account.
    expect(await approval.approve()).toEqual({ deviceId: 2, omittedContacts: 0 })
    await page.getByRole('heading', { name: 'Approved' }).waitFor()
    await web.screenshot('desktop-link-password')
    await page.getByLabel(`Password of ${phone.username}`).fill(password)
    await page.getByRole('button', { name: 'Finish linking' }).click()
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
    expect(await databases()).toContain(`secure-chat:${phone.username}`)

    // Settings › Devices: both, this one marked.
    await page.getByRole('button', { name: 'Settings' }).click()
    const list = page.getByRole('list', { name: 'Devices of this account' })
    await waitFor(async () => (await list.getByRole('listitem').count()) === 2)
    const rows = list.getByRole('listitem')
    expect(await rows.nth(0).textContent()).toContain('Phone')
    expect(await rows.nth(0).textContent()).not.toContain('This device')
    expect(await rows.nth(1).textContent()).toContain('Work browser')
    expect(await rows.nth(1).textContent()).toContain('This device')
    expect(await rows.nth(1).getAttribute('data-device')).toBe('2')
    await list.scrollIntoViewIfNeeded()
    await web.screenshot('desktop-devices')
    await darkScheme()
    await web.screenshot('desktop-devices-dark')
    await page.emulateMedia({ colorScheme: 'light' })
    // The phone sees the PWA under the name it gave itself.
    expect((await phone.devices()).map((device) => [device.id, device.name, device.current])).toEqual([
      [1, 'Phone', true],
      [2, 'Work browser', false],
    ])

    // Renaming this device: the phone reads the new name.
    await rows.nth(1).getByRole('button', { name: 'Rename' }).click()
    await page.getByLabel('Name of this device').fill('Office browser')
    await page.getByRole('button', { name: 'Save' }).click()
    await page.getByText('This device is now called “Office browser”.').waitFor()
    expect((await phone.devices())[1]?.name).toBe('Office browser')

    // The phone removes the PWA: the PWA says so at once, and erases its data when asked.
    await phone.removeDevice(2)
    await page.getByRole('heading', { name: 'This device was removed' }).waitFor()
    await web.screenshot('desktop-device-removed')
    // Chromium logs the refused requests of the ended session (401) as console errors.
    web.errors.length = 0
    await page.getByRole('button', { name: "Erase this device's data" }).click()
    await page.getByText(`This device's copy of ${phone.username} was erased from this browser.`).waitFor()
    expect(await databases()).not.toContain(`secure-chat:${phone.username}`)
    expect(web.errors).toEqual([])
  })

  it('approves a device from Settings › Link a device, and says why a code is refused', async () => {
    const page = web.page
    await web.goto('/')
    const username = uniqueName('web')
    const password = strongPassword()
    await register(web, username, password)
    await page.getByRole('button', { name: 'Settings' }).click()
    const field = page.getByLabel('Link code')
    const submit = page.getByRole('button', { name: 'Continue' })

    // Not a code at all; a code of no channel.
    await field.fill('hello')
    await submit.click()
    await page.getByText('That is not a link code.', { exact: false }).waitFor()
    const ephemeral = await generateX25519KeyPair()
    await field.fill(
      encodeLinkCode({ channelId: new Uint8Array(randomBytes(16)), ephemeralPublicKey: ephemeral.publicKey }),
    )
    await submit.click()
    await page.getByText('No link has this code.', { exact: false }).waitFor()
    web.errors.length = 0

    // A new device (the client core) shows a code; the PWA approves it.
    // The PWA made the account: its login secret is derived at the production cost, and so is
    // the laptop's (completeLink logs in with the password at once).
    const laptopOptions = clientOptions(world.server, {
      store: new MemoryStore(),
      loginSecretIterations: undefined,
    })
    const pending = await startLink(laptopOptions.http, { name: 'Laptop terminal' })
    const laptopCheck = pending.waitForCheck()
    // Pasted as it might be, with a line break in the middle.
    await field.fill(`${pending.code.slice(0, 30)}\n${pending.code.slice(30)}`)
    await submit.click()
    const dialog = page.getByRole('dialog', { name: 'Link “Laptop terminal”?' })
    await dialog.waitFor()
    expect(await dialog.getByTestId('approve-check').textContent()).toBe(await laptopCheck)
    await web.screenshot('desktop-link-approve')
    await darkScheme()
    await web.screenshot('desktop-link-approve-dark')
    await page.emulateMedia({ colorScheme: 'light' })
    await dialog.getByRole('button', { name: 'Approve' }).click()
    await page.getByText('“Laptop terminal” is linked as device 2.', { exact: false }).waitFor()
    expect(await pending.waitForProvisioning()).toMatchObject({ username, deviceId: 2 })
    const laptop = await ChatClient.completeLink(laptopOptions, pending, password)
    cores.push(laptop)

    // The list reads again until the new device has joined.
    const list = page.getByRole('list', { name: 'Devices of this account' })
    await waitFor(async () => (await list.getByRole('listitem').count()) === 2)
    expect(await list.getByRole('listitem').nth(1).textContent()).toContain('Laptop terminal')
    await list.scrollIntoViewIfNeeded()
    await web.screenshot('desktop-devices-after-approve')
    await page.setViewportSize(PHONE)
    await list.scrollIntoViewIfNeeded()
    await web.screenshot('phone-devices')
    await page.setViewportSize({ width: 1280, height: 800 })

    // Removing it asks first.
    await list.getByRole('button', { name: 'Remove Laptop terminal' }).click()
    const confirm = page.getByRole('dialog', { name: 'Remove Laptop terminal?' })
    await confirm.waitFor()
    await web.screenshot('desktop-remove-device')
    await confirm.getByRole('button', { name: 'Remove device' }).click()
    await waitFor(async () => (await list.getByRole('listitem').count()) === 1)
    expect(await laptop.devices().catch((error: { serverCode?: string }) => error.serverCode)).toBe(
      'E2E_ERR_DEVICE_REMOVED',
    )
    expect(web.errors).toEqual([])
  })

  it('ends with a clear screen when the other device refuses, and starts again', async () => {
    const { client: phone } = await coreAccount()
    const page = web.page
    // Log out of the previous test's account, to the log-in screen.
    await page.goto(new URL('/#/settings', page.url()).href)
    await page.getByRole('button', { name: 'Log out' }).click()
    await page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    await web.screenshot('desktop-login-with-link')

    const code = await showLinkCode('Refused browser')
    const approval = await phone.approveLink(code)
    await page.getByTestId('link-check').waitFor()
    await approval.refuse()
    await page.getByText('Linking was refused').waitFor()
    await web.screenshot('desktop-link-refused')
    web.errors.length = 0
    await page.getByRole('button', { name: 'Start again' }).click()
    await page.getByTestId('link-code').waitFor()
    expect(((await page.getByTestId('link-code').textContent()) ?? '').trim()).not.toBe(code)
    await page.getByRole('button', { name: 'Cancel' }).click()
    await page.getByText('Linking was cancelled').waitFor()
    await page.getByRole('button', { name: 'Back to log in' }).click()
    await page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    // The read under way was given up with the wait (its fetch aborted, not left to hear the
    // closed channel's 410): nothing failed on the page.
    expect(web.errors).toEqual([])
  })

  it('catches a mistyped password at once: removes itself, erases what it stored, says so', async () => {
    const { client: phone } = await coreAccount()
    const page = web.page
    await web.goto('/')
    const code = await showLinkCode('Typo browser')
    const approval = await phone.approveLink(code)
    await page.getByTestId('link-check').waitFor()
    await approval.approve()
    await page.getByLabel(`Password of ${phone.username}`).fill('not the account password at all')
    await page.getByRole('button', { name: 'Finish linking' }).click()
    await page.getByText(`That is not ${phone.username}'s password`, { exact: false }).waitFor()
    await web.screenshot('desktop-link-wrong-password')
    expect(await databases()).not.toContain(`secure-chat:${phone.username}`)
    // The device the link added is gone from the account again.
    expect((await phone.devices()).map((device) => device.id)).toEqual([1])
    // Chromium logs the refused log-in (401) as a console error; that one is expected.
    expect(web.errors.filter((error) => !error.includes('status of 401'))).toEqual([])
    web.errors.length = 0
  })

  it('a device removed while it was locked hears it at its next log-in, and may keep its data', async () => {
    const { client: phone, password } = await coreAccount()
    const page = web.page
    await web.goto('/')
    const approval = await phone.approveLink(await showLinkCode('Locked browser'))
    await page.getByTestId('link-check').waitFor()
    await approval.approve()
    await page.getByLabel(`Password of ${phone.username}`).fill(password)
    await page.getByRole('button', { name: 'Finish linking' }).click()
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()

    // Locked (a reload), then removed on the phone, then unlocked again here.
    await page.reload()
    await page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    await phone.removeDevice(2)
    await logIn(web, phone.username, password)
    await page.getByRole('heading', { name: 'This device was removed' }).waitFor()
    web.errors.length = 0
    await page.getByRole('button', { name: 'Back to the log-in screen' }).click()
    await page.getByText(`This device was removed from ${phone.username}`, { exact: false }).waitFor()
    // Kept, as asked: still there to erase later (Log out › Also erase, or linking anew).
    expect(await databases()).toContain(`secure-chat:${phone.username}`)
    expect(web.errors).toEqual([])
  })

  it('a device removed after it logged out is told so when it logs in, and erases its data', async () => {
    const { client: phone, password } = await coreAccount()
    const page = web.page
    await web.goto('/')
    const approval = await phone.approveLink(await showLinkCode('Logged-out browser'))
    await page.getByTestId('link-check').waitFor()
    await approval.approve()
    await page.getByLabel(`Password of ${phone.username}`).fill(password)
    await page.getByRole('button', { name: 'Finish linking' }).click()
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()

    // Logged out (its session ended on the server), then removed: the log-in itself is refused.
    await page.getByRole('button', { name: 'Settings' }).click()
    await page.getByRole('button', { name: 'Log out' }).click()
    await page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    await phone.removeDevice(2)
    await logIn(web, phone.username, password)
    await page.getByRole('heading', { name: 'This device was removed' }).waitFor()
    // Chromium logs the refused log-in (401) as a console error; that one is expected.
    expect(web.errors.filter((error) => !error.includes('status of 401'))).toEqual([])
    web.errors.length = 0
    await page.getByRole('button', { name: "Erase this device's data" }).click()
    await page.getByText(`This device's copy of ${phone.username} was erased from this browser.`).waitFor()
    expect(await databases()).not.toContain(`secure-chat:${phone.username}`)
    expect(web.errors).toEqual([])
  })
})

/** Each message's direction and text, as a conversation shows them. */
async function shown(client: ChatClient, peer: string): Promise<{ direction: 'in' | 'out'; text: string }[]> {
  return (await client.history(peer, { limit: 100 })).map(({ direction, text }) => ({ direction, text }))
}

/**
 * A state of the shell's history sending (its HistorySender), set for a screenshot only, as pose
 * does: the shell's banner and Settings' status both show it.
 */
async function poseHistorySend(value: Record<string, unknown>): Promise<void> {
  await web.page.evaluate((value) => {
    const shell = document.querySelector('sc-app') as unknown as {
      historySender?: { set(next: unknown): void }
    } | null
    if (!shell?.historySender) throw new Error('expected sc-app with a history sender')
    shell.historySender.set(value)
  }, value)
}

/**
 * Progress states that go by too fast to photograph with a short history (the server takes a
 * part in milliseconds) are set on the element, after the real run, only for the screenshot.
 */
async function pose(selector: string[], field: string, value: unknown): Promise<void> {
  await web.page.evaluate(
    ({ selector, field, value }) => {
      let node: Element | null | undefined = document.querySelector(selector[0]!)
      for (const next of selector.slice(1)) node = node?.shadowRoot?.querySelector(next)
      if (!node) throw new Error(`expected ${selector.join(' › ')}`)
      const revived =
        field === 'incoming'
          ? new Map(
              (value as [string, { parts: number; received: number[]; messages: number }][]).map(
                ([id, incoming]) => [id, { ...incoming, received: new Set(incoming.received) }],
              ),
            )
          : value
      ;(node as unknown as Record<string, unknown>)[field] = revived
    },
    { selector, field, value },
  )
}

describe('history at link time', () => {
  it('the PWA approving a device sends it the conversations stored here, also once Settings is left, and says how many', async () => {
    const page = web.page
    await web.goto('/')
    const username = uniqueName('hist')
    const password = strongPassword()
    await register(web, username, password)
    const { client: bob } = await coreAccount()
    await startChat(web, bob.username)
    await send(web, 'Hello Bob, from the browser')
    await bob.send(username, 'Hi! Got it on my side')
    await waitForBubbles(web, 2)
    await send(web, 'Good, see you Saturday')
    await waitForBubbles(web, 3)
    const here = await bubbles(web)

    await page.goto(new URL('/#/settings', page.url()).href)
    // At the production cost of the login secret, as the PWA that made the account derives it.
    const laptopOptions = clientOptions(world.server, {
      store: new MemoryStore(),
      loginSecretIterations: undefined,
    })
    const pending = await startLink(laptopOptions.http, { name: 'Laptop' })
    const laptopCheck = pending.waitForCheck()
    await page.getByLabel('Link code').fill(pending.code)
    await page.getByRole('button', { name: 'Continue' }).click()
    const dialog = page.getByRole('dialog', { name: 'Link “Laptop”?' })
    await dialog.waitFor()
    expect(await dialog.getByTestId('approve-check').textContent()).toBe(await laptopCheck)
    expect(await dialog.getByLabel('Send the conversations on this device to it').isChecked()).toBe(true)
    await web.screenshot('desktop-link-approve-history')
    await dialog.getByRole('button', { name: 'Approve' }).click()
    const status = page.getByTestId('history-send')
    await page.getByText('Waiting for the new device to finish linking…').waitFor()
    await status.scrollIntoViewIfNeeded()
    await web.screenshot('desktop-history-waiting')

    // Off to the conversation before the laptop has finished linking: the whole transfer happens
    // with Settings gone, and the shell's banner follows it.
    await openChat(web, bob.username)
    const banner = page.getByTestId('history-send-banner')
    await banner.getByText('Sending history to “Laptop”', { exact: false }).waitFor()
    expect(await page.locator('sc-link-approve').count()).toBe(0)

    // The laptop finishes linking (its password typed there); the PWA sees it and sends.
    expect(await pending.waitForProvisioning()).toMatchObject({ username, deviceId: 2 })
    const laptop = await ChatClient.completeLink(laptopOptions, pending, password)
    cores.push(laptop)
    laptop.connect()
    await banner.getByText('History sent to “Laptop”').waitFor({ timeout: 60_000 })
    await web.screenshot('desktop-history-sent-banner')

    // Settings, opened again, shows the same transfer: how many messages went.
    await page.getByRole('button', { name: 'Settings' }).click()
    await page.getByText('Sent 3 messages to “Laptop”.').waitFor()
    expect(await status.textContent()).not.toContain('left out')
    await status.scrollIntoViewIfNeeded()
    await web.screenshot('desktop-history-sent')
    await waitFor(async () => (await shown(laptop, bob.username)).length === 3, 100)
    expect(await shown(laptop, bob.username)).toEqual(here)
    expect((await laptop.conversations()).map((contact) => [contact.username, contact.unread])).toEqual([
      [bob.username, 0],
    ])
    // Dismissed in the banner: gone there and from Settings.
    await banner.getByRole('button', { name: 'Dismiss' }).click()
    await banner.waitFor({ state: 'detached' })
    await status.waitFor({ state: 'detached' })

    // The parts' progress and a history too large for one transfer, as they look.
    const laptopDevice = { deviceId: 2, deviceName: 'Laptop' }
    await poseHistorySend({ ...laptopDevice, kind: 'sending', sent: 3, parts: 12 })
    await page.getByText('Sending history: 3 of 12 parts').waitFor()
    await status.evaluate((element) => element.scrollIntoView({ block: 'center' }))
    await web.screenshot('desktop-history-sending')
    await page.setViewportSize(PHONE)
    await status.scrollIntoViewIfNeeded()
    await web.screenshot('phone-history-sending')
    // On a phone the conversation is the only pane: the banner sits over it.
    await page.goto(new URL(`/#/chat/${bob.username}`, page.url()).href)
    await banner.getByText('Sending history to “Laptop”: 3 of 12').waitFor()
    await web.screenshot('phone-history-sending-banner')
    await page.goto(new URL('/#/settings', page.url()).href)
    await page.setViewportSize({ width: 1280, height: 800 })
    await poseHistorySend({ ...laptopDevice, kind: 'sent', messages: 20_412, leftOut: 388 })
    await page.getByText('388 older ones were left out', { exact: false }).waitFor()
    await darkScheme()
    await web.screenshot('desktop-history-left-out-dark')
    await page.emulateMedia({ colorScheme: 'light' })
    expect(web.errors).toEqual([])
  })

  it('the PWA linked by a device that sends its history shows the conversation, and said it was coming', async () => {
    const { client: phone, password } = await coreAccount()
    await phone.renameDevice('Phone')
    const { client: carol } = await coreAccount()
    await phone.send(carol.username, 'Carol, are you coming tonight?')
    await carol.send(phone.username, 'Yes, at eight')
    await waitFor(async () => (await shown(phone, carol.username)).length === 2, 100)
    await phone.flush(20_000)
    const there = await shown(phone, carol.username)

    const page = web.page
    await page.goto(new URL('/#/settings', page.url()).href)
    const logOut = page.getByRole('button', { name: 'Log out' })
    await logOut.click()
    await page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    // Chromium logs the ended session's refused requests (401) as console errors.
    web.errors.length = 0
    await web.goto('/')
    const approval = await phone.approveLink(await showLinkCode('History browser'))
    await page.getByTestId('link-check').waitFor()
    const { deviceId } = await approval.approve()
    await page.getByLabel(`Password of ${phone.username}`).fill(password)
    await page.getByRole('button', { name: 'Finish linking' }).click()
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()

    expect(await phone.waitForDevice(deviceId, { timeoutMs: 60_000, intervalMs: 100 })).toBe(true)
    const sent = await phone.sendHistory()
    expect(sent).toEqual({ parts: 1, messages: 2, leftOut: 0 })
    const banner = page.getByTestId('history-banner')
    await page.getByText('History received: 2 messages').waitFor()
    await web.screenshot('desktop-history-received')
    await openChat(web, carol.username)
    expect(await waitForBubbles(web, 2)).toEqual(there)
    // What the phone wrote says so; carol's message has no mark.
    const mark = page.locator('sc-message-list .message.out .meta .from')
    await mark.getByText('from Phone').waitFor()
    expect(await page.locator('sc-message-list .meta .from').count()).toBe(1)
    // Read there, history here: nothing unread.
    expect(await page.title()).toBe('secure-chat')
    // The banner fades after a few seconds.
    await banner.waitFor({ state: 'detached', timeout: 15_000 })

    // A transfer in several parts, as it looks halfway.
    await page.goto(new URL('/#/', page.url()).href)
    await pose(['sc-app'], 'incoming', [['posed', { parts: 12, received: [1, 2, 3], messages: 0 }]])
    await page.getByText('Receiving history from your other device: 3 of 12').waitFor()
    await web.screenshot('desktop-history-receiving')
    await page.setViewportSize(PHONE)
    await web.screenshot('phone-history-receiving')
    await darkScheme()
    await web.screenshot('phone-history-receiving-dark')
    await page.emulateMedia({ colorScheme: 'light' })
    await page.setViewportSize({ width: 1280, height: 800 })
    expect(web.errors).toEqual([])
  })
})
