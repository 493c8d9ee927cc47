/**
 * The new device's link screens (sc-link-view), in Chromium, over a fake link in place of the
 * server: the code as a QR code and as text with the time left, the check once the other device
 * answered, the password once approved (given to `complete` with the account's name); the code's
 * expiry on this device's clock cancels the link; a refusal on the other device, and cancelling
 * here, end on screens that say so and start again with a fresh code.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { ClientError, ClientErrorCode } from '../../../shared/client/errors.js'
import type { OpenAccount } from '../session.js'
import type { LinkInProgress, LinkSteps, LinkView } from './link-view.js'
import { browserDeviceName } from './link-view.js'
import './link-view.js'

const mounted: HTMLElement[] = []

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
})

/** A link whose waits the test settles: `answer(check)`, `approve(username)`, `fail(error)`. */
function fakeLink(code: string, expiresAt: number) {
  let checkSettle!: { resolve: (check: string) => void; reject: (error: unknown) => void }
  let provisionSettle!: {
    resolve: (value: { username: string; deviceId: number }) => void
    reject: (error: unknown) => void
  }
  const checked = new Promise<string>((resolve, reject) => {
    checkSettle = { resolve, reject }
  })
  const provisioned = new Promise<{ username: string; deviceId: number }>((resolve, reject) => {
    provisionSettle = { resolve, reject }
  })
  checked.catch(() => {})
  provisioned.catch(() => {})
  const link = {
    code,
    expiresAt,
    cancelled: 0,
    waitForCheck: () => checked,
    waitForProvisioning: () => provisioned,
    async cancel() {
      link.cancelled++
    },
    answer: (check: string) => checkSettle.resolve(check),
    approve: (username: string) => provisionSettle.resolve({ username, deviceId: 2 }),
    fail: (error: unknown) => {
      checkSettle.reject(error)
      provisionSettle.reject(error)
    },
  }
  return link
}

type FakeLink = ReturnType<typeof fakeLink>

async function mount(clock = { now: 1_000_000 }) {
  const links: FakeLink[] = []
  const names: string[] = []
  const completed: { username: string; password: string }[] = []
  const steps: LinkSteps = {
    async start(name) {
      names.push(name)
      const link = fakeLink(`sc1code${links.length}`, clock.now + 10 * 60 * 1000)
      links.push(link)
      return link
    },
    async complete(_link: LinkInProgress, username, password) {
      completed.push({ username, password })
      return { client: {} } as unknown as OpenAccount
    },
  }
  const view = document.createElement('sc-link-view') as LinkView
  view.steps = steps
  view.now = () => clock.now
  document.body.append(view)
  mounted.push(view)
  await view.updateComplete
  return { view, links, names, completed, clock }
}

const root = (view: LinkView) => view.shadowRoot as ShadowRoot
const text = (view: LinkView) => root(view).textContent?.replace(/\s+/g, ' ') ?? ''

function button(view: LinkView, name: string): HTMLButtonElement {
  const found = [...root(view).querySelectorAll('button')].find((b) => b.textContent?.trim() === name)
  if (!found) throw new Error(`expected a button "${name}", got ${text(view)}`)
  return found
}

async function until(check: () => boolean, what: string, view: LinkView): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`expected ${what}, got: ${text(view)}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe('linking this browser', () => {
  it('names the device after the browser, shows the code, the check, then asks for the password', async () => {
    const { view, links, names, completed } = await mount()
    const field = root(view).querySelector<HTMLInputElement>('#device-name')!
    expect(field.value).toBe(browserDeviceName())
    field.value = 'Kitchen tablet'
    field.dispatchEvent(new Event('input'))
    button(view, 'Show the link code').click()
    await until(() => links.length === 1 && text(view).includes('sc1code0'), 'the code', view)
    expect(names).toEqual(['Kitchen tablet'])
    expect(root(view).querySelector('sc-qr-code')).not.toBeNull()
    expect(text(view)).toContain('Code expires in 10:00')
    // The pressed button is gone: the focus is on the new screen's heading.
    expect(root(view).activeElement?.textContent).toBe('Scan this code with your other device')

    const signedIn: unknown[] = []
    view.addEventListener('signed-in', (event) => signedIn.push((event as CustomEvent).detail))
    links[0]!.answer('123 456')
    await until(() => text(view).includes('123 456'), 'the check', view)
    expect(text(view)).toContain('Check that your other device shows')

    links[0]!.approve('alice')
    await until(() => root(view).querySelector('#link-password') !== null, 'the password field', view)
    const password = root(view).querySelector<HTMLInputElement>('#link-password')!
    expect(root(view).activeElement).toBe(password)
    password.value = 'the account password'
    password.dispatchEvent(new Event('input'))
    await view.updateComplete
    button(view, 'Finish linking').click()
    await until(() => signedIn.length === 1, 'signed in', view)
    expect(completed).toEqual([{ username: 'alice', password: 'the account password' }])
    // A finished link is not cancelled when the view goes away.
    view.remove()
    expect(links[0]!.cancelled).toBe(0)
  })

  it('counts down on this clock and, at zero, cancels the link and says the code expired', async () => {
    const { view, links, clock } = await mount()
    button(view, 'Show the link code').click()
    await until(() => links.length === 1 && text(view).includes('sc1code0'), 'the code', view)
    clock.now += 9 * 60 * 1000 + 30_000
    await until(() => text(view).includes('Code expires in 0:30'), 'half a minute left', view)
    clock.now += 31_000
    await until(() => text(view).includes('The code expired'), 'the expiry', view)
    expect(links[0]!.cancelled).toBe(1)
    button(view, 'Start again').click()
    await until(() => text(view).includes('sc1code1'), 'a fresh code', view)
  })

  it('says so when the other device refuses, and when the user cancels', async () => {
    const { view, links } = await mount()
    button(view, 'Show the link code').click()
    await until(() => links.length === 1, 'a link', view)
    links[0]!.fail(
      new ClientError(ClientErrorCode.Server, 'read: link refused', {
        serverCode: 'E2E_ERR_LINK_REFUSED',
        status: 410,
      }),
    )
    await until(() => text(view).includes('Linking was refused'), 'the refusal', view)
    expect(text(view)).toContain('Nothing was linked')

    // Closed, but not by the other device (given up in another tab): not called a refusal.
    button(view, 'Start again').click()
    await until(() => links.length === 2, 'a second link', view)
    links[1]!.fail(
      new ClientError(ClientErrorCode.Server, 'read: link code used', {
        serverCode: 'E2E_ERR_LINK_USED',
        status: 410,
      }),
    )
    await until(() => text(view).includes('This code was closed'), 'the closed code', view)
    expect(text(view)).not.toContain('refused')

    button(view, 'Start again').click()
    await until(() => text(view).includes('sc1code2'), 'a fresh code', view)
    button(view, 'Cancel').click()
    await until(() => text(view).includes('Linking was cancelled'), 'the cancellation', view)
    expect(links[2]!.cancelled).toBe(1)
    const closed: unknown[] = []
    view.addEventListener('link-closed', () => closed.push(true))
    button(view, 'Back to log in').click()
    expect(closed).toHaveLength(1)
  })

  it('names browsers from their user agent', () => {
    expect(
      browserDeviceName(
        'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
      ),
    ).toBe('Chrome on Linux')
    expect(
      browserDeviceName('Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0'),
    ).toBe('Firefox on Windows')
    expect(
      browserDeviceName(
        'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
      ),
    ).toBe('Safari on iOS')
  })
})
