/**
 * Linking end to end with the real CLI on both sides: an account registered by `secure-chat
 * register` (device 1, its own data directory), `secure-chat link --json` run as a second CLI with
 * a data directory of its own, approved with `secure-chat approve-link <code>` from the first,
 * against the real server over TLS on loopback. Then both devices work: `devices`, `send`, `read`.
 * And the ways a link does not happen: a code nobody opened, one used already, a refusal, a wait
 * that runs out, each with its exit code.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../../server/test/harness.js'
import { generateX25519KeyPair } from '../../shared/crypto/primitives.js'
import { encodeLinkCode } from '../../shared/provisioning.js'
import { ExitCode } from '../exit-codes.js'
import { type RunningCli, TestAccount, TestWorkspace } from './e2e-helpers.js'

/** Failure guard: each CLI run starts a Node process. */
const E2E_GUARD_MS = 300_000

let server: TestServer
let workspace: TestWorkspace

beforeAll(async () => {
  server = await startServer()
  workspace = new TestWorkspace(server.origin, server.ca)
}, E2E_GUARD_MS)

afterAll(async () => {
  await server?.close()
  workspace?.dispose()
})

interface DeviceLine {
  readonly id: number
  readonly name: string | null
  readonly current: boolean
}

function jsonLines<T>(stdout: string): T[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as T)
}

/** The code a running `link --json` printed on its first line. */
async function linkCode(linking: RunningCli): Promise<string> {
  const line = JSON.parse(await linking.line()) as { code: string }
  expect(Object.keys(line)).toEqual(['code'])
  expect(line.code).toMatch(/^sc1[A-Za-z0-9_-]+$/)
  return line.code
}

