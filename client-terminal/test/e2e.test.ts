/**
 * End to end: the real server over TLS on loopback (server/test/harness.ts), real SQLite files in
 * temporary directories, and the real CLI run as child processes. Every wait is on a process
 * finishing; the test timeouts are only failure guards.
 */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { rootCertificates, type SecureContext } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, strongPassword, type TestServer } from '../../server/test/harness.js'
import { STORAGE_KEY_MIN_ITERATIONS } from '../../shared/at-rest.js'
import { ChatClient, type ChatClientOptions } from '../../shared/client/chat-client.js'
import { type ClientStore, MemoryStore } from '../../shared/client/store.js'
import { TEST_KDF_ITERATIONS_ENV, TEST_RUN_ENV } from '../accounts.js'
import { ExitCode } from '../exit-codes.js'
import { openSqliteStore } from '../store.js'
import { SYSTEM_CA_FILE_ENV, trustContext } from '../trust.js'
import {
  inProcessClientOptions,
  revealedIn,
  sha256File,
  TEST_KDF_ITERATIONS,
  TestAccount,
  TestWorkspace,
} from './e2e-helpers.js'

/**
 * Failure guard per test: each CLI run starts a Node process (about a second, more on a busy
 * machine) and a test runs up to a dozen of them.
 */
const E2E_GUARD_MS = 300_000

let server: TestServer
let workspace: TestWorkspace
/** The in-process clients trust the test server's certificate, as the CLI does with --ca. */
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

/** Opens an account's database in this process, as the CLI would after a restart. */
async function openInProcess(account: TestAccount): Promise<ChatClient> {
  const store = await openSqliteStore(account.databaseFile)
  return ChatClient.open(clientOptions(store), account.password, account.username)
}

async function oneTimePreKeysLeft(username: string): Promise<number> {
  const row = await server.database.db
    .selectFrom('one_time_prekeys')
    .innerJoin('users', 'users.id', 'one_time_prekeys.user_id')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('users.username', '=', username)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}

