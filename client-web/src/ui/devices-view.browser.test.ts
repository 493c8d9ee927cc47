/**
 * Settings' device cards and the removed screen, in Chromium, over stand-ins for the client core:
 * sc-devices lists the account's devices with this one marked, renames this one, removes another
 * only after its confirmation dialog, and passes a "device removed" refusal up; sc-link-approve
 * hides the scan button without BarcodeDetector, refuses what is not a code with words that say
 * so, and shows the asking device's name and the check with Approve and Refuse, then (unless
 * unticked) waits for the device and sends it the history with the parts' progress, or says why
 * not; sc-device-removed erases the account's data when asked.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { DeviceView, LinkApproval } from '../../../shared/client/chat-client.js'
import { ClientError, ClientErrorCode } from '../../../shared/client/errors.js'
import { type HistorySendClient, HistorySender } from '../history-send.js'
import type { DeviceRemovedView } from './device-removed-view.js'
import type { DevicesClient, DevicesView } from './devices-view.js'
import type { LinkApprove, LinkClient } from './link-approve.js'
import './device-removed-view.js'
import './devices-view.js'
import './link-approve.js'

const mounted: HTMLElement[] = []

afterEach(() => {
  for (const element of mounted.splice(0)) element.remove()
})

const NOW = new Date(2026, 11, 4, 15, 0).getTime()
const HOUR = 60 * 60 * 1000

async function mount<T extends HTMLElement & { updateComplete: Promise<boolean> }>(
  tag: string,
  setup: (element: T) => void,
): Promise<T> {
  const element = document.createElement(tag) as T
  setup(element)
  document.body.append(element)
  mounted.push(element)
  await element.updateComplete
  return element
}

const text = (element: HTMLElement) => element.shadowRoot?.textContent?.replace(/\s+/g, ' ') ?? ''

function button(element: HTMLElement, name: string): HTMLButtonElement {
  const found = [...(element.shadowRoot?.querySelectorAll('button') ?? [])].find(
    (b) => b.textContent?.trim() === name || b.getAttribute('aria-label') === name,
  )
  if (!found) throw new Error(`expected a button "${name}", got ${text(element)}`)
  return found
}

async function until(check: () => boolean, what: string, element: HTMLElement): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`expected ${what}, got: ${text(element)}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

function type(element: HTMLElement, selector: string, value: string): void {
  const input = element.shadowRoot?.querySelector<HTMLInputElement>(selector)
  if (!input) throw new Error(`expected ${selector}`)
  input.value = value
  input.dispatchEvent(new Event('input'))
}

function fakeDevices(devices: DeviceView[]) {
  const calls: string[] = []
  let list = [...devices]
  const client: DevicesClient & { calls: string[] } = {
    calls,
    async devices() {
      calls.push('list')
      return list
    },
    async renameDevice(name) {
      calls.push(`rename ${name}`)
      list = list.map((device) => (device.current ? { ...device, name } : device))
    },
    async removeDevice(id) {
      calls.push(`remove ${id}`)
      list = list.filter((device) => device.id !== id)
    },
  }
  return client
}

const twoDevices: DeviceView[] = [
  { id: 1, name: 'Phone', createdAt: NOW - 48 * HOUR, lastSeenAt: NOW - HOUR, current: false },
  { id: 2, name: undefined, createdAt: NOW - 2 * HOUR, lastSeenAt: NOW - 2 * HOUR, current: true },
]

describe('Settings › Devices', () => {
  it('lists the devices with this one marked, renames it, and removes another after confirming', async () => {
    const client = fakeDevices(twoDevices)
    const view = await mount<DevicesView>('sc-devices', (element) => {
      element.client = client
      element.now = () => NOW
    })
    const rows = () => [...(view.shadowRoot?.querySelectorAll('li[data-device]') ?? [])] as HTMLElement[]
    await until(() => rows().length === 2, 'two devices', view)
    expect(rows()[0]!.textContent).toContain('Phone')
    expect(rows()[0]!.textContent).not.toContain('This device')
    expect(rows()[1]!.textContent).toContain('Unnamed device')
    expect(rows()[1]!.textContent).toContain('This device')
    expect(rows()[1]!.textContent?.replace(/\s+/g, ' ')).toMatch(/Device 2 · Linked today at \d\d:\d\d/)

    button(view, 'Rename').click()
    await until(() => view.shadowRoot?.querySelector('#rename-input') !== null, 'the name field', view)
    type(view, '#rename-input', '  Laptop  ')
    button(view, 'Save').click()
    await until(() => text(view).includes('This device is now called “Laptop”.'), 'the rename', view)
    expect(client.calls).toContain('rename Laptop')

    button(view, 'Remove Phone').click()
    const dialog = view.shadowRoot?.querySelector('dialog') as HTMLDialogElement
    await until(() => dialog.open, 'the confirmation', view)
    expect(dialog.textContent).toContain('Remove Phone?')
    // Cancelled: nothing removed.
    button(view, 'Cancel').click()
    await until(() => !dialog.open, 'the dialog closed', view)
    expect(client.calls.filter((call) => call.startsWith('remove'))).toEqual([])
    button(view, 'Remove Phone').click()
    await until(() => dialog.open, 'the confirmation', view)
    button(view, 'Remove device').click()
    await until(() => rows().length === 1, 'one device left', view)
    expect(client.calls).toContain('remove 1')
    expect(dialog.open).toBe(false)
    expect(text(view)).toContain('Phone was removed.')
  })

  it('passes up that this device was removed', async () => {
    const client = fakeDevices(twoDevices)
    client.devices = async () => {
      throw new ClientError(ClientErrorCode.NotLoggedIn, 'GET /devices: removed', {
        serverCode: 'E2E_ERR_DEVICE_REMOVED',
        status: 401,
      })
    }
    const heard: unknown[] = []
    document.addEventListener('device-removed', () => heard.push(true), { once: true })
    await mount<DevicesView>('sc-devices', (element) => {
      element.client = client
    })
    await until(() => heard.length === 1, 'device-removed', document.body)
  })
})

/**
 * The shell's history transfers over a client that never gets as far as the history (the tests
 * that only link, with it unticked, and the one whose device never finishes linking).
 */
