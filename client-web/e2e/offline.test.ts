/**
 * Going offline and coming back: with the server down, the installed app still opens (from its
 * service worker), unlocks, and shows the history stored on the device; a message written offline
 * waits in the outbox and goes out when the server is back on the same address.
 */
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { build } from '../../server/app.js'
import { createTestDatabase, type TestDatabase } from '../../server/test/databases.js'
import {
  RELAXED_LIMITS,
  startServer,
  TEST_BCRYPT_COST,
  type TestServer,
  testCertificate,
} from '../../server/test/harness.js'
import { httpsOptions } from '../../server/tls.js'
import type { ChatClient, MessageView } from '../../shared/client/chat-client.js'
import { registerClient } from '../../test/client-helpers.js'
import {
  contactButton,
  Device,
  logIn,
  openChat,
  outgoingStates,
  register,
  send,
  waitFor,
  waitForBubbles,
} from './browser.js'
import { strongPassword, uniqueName } from './fixtures.js'

let database: TestDatabase
let first: TestServer
let restarted: FastifyInstance | undefined
let device: Device
let peer: ChatClient

beforeAll(async () => {
  database = await createTestDatabase('sqlite')
  first = await startServer({ database })
  device = await Device.open('offline', first)
})

afterAll(async () => {
  await peer?.close()
  await device?.dispose()
  await first?.stop()
  await restarted?.close()
  await database?.dispose()
})

/** The same server again, on the same address (so the browser sees the same origin). */
async function restart(): Promise<void> {
  const port = Number(new URL(first.origin).port)
  restarted = await build({
    db: database.db,
    https: httpsOptions(await testCertificate()),
    bcryptCost: TEST_BCRYPT_COST,
    log: false,
    limits: RELAXED_LIMITS,
  })
  await restarted.listen({ host: '127.0.0.1', port })
  expect((restarted.server.address() as AddressInfo).port).toBe(port)
}

describe('offline', () => {
  it('opens with the server down, shows the stored history, and sends what was written once it is back', async () => {
    const name = uniqueName('nomad')
    const password = strongPassword()
    await device.goto('/')
    await register(device, name, password)
    await device.page.evaluate(() => navigator.serviceWorker.ready)

    peer = (await registerClient(first)).client
    peer.connect()
    await peer.waitUntilOnline()
    await peer.send(name, 'Before the outage')
    await contactButton(device, peer.username).waitFor()
    await openChat(device, peer.username)
    await waitForBubbles(device, 1)

    // The server goes away; the app is reloaded (as after closing the laptop lid).
    await first.stop()
    await device.page.reload()
    await logIn(device, name, password)
    await device.page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
    expect(await device.page.locator('.conn').textContent()).not.toContain('Connected')
    await openChat(device, peer.username)
    expect(await waitForBubbles(device, 1)).toEqual([{ direction: 'in', text: 'Before the outage' }])

    await send(device, 'Written offline')
    expect(await outgoingStates(device)).toEqual(['sending'])

    const arrived = new Promise<MessageView>((resolve) => {
      const stop = peer.events.on('message', (message) => {
        if (message.direction === 'in') {
          stop()
          resolve(message)
        }
      })
    })
    await restart()
    // The network is back: the browser tells the page (the app then reconnects at once instead of
    // waiting out the backoff), and the other party reconnects too.
    await device.page.evaluate(() => window.dispatchEvent(new Event('online')))
    peer.connect()
    expect((await arrived).text).toBe('Written offline')
    await waitFor(async () => (await outgoingStates(device)).every((state) => state === 'delivered'))
    await device.page.locator('.conn', { hasText: 'Connected' }).waitFor()
    // Chromium logs each refused connection while the server was down; nothing else may appear.
    expect(device.errors.filter((error) => !error.includes('ERR_CONNECTION_REFUSED'))).toEqual([])
  })
})