describe('the non-interactive CLI against the real server', { timeout: E2E_GUARD_MS }, () => {
  let alice: TestAccount
  let bob: TestAccount

  beforeAll(async () => {
    alice = workspace.account('alice')
    bob = workspace.account('bob')
    await Promise.all([alice.register(), bob.register()])
  }, E2E_GUARD_MS)

  it('registers accounts into private files and shows the server certificate on first contact', async () => {
    const carol = workspace.account('carol')
    const result = await carol.run(['register', carol.username])
    expect(result.code).toBe(0)
    expect(result.stdout).toBe(`registered ${carol.username} on ${server.origin}\n`)
    expect(result.stderr).toMatch(
      /first connection to .*SHA-256 fingerprint is ([0-9A-F]{2}:){31}[0-9A-F]{2}/,
    )
    expect(statSync(carol.databaseFile).mode & 0o777).toBe(0o600)
    // Later runs know the certificate and stay quiet about it.
    const again = await carol.run(['verify', alice.username])
    expect(again.stderr).not.toContain('fingerprint')
    // A name that is taken is refused by the server and leaves no local file behind.
    const taken = workspace.account('dup')
    const refused = await taken.run(['register', alice.username])
    expect(refused.code).toBe(ExitCode.ServerRefused)
    expect(refused.stderr.split('\n').at(-2)).toBe(
      'secure-chat: POST /register: expected an unused username, got one already registered',
    )
    expect(() => statSync(taken.databaseFileOf(alice.username))).toThrow()
  })

  it('exchanges messages both ways', async () => {
    await alice.send(bob, 'hello bob')
    const atBob = await bob.read()
    expect(atBob).toEqual([
      expect.objectContaining({
        from: alice.username,
        text: 'hello bob',
        verified: false,
        identityChanged: false,
      }),
    ])
    expect(atBob[0]?.id).toMatch(/^[A-Za-z0-9_-]{22}$/)
    expect(atBob[0]?.receivedAt).toBeGreaterThanOrEqual(atBob[0]?.sentAt ?? 0)

    await bob.send(alice, 'hello alice, 👋 from bob')
    const plain = await alice.ok(['read'])
    expect(plain.stdout).toMatch(
      new RegExp(`^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} ${bob.username}: hello alice, 👋 from bob\\n$`),
    )
  })

  it('delivers ten messages sent while the recipient was offline, in order, exactly once', async () => {
    // bob is not running: every message waits in the server's queue.
    for (let i = 1; i <= 10; i++) await alice.send(bob, `offline message ${i}`)
    const first = await bob.read()
    expect(first.map((line) => line.text)).toEqual(
      Array.from({ length: 10 }, (_, i) => `offline message ${i + 1}`),
    )
    expect(new Set(first.map((line) => line.id)).size).toBe(10)
    expect(await bob.read()).toEqual([])
  })

  it('keeps history and sessions across restarts, and delivery receipts reach the sender', async () => {
    const before = await oneTimePreKeysLeft(bob.username)
    await alice.send(bob, 'after a restart')
    // The stored session was used again: no new prekey bundle (and one-time prekey) was claimed.
    expect(await oneTimePreKeysLeft(bob.username)).toBe(before)
    expect((await bob.read()).map((line) => line.text)).toEqual(['after a restart'])
    // Alice's next connection collects bob's receipts.
    expect(await alice.read()).toEqual([])

    const client = await openInProcess(alice)
    try {
      const history = await client.history(bob.username, { limit: 100 })
      const texts = history.map((message) => `${message.direction}:${message.text}`)
      expect(texts).toEqual([
        'out:hello bob',
        'in:hello alice, 👋 from bob',
        ...Array.from({ length: 10 }, (_, i) => `out:offline message ${i + 1}`),
        'out:after a restart',
      ])
      expect(
        history.filter((message) => message.direction === 'out').map((message) => message.state),
      ).toEqual(Array(12).fill('delivered'))
      expect((await client.contact(bob.username))?.unread).toBe(0)
    } finally {
      await client.close()
    }
  })

  it('leaves no message text and no password readable in the database files', async () => {
    // Everything alice and bob wrote so far, in both directions.
    const texts = [
      'hello bob',
      'hello alice, 👋 from bob',
      ...Array.from({ length: 10 }, (_, i) => `offline message ${i + 1}`),
      'after a restart',
    ]
    for (const account of [alice, bob]) {
      const files = ['', '-wal', '-journal']
        .map((suffix) => `${account.databaseFile}${suffix}`)
        .filter((file) => existsSync(file))
      const stolen = Buffer.concat(files.map((file) => readFileSync(file)))
      expect(files[0]).toBe(account.databaseFile)
      // The search finds what is stored in the clear (the account's name, for choosing the file).
      expect(revealedIn(stolen, account.username)).toBe(true)
      for (const secret of [...texts, account.password]) {
        expect(revealedIn(stolen, secret), `${secret} in ${account.username}'s database`).toBe(false)
      }
    }
  })

  it('filters by sender and waits for a message with --wait', async () => {
    const carol = workspace.account('carol')
    await carol.register()
    await carol.send(bob, 'from carol')
    await alice.send(bob, 'from alice')
    expect((await bob.read(['--from', carol.username])).map((line) => line.text)).toEqual(['from carol'])
    expect((await bob.read()).map((line) => line.text)).toEqual(['from alice'])

    // A reader waiting for up to a minute returns as soon as the message is there. A watcher
    // subscribed to bob's presence tells when the reader is connected, so the message is sent
    // while it waits.
    const watcher = await ChatClient.register(
      clientOptions(new MemoryStore()),
      workspace.username('watcher'),
      strongPassword(),
    )
    try {
      await watcher.addContact(bob.username)
      // bob writes to the watcher, which shares bob's presence with it (docs/protocol.md §13.4).
      await bob.ok(['send', watcher.username, 'hello watcher'])
      const readerOnline = new Promise<void>((resolve) => {
        watcher.events.on('presence', ({ username, online }) => {
          if (username === bob.username && online) resolve()
        })
      })
      watcher.connect()
      const waiting = bob.read(['--wait', '60'])
      await readerOnline
      await alice.send(bob, 'worth the wait')
      expect((await waiting).map((line) => line.text)).toEqual(['worth the wait'])
    } finally {
      await watcher.close()
    }
  })

  it('blocks and unblocks: nothing sent meanwhile arrives, the conversation stays, marked', async () => {
    const blocker = workspace.account('blocker')
    await blocker.register()
    await alice.send(blocker, 'before the block')
    expect((await blocker.read()).map((line) => line.text)).toEqual(['before the block'])

    const blocked = await blocker.ok(['block', alice.username])
    expect(blocked.stdout).toBe(
      `blocked ${alice.username}: the server drops their messages (they are not told) and hides your presence from them; the conversation stays\n`,
    )
    // alice is not told: the server accepts her message, and drops it.
    await alice.send(blocker, 'while blocked')
    expect(await blocker.read()).toEqual([])
    // Writing to someone you blocked is refused here, before anything is sent.
    const refused = await blocker.run(['send', alice.username, 'hello?'])
    expect(refused.code).toBe(ExitCode.Usage)
    expect(refused.stderr).toMatch(/blocked: unblock first/)
    const nobody = await blocker.run(['block', 'nobody-here-at-all'])
    expect(nobody.code).toBe(ExitCode.ServerRefused)
    const self = await blocker.run(['block', blocker.username])
    expect(self.code).toBe(ExitCode.Usage)

    expect((await blocker.ok(['unblock', alice.username])).stdout).toBe(`unblocked ${alice.username}\n`)
    await alice.send(blocker, 'after the unblock')
    expect((await blocker.read()).map((line) => line.text)).toEqual(['after the unblock'])

    // Blocked again: the contact record says so, and the conversation is all there.
    await blocker.ok(['block', alice.username])
    const client = await openInProcess(blocker)
    try {
      expect((await client.contact(alice.username))?.blocked).toBe(true)
      expect((await client.history(alice.username)).map((message) => message.text)).toEqual([
        'before the block',
        'after the unblock',
      ])
    } finally {
      await client.close()
    }
  })

  it('refuses a wrong password with exit code 3 and leaves the database file unchanged', async () => {
    const file = alice.databaseFile
    const before = sha256File(file)
    const result = await alice.run(['read'], { password: 'not the password at all' })
    expect(result.code).toBe(ExitCode.WrongPassword)
    expect(result.stderr).toBe('secure-chat: expected the password of this account, got another\n')
    expect(result.stdout).toBe('')
    expect(sha256File(file)).toBe(before)
  })

  it('reads the password from standard input when the environment has none', async () => {
    await alice.send(bob, 'password on stdin')
    const result = await bob.run(['read', '--json'], { password: null, stdin: `${bob.password}\n` })
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout).text).toBe('password on stdin')
    const none = await bob.run(['read'], { password: null })
    expect(none.code).toBe(ExitCode.Usage)
  })

  it('changes the password with `password`: the old one then opens nothing, the new one everything', async () => {
    const dave = workspace.account('dave')
    await dave.register()
    await alice.send(dave, 'kept across the change')
    const next = `${dave.password}-renewed`
    // A weak new password is refused before anything changes.
    const weak = await dave.run(['password'], { env: { SECURE_CHAT_NEW_PASSWORD: 'password1234' } })
    expect(weak.code).toBe(ExitCode.ServerRefused)
    expect(weak.stderr).toMatch(/hard to guess/)
    // Current and new as two piped lines, as a script would.
    const changed = await dave.run(['password', '--end-other-sessions'], {
      password: null,
      stdin: `${dave.password}\n${next}\n`,
    })
    expect(changed.code).toBe(0)
    expect(changed.stdout).toBe(
      `password changed for ${dave.username}, here and on the server; ${changed.stdout.match(/; (\d+) other/)?.[1]} other session(s) signed out\n`,
    )
    expect(changed.stdout).toMatch(/; \d+ other session/)
    expect(changed.stderr).toMatch(/re-sealing this device's data: (\d+)\/\1/)
    const old = await dave.run(['read'])
    expect(old.code).toBe(ExitCode.WrongPassword)
    const read = await dave.run(['read', '--json'], { password: next })
    expect(read.code).toBe(0)
    expect(JSON.parse(read.stdout).text).toBe('kept across the change')
    // The server took the new secret too: a fresh log-in (the stored session is dropped) works.
    const file = readFileSync(dave.databaseFile)
    expect(revealedIn(file, next)).toBe(false)
  })

  it('reports usage, unknown users and missing accounts with their exit codes', async () => {
    expect((await alice.run(['send', bob.username])).code).toBe(ExitCode.Usage)
    const unknown = await alice.run(['send', 'nobody-here-at-all', 'hi'])
    expect(unknown.code).toBe(ExitCode.ServerRefused)
    const stranger = workspace.account('stranger')
    const missing = await stranger.run(['read'])
    expect(missing.code).toBe(ExitCode.LocalDatabase)
    expect(missing.stderr).toContain('register one first')
    // Without --ca the self-signed test server is not trusted, over HTTPS and over the relay alike.
    const untrusted = await stranger.run(['register', stranger.username], { trustCa: false })
    expect(untrusted.code).toBe(ExitCode.Network)
    expect(untrusted.stderr).toContain('pass --ca <certificate.pem>')
    const untrustedRelay = await alice.run(['read'], { trustCa: false })
    expect(untrustedRelay.code).toBe(ExitCode.Network)
    expect(untrustedRelay.stderr).toContain('untrusted')
  })

  it("trusts the system's certificate store without --ca (SSL_CERT_FILE naming a bundle with the server's certificate)", async () => {
    const bundle = join(workspace.root, 'system-bundle.pem')
    writeFileSync(bundle, `${rootCertificates.slice(0, 3).join('\n')}\n${server.ca}`)
    const dave = workspace.account('dave')
    const system = { trustCa: false, env: { [SYSTEM_CA_FILE_ENV]: bundle } }
    // REST (register) and the relay (read waits until it caught up over the WebSocket).
    const registered = await dave.run(['register', dave.username], system)
    expect(registered.code, registered.stderr).toBe(0)
    await alice.send(dave, 'trusted through the system store')
    const read = await dave.run(['read', '--json'], system)
    expect(read.code, read.stderr).toBe(0)
    expect(JSON.parse(read.stdout).text).toBe('trusted through the system store')
    // The same bundle without the server's certificate is not enough.
    writeFileSync(bundle, rootCertificates.slice(0, 3).join('\n'))
    const untrusted = await dave.run(['read'], system)
    expect(untrusted.code).toBe(ExitCode.Network)
    expect(untrusted.stderr).toContain('untrusted')
  })

  it('prints a hostile message neutralised: no escape sequence, C1 control or bidi override reaches the terminal', async () => {
    // A link (OSC 8), a window title, a line erased and overwritten after a carriage return, a CSI
    // as a single C1 character, and a right-to-left override.
    const hostile =
      'see \u001b]8;;https://evil.example\u0007this\u001b]8;;\u0007\u001b]0;owned\u0007\rpay mallory\u001b[2K \u009b2J \u202Efdp.exe'
    await alice.send(bob, hostile)
    const plain = await bob.ok(['read'])
    expect(plain.stdout).toMatch(
      new RegExp(
        `^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d ${alice.username}: see \uFFFD\\]8;;https://evil.example\uFFFDthis\uFFFD\\]8;;\uFFFD\uFFFD\\]0;owned\uFFFD\\n    pay mallory\uFFFD\\[2K \uFFFD2J \uFFFDfdp.exe\\n$`,
      ),
    )
    await alice.send(bob, hostile)
    const json = await bob.ok(['read', '--json'])
    // Scripts get the exact text back; the line itself is safe to show in a terminal.
    expect(JSON.parse(json.stdout).text).toBe(hostile)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the controls are what must be absent
    expect(json.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/)
    expect(json.stdout).toContain('\\u009b2J \\u202efdp.exe')
  })

  it('marks verified only the safety number the user compared, given with --number', async () => {
    const atAlice = JSON.parse((await alice.ok(['verify', bob.username, '--json'])).stdout)
    const atBob = JSON.parse((await bob.ok(['verify', alice.username, '--json'])).stdout)
    expect(atAlice.safetyNumber).toMatch(/^\d{60}$/)
    expect(atAlice.groups).toHaveLength(12)
    expect(atBob.safetyNumber).toBe(atAlice.safetyNumber)
    expect(atAlice.verified).toBe(false)
    // --confirm alone would mark whatever number this run computed: refused, nothing marked.
    const blind = await alice.run(['verify', bob.username, '--confirm'])
    expect(blind.code).toBe(ExitCode.Usage)
    expect(blind.stderr).toContain('--confirm: expected the safety number you compared, with --number')
    // A number that differs (one digit off) is refused, and says what it means.
    const last = atAlice.safetyNumber.at(-1) === '0' ? '1' : '0'
    const wrong = `${atAlice.safetyNumber.slice(0, 59)}${last}`
    const mismatch = await alice.run(['verify', bob.username, '--confirm', '--number', wrong])
    expect(mismatch.code).toBe(ExitCode.SafetyNumberMismatch)
    expect(mismatch.stderr.split('\n').at(-2)).toBe(
      `secure-chat: verify: expected the safety number with ${bob.username}, got a different one (the first difference is in group 12): ${bob.username} was not marked as verified; if you copied it correctly, someone may be intercepting`,
    )
    const malformed = await alice.run(['verify', bob.username, '--confirm', '--number', '12345'])
    expect(malformed.code).toBe(ExitCode.Usage)
    expect(malformed.stderr).toContain('--number: expected 60 digits (spaces allowed), got 5 digits')
    expect(JSON.parse((await alice.ok(['verify', bob.username, '--json'])).stdout).verified).toBe(false)
    // The number as Bob reads it out, in its groups, is accepted.
    const confirmed = await alice.ok([
      'verify',
      bob.username,
      '--confirm',
      '--number',
      atBob.groups.join(' '),
    ])
    expect(confirmed.stdout).toContain(atAlice.groups.slice(0, 4).join(' '))
    expect(confirmed.stdout).toContain('marked as verified')
    expect(JSON.parse((await alice.ok(['verify', bob.username, '--json'])).stdout).verified).toBe(true)
  })
})

