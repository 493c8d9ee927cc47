/**
 * Linking a second device of an account in the client core (shared/client/link.ts), against the
 * real server over TLS: the provisioning channel, the link token and POST /devices. The new device
 * ends with the account's identity (the same safety numbers), its own device id and its own
 * session; a check the user does not approve links nothing; a used or expired code is refused; a
 * server reflecting the new device's answer back at it is refused. (A store of records layout 2
 * that links a device after its migration: client-upgrade.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PROVISIONING_CHANNEL_TTL_MS } from '../server/limits.js'
import { signUp, startServer, type TestServer } from '../server/test/harness.js'
import { toBase64Url } from '../shared/bytes.js'
import { unlockAccount } from '../shared/client/account.js'
import { ChatClient } from '../shared/client/chat-client.js'
import { ClientErrorCode, isClientError } from '../shared/client/errors.js'
import { startLink } from '../shared/client/link.js'
import { MemoryStore } from '../shared/client/store.js'
import type { HttpClient } from '../shared/client/transport.js'
import { preKeyBundleFromJson } from '../shared/codec/keys.js'
import { generateX25519KeyPair } from '../shared/crypto/primitives.js'
import { verifyPreKeyBundle } from '../shared/identity.js'
import { clientOptions, nodeHttpClient, registerClient, TEST_KDF_ITERATIONS } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

async function failure(promise: Promise<unknown>): Promise<{ code?: string; serverCode?: string }> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!isClientError(error)) return { code: `not a ClientError: ${String(error)}` }
  return { code: error.code, ...(error.serverCode ? { serverCode: error.serverCode } : {}) }
}

/** Two accounts that know each other; alice has verified bob. */
async function aliceAndBob() {
  const alice = await registerClient(server)
  const bob = await registerClient(server)
  await alice.client.addContact(bob.client.username)
  await bob.client.addContact(alice.client.username)
  await alice.client.markVerified(bob.client.username, true)
  return { alice, bob }
}

/**
 * An HttpClient through a server in the middle: `rewrite` may change an answer after the server
 * gave it, `instead` may answer in its place without asking the server at all.
 */
function tamperedHttp(
  target: TestServer,
  tamper: {
    rewrite?: (method: string, path: string, answer: { status: number; body: unknown }) => unknown
    instead?: (method: string, path: string, sent: unknown) => { status: number; body: unknown } | undefined
  },
): HttpClient {
  const inner = nodeHttpClient(target)
  return {
    async request(method, path, options = {}) {
      const forged = tamper.instead?.(method, path, options.body)
      if (forged) return forged
      const answer = await inner.request(method, path, options)
      return { status: answer.status, body: tamper.rewrite?.(method, path, answer) ?? answer.body }
    },
  }
}

