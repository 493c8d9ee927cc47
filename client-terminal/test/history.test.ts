/**
 * `secure-chat history` end to end: two accounts talk over the real server (TLS on loopback, real
 * SQLite files, the real CLI as child processes), then the server is stopped and the conversation
 * is read from the local store alone. The server is this file's own, since the test stops it.
 */
import { existsSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../../server/test/harness.js'
import { ChatClient } from '../../shared/client/chat-client.js'
import { ExitCode } from '../exit-codes.js'
import { openSqliteStore } from '../store.js'
import { httpsClient, webSocketFactory } from '../transport.js'
import { trustContext } from '../trust.js'
import { sha256File, TEST_KDF_ITERATIONS, type TestAccount, TestWorkspace } from './e2e-helpers.js'

/** Failure guard: a dozen CLI runs, each a Node process of about a second (more on a busy machine). */
const GUARD_MS = 300_000

interface HistoryLine {
  readonly direction: 'in' | 'out'
  readonly from: string
  readonly to: string
  readonly id: string
  readonly kind: string
  readonly text: string
  readonly sentAt: number
  readonly receivedAt?: number
  readonly state?: string
}

function jsonLines(stdout: string): HistoryLine[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as HistoryLine)
}

/** The database files of an account, hashed: any write to the store changes one of them. */
function fingerprint(account: TestAccount): Record<string, string | undefined> {
  const files: Record<string, string | undefined> = {}
  for (const suffix of ['', '-wal', '-journal']) {
    const file = `${account.databaseFile}${suffix}`
    files[suffix || 'db'] = existsSync(file) ? sha256File(file) : undefined
  }
  return files
}

let server: TestServer
let workspace: TestWorkspace

beforeAll(async () => {
  server = await startServer()
  workspace = new TestWorkspace(server.origin, server.ca)
}, GUARD_MS)

afterAll(async () => {
  await server?.close()
  workspace?.dispose()
})

describe('secure-chat history', { timeout: GUARD_MS }, () => {
  it('prints the stored conversation oldest first, from the local store alone, changing nothing', async () => {
    const alice = workspace.account('alice')
    const bob = workspace.account('bob')
    await Promise.all([alice.register(), bob.register()])
    await alice.send(bob, '1 hello bob')
    // Each send first stores what was queued: bob now holds message 1, unread.
    await bob.send(alice, '2 hello alice')
    await alice.send(bob, '3 how are you?\nall well here')
    await bob.send(alice, '4 fine, thanks')
    // Bob never ran `read`: two messages are unread at his end. Alice's receipt for 2 reached bob
    // when he sent 4; her receipt for 4 is still on the server.

    await server.stop()

    const before = fingerprint(bob)
    const json = await bob.ok(['history', alice.username, '--json'])
    expect(json.stderr).toBe('')
    const lines = jsonLines(json.stdout)
    expect(lines.map((line) => [line.direction, line.from, line.to, line.text])).toEqual([
      ['in', alice.username, bob.username, '1 hello bob'],
      ['out', bob.username, alice.username, '2 hello alice'],
      ['in', alice.username, bob.username, '3 how are you?\nall well here'],
      ['out', bob.username, alice.username, '4 fine, thanks'],
    ])
    for (const line of lines) {
      expect(line.id).toMatch(/^[A-Za-z0-9_-]{22}$/)
      expect(line.kind).toBe('text')
      expect(line.receivedAt).toBeGreaterThanOrEqual(line.sentAt - 60_000)
    }
    // Delivery state for what bob sent only.
    expect(lines.map((line) => line.state)).toEqual([undefined, 'delivered', undefined, 'accepted'])
    expect(lines[0]?.sentAt).toBeLessThan(lines[3]?.sentAt ?? 0)

    const plain = await bob.ok(['history', alice.username])
    const time = '\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}'
    expect(plain.stdout).toMatch(
      new RegExp(
        `^${time} ${alice.username}: 1 hello bob\\n` +
          `${time} ${bob.username}: 2 hello alice ✓✓\\n` +
          `${time} ${alice.username}: 3 how are you\\?\\n    all well here\\n` +
          `${time} ${bob.username}: 4 fine, thanks ✓\\n$`,
      ),
    )

    // -n: the newest N, still oldest first; the name is normalised as elsewhere.
    const lastTwo = await bob.ok(['history', alice.username.toUpperCase(), '-n', '2', '--json'])
    expect(jsonLines(lastTwo.stdout).map((line) => line.text)).toEqual([
      '3 how are you?\nall well here',
      '4 fine, thanks',
    ])
    const lastOne = await bob.ok(['history', alice.username, '-n1'])
    expect(lastOne.stdout).toMatch(new RegExp(`^${time} ${bob.username}: 4 fine, thanks ✓\\n$`))

    // A bad -n is a usage error, before the password is read or the store opened.
    for (const bad of ['0', '-1', '2.5', 'ten', '1001']) {
      const refused = await bob.run(['history', alice.username, `-n${bad}`], { password: null })
      expect(refused.code, `-n ${bad}`).toBe(ExitCode.Usage)
      expect(refused.stdout).toBe('')
      expect(refused.stderr).toMatch(/-n: expected a whole number from 1 to 1000/)
    }

    // Nobody we talked to: nothing printed, as `read --from` does.
    const stranger = await bob.run(['history', workspace.username('nobody'), '--json'])
    expect(stranger).toEqual({ code: 0, stdout: '', stderr: '' })

    // Nothing was written: not the files, not the unread count.
    expect(fingerprint(bob)).toEqual(before)
    const store = await openSqliteStore(bob.databaseFile)
    const client = await ChatClient.open(
      {
        serverUrl: server.origin,
        http: httpsClient(server.origin, { trust: trustContext(server.ca) }),
        webSocket: webSocketFactory({ trust: trustContext(server.ca) }),
        store,
        storageKeyIterations: Number(TEST_KDF_ITERATIONS),
        minimumStorageKeyIterations: Number(TEST_KDF_ITERATIONS),
        loginSecretIterations: Number(TEST_KDF_ITERATIONS),
      },
      bob.password,
      bob.username,
    )
    try {
      expect((await client.contact(alice.username))?.unread).toBe(2)
    } finally {
      await client.close()
    }
  })
})