describe('starting over on a new device (reinstall)', { timeout: E2E_GUARD_MS }, () => {
  it('replaces the lost keys: contacts are warned and blocked until they accept, then reach the new device', async () => {
    const alice = workspace.account('alice')
    const bob = workspace.account('bob')
    await Promise.all([alice.register(), bob.register()])
    await alice.send(bob, 'hi bob, alice here')
    expect((await bob.read()).map((line) => line.text)).toEqual(['hi bob, alice here'])
    // Alice writes again while Bob is away, and he loses his disk before reading it.
    await alice.send(bob, 'sent to the old keys')
    rmSync(bob.dataDir, { recursive: true, force: true })

    // A password the server refuses changes nothing, here or there.
    const wrong = await bob.run(['reinstall', bob.username], { password: 'not bobs password at all' })
    expect(wrong.code).toBe(ExitCode.ServerRefused)
    // (The data directory went with the disk: the server's certificate is new to it again.)
    expect(wrong.stderr.split('\n').at(-2)).toBe(
      `secure-chat: reinstall: expected ${bob.username}'s password, got one the server refused (E2E_ERR_INVALID_CREDENTIALS: a wrong password, or no such user); nothing was changed, here or on the server`,
    )
    expect(() => statSync(bob.databaseFile)).toThrow()

    const started = await bob.ok(['reinstall', bob.username])
    expect(started.stdout).toContain(`started over as ${bob.username} on ${server.origin} with new keys`)
    expect(statSync(bob.databaseFile).mode & 0o777).toBe(0o600)
    // Now this device holds the account: starting over again is refused before any password.
    const again = await bob.run(['reinstall', bob.username], { password: null })
    expect(again.code).toBe(ExitCode.LocalDatabase)
    expect(again.stderr).toContain(`this device still holds ${bob.username}'s keys`)

    // The new device cannot read what was sent to the old keys, and says so.
    const hello = await bob.run(['send', alice.username, 'bob again, on a new device'])
    expect(hello.code, hello.stderr).toBe(0)
    expect(hello.stderr).toContain(`A message from ${alice.username} could not be decrypted`)
    // Reading lists the notice in the message's place, with its kind and the sentence as its text.
    expect(await bob.read()).toEqual([
      expect.objectContaining({
        from: alice.username,
        kind: 'undecryptable',
        text: `A message from ${alice.username} could not be decrypted. Asked ${alice.username} to send it again.`,
      }),
    ])

    // Alice sees the new key with a warning, and cannot send to it until she accepts it.
    const read = await alice.run(['read', '--json'])
    expect(read.code).toBe(0)
    expect(JSON.parse(read.stdout)).toMatchObject({
      from: bob.username,
      text: 'bob again, on a new device',
      identityChanged: true,
    })
    expect(read.stderr).toContain(`${bob.username}'s identity key changed`)
    const refused = await alice.run(['send', bob.username, 'is that you?'])
    expect(refused.code).toBe(ExitCode.IdentityChanged)
    expect(refused.stderr).toContain('identity')
    const accepted = await alice.ok(['accept-key', bob.username])
    expect(accepted.stdout).toContain(`accepted ${bob.username}'s new identity key`)
    await alice.send(bob, 'welcome back')
    // Accepting the key also answered bob's request to send again what reached his old keys. Bob
    // had read the notice, so the message arrives unread (the notice gives way to it), before the
    // new one: a script reading unread messages misses neither.
    expect((await bob.read()).map((line) => [line.kind, line.text])).toEqual([
      ['text', 'sent to the old keys'],
      ['text', 'welcome back'],
    ])
  })
})

