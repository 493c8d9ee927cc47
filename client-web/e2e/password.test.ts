/**
 * The password in the PWA (issue 10 item 1): every request the page makes is read as a
 * TLS-terminating proxy would read it, and the password is never in one; Settings › Password
 * changes it, re-encrypting this browser's copy, after which only the new one opens the account.
 */
import { describe, expect, it } from 'vitest'
import { logIn, register } from './browser.js'
import { serverWithBrowsers, strongPassword, uniqueName } from './fixtures.js'

const world = serverWithBrowsers({ lee: {} })
const { lee } = world.devices
const username = uniqueName('lee')
const password = strongPassword()
const next = strongPassword()

describe('the password in the PWA', () => {
  it('never leaves the browser, and Settings changes it', async () => {
    const page = lee.page
    const bodies: string[] = []
    page.on('request', (request) => {
      if (request.url().includes('/api/'))
        bodies.push(`${request.method()} ${request.url()} ${request.postData() ?? ''}`)
    })
    await lee.goto()
    await register(lee, username, password)

    await page.getByRole('button', { name: 'Settings' }).click()
    const form = page.getByRole('form', { name: 'Change password' })
    await form.getByLabel('Current password').fill(password)
    await form.getByLabel('New password', { exact: true }).fill(next)
    await form.getByLabel('Repeat the new password').fill(next)
    await form.getByRole('checkbox', { name: 'Also sign out my other sessions' }).check()
    await form.getByRole('button', { name: 'Change password' }).click()
    await page.getByText('Password changed, in this browser and on the server').waitFor()

    // Only the new password opens the account from now on.
    await page.getByRole('button', { name: 'Log out' }).click()
    await logIn(lee, username, password)
    await page.getByText(/Wrong password/).waitFor()
    await logIn(lee, username, next)
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()

    const sent = bodies.join('\n')
    expect(sent).toContain('/api/v1/register')
    expect(sent).toContain('/api/v1/account/password')
    expect(sent).toContain('loginSecret')
    expect(sent).not.toContain(password)
    expect(sent).not.toContain(next)
    expect(lee.errors).toEqual([])
  })

  it('refuses a new password that is easy to guess, saying why, and changes nothing', async () => {
    const page = lee.page
    await page.getByRole('button', { name: 'Settings' }).click()
    const form = page.getByRole('form', { name: 'Change password' })
    await form.getByLabel('Current password').fill(next)
    await form.getByLabel('New password', { exact: true }).fill('password1234')
    await form.getByLabel('Repeat the new password').fill('password1234')
    await form.getByRole('button', { name: 'Change password' }).click()
    await page.getByText(/hard to guess/).waitFor()
    await page.getByRole('button', { name: 'Log out' }).click()
    await logIn(lee, username, next)
    await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
  })
})
