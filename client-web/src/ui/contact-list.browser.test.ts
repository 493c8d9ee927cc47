/**
 * The contact list's directory search, in Chromium, over a stand-in for the client core (only
 * `searchUsers`, which the list calls): fewer than USER_SEARCH_MIN_LENGTH characters show the hint
 * and ask the server nothing (it would refuse them), a longer query asks once after the pause in
 * typing, results leave out people already in the contacts, and a query nobody matches says so.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { ChatClient } from '../../../shared/client/chat-client.js'
import type { ContactView } from '../../../shared/client/views.js'
import { USER_SEARCH_MIN_LENGTH } from '../../../shared/limits.js'
import type { ContactList } from './contact-list.js'
import './contact-list.js'

const mounted: HTMLElement[] = []

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
})

function contact(username: string): ContactView {
  return {
    username,
    verified: false,
    identityChanged: false,
    unread: 0,
    lastMessageAt: undefined,
    online: false,
    blocked: false,
    accountDeleted: false,
  }
}

/** The list over a client whose directory holds `directory`; `asked` records every search. */
async function mount(directory: string[], contacts: ContactView[] = []) {
  const asked: string[] = []
  const client = {
    searchUsers: async (query: string) => {
      asked.push(query)
      return directory.filter((username) => username.startsWith(query))
    },
  } as unknown as ChatClient
  const list = document.createElement('sc-contact-list') as ContactList
  list.client = client
  list.contacts = contacts
  document.body.append(list)
  mounted.push(list)
  await list.updateComplete
  return { list, asked }
}

async function type(list: ContactList, text: string): Promise<void> {
  const input = list.shadowRoot!.querySelector<HTMLInputElement>('input[type="search"]')!
  input.value = text
  input.dispatchEvent(new Event('input', { bubbles: true, composed: true }))
  await list.updateComplete
}

/** Waits (a bound that only turns a hang into a failure) until the results section says `wanted`. */
async function resultsSay(list: ContactList, wanted: RegExp): Promise<string> {
  const deadline = Date.now() + 5_000
  for (;;) {
    await list.updateComplete
    const text =
      list.shadowRoot!.querySelector('section[aria-label="People on this server"]')?.textContent ?? ''
    const compact = text.replace(/\s+/g, ' ').trim()
    if (wanted.test(compact)) return compact
    if (Date.now() > deadline) throw new Error(`expected the results to match ${wanted}, got "${compact}"`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('contact list search', () => {
  it(`asks nothing below ${USER_SEARCH_MIN_LENGTH} characters and says why`, async () => {
    const { list, asked } = await mount(['alice', 'alicia'])
    await type(list, 'al')
    expect(await resultsSay(list, /Type at least/)).toBe(
      `People on this server Type at least ${USER_SEARCH_MIN_LENGTH} characters of a username to find people on this server.`,
    )
    // Longer than the debounce: still nothing asked.
    await new Promise((resolve) => setTimeout(resolve, 400))
    expect(asked).toEqual([])
  })

  it('asks once for a longer query, lists the matches that are not contacts yet, and says when none match', async () => {
    const { list, asked } = await mount(['alice', 'alicia', 'bob'], [contact('alicia')])
    await type(list, 'al')
    await type(list, 'Ali')
    await resultsSay(list, /alice/)
    expect(asked).toEqual(['ali'])
    const people = [
      ...list.shadowRoot!.querySelectorAll<HTMLButtonElement>(
        'section[aria-label="People on this server"] button[data-username]',
      ),
    ]
    expect(people.map((button) => button.dataset.username)).toEqual(['alice'])
    expect(people[0]!.getAttribute('aria-label')).toBe('Start a chat with alice')

    await type(list, 'zzz')
    expect(await resultsSay(list, /No one else/)).toContain('No one else matches “zzz”.')
    expect(asked).toEqual(['ali', 'zzz'])
  })
})
