import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { toHex } from '../bytes.js'
import { MESSAGE_ID_BYTES } from '../limits.js'
import { MESSAGE_ID_TIME_BYTES, newMessageId } from '../message-id.js'

describe('message ids', () => {
  it('begin with the time of writing, big-endian, then random bytes', () => {
    const id = newMessageId(0x0123_4567_89ab)
    expect(id).toHaveLength(MESSAGE_ID_BYTES)
    expect(toHex(id.subarray(0, MESSAGE_ID_TIME_BYTES))).toBe('0123456789ab')
    const again = newMessageId(0x0123_4567_89ab)
    expect(toHex(again.subarray(0, MESSAGE_ID_TIME_BYTES))).toBe('0123456789ab')
    expect(toHex(again.subarray(MESSAGE_ID_TIME_BYTES))).not.toBe(toHex(id.subarray(MESSAGE_ID_TIME_BYTES)))
  })

  it('sort in the order of their times, and are unique within one millisecond', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 48 - 2 }), fc.integer({ min: 1, max: 2 ** 20 }), (earlier, gap) => {
        const later = Math.min(2 ** 48 - 1, earlier + gap)
        expect(toHex(newMessageId(earlier)) < toHex(newMessageId(later))).toBe(true)
      }),
    )
    const seen = new Set(Array.from({ length: 10_000 }, () => toHex(newMessageId(1_700_000_000_000))))
    expect(seen.size).toBe(10_000)
  })
})