function noHistory(): HistorySender {
  return new HistorySender({
    waitForDevice: async () => false,
    sendHistory: async () => ({ parts: 0, messages: 0, leftOut: 0 }),
  })
}

function untickHistory(view: HTMLElement): void {
  const box = view.shadowRoot?.querySelector<HTMLInputElement>('dialog.approval input[type="checkbox"]')
  if (!box?.checked) throw new Error('expected the history box, ticked')
  box.click()
}

describe('Settings › Link a device', () => {
  function approval(deviceName: string | undefined, decisions: string[]): LinkApproval {
    return {
      check: '042 917',
      deviceName,
      async approve() {
        decisions.push('approve')
        return { deviceId: 3, omittedContacts: 0 }
      },
      async refuse() {
        decisions.push('refuse')
      },
    }
  }

  it('shows the asking device and the check, approves, and tells the devices list', async () => {
    const decisions: string[] = []
    const codes: string[] = []
    const client: LinkClient = {
      async approveLink(code) {
        codes.push(code)
        if (!code.startsWith('sc1')) {
          throw new ClientError(ClientErrorCode.InvalidInput, 'link code: expected sc1…')
        }
        return approval('Work laptop', decisions)
      },
    }
    const view = await mount<LinkApprove>('sc-link-approve', (element) => {
      element.client = client
      element.history = noHistory()
      element.scanner = false
    })
    expect(text(view)).not.toContain('Scan the QR code')
    expect(text(view)).toContain('this browser cannot scan QR codes')

    type(view, '#link-code', 'hello there')
    await view.updateComplete
    button(view, 'Continue').click()
    await until(() => text(view).includes('That is not a link code.'), 'the refusal', view)

    const linked: number[] = []
    view.addEventListener('device-linked', (event) => linked.push((event as CustomEvent<number>).detail))
    type(view, '#link-code', ' sc1abc\ndef ')
    await view.updateComplete
    button(view, 'Continue').click()
    const dialog = view.shadowRoot?.querySelector('dialog.approval') as HTMLDialogElement
    await until(() => dialog.open, 'the approval dialog', view)
    expect(codes.at(-1)).toBe('sc1abcdef')
    expect(dialog.textContent).toContain('Link “Work laptop”?')
    expect(dialog.querySelector('[data-testid="approve-check"]')?.textContent).toBe('042 917')
    untickHistory(view)
    button(view, 'Approve').click()
    await until(() => text(view).includes('“Work laptop” is linked as device 3.'), 'the outcome', view)
    expect(decisions).toEqual(['approve'])
    expect(linked).toEqual([3])
    expect(dialog.open).toBe(false)
    expect(view.shadowRoot?.querySelector('[data-testid="history-send"]')).toBeNull()
  })

  it('sends the history once the device finished linking, with the parts as they go, and what was left out', async () => {
    let registered: (found: boolean) => void = () => {}
    let progress: (sent: number, parts: number) => void = () => {}
    let done: (result: { parts: number; messages: number; leftOut: number }) => void = () => {}
    const waited: number[] = []
    let asked = false
    const historyClient: HistorySendClient = {
      waitForDevice: (deviceId, { timeoutMs }) => {
        waited.push(deviceId, timeoutMs)
        return new Promise((resolve) => {
          registered = resolve
        })
      },
      sendHistory: (options) => {
        asked = true
        progress = (sent, parts) => options?.onProgress?.(sent, parts)
        return new Promise((resolve) => {
          done = resolve
        })
      },
    }
    const view = await mount<LinkApprove>('sc-link-approve', (element) => {
      element.scanner = false
      element.client = { approveLink: async () => approval('Tablet', []) }
      element.history = new HistorySender(historyClient)
    })
    type(view, '#link-code', 'sc1code')
    await view.updateComplete
    button(view, 'Continue').click()
    const dialog = view.shadowRoot?.querySelector('dialog.approval') as HTMLDialogElement
    await until(() => dialog.open, 'the approval dialog', view)
    expect(text(view)).toContain('Send the conversations on this device to it')
    button(view, 'Approve').click()
    await until(() => text(view).includes('Waiting for the new device to finish linking…'), 'the wait', view)
    expect(waited).toEqual([3, 10 * 60_000])
    registered(true)
    await until(() => asked, 'the history sent', view)
    progress(3, 12)
    await until(() => text(view).includes('Sending history: 3 of 12 parts'), 'the progress', view)
    const bar = view.shadowRoot?.querySelector('[role="progressbar"]')
    expect(bar?.getAttribute('aria-valuenow')).toBe('3')
    expect(text(view)).toContain('keeps sending')
    done({ parts: 12, messages: 4_100, leftOut: 7 })
    await until(() => text(view).includes('Sent 4,100 messages to “Tablet”.'), 'the count', view)
    expect(text(view)).toContain('7 older ones were left out')
  })

  it('says so when the device never finished linking', async () => {
    const view = await mount<LinkApprove>('sc-link-approve', (element) => {
      element.scanner = false
      element.client = { approveLink: async () => approval(undefined, []) }
      element.history = noHistory()
    })
    type(view, '#link-code', 'sc1code')
    await view.updateComplete
    button(view, 'Continue').click()
    const dialog = view.shadowRoot?.querySelector('dialog.approval') as HTMLDialogElement
    await until(() => dialog.open, 'the approval dialog', view)
    button(view, 'Approve').click()
    await until(
      () =>
        text(view).includes(
          'The new device did not finish linking within 10 minutes, so the conversations were not sent.',
        ),
      'the failure',
      view,
    )
  })

  it('refuses when asked, and offers the camera where the browser can scan', async () => {
    const decisions: string[] = []
    const view = await mount<LinkApprove>('sc-link-approve', (element) => {
      element.client = { approveLink: async () => approval(undefined, decisions) }
      element.history = noHistory()
      element.scanner = true
    })
    expect(text(view)).toContain('Scan the QR code')
    type(view, '#link-code', 'sc1code')
    await view.updateComplete
    button(view, 'Continue').click()
    const dialog = view.shadowRoot?.querySelector('dialog.approval') as HTMLDialogElement
    await until(() => dialog.open, 'the approval dialog', view)
    expect(dialog.textContent).toContain('Link a new device?')
    button(view, 'Refuse').click()
    await until(() => text(view).includes('Refused. Nothing was linked'), 'the refusal', view)
    expect(decisions).toEqual(['refuse'])
  })
})

