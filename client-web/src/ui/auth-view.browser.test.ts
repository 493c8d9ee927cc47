/**
 * The sign-in screen's first moments, in Chromium: no form is shown until the accounts this
 * browser holds are known (indexedDB.databases(), held here by the test), so the first guess
 * ("log in") cannot flip to "create your account" under the user's pointer; then the right form
 * appears, with the field left to type focused.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { AuthView } from './auth-view.js'
import './auth-view.js'

const mounted: HTMLElement[] = []
const realDatabases = indexedDB.databases.bind(indexedDB)

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
  indexedDB.databases = realDatabases
})

/** indexedDB.databases() answers `names` only when the test says so. */
function holdDatabases(names: string[]): () => void {
  let release!: () => void
  const answered = new Promise<IDBDatabaseInfo[]>((resolve) => {
    release = () => resolve(names.map((name) => ({ name, version: 1 })))
  })
  indexedDB.databases = () => answered
  return release
}

async function mount(): Promise<AuthView> {
  const view = document.createElement('sc-auth') as AuthView
  document.body.append(view)
  mounted.push(view)
  await view.updateComplete
  return view
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`expected ${what}, got it not`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const heading = (view: AuthView) => view.shadowRoot?.querySelector('h1')?.textContent?.trim()
const buttons = (view: AuthView) =>
  [...(view.shadowRoot?.querySelectorAll('button') ?? [])].map((button) => button.textContent?.trim())

describe('the sign-in screen', () => {
  it('shows no form until it knows the browser holds no account, then the registration form', async () => {
    const release = holdDatabases([])
    const view = await mount()
    expect(view.shadowRoot?.querySelector('form')).toBeNull()
    expect(buttons(view)).toEqual([])
    release()
    await until(() => heading(view) === 'Create your account', 'the registration form')
    expect(buttons(view)).toContain('Register')
    expect(buttons(view)).not.toContain('Create an account')
    await until(() => view.shadowRoot?.activeElement?.id === 'username', 'the username focused')
  })

  it('with one account here: the log-in form with its name filled and the password focused', async () => {
    const release = holdDatabases(['secure-chat:ann', 'something-else'])
    const view = await mount()
    expect(view.shadowRoot?.querySelector('form')).toBeNull()
    release()
    await until(() => heading(view) === 'Welcome back', 'the log-in form')
    expect(view.shadowRoot?.querySelector<HTMLInputElement>('#username')?.value).toBe('ann')
    await until(() => view.shadowRoot?.activeElement?.id === 'password', 'the password focused')
  })
})
