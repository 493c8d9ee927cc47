/**
 * Starting over in a new browser as an account whose keys were lost: Alice registered in one
 * browser and chatted with Bob; that browser is gone. In a fresh profile she starts over from the
 * log-in screen (a confirmation dialog first), Bob is warned and blocked until he accepts her new
 * safety number, and then his message reaches her new browser. What was sent to her old keys shows
 * as a notice that it could not be decrypted, and once Bob accepts her new number his app sends it
 * again: it takes the notice's place.
 */
import { describe, expect, it } from 'vitest'
import {
  contactButton,
  openChat,
  outgoingStates,
  passwordField,
  register,
  safetyNumberGroups,
  send,
  startChat,
  waitFor,
  waitForBubbles,
} from './browser.js'
import { serverWithBrowsers, strongPassword, uniqueName } from './fixtures.js'

const world = serverWithBrowsers({ 'alice-old': {}, bob: {}, 'alice-new': {} })
const { 'alice-old': oldDevice, bob, 'alice-new': newDevice } = world.devices
const aliceName = uniqueName('alice')
const bobName = uniqueName('bob')
const alicePassword = strongPassword()
const bobPassword = strongPassword()

describe('starting over on a new device', () => {
  it('replaces the lost keys after a warning; the contact must accept the new safety number, then reaches the new browser', async () => {
    await Promise.all([oldDevice.goto('/'), bob.goto('/')])
    await Promise.all([register(oldDevice, aliceName, alicePassword), register(bob, bobName, bobPassword)])
    await startChat(oldDevice, bobName)
    await send(oldDevice, 'Hello Bob')
    await contactButton(bob, aliceName).waitFor()
    await openChat(bob, aliceName)
    await waitForBubbles(bob, 1)
    await send(bob, 'Hi Alice')
    await waitForBubbles(oldDevice, 2)

    // Alice's browser is gone for good. Bob writes meanwhile: that message waits for her old keys.
    await oldDevice.close()
    await send(bob, 'Sent to the old keys')
    await waitFor(async () => (await outgoingStates(bob)).at(-1) === 'accepted')

    // A fresh browser: the log-in screen offers to start over for a name it does not hold.
    const page = newDevice.page
    await newDevice.goto('/')
    await page.getByRole('button', { name: 'Use an existing account' }).click()
    await page.getByLabel('Username').fill(aliceName)
    const startOver = page.getByRole('button', { name: 'Start over on this device' })
    await startOver.click()
    await page.getByText('Enter your password first').waitFor()

    // The dialog says what starting over does before anything happens.
    await passwordField(page).fill('not-alices-password-at-all')
    await startOver.click()
    const dialog = page.getByRole('dialog', { name: `Start over as ${aliceName} on this device?` })
    await dialog.waitFor()
    const warning = (await dialog.textContent())?.replace(/\s+/g, ' ')
    expect(warning).toContain('New keys will be made in this browser and replace the old ones')
    expect(warning).toContain('Your contacts will be told your safety number changed.')
    expect(warning).toContain('Messages sent to your old keys cannot be read here.')
    await newDevice.screenshot('desktop-start-over')

    // A password the server refuses: its own words, and nothing kept in the browser.
    await dialog.getByRole('button', { name: 'Start over', exact: true }).click()
    const alert = page.getByRole('alert')
    await alert.waitFor()
    expect(await alert.locator('strong').textContent()).toBe('Could not start over')
    expect(await alert.textContent()).toContain(
      'Expected a registered username and its password, got a combination that does not match',
    )
    expect(await dialog.isVisible()).toBe(false)
    expect(await page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name))).toEqual([])
    // Chromium logs the refused request (401) as a console error; that one is expected.
    newDevice.errors.length = 0

    await passwordField(page).fill(alicePassword)
    await startOver.click()
    await dialog.waitFor()
    const unreadable = page.getByText(`A message from ${bobName} could not be decrypted`).waitFor()
    await dialog.getByRole('button', { name: 'Start over', exact: true }).click()
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
    await unreadable

    // Bob is warned at once, and cannot send until he accepts the new safety number.
    const keyChange = bob.page.getByRole('dialog', { name: `${aliceName}'s safety number has changed` })
    await keyChange.waitFor()
    const composer = bob.page.getByLabel('Message', { exact: true })
    expect(await composer.isDisabled()).toBe(true)
    const shownToBob = await safetyNumberGroups(keyChange, 'New safety number')
    await keyChange.getByRole('button', { name: 'Accept the new safety number' }).click()
    await keyChange.waitFor({ state: 'hidden' })
    await waitFor(async () => !(await composer.isDisabled()))
    await send(bob, 'Welcome back, Alice')

    // The new browser gets it, and shows the same safety number Bob accepted.
    await contactButton(newDevice, bobName).waitFor()
    await openChat(newDevice, bobName)
    expect(await waitForBubbles(newDevice, 2)).toEqual([
      { direction: 'in', text: 'Sent to the old keys' },
      { direction: 'in', text: 'Welcome back, Alice' },
    ])
    await page.getByRole('button', { name: 'Contact details', exact: true }).click()
    expect(await safetyNumberGroups(page)).toEqual(shownToBob)

    expect(bob.errors).toEqual([])
    expect(newDevice.errors).toEqual([])
  })
})