describe('secure-chat link and approve-link', { timeout: E2E_GUARD_MS }, () => {
  let alice: TestAccount
  let bob: TestAccount
  /** Alice on a second device: another data directory, the same password. */
  let laptop: TestAccount
  let usedCode: string

  beforeAll(async () => {
    alice = workspace.account('alice')
    bob = workspace.account('bob')
    await alice.register()
    await bob.register()
    // Alice knows Bob before the link, so the link carries him as a contact.
    await alice.send(bob, 'hello from the first device')
    expect((await bob.read()).map((line) => line.text)).toEqual(['hello from the first device'])
    laptop = new TestAccount(workspace, alice.username, alice.password, join(workspace.root, 'laptop'))
  }, E2E_GUARD_MS)

  it('links a second device: code, check on both sides, approval, then the account works there', async () => {
    const linking = laptop.start(['link', '--json', '--name', 'Work laptop'])
    const code = await linkCode(linking)
    usedCode = code

    const approved = await alice.run(['approve-link', code, '--yes'])
    expect(approved.stderr).toBe('')
    expect(approved.code).toBe(0)
    const [asks, checkLine, done] = approved.stdout.split('\n')
    expect(asks).toBe(`"Work laptop" asks to be linked to ${alice.username}`)
    const check = /^check (\d{3} \d{3}): approve only if the new device shows the same check$/.exec(
      checkLine ?? '',
    )?.[1]
    expect(check).toBeDefined()
    expect(done).toBe(`approved: the new device becomes device 2 of ${alice.username}`)

    const linked = await linking.done
    expect(linked.code, linked.stderr).toBe(0)
    // The same check on the new device (on standard error with --json), and the two JSON lines.
    expect(linked.stderr).toContain(`check ${check}: approve on the other device only if it shows the same`)
    expect(jsonLines(linked.stdout)).toEqual([{ code }, { linked: true, user: alice.username, device: 2 }])
    expect(existsSync(laptop.databaseFile)).toBe(true)

    const onAlice = jsonLines<DeviceLine>((await alice.ok(['devices', '--json'])).stdout)
    expect(onAlice.map(({ id, name, current }) => ({ id, name, current }))).toEqual([
      { id: 1, name: null, current: true },
      { id: 2, name: 'Work laptop', current: false },
    ])
    const onLaptop = jsonLines<DeviceLine>((await laptop.ok(['devices', '--json'])).stdout)
    expect(onLaptop.map(({ id, current }) => ({ id, current }))).toEqual([
      { id: 1, current: false },
      { id: 2, current: true },
    ])
  })

  it('sends from the linked device, to a contact that came along with the link', async () => {
    // The same identity keys on both devices: the safety number with Bob is the one device 1 shows.
    const safetyNumber = async (account: TestAccount) =>
      (JSON.parse((await account.ok(['verify', bob.username, '--json'])).stdout) as { safetyNumber: string })
        .safetyNumber
    expect(await safetyNumber(laptop)).toBe(await safetyNumber(alice))

    await laptop.send(bob, 'hello from the laptop')
    const lines = await bob.read()
    expect(lines.map(({ from, text, identityChanged }) => ({ from, text, identityChanged }))).toEqual([
      { from: alice.username, text: 'hello from the laptop', identityChanged: false },
    ])
    const sent = (await laptop.ok(['history', bob.username, '--json'])).stdout
    expect(
      jsonLines<{ direction: string; text: string }>(sent).map(({ direction, text }) => ({
        direction,
        text,
      })),
    ).toEqual([{ direction: 'out', text: 'hello from the laptop' }])
  })

  it('delivers what a contact sends the account to both devices, keeps what was read in step, and shows each device what the other sent', async () => {
    // Bob's session is with both devices now (the laptop wrote to him): his message reaches both.
    await bob.send(alice, 'to both of your devices')
    const lines = await alice.read()
    expect(lines.map(({ from, text, device }) => ({ from, text, device }))).toEqual([
      { from: bob.username, text: 'to both of your devices', device: 1 },
    ])
    // Read on device 1: the laptop has it, already read (its unread count cleared with device 1's).
    expect(await laptop.read()).toEqual([])
    const onLaptopNow = jsonLines<{ direction: string; text: string; device: number }>(
      (await laptop.ok(['history', bob.username, '--json'])).stdout,
    )
    expect(onLaptopNow.at(-1)).toMatchObject({ direction: 'in', text: 'to both of your devices', device: 1 })
    // What the laptop sent is in device 1's history too, as this account's, from device 2.
    const history = jsonLines<{ direction: string; text: string; device: number }>(
      (await alice.ok(['history', bob.username, '--json'])).stdout,
    )
    expect(history.map(({ direction, text, device }) => ({ direction, text, device }))).toEqual([
      { direction: 'out', text: 'hello from the first device', device: 1 },
      { direction: 'out', text: 'hello from the laptop', device: 2 },
      { direction: 'in', text: 'to both of your devices', device: 1 },
    ])
    // Bob sees which of alice's devices wrote.
    await alice.send(bob, 'from the first device again')
    expect((await bob.read()).map(({ text, device }) => ({ text, device }))).toEqual([
      { text: 'from the first device again', device: 1 },
    ])
    // `history` reads this device's store: the laptop connects (to read) first. A copy of what
    // this account sent is nothing unread.
    expect(await laptop.read()).toEqual([])
    const onLaptop = jsonLines<{ direction: string; text: string; device: number }>(
      (await laptop.ok(['history', bob.username, '--json'])).stdout,
    )
    expect(onLaptop.at(-1)).toMatchObject({
      direction: 'out',
      text: 'from the first device again',
      device: 1,
    })
  })

  it('refuses a code that is none, one nobody opened, and one used already', async () => {
    const garbage = await alice.run(['approve-link', 'not-a-code'])
    expect(garbage.code).toBe(ExitCode.LinkCodeInvalid)
    expect(garbage.stderr).toMatch(/^secure-chat: approve-link: link code: expected text starting with "sc1"/)

    const unknown = encodeLinkCode({
      channelId: crypto.getRandomValues(new Uint8Array(16)),
      ephemeralPublicKey: (await generateX25519KeyPair()).publicKey,
    })
    const nobody = await alice.run(['approve-link', unknown, '--yes'])
    expect(nobody.code).toBe(ExitCode.LinkCodeInvalid)
    expect(nobody.stderr).toContain(
      'got an unknown one (mistyped, or expired long ago) (E2E_ERR_LINK_UNKNOWN)',
    )

    const again = await alice.run(['approve-link', usedCode, '--yes'])
    expect(again.code).toBe(ExitCode.LinkCodeInvalid)
    expect(again.stderr).toContain('(E2E_ERR_LINK_USED)')
  })

  it('refused on the approving device: both exit with the refusal code, nothing is linked', async () => {
    const desktop = new TestAccount(
      workspace,
      alice.username,
      alice.password,
      join(workspace.root, 'desktop'),
    )
    const linking = desktop.start(['link', '--json'])
    const code = await linkCode(linking)
    const refused = await alice.run(['approve-link', code], { stdin: 'n\n' })
    expect(refused.code).toBe(ExitCode.LinkRefused)
    expect(refused.stdout).toContain(`A device without a name asks to be linked to ${alice.username}`)
    expect(refused.stderr).toContain('Approve? [y/N]')
    expect(refused.stderr).toContain('the link was refused and nothing was linked')

    const result = await linking.done
    expect(result.code, result.stderr).toBe(ExitCode.LinkRefused)
    expect(result.stderr).toContain('got a refusal there (E2E_ERR_LINK_REFUSED)')
    expect(existsSync(desktop.databaseFile)).toBe(false)
    expect(jsonLines<DeviceLine>((await alice.ok(['devices', '--json'])).stdout)).toHaveLength(2)
  })

  it('shows the code as a QR code and as text, and undoes the link when the password is refused', async () => {
    const phone = new TestAccount(
      workspace,
      alice.username,
      'not the account password!',
      join(workspace.root, 'phone'),
    )
    const linking = phone.start(['link', '--name', 'Phone'])
    const code = await linking.line(/^sc1/)
    const approved = await alice.run(['approve-link', code, '--yes'])
    expect(approved.code, approved.stderr).toBe(0)
    expect(approved.stdout).toContain(`"Phone" asks to be linked to ${alice.username}`)
    expect(approved.stdout).toContain('approved: the new device becomes device 3 of')

    const result = await linking.done
    expect(result.code, result.stderr).toBe(ExitCode.ServerRefused)
    expect(result.stderr).toContain(
      `link: expected ${alice.username}'s password, got one the server refused (E2E_ERR_INVALID_CREDENTIALS); this device was removed from the account again`,
    )
    const lines = result.stdout.split('\n')
    expect(lines[0]).toBe(
      'To link this device, approve this code on a device that has the account: scan it there, or paste it into secure-chat approve-link <code>',
    )
    // The QR code: lines of blocks of one width (not a terminal here: no colours), then the code.
    const qr = lines.filter((line) => /^[ ▀▄█]+$/.test(line) && /[▀▄█]/.test(line))
    expect(qr.length).toBeGreaterThan(10)
    expect(new Set(qr.map((line) => line.length)).size).toBe(1)
    expect(lines).toContain(code)
    expect(result.stdout).toMatch(/The code works once, until \d\d:\d\d:\d\d\. Waiting for the other device/)
    expect(result.stdout).toMatch(
      /^check \d{3} \d{3}: approve on the other device only if it shows the same check$/m,
    )
    expect(result.stdout).toContain(
      `approved on the other device: this device becomes device 3 of ${alice.username}`,
    )
    expect(existsSync(phone.databaseFile)).toBe(false)
    // Device 3 was added and removed again: the account still has its two.
    const devices = jsonLines<DeviceLine>((await alice.ok(['devices', '--json'])).stdout)
    expect(devices.map((device) => device.id)).toEqual([1, 2])
  })

  it('refuses a bad --name before opening anything', async () => {
    const other = new TestAccount(workspace, alice.username, alice.password, join(workspace.root, 'other'))
    const result = await other.run(['link', '--name', 'x'.repeat(65), '--json'])
    expect(result.code).toBe(ExitCode.Usage)
    expect(result.stdout).toBe('')
    expect(result.stderr).toContain('expected 1 to 64 characters, got 65')
  })

  it('gives up on Ctrl+C while waiting: exit code 12, and the code is closed', async () => {
    const watch = new TestAccount(workspace, alice.username, alice.password, join(workspace.root, 'watch'))
    const linking = watch.start(['link', '--json'])
    const code = await linkCode(linking)
    linking.interrupt()
    const result = await linking.done
    expect(result.code, result.stderr).toBe(ExitCode.LinkFailed)
    expect(result.stderr).toContain(
      'link: given up while waiting for the approval (interrupted): the code is closed',
    )
    const late = await alice.run(['approve-link', code, '--yes'])
    expect(late.code).toBe(ExitCode.LinkCodeInvalid)
    expect(late.stderr).toContain('(E2E_ERR_LINK_USED)')
  })

  it('gives up when --wait runs out, with the expiry code, and closes the code', async () => {
    const tablet = new TestAccount(workspace, alice.username, alice.password, join(workspace.root, 'tablet'))
    const result = await tablet.run(['link', '--json', '--wait', '0.5'])
    expect(result.code, result.stderr).toBe(ExitCode.LinkExpired)
    const [line] = jsonLines<{ code: string }>(result.stdout)
    expect(result.stderr).toContain('link: expected the approval within 0.5 s (--wait), got none')
    // Closed on the way out: nobody can approve it afterwards.
    const late = await alice.run(['approve-link', line?.code ?? '', '--yes'])
    expect(late.code).toBe(ExitCode.LinkCodeInvalid)
    expect(late.stderr).toContain('(E2E_ERR_LINK_USED)')
  })

  it('sends the history along: approve-link --history and link --history, with progress on both', async () => {
    const reader = new TestAccount(workspace, alice.username, alice.password, join(workspace.root, 'reader'))
    const linking = reader.start(['link', '--json', '--history', '--name', 'Reader'])
    const code = await linkCode(linking)
    const approved = await alice.run(['approve-link', code, '--yes', '--history'])
    expect(approved.code, approved.stderr).toBe(0)
    expect(approved.stderr).toMatch(/history: waiting for device \d+ to finish linking/)
    expect(approved.stderr).toMatch(/history: 1 of 1 part\(s\) sent/)
    const sent = /sent the history to device (\d+): (\d+) message\(s\) in 1 part\(s\)/.exec(approved.stdout)
    expect(sent, approved.stdout).not.toBeNull()

    const linked = await linking.done
    expect(linked.code, linked.stderr).toBe(0)
    expect(linked.stderr).toMatch(/history: 1 of 1 part\(s\) received/)
    // The conversation with bob as device 1 has it, on the new device.
    const shown = async (account: TestAccount) =>
      jsonLines<{ id: string; direction: string; text: string }>(
        (await account.ok(['history', bob.username, '--json'])).stdout,
      ).map(({ id, direction, text }) => ({ id, direction, text }))
    const onAlice = await shown(alice)
    expect(onAlice.length).toBe(Number(sent![2]))
    expect(await shown(reader)).toEqual(onAlice)
    // Nothing of it is unread there.
    expect(await reader.read()).toEqual([])
  })
})