describe('deleting an account (delete-account)', { timeout: E2E_GUARD_MS }, () => {
  it('needs the typed name and the password, deletes it there and here, and its contact is told', async () => {
    const alice = workspace.account('alice')
    const bob = workspace.account('bob')
    await Promise.all([alice.register(), bob.register()])
    await alice.send(bob, 'hi bob')
    expect((await bob.read()).map((line) => line.text)).toEqual(['hi bob'])

    // Another name is refused before the password is asked for; a wrong password changes nothing.
    const mistyped = await bob.run(['delete-account', alice.username, '--user', bob.username], {
      password: null,
    })
    expect(mistyped.code).toBe(ExitCode.Usage)
    expect(mistyped.stderr).toContain(`expected the name of the account to delete (${bob.username})`)
    // (The local database opens only with the password, so a wrong one stops there.)
    const before = sha256File(bob.databaseFile)
    const wrong = await bob.run(['delete-account', bob.username], { password: 'not bobs password at all' })
    expect(wrong.code).toBe(ExitCode.WrongPassword)
    expect(sha256File(bob.databaseFile)).toBe(before)
    expect((await bob.read()).map((line) => line.text)).toEqual([])

    const deleted = await bob.ok(['delete-account', bob.username.toUpperCase()])
    expect(deleted.stdout).toContain(`deleted ${bob.username} on ${server.origin}`)
    for (const suffix of ['', '-wal', '-shm'])
      expect(() => statSync(`${bob.databaseFile}${suffix}`)).toThrow()
    const gone = await bob.run(['read'])
    expect(gone.code).toBe(ExitCode.LocalDatabase)

    // Alice's next send is refused with the clear reason, and her history stays, marked.
    const refused = await alice.run(['send', bob.username, 'still there?'])
    expect(refused.code).toBe(ExitCode.ServerRefused)
    expect(refused.stderr).toMatch(/deleted/)
    const read = await alice.run(['read'])
    expect(read.code).toBe(0)
    expect(read.stderr).toContain(`${bob.username} deleted their account. This conversation stays here`)

    // Nobody can register the name now.
    const impostor = new TestAccount(workspace, bob.username, bob.password, join(workspace.root, 'impostor'))
    const taken = await impostor.run(['register', bob.username])
    expect(taken.code).toBe(ExitCode.ServerRefused)
    expect(taken.stderr).toContain('deleted account')
  })
})

