/**
 * What a contact's record keeps to ask for again, by the device that sent it (docs/protocol.md
 * §8.6): pure logic over records, including those written before devices, whose `retryPending`
 * held device 1's ids.
 */
import { describe, expect, it } from 'vitest'
import { MAX_RETRY_IDS } from '../content.js'
import type { ContactRecord } from '../records.js'
import { pendingRetries, withPendingRetries, withRetryPending } from '../retries.js'

const bob: ContactRecord = { username: 'bob', verified: false, unread: 0 }

describe('pending retry requests by device', () => {
  it('reads a record from before devices as device 1, and writes only the new field', () => {
    const legacy: ContactRecord = { ...bob, retryPending: ['a', 'b'] }
    expect(pendingRetries(legacy)).toEqual([{ device: 1, ids: ['a', 'b'] }])
    const added = withRetryPending(legacy, 2, 'c')
    expect(added.retryPending).toBeUndefined()
    expect(added.retryPendingFrom).toEqual([
      { device: 1, ids: ['a', 'b'] },
      { device: 2, ids: ['c'] },
    ])
    expect(withRetryPending(legacy, 1, 'c').retryPendingFrom).toEqual([{ device: 1, ids: ['a', 'b', 'c'] }])
  })

  it('keeps each device to MAX_RETRY_IDS, newest kept, an id once', () => {
    let contact = bob
    for (let i = 0; i < MAX_RETRY_IDS + 5; i++) contact = withRetryPending(contact, 3, `id${i}`)
    contact = withRetryPending(contact, 3, `id${MAX_RETRY_IDS + 4}`)
    const [only] = pendingRetries(contact)
    expect(only?.device).toBe(3)
    expect(only?.ids).toHaveLength(MAX_RETRY_IDS)
    expect(only?.ids[0]).toBe('id5')
    expect(only?.ids.at(-1)).toBe(`id${MAX_RETRY_IDS + 4}`)
  })

  it('drops what was asked for, and the field with the last of it', () => {
    const contact = withRetryPending(withRetryPending(bob, 1, 'a'), 2, 'b')
    const pending = pendingRetries(contact)
    const left = withPendingRetries(contact, pending.slice(1))
    expect(pendingRetries(left)).toEqual([{ device: 2, ids: ['b'] }])
    const none = withPendingRetries(left, [])
    expect(none).toEqual(bob)
    expect('retryPendingFrom' in none).toBe(false)
  })
})
