/**
 * The first minute with the app: how quickly it opens on loopback (measured and printed, never
 * bounded: a shared machine's timing says nothing about the code), the password policy answering
 * as the user types, and the sign-in form driven from the keyboard alone.
 *
 * The tests run in order on one browser profile: opened fresh, registered on, then reopened.
 */
import { describe, expect, it } from 'vitest'
import { focusedControl, passwordField, register, waitFor } from './browser.js'
import { serverWithBrowsers, strongPassword, uniqueName } from './fixtures.js'

const world = serverWithBrowsers({ visitor: {} })
const { visitor } = world.devices
const page = () => visitor.page
const username = uniqueName('kim')
const password = strongPassword()

interface LoadTimes {
  /** Milliseconds from the start of navigation (Navigation Timing Level 2). */
  responseEnd: number
  domContentLoaded: number
  loadEventEnd: number
  firstContentfulPaint: number
  /** The first animation frame in which the form's submit button is laid out and visible. */
  formVisible: number
  /** Bytes over the wire (compressed) for the page and everything it loaded, and decoded. */
  transferred: number
  decoded: number
}

/**
 * Marks, from the page's own clock, the first frame in which a sign-in form's submit button is
 * visible (found through the shadow roots). An init script, so it runs before the app's code.
 */
function watchForTheForm(): void {
  const marked = window as { __formVisibleAt?: number }
  const find = (root: Document | ShadowRoot): Element | undefined => {
    const button = root.querySelector('form button[type="submit"]')
    if (button) return button
    for (const host of root.querySelectorAll('*')) {
      const found = host.shadowRoot ? find(host.shadowRoot) : undefined
      if (found) return found
    }
    return undefined
  }
  const check = () => {
    const button = find(document)
    if (button?.checkVisibility() && button.getBoundingClientRect().height > 0) {
      marked.__formVisibleAt = performance.now()
      return
    }
    requestAnimationFrame(check)
  }
  requestAnimationFrame(check)
}

async function loadTimes(): Promise<LoadTimes> {
  await waitFor(() =>
    page().evaluate(() => {
      const navigation = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming
      return (
        (window as { __formVisibleAt?: number }).__formVisibleAt !== undefined && navigation.loadEventEnd > 0
      )
    }),
  )
  return page().evaluate(() => {
    const navigation = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming
    const resources = performance.getEntriesByType('resource') as PerformanceResourceTiming[]
    const entries = [navigation, ...resources]
    return {
      responseEnd: navigation.responseEnd,
      domContentLoaded: navigation.domContentLoadedEventEnd,
      loadEventEnd: navigation.loadEventEnd,
      firstContentfulPaint: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1,
      formVisible: (window as { __formVisibleAt?: number }).__formVisibleAt ?? -1,
      transferred: entries.reduce((sum, entry) => sum + entry.transferSize, 0),
      decoded: entries.reduce((sum, entry) => sum + entry.decodedBodySize, 0),
    }
  })
}

function report(label: string, times: LoadTimes): void {
  const ms = (value: number) => `${value.toFixed(0)} ms`
  console.log(
    `${label}: response ${ms(times.responseEnd)}, DOMContentLoaded ${ms(times.domContentLoaded)}, ` +
      `first contentful paint ${ms(times.firstContentfulPaint)}, form visible ${ms(times.formVisible)}, ` +
      `load event end ${ms(times.loadEventEnd)}; ${(times.transferred / 1000).toFixed(1)} kB transferred ` +
      `(${(times.decoded / 1000).toFixed(1)} kB decoded)`,
  )
}