describe('the local database', { timeout: E2E_GUARD_MS }, () => {
  it('is refused while another process has it open', async () => {
    const erin = workspace.account('erin')
    await erin.register()
    const store = await openSqliteStore(erin.databaseFile)
    try {
      const result = await erin.run(['read'])
      expect(result.code).toBe(ExitCode.LocalDatabase)
      expect(result.stderr).toContain('in use by another secure-chat process')
    } finally {
      await store.close()
    }
  })

  it('is neither made nor opened with the test-only key derivation outside a test run', async () => {
    const outsideTests = { [TEST_RUN_ENV]: '' }
    // Asked for weak key derivation, a run that is not a test refuses before making anything.
    const grace = workspace.account('grace')
    const refused = await grace.run(['register', grace.username], { env: outsideTests })
    expect(refused.code).toBe(ExitCode.Usage)
    expect(refused.stderr).toContain(
      `${TEST_KDF_ITERATIONS_ENV}: expected it unset outside the test suite, got "${TEST_KDF_ITERATIONS}"`,
    )
    expect(existsSync(grace.dataDir)).toBe(false)
    // An account the tests made weakly cannot be unlocked by such a run either, with or without
    // the variable, and its file stays as it was.
    await grace.register()
    const before = sha256File(grace.databaseFile)
    const withVariable = await grace.run(['read'], { env: outsideTests })
    expect(withVariable.code).toBe(ExitCode.Usage)
    expect(withVariable.stderr).toContain('expected it unset outside the test suite')
    const withoutVariable = await grace.run(['read'], {
      env: { ...outsideTests, [TEST_KDF_ITERATIONS_ENV]: '' },
    })
    expect(withoutVariable.code).not.toBe(0)
    expect(withoutVariable.stderr).toContain(
      `expected at least ${STORAGE_KEY_MIN_ITERATIONS} iterations, got ${TEST_KDF_ITERATIONS}`,
    )
    expect(sha256File(grace.databaseFile)).toBe(before)
  })

  it('is refused, untouched, when it is not a secure-chat database', async () => {
    const frank = workspace.account('frank')
    await frank.register()
    rmSync(frank.databaseFile)
    writeFileSync(frank.databaseFile, 'not a database, but precious\n')
    const before = sha256File(frank.databaseFile)
    const result = await frank.run(['read'])
    expect(result.code).toBe(ExitCode.LocalDatabase)
    expect(result.stderr).toContain('is not SQLite')
    expect(sha256File(frank.databaseFile)).toBe(before)
  })
})
