/**
 * Deleting an account in the PWA, through the real server: Bob opens Settings › Delete account,
 * the button stays disabled until he types his name, a wrong password is refused with nothing
 * changed, the right one deletes the account there and its database in the browser. Alice, who was
 * talking to him, sees the conversation marked ("deleted their account"), keeps its history, and
 * cannot write to it.
 */
import { describe, expect, it } from 'vitest'
import { fromBase64Url } from '../../shared/bytes.js'
import { contactButton, logIn, openChat, register, send, startChat, waitForBubbles } from './browser.js'
import { serverWithBrowsers, strongPassword, uniqueName } from './fixtures.js'

const world = serverWithBrowsers({ alice: {}, bob: {} })
const { alice, bob } = world.devices
const aliceName = uniqueName('alice')
const bobName = uniqueName('bob')
const alicePassword = strongPassword()
const bobPassword = strongPassword()

describe('deleting an account', () => {
  it('needs the typed name and the password; deletes it there and here; the contact sees it marked', async () => {
    await Promise.all([alice.goto('/'), bob.goto('/')])
    await Promise.all([register(alice, aliceName, alicePassword), register(bob, bobName, bobPassword)])
    await startChat(alice, bobName)
    await send(alice, 'Hello Bob')
    await contactButton(bob, aliceName).waitFor()
    await openChat(bob, aliceName)
    await waitForBubbles(bob, 1)
    await send(bob, 'Hi Alice')
    await waitForBubbles(alice, 2)

    const page = bob.page
    await page.getByRole('button', { name: 'Settings' }).click()
    await page.getByRole('button', { name: 'Delete account…' }).click()
    const confirm = page.getByRole('button', { name: 'Delete account for good' })
    expect(await confirm.isDisabled()).toBe(true)
    await page.getByLabel(`Type ${bobName} to confirm`).fill(aliceName)
    await page.locator('#delete-password').fill(bobPassword)
    expect(await confirm.isDisabled()).toBe(true)
    await page.getByLabel(`Type ${bobName} to confirm`).fill(bobName.toUpperCase())
    await page.locator('#delete-password').fill('not bobs password at all')
    expect(await confirm.isDisabled()).toBe(false)
    await bob.screenshot('desktop-delete-account')

    // A wrong password: the server's words, and the account still here and there.
    await confirm.click()
    const alert = page.locator('sc-settings').getByRole('alert')
    await alert.waitFor()
    expect(await alert.textContent()).toContain('got a combination that does not match')
    // Chromium logs the refused request (401) as a console error; that one is expected.
    bob.errors.length = 0
    expect(await page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name))).toContain(
      `secure-chat:${bobName}`,
    )

    await page.locator('#delete-password').fill(bobPassword)
    await confirm.click()
    await page.getByText(`${bobName} was deleted, on the server and in this browser.`).waitFor()
    expect(await page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name))).not.toContain(
      `secure-chat:${bobName}`,
    )
    // Nothing left to log in to, here or on the server.
    await page.getByRole('button', { name: 'Use an existing account' }).click()
    await logIn(bob, bobName, bobPassword)
    await page.getByText('This browser holds no account named').waitFor()

    // Alice was watching Bob: the conversation is marked at once, its history stays, and the
    // composer is closed.
    const banner = alice.page.getByTestId('account-deleted')
    await banner.waitFor()
    expect(await banner.textContent()).toContain(`${bobName} deleted their account.`)
    expect(await contactButton(alice, bobName).textContent()).toContain('Account deleted')
    expect((await waitForBubbles(alice, 2)).map((bubble) => bubble.text)).toEqual(['Hello Bob', 'Hi Alice'])
    expect(await alice.page.getByLabel('Message', { exact: true }).isDisabled()).toBe(true)
    await alice.screenshot('desktop-account-deleted-contact')
    // Chromium logs the 410 of the identity check that told her; no other error.
    expect(alice.errors.filter((error) => !error.includes('status of 410 (Gone)'))).toEqual([])
    expect(bob.errors).toEqual([])
  })

  it('the answer to a deletion is lost: the page says the account is gone, and erasing again takes this browser’s copy', async () => {
    const carolName = uniqueName('carol')
    const carolPassword = strongPassword()
    const page = bob.page
    await page.getByRole('button', { name: 'Create an account' }).click()
    await register(bob, carolName, carolPassword)

    // The request reaches the server and is carried out; its answer is lost on the way back.
    let lost = 0
    await page.route('**/api/v1/account/delete', async (route) => {
      // Sent on from here (Playwright's own fetch would not trust the test certificate).
      const request = route.request()
      const token = fromBase64Url((request.headers().authorization ?? '').replace(/^Bearer /, ''))
      const response = await world.server.request('/api/v1/account/delete', {
        token,
        body: request.postDataJSON(),
      })
      expect(response.status).toBe(204)
      lost += 1
      await route.abort('connectionreset')
    })
    await page.getByRole('button', { name: 'Settings' }).click()
    await page.getByRole('button', { name: 'Delete account…' }).click()
    await page.getByLabel(`Type ${carolName} to confirm`).fill(carolName)
    await page.locator('#delete-password').fill(carolPassword)
    await page.getByRole('button', { name: 'Delete account for good' }).click()
    await page.locator('sc-settings').getByRole('alert').waitFor()
    expect(lost).toBe(1)
    await page.unroute('**/api/v1/account/delete')
    // Nothing erased yet: the page could not know. Reconnecting, it is told.
    expect(await page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name))).toContain(
      `secure-chat:${carolName}`,
    )
    await page.evaluate(() => {
      location.hash = '#/'
    })
    const banner = page.getByTestId('own-account-deleted')
    await banner.waitFor()
    expect(await banner.textContent()).toContain(
      'This account was deleted, in this browser or on another device.',
    )
    await bob.screenshot('desktop-own-account-deleted')

    await page.getByRole('button', { name: 'Erase them from this browser' }).click()
    await page.getByRole('button', { name: 'Delete account…' }).click()
    await page.getByLabel(`Type ${carolName} to confirm`).fill(carolName)
    await page.locator('#delete-password').fill(carolPassword)
    await page.getByRole('button', { name: 'Delete account for good' }).click()
    await page.getByText(`${carolName} was deleted, on the server and in this browser.`).waitFor()
    expect(await page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name))).not.toContain(
      `secure-chat:${carolName}`,
    )
    // Chromium logs the aborted request and the refused session; nothing else.
    expect(bob.errors.filter((error) => !/ERR_CONNECTION_RESET|net::ERR_FAILED|401/.test(error))).toEqual([])
  })
})