describe('signing in', () => {
  it('measures the first load on loopback, cold and then from the service worker’s cache', async () => {
    await visitor.context.addInitScript(watchForTheForm)
    await visitor.goto('/')
    const cold = await loadTimes()
    report('first load, fresh profile', cold)
    // Everything the first load needs comes compressed, and the form shows once the app is up.
    expect(cold.transferred).toBeGreaterThan(0)
    expect(cold.transferred).toBeLessThan(cold.decoded / 2)
    expect(cold.formVisible).toBeGreaterThan(cold.responseEnd)

    await page().evaluate(async () => {
      await navigator.serviceWorker.ready
    })
    await page().reload()
    const warm = await loadTimes()
    report('second load, service worker in control', warm)
    expect(await page().evaluate(() => navigator.serviceWorker.controller !== null)).toBe(true)
    expect(warm.formVisible).toBeGreaterThan(0)
  })

  it('explains the password policy as the user types', async () => {
    await page().getByRole('button', { name: 'Register', exact: true }).waitFor()
    const field = passwordField(page())
    const policy = page().locator('#password-policy')
    // Read out by screen readers with the field, and again as it changes.
    expect(await field.getAttribute('aria-describedby')).toBe('password-policy')
    expect(await policy.getAttribute('aria-live')).toBe('polite')
    await page().getByLabel('Username').fill(username)
    const policyText = async () => ((await policy.textContent()) ?? '').replace(/\s+/g, ' ').trim()

    /** Types `text` one key at a time, returning the policy's text after each key. */
    async function typeAndRead(text: string): Promise<string[]> {
      const seen: string[] = []
      for (const key of text) {
        const before = await field.inputValue()
        await page().keyboard.type(key)
        const length = [...before].length + 1
        await waitFor(async () => {
          const shown = await policy.textContent()
          return shown?.includes(length >= 12 ? '(done)' : `(${length} of 12)`) ?? false
        })
        seen.push(await policyText())
      }
      return seen
    }

    await field.focus()
    const typing = await typeAndRead('password12')
    expect(typing[0]).toContain('At least 12 characters (1 of 12)')
    expect(typing[6]).toContain('(7 of 12)')
    // Until the word is complete nothing is wrong with it; from then on, it is flagged.
    for (const shown of typing.slice(0, 7)) {
      expect(shown).toContain('Common and easily guessed passwords are refused by the server.')
    }
    for (const shown of typing.slice(7)) {
      expect(shown).toContain('Easy to guess: it contains “password”, one of the most common passwords.')
    }
    const full = await typeAndRead('34')
    expect(full.at(-1)).toContain('At least 12 characters (done)')
    expect(full.at(-1)).toContain('Easy to guess')

    // The username in the password is flagged too; a strong password clears every warning.
    await field.fill('')
    await typeAndRead(`my-${username}`)
    expect(await policyText()).toContain('Easy to guess: it contains your username.')
    await field.fill('')
    const strong = await typeAndRead(password)
    expect(strong.at(-1)).toContain('At least 12 characters (done)')
    expect(strong.at(-1)).toContain('Common and easily guessed passwords are refused by the server.')
    expect(strong.at(-1)).not.toContain('Easy to guess')
  })

  it('moves through the log-in form with Tab in reading order, and logs in with Enter', async () => {
    await register(visitor, username, password)
    await page().reload()
    await page().getByRole('button', { name: 'Log in', exact: true }).waitFor()
    // The only account here is filled in: the password is what is left to type.
    expect(await page().getByLabel('Username').inputValue()).toBe(username)
    await waitFor(async () => (await focusedControl(page())) === 'textbox Password')

    const order: string[] = [await focusedControl(page())]
    for (let i = 0; i < 4; i++) {
      await page().keyboard.press('Tab')
      order.push(await focusedControl(page()))
    }
    expect(order).toEqual([
      'textbox Password',
      'button Show',
      'button Log in',
      'button Use an existing device',
      'button Create an account',
    ])
    const back: string[] = []
    for (let i = 0; i < 6; i++) {
      await page().keyboard.press('Shift+Tab')
      back.push(await focusedControl(page()))
    }
    expect(back).toEqual([
      'button Use an existing device',
      'button Log in',
      'button Show',
      'textbox Password',
      'textbox Username',
      `button ${username}`,
    ])

    // Back to the password field from the username, type it, and Enter submits the form.
    await page().keyboard.press('Tab')
    await page().keyboard.press('Tab')
    expect(await focusedControl(page())).toBe('textbox Password')
    await page().keyboard.type(password)
    await page().keyboard.press('Enter')
    await page().getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
    expect(visitor.errors).toEqual([])
  })
})
