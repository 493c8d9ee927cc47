/**
 * The browser's HTTP client (fetchHttpClient over a WHATWG fetch): a request the server never
 * answers must end in a network error rather than wait forever, since the core awaits some requests
 * while handling frames (an identity check after `identity.changed`), and everything behind it would
 * wait too. The terminal's HTTPS client has had the same bound (client-terminal/transport.ts).
 */
import { describe, expect, it } from 'vitest'
import { fetchHttpClient, REQUEST_TIMEOUT_MS } from '../transport.js'

type Init = { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal }

/** A fetch whose server never answers: it settles only when the request is aborted. */
function unansweredFetch(seen: Init[]) {
  return (_input: string, init: Init) =>
    new Promise<never>((_resolve, reject) => {
      seen.push(init)
      init.signal?.addEventListener('abort', () => reject(init.signal?.reason))
    })
}

describe('fetchHttpClient', () => {
  it('gives up on a request that is never answered, with a network error', async () => {
    const seen: Init[] = []
    const http = fetchHttpClient('https://chat.example', unansweredFetch(seen), { timeoutMs: 20 })
    await expect(http.request('GET', '/keys/bob')).rejects.toMatchObject({ code: 'E2E_ERR_NETWORK' })
    expect(seen).toHaveLength(1)
    expect(seen[0]?.signal?.aborted).toBe(true)
  })

  it('gives a request up when its caller does: Cancelled, and the fetch itself aborted', async () => {
    const seen: Init[] = []
    const http = fetchHttpClient('https://chat.example', unansweredFetch(seen))
    const giveUp = new AbortController()
    const request = http.request('GET', '/provisioning/x/new', { signal: giveUp.signal })
    giveUp.abort()
    await expect(request).rejects.toMatchObject({ code: 'E2E_ERR_CANCELLED' })
    expect(seen[0]?.signal?.aborted).toBe(true)
  })

  it('bounds every request by default, and answers as before when the server replies', async () => {
    expect(REQUEST_TIMEOUT_MS).toBeGreaterThan(0)
    const seen: Init[] = []
    const http = fetchHttpClient('https://chat.example/', async (input, init: Init) => {
      seen.push(init)
      expect(input).toBe('https://chat.example/api/v1/keys/bob')
      return { status: 200, text: async () => '{"ok":true}' }
    })
    await expect(http.request('GET', '/keys/bob', { token: 't' })).resolves.toEqual({
      status: 200,
      body: { ok: true },
    })
    expect(seen[0]?.signal).toBeInstanceOf(AbortSignal)
    expect(seen[0]?.signal?.aborted).toBe(false)
    expect(seen[0]?.headers.authorization).toBe('Bearer t')
  })
})
