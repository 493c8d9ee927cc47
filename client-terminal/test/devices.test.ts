/**
 * The device commands end to end: an account registered by the real CLI (device 1, its own SQLite
 * store) with a second device linked in this process through the client core, then `devices`,
 * `rename-device` and `remove-device` run as the `secure-chat` command against the real server.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { SecureContext } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../../server/test/harness.js'
import { ChatClient, type ChatClientOptions, startLink } from '../../shared/client/chat-client.js'
import type { ClientStore } from '../../shared/client/store.js'
import { ExitCode } from '../exit-codes.js'
import { openSqliteStore } from '../store.js'
import { trustContext } from '../trust.js'
import { inProcessClientOptions, TestAccount, TestWorkspace } from './e2e-helpers.js'

/** Failure guard: each CLI run starts a Node process. */
const E2E_GUARD_MS = 300_000

let server: TestServer
let workspace: TestWorkspace
let trust: SecureContext

beforeAll(async () => {
  server = await startServer()
  workspace = new TestWorkspace(server.origin, server.ca)
  trust = trustContext(server.ca)
}, E2E_GUARD_MS)

afterAll(async () => {
  await server?.close()
  workspace?.dispose()
})

function clientOptions(store: ClientStore): ChatClientOptions {
  return inProcessClientOptions(server, trust, store)
}

/**
 * Links a second device to the account the CLI registered, its store the SQLite file a CLI with
 * `laptop`'s data directory opens (then closed, for that CLI to use).
 */
async function linkLaptop(account: TestAccount, laptop: TestAccount, name: string): Promise<void> {
  const phone = await ChatClient.open(
    clientOptions(await openSqliteStore(account.databaseFile)),
    account.password,
    account.username,
  )
  try {
    await phone.login(account.password)
    const laptopOptions = clientOptions(await openSqliteStore(laptop.databaseFile, { create: true }))
    const pending = await startLink(laptopOptions.http, { name })
    const checked = pending.waitForCheck()
    const approval = await phone.approveLink(pending.code)
    await checked
    const provisioned = pending.waitForProvisioning()
    await approval.approve()
    await provisioned
    const linked = await ChatClient.completeLink(laptopOptions, pending, account.password)
    await linked.close()
  } finally {
    await phone.close()
  }
}

interface DeviceLine {
  readonly id: number
  readonly name: string | null
  readonly createdAt: number
  readonly lastSeenAt: number
  readonly current: boolean
}

function deviceLines(stdout: string): DeviceLine[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as DeviceLine)
}

describe('secure-chat devices, rename-device, remove-device', { timeout: E2E_GUARD_MS }, () => {
  let alice: TestAccount
  /** The same account on its second device: another data directory. */
  let laptop: TestAccount

  beforeAll(async () => {
    alice = workspace.account('alice')
    await alice.register()
    laptop = new TestAccount(workspace, alice.username, alice.password, join(workspace.root, 'laptop'))
    await linkLaptop(alice, laptop, 'Work laptop')
  }, E2E_GUARD_MS)

  it('lists the account devices, as text and as JSON lines', async () => {
    const json = deviceLines((await alice.ok(['devices', '--json'])).stdout)
    expect(json).toEqual([
      { id: 1, name: null, createdAt: expect.any(Number), lastSeenAt: expect.any(Number), current: true },
      {
        id: 2,
        name: 'Work laptop',
        createdAt: expect.any(Number),
        lastSeenAt: expect.any(Number),
        current: false,
      },
    ])
    // The other device lists the same devices, and is the current one there.
    const onLaptop = deviceLines((await laptop.ok(['devices', '--json'])).stdout)
    expect(onLaptop.map(({ id, name, current }) => ({ id, name, current }))).toEqual([
      { id: 1, name: null, current: false },
      { id: 2, name: 'Work laptop', current: true },
    ])

    const text = (await alice.ok(['devices'])).stdout.split('\n')
    expect(text[0]).toMatch(
      /^1 {2}\(no name\) \(this device\) {2}added \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, last seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/,
    )
    expect(text[1]).toMatch(/^2 {2}Work laptop {2}added \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, last seen .*$/)
    expect(text[1]).not.toContain('this device')
  })

  it('names this device, and refuses a bad name', async () => {
    const renamed = await alice.ok(['rename-device', 'Terminal at home'])
    expect(renamed.stdout).toBe('this device (1) is now named "Terminal at home"\n')
    const onLaptop = deviceLines((await laptop.ok(['devices', '--json'])).stdout)
    expect(onLaptop.find((device) => device.id === 1)?.name).toBe('Terminal at home')

    const tooLong = await alice.run(['rename-device', 'x'.repeat(65)])
    expect(tooLong.code).toBe(ExitCode.Usage)
    expect(tooLong.stderr).toContain('device name: expected 1 to 64 characters, got 65')
    const missing = await alice.run(['rename-device'])
    expect(missing.code).toBe(ExitCode.Usage)
  })

  it('refuses bad device ids, unknown devices, and removing the last device', async () => {
    for (const bad of ['0', 'two', '1.5', '', '4294967296']) {
      const result = await alice.run(['remove-device', bad])
      expect(result.code, bad).toBe(ExitCode.Usage)
      expect(result.stderr).toContain(
        `remove-device: expected a device id (a positive whole number), got "${bad}"`,
      )
    }
    // Read as an option, which remove-device does not take: a usage error too.
    expect((await alice.run(['remove-device', '-1'])).code).toBe(ExitCode.Usage)
    const unknown = await alice.run(['remove-device', '99'])
    expect(unknown.code).toBe(ExitCode.NoSuchDevice)
    expect(unknown.stderr).toMatch(/^secure-chat: DELETE \/devices\/99: expected/)

    // This device, while others remain: refused here (another device removes it).
    const self = await alice.run(['remove-device', '1'])
    expect(self.code).toBe(ExitCode.Usage)
    expect(self.stderr).toContain('remove-device: expected another device than this one (1)')

    const removed = await alice.ok(['remove-device', '2'])
    expect(removed.stdout).toBe(
      'removed device 2 ("Work laptop"): its sessions ended, its queue and keys are gone\n',
    )
    expect(deviceLines((await alice.ok(['devices', '--json'])).stdout).map((device) => device.id)).toEqual([
      1,
    ])
    // The removed device can no longer sign in, and says so with its own exit code.
    const gone = await laptop.run(['devices'])
    expect(gone.code).toBe(ExitCode.DeviceRemoved)
    expect(gone.stderr).toContain('got one of a device removed from its account')
    expect(gone.stderr).toContain('secure-chat erase-local <user> erases them')
    // What it still can: read its history, and erase its data here.
    expect((await laptop.run(['history', alice.username])).code).toBe(0)
    const wrongName = await laptop.run(['erase-local', 'someone-else'])
    expect(wrongName.code).toBe(ExitCode.LocalDatabase)
    expect(wrongName.stderr).toContain('got no someone-else there; nothing was erased')
    const erased = await laptop.ok(['erase-local', alice.username])
    expect(erased.stdout).toBe(
      `erased ${alice.username}'s data on this device; nothing changed on the server (remove this device from another of the account's devices, if it is still listed)\n`,
    )
    expect(existsSync(laptop.databaseFile)).toBe(false)
    expect((await laptop.run(['devices'])).code).toBe(ExitCode.LocalDatabase)

    const last = await alice.run(['remove-device', '1'])
    expect(last.code).toBe(ExitCode.LastDevice)
    expect(last.stderr).toContain('got its last one: delete the account instead')
  })
})
