/**
 * Screenshots of the main screens at phone and desktop sizes, written to
 * test-artifacts/screenshots/ (git-ignored) for people to look at. A small believable world is set
 * up first: two people in browsers, two more through the client core.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { ChatClient } from '../../shared/client/chat-client.js'
import { clientOptions } from '../../test/client-helpers.js'
import {
  contactButton,
  DESKTOP,
  type Device,
  logIn,
  openChat,
  PHONE,
  passwordField,
  register,
  send,
  startChat,
  waitFor,
  waitForBubbles,
  waitForOutgoingState,
} from './browser.js'
import { serverWithBrowsers, strongPassword, swapIdentity } from './fixtures.js'

const world = serverWithBrowsers({
  desktop: { viewport: DESKTOP },
  phone: { viewport: PHONE, deviceScaleFactor: 2 },
})
const { desktop, phone } = world.devices
const cores: ChatClient[] = []
const password = strongPassword()

async function coreUser(name: string): Promise<ChatClient> {
  const client = await ChatClient.register(clientOptions(world.server), name, strongPassword())
  cores.push(client)
  client.connect()
  await client.waitUntilOnline()
  return client
}

// The cores log out while the server is still up: `afterAll` hooks run last registered first.
afterAll(async () => {
  for (const client of cores) await client.close().catch(() => undefined)
})

describe('screenshots', () => {
  it('of every main screen, on a phone and on a desktop', async () => {
    // Sign-up, with the password policy filling in as the user types.
    await Promise.all([desktop.goto('/'), phone.goto('/')])
    for (const device of [desktop, phone]) {
      await device.page.getByLabel('Username').fill('maya')
      await passwordField(device.page).fill('correct horse')
      await device.screenshot(`${device.name}-register`)
    }
    // The server refuses a guessable password and says why.
    await passwordField(phone.page).fill('password1234')
    await phone.page.getByRole('button', { name: 'Register', exact: true }).click()
    await phone.page.getByText('Choose a stronger password').waitFor()
    await phone.screenshot('phone-register-weak-password')
    // Chromium logs the refused request (400) as a console error; that one is expected.
    phone.errors.length = 0

    await Promise.all([register(desktop, 'maya', password), register(phone, 'jonas', password)])

    // Two more people, through the client core: Priya writes to Maya, Leo is online.
    const priya = await coreUser('priya')
    const leo = await coreUser('leo')
    await leo.addContact('maya')
    await leo.send('jonas', 'Are we still on for Saturday?')

    await startChat(phone, 'maya')
    await send(phone, 'Hey Maya! Did you get the photos from the trip?')
    await contactButton(desktop, 'jonas').waitFor()
    await openChat(desktop, 'jonas')
    const conversation: [Device, string][] = [
      [desktop, 'I did, they are wonderful 😍'],
      [desktop, 'The one at the lighthouse is my favourite.\nCan you send the full-size version?'],
      [phone, 'Sure, sending it tonight.'],
      [phone, 'Also: dinner on Friday? I found a new place near the harbour.'],
      [desktop, 'Yes! 7 pm works for me.'],
    ]
    let count = 1
    for (const [device, text] of conversation) {
      await send(device, text)
      count++
      await waitForBubbles(desktop === device ? phone : desktop, count)
    }
    await waitForOutgoingState(desktop, 'delivered')
    await priya.send('maya', 'Hi Maya, the slides for Monday are ready.')
    await priya.send('maya', 'Let me know what you think!')
    await contactButton(desktop, 'priya').waitFor()
    await waitFor(async () => (await desktop.page.title()) === '(2) secure-chat')
    await desktop.page.getByLabel('Message', { exact: true }).fill('See you then')
    await desktop.screenshot('desktop-conversation')

    // The phone's contact list, then its conversation.
    await phone.page.getByRole('button', { name: 'Back to chats' }).click()
    await contactButton(phone, 'leo').waitFor()
    await phone.screenshot('phone-contacts')
    await openChat(phone, 'maya')
    await phone.screenshot('phone-conversation')

    // Safety numbers.
    await phone.page.getByRole('button', { name: 'Contact details', exact: true }).click()
    await phone.page.getByRole('img', { name: 'Safety number QR code' }).waitFor()
    await phone.screenshot('phone-contact-details')
    await desktop.page.getByRole('button', { name: 'Contact details', exact: true }).click()
    await desktop.page.getByRole('img', { name: 'Safety number QR code' }).waitFor()
    await desktop.page.getByRole('button', { name: 'Mark verified' }).click()
    await desktop.page.getByRole('button', { name: 'Clear verification' }).waitFor()
    await desktop.screenshot('desktop-contact-details')

    // Settings.
    for (const device of [desktop, phone]) {
      await device.goto('/#/settings')
      await device.page.getByRole('button', { name: 'Log out' }).waitFor()
      await device.screenshot(`${device.name}-settings`)
    }

    // A contact's key changes: the blocking warning.
    const sam = await coreUser('sam')
    const impostor = await coreUser('mallory')
    await desktop.goto('/#/')
    await startChat(desktop, 'sam')
    await swapIdentity(world.server, sam.username, impostor.username)
    await desktop.page.getByLabel('Message', { exact: true }).fill('Hi Sam!')
    await desktop.page.getByLabel('Message', { exact: true }).press('Enter')
    await desktop.page.getByRole('dialog').waitFor()
    await desktop.screenshot('desktop-key-change')
    await desktop.page.getByRole('button', { name: 'Not now' }).click()

    // Logging in again after a reload.
    await phone.page.reload()
    await phone.page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    await passwordField(phone.page).fill(password)
    await phone.screenshot('phone-login')
    await desktop.page.reload()
    await desktop.page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
    await desktop.screenshot('desktop-login')
    await logIn(desktop, 'maya', password)
    await desktop.page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
    await desktop.screenshot('desktop-contacts')

    // The dark scheme follows the system's.
    await openChat(desktop, 'jonas')
    await desktop.page.emulateMedia({ colorScheme: 'dark' })
    await desktop.screenshot('desktop-conversation-dark')
    await phone.page.emulateMedia({ colorScheme: 'dark' })
    await phone.screenshot('phone-login-dark')

    // Starting over as an account this browser does not hold: the warning comes first.
    await phone.page.getByLabel('Username').fill('priya')
    await phone.page.getByRole('button', { name: 'Start over on this device' }).click()
    const startOver = phone.page.getByRole('dialog', { name: 'Start over as priya on this device?' })
    await startOver.waitFor()
    await phone.screenshot('phone-start-over-dark')
    await startOver.getByRole('button', { name: 'Cancel' }).click()
    await startOver.waitFor({ state: 'hidden' })

    expect(desktop.errors).toEqual([])
    expect(phone.errors).toEqual([])
  })
})
