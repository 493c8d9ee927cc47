/** The device lists a send is encrypted for (docs/protocol.md §13.9): pure logic over records. */
import { describe, expect, it } from 'vitest'
import { contactDevices, withDevice } from '../fan-out.js'
import type { ContactRecord } from '../records.js'

const bob: ContactRecord = { username: 'bob', verified: false, unread: 0 }

describe('a contact’s device list', () => {
  it('is device 1 for a record from before devices', () => {
    expect(contactDevices(bob)).toEqual([1])
    expect(contactDevices(undefined)).toEqual([1])
  })

  it('names each device once, in order, even as an earlier version stored it (a device twice)', () => {
    expect(contactDevices({ ...bob, devices: [2, 1, 2] })).toEqual([1, 2])
  })

  it('gains a device that wrote to us, once', () => {
    const withTwo = withDevice(bob, 2)
    expect(contactDevices(withTwo)).toEqual([1, 2])
    expect(withDevice(withTwo, 2)).toBe(withTwo)
  })
})