describe('Settings › Link a device, with a camera', () => {
  it('reads the code through BarcodeDetector, stops the camera, and asks about the device', async () => {
    // A camera that films a black square, and a detector that finds the code in its third frame.
    const canvas = document.createElement('canvas')
    canvas.width = 64
    canvas.height = 64
    canvas.getContext('2d')?.fillRect(0, 0, 64, 64)
    const stream = canvas.captureStream()
    const media = navigator.mediaDevices
    const realGetUserMedia = media.getUserMedia
    media.getUserMedia = async () => stream
    let frames = 0
    const scope = globalThis as { BarcodeDetector?: unknown }
    scope.BarcodeDetector = class {
      async detect(): Promise<{ rawValue: string }[]> {
        frames++
        return frames < 3 ? [] : [{ rawValue: 'https://example.com/not-ours' }, { rawValue: 'sc1scanned' }]
      }
    }
    try {
      const codes: string[] = []
      const view = await mount<LinkApprove>('sc-link-approve', (element) => {
        element.scanner = true
        element.history = noHistory()
        element.client = {
          async approveLink(code) {
            codes.push(code)
            return {
              check: '111 222',
              deviceName: 'Tablet',
              approve: async () => ({ deviceId: 2, omittedContacts: 0 }),
              refuse: async () => {},
            }
          },
        }
      })
      button(view, 'Scan the QR code').click()
      const approvalDialog = view.shadowRoot?.querySelector('dialog.approval') as HTMLDialogElement
      await until(() => approvalDialog.open, 'the approval dialog', view)
      expect(codes).toEqual(['sc1scanned'])
      expect(view.shadowRoot?.querySelector<HTMLDialogElement>('dialog.camera-dialog')?.open).toBe(false)
      expect(stream.getTracks().every((track) => track.readyState === 'ended')).toBe(true)
      expect(approvalDialog.textContent).toContain('Link “Tablet”?')
    } finally {
      media.getUserMedia = realGetUserMedia
      delete scope.BarcodeDetector
    }
  })
})

describe('the removed screen', () => {
  it('erases the account’s data, then goes back to the log-in screen', async () => {
    const erased: string[] = []
    const view = await mount<DeviceRemovedView>('sc-device-removed', (element) => {
      element.username = 'alice'
      element.erase = async (username) => {
        erased.push(username)
      }
    })
    expect(text(view)).toContain('This device was removed')
    const closed: { erased: boolean }[] = []
    view.addEventListener('device-removed-closed', (event) =>
      closed.push((event as CustomEvent<{ erased: boolean }>).detail),
    )
    button(view, "Erase this device's data").click()
    await until(() => closed.length === 1, 'closed', view)
    expect(erased).toEqual(['alice'])
    expect(closed).toEqual([{ erased: true }])
  })
})