describe('linking a second device', () => {
  it('the new device gets the identity, its own id and session; both list both devices', async () => {
    const { alice, bob } = await aliceAndBob()
    const laptopStore = new MemoryStore()
    const laptopOptions = clientOptions(server, { store: laptopStore })

    // The new device shows a code; the existing device reads it.
    const pending = await startLink(laptopOptions.http, { name: 'Work laptop' })
    expect(pending.code).toMatch(/^sc1[A-Za-z0-9_-]{66}$/)
    const checkOnLaptop = pending.waitForCheck()
    const approval = await alice.client.approveLink(pending.code)
    expect(approval.deviceName).toBe('Work laptop')
    expect(approval.check).toMatch(/^\d{3} \d{3}$/)
    expect(await checkOnLaptop).toBe(approval.check)

    // Approved: the provisioning message reaches the new device.
    const provisioned = pending.waitForProvisioning()
    expect(await approval.approve()).toEqual({ deviceId: 2, omittedContacts: 0 })
    expect(await provisioned).toEqual({
      username: alice.client.username,
      deviceId: 2,
      contacts: 1,
      omittedContacts: 0,
    })
    // Nothing secret in what a UI might log.
    expect(JSON.stringify(pending)).not.toMatch(/identity|token|secret/i)

    const laptop = await ChatClient.completeLink(laptopOptions, pending, alice.password)
    expect(laptop.username).toBe(alice.client.username)
    expect(laptop.deviceId).toBe(2)
    expect(laptop.loggedIn).toBe(true)
    expect(laptop.publicIdentity).toEqual(alice.client.publicIdentity)
    // Contacts came along with their verification state: the same safety number with bob.
    expect(await laptop.contact(bob.client.username)).toMatchObject({ verified: true })
    expect((await laptop.safetyNumber(bob.client.username)).digits).toBe(
      (await alice.client.safetyNumber(bob.client.username)).digits,
    )

    // Each device sees both, itself as the current one, and the new device's sealed name.
    const listed = (devices: Awaited<ReturnType<ChatClient['devices']>>) =>
      devices.map((device) => [device.id, device.current, device.name])
    expect(listed(await laptop.devices())).toEqual([
      [1, false, undefined],
      [2, true, 'Work laptop'],
    ])
    expect(listed(await alice.client.devices())).toEqual([
      [1, true, undefined],
      [2, false, 'Work laptop'],
    ])
    await alice.client.renameDevice('Phone')
    expect(listed(await laptop.devices())).toEqual([
      [1, false, 'Phone'],
      [2, true, 'Work laptop'],
    ])

    // Its keys are signed for device 2: the server takes its rotation and refills.
    await laptop.rotateSignedPreKey()
    await laptop.maintainPreKeys()
    // A contact fetching device 2's bundle finds it signed by the account's identity for device 2.
    const contact = await signUp(server)
    const bundle = await server.request(`/api/v1/users/${alice.client.username}/bundle?device=2`, {
      token: contact.token,
    })
    expect(bundle.status).toBe(200)
    expect(bundle.body.deviceId).toBe(2)
    expect(bundle.body.signedPreKey.keyId).toBe((await laptop.preKeyStatus()).signedPreKeyId)
    await verifyPreKeyBundle(preKeyBundleFromJson(bundle.body), alice.client.username)

    // It logs in again as itself, and its store reopens as device 2.
    await laptop.logout()
    await laptop.login(alice.password)
    expect(laptop.loggedIn).toBe(true)
    await laptop.close()
    const reopened = await ChatClient.open(laptopOptions, alice.password, alice.client.username)
    expect(reopened.deviceId).toBe(2)
    expect(reopened.loggedIn).toBe(true)
    const secrets = await storedSecrets(laptopStore, alice.password)
    expect({ deviceId: secrets.deviceId, recordsVersion: secrets.recordsVersion }).toEqual({
      deviceId: 2,
      recordsVersion: 3,
    })

    // The code was used: a second approval is refused.
    expect(await failure(alice.client.approveLink(pending.code))).toEqual({
      code: ClientErrorCode.Server,
      serverCode: 'E2E_ERR_LINK_USED',
    })

    // Removing it ends its session: its socket hears why at once, its requests are refused.
    reopened.connect()
    await reopened.waitUntilOnline()
    const removed = new Promise<string>((resolve) =>
      reopened.events.on('problem', ({ code }) => resolve(code)),
    )
    await alice.client.removeDevice(2)
    expect(await removed).toBe('E2E_ERR_DEVICE_REMOVED')
    expect(reopened.loggedIn).toBe(false)
    expect(listed(await alice.client.devices())).toEqual([[1, true, 'Phone']])
    expect(await failure(reopened.devices())).toMatchObject({ code: ClientErrorCode.NotLoggedIn })
    expect(await failure(reopened.login(alice.password))).toMatchObject({
      serverCode: 'E2E_ERR_DEVICE_REMOVED',
    })
    await reopened.close()
    await Promise.all([alice.client.close(), bob.client.close()])
  })

  it('a server that puts its own key in place of the existing device’s links nothing', async () => {
    const { alice } = await aliceAndBob()
    const laptopStore = new MemoryStore()
    const mallory = await generateX25519KeyPair()
    const http = tamperedHttp(server, {
      rewrite: (method, path, answer) => {
        const body = answer.body as { messages?: { position: number; message: string }[] }
        if (method !== 'GET' || !/\/new\?after=0$/.test(path) || !body?.messages?.length) return undefined
        return {
          ...body,
          messages: body.messages.map((m) =>
            m.position === 1 ? { ...m, message: toBase64Url(mallory.publicKey) } : m,
          ),
        }
      },
    })
    const pending = await startLink(http, { name: 'Laptop' })
    const checkOnLaptop = pending.waitForCheck()
    // The new device's answer is sealed to the server's key: the existing device cannot open it,
    // and gives up before the user is asked anything.
    expect(await failure(alice.client.approveLink(pending.code))).toEqual({
      code: ClientErrorCode.LinkFailed,
    })
    await checkOnLaptop
    expect(await failure(pending.waitForProvisioning())).toEqual({
      code: ClientErrorCode.Server,
      serverCode: 'E2E_ERR_LINK_REFUSED',
    })
    expect((await alice.client.devices()).map((device) => device.id)).toEqual([1])
    expect(await ChatClient.accountIn(laptopStore)).toBeUndefined()
    await alice.client.close()
  })

  it('a password that is not the account’s links nothing: the device is removed again, and the store is empty', async () => {
    const { alice } = await aliceAndBob()
    const laptopStore = new MemoryStore()
    const laptopOptions = clientOptions(server, { store: laptopStore })
    const pending = await startLink(laptopOptions.http, { name: 'Mistyped' })
    // The new device answers while it waits for the check to show.
    const check = pending.waitForCheck()
    const approval = await alice.client.approveLink(pending.code)
    expect(await check).toBe(approval.check)
    const provisioned = pending.waitForProvisioning()
    await approval.approve()
    await provisioned
    const refused = await ChatClient.completeLink(laptopOptions, pending, `${alice.password} typo`).catch(
      (error: unknown) => error,
    )
    expect(refused).toMatchObject({
      serverCode: 'E2E_ERR_INVALID_CREDENTIALS',
      message: expect.stringMatching(/password.*removed from the account again/),
    })
    expect((await alice.client.devices()).map((device) => device.id)).toEqual([1])
    for (const table of ['account', 'prekeys', 'sessions', 'contacts'] as const)
      expect(await laptopStore.list(table)).toEqual([])
  })

  it('a check that does not match is not approved: nothing is linked', async () => {
    const { alice } = await aliceAndBob()
    // The code alice's device reads is not her laptop's but someone else's new device's (a QR
    // code swapped on the way): the check it shows is not on her laptop's screen.
    const laptop = await startLink(nodeHttpClient(server), { name: 'Laptop' })
    const stranger = await startLink(nodeHttpClient(server), { name: 'Laptop' })
    const strangerCheck = stranger.waitForCheck()
    const approval = await alice.client.approveLink(stranger.code)
    expect(approval.deviceName).toBe('Laptop')
    expect(await strangerCheck).toBe(approval.check)
    // The user compares with the laptop, sees no such check, and refuses.
    const provisioned = stranger.waitForProvisioning()
    await approval.refuse()
    expect(await failure(provisioned)).toEqual({
      code: ClientErrorCode.Server,
      serverCode: 'E2E_ERR_LINK_REFUSED',
    })
    const strangerStore = new MemoryStore()
    expect(
      await failure(
        ChatClient.completeLink(clientOptions(server, { store: strangerStore }), stranger, alice.password),
      ),
    ).toEqual({ code: ClientErrorCode.InvalidState })
    expect(await failure(approval.approve())).toEqual({ code: ClientErrorCode.InvalidState })
    expect((await alice.client.devices()).map((device) => device.id)).toEqual([1])
    expect(await ChatClient.accountIn(strangerStore)).toBeUndefined()
    await laptop.cancel()
    await alice.client.close()
  })

  it('a server reflecting the new device’s answer back to it as the provisioning message is refused', async () => {
    const { alice } = await aliceAndBob()
    let answer: string | undefined
    const http = tamperedHttp(server, {
      instead: (method, path, sent) => {
        if (method === 'POST' && /\/existing$/.test(path)) answer = (sent as { message: string }).message
        if (method !== 'GET' || !/\/new\?after=1$/.test(path) || !answer) return undefined
        return {
          status: 200,
          body: { messages: [{ position: 2, message: answer }], expiresAt: Date.now() + 60_000 },
        }
      },
    })
    const pending = await startLink(http, { name: 'Laptop' })
    const checkOnLaptop = pending.waitForCheck()
    const approval = await alice.client.approveLink(pending.code)
    expect(await checkOnLaptop).toBe(approval.check)
    const refused = await failure(pending.waitForProvisioning())
    expect(refused).toEqual({ code: ClientErrorCode.LinkFailed })
    // The new device gave up on the channel; the existing device hears so when it approves.
    expect(await failure(approval.approve())).toMatchObject({ serverCode: 'E2E_ERR_LINK_USED' })
    expect((await alice.client.devices()).map((device) => device.id)).toEqual([1])
    await alice.client.close()
  })

  it('a wait can be given up; a given-up code is used', async () => {
    const { alice } = await aliceAndBob()
    // The long polls the wait makes, with the signal each was given.
    const polls: (AbortSignal | undefined)[] = []
    const inner = nodeHttpClient(server)
    const http: HttpClient = {
      request(method, path, options = {}) {
        if (method === 'GET' && path.startsWith('/provisioning/')) polls.push(options.signal)
        return inner.request(method, path, options)
      },
    }
    const pending = await startLink(http)
    const giveUp = new AbortController()
    const waiting = pending.waitForCheck(giveUp.signal)
    while (polls.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
    giveUp.abort()
    expect(await failure(waiting)).toEqual({ code: ClientErrorCode.Cancelled })
    // The poll under way was given up with the wait (its transport closes it), not left to run out.
    expect(polls.length).toBeGreaterThan(0)
    expect(polls.every((signal) => signal?.aborted === true)).toBe(true)
    await pending.cancel()
    expect(await failure(alice.client.approveLink(pending.code))).toMatchObject({
      serverCode: 'E2E_ERR_LINK_USED',
    })
    expect(await failure(alice.client.approveLink('not a code'))).toEqual({
      code: ClientErrorCode.InvalidInput,
    })
    await alice.client.close()
  })

  it('an expired code is refused on both devices', async () => {
    let clock = Date.now()
    const timed = await startServer({ now: () => clock })
    try {
      const alice = await registerClient(timed)
      const pending = await startLink(nodeHttpClient(timed))
      clock += PROVISIONING_CHANNEL_TTL_MS + 1
      expect(await failure(alice.client.approveLink(pending.code))).toEqual({
        code: ClientErrorCode.Server,
        serverCode: 'E2E_ERR_LINK_EXPIRED',
      })
      expect(await failure(pending.waitForCheck())).toEqual({
        code: ClientErrorCode.Server,
        serverCode: 'E2E_ERR_LINK_EXPIRED',
      })
      await alice.client.close()
    } finally {
      await timed.close()
    }
  })
})

async function storedSecrets(store: MemoryStore, password: string) {
  const record = await store.get('account', 'account')
  return (await unlockAccount(record!.value, password, TEST_KDF_ITERATIONS)).secrets
}
