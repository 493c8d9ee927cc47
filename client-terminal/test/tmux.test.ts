/**
 * The real interactive Ink client in a real terminal: tmux runs it against the real server, the
 * test types into it (send-keys) and reads the screen (capture-pane). The other side of the chat
 * is the non-interactive CLI. Waits poll the screen for what should appear; the guard below only
 * turns a hang into a failure that shows the last screen.
 *
 * tmux is required: without it this test fails (it does not skip); .ci/run installs it.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from '../../server/test/harness.js'
import { TEST_KDF_ITERATIONS_ENV, TEST_RUN_ENV } from '../accounts.js'
import { binScript, repositoryRoot, TEST_KDF_ITERATIONS, TestWorkspace } from './e2e-helpers.js'

const run = promisify(execFile)
/** Failure guard for one expected screen; far above what any step takes. */
const SCREEN_GUARD_MS = 60_000
const POLL_MS = 100

const socket = `secure-chat-test-${process.pid}`
const session = 'chat'

async function tmux(...args: string[]): Promise<string> {
  const { stdout } = await run('tmux', ['-L', socket, ...args], {
    env: { ...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
  })
  return stdout
}

async function tmuxAvailable(): Promise<boolean> {
  try {
    await run('tmux', ['-V'])
    return true
  } catch {
    return false
  }
}

function screen(): Promise<string> {
  return tmux('capture-pane', '-p', '-t', session)
}

/** Polls the screen until `expected` shows (a string or a pattern). */
async function waitForScreen(expected: string | RegExp): Promise<string> {
  const guard = Date.now() + SCREEN_GUARD_MS
  let last = ''
  for (;;) {
    last = await screen()
    if (typeof expected === 'string' ? last.includes(expected) : expected.test(last)) return last
    if (Date.now() > guard) throw new Error(`expected the screen to show ${String(expected)}, got:\n${last}`)
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

async function typeLine(text: string): Promise<void> {
  await tmux('send-keys', '-t', session, '-l', text)
  await tmux('send-keys', '-t', session, 'Enter')
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`
}

let server: TestServer
let workspace: TestWorkspace

beforeAll(async () => {
  if (!(await tmuxAvailable())) {
    throw new Error(
      'tmux is required by the interactive end-to-end test and was not found: install it (apt-get install -y tmux); .ci/run does',
    )
  }
  server = await startServer()
  workspace = new TestWorkspace(server.origin, server.ca)
})

afterAll(async () => {
  await tmux('kill-server').catch(() => undefined)
  await server?.close()
  workspace?.dispose()
})

describe('the interactive client in tmux', () => {
  it('logs in, opens a chat, sends, and sees the delivery and the reply', async () => {
    const alice = workspace.account('alice')
    const bob = workspace.account('bob')
    await Promise.all([alice.register(), bob.register()])

    const command = [
      'node',
      binScript,
      '--server',
      server.origin,
      '--ca',
      workspace.caFile,
      '--data-dir',
      alice.dataDir,
    ]
      .map(shellQuote)
      .join(' ')
    // The shell stays after the client exits, so its exit status can be read from the screen.
    await tmux(
      'new-session',
      '-d',
      '-s',
      session,
      '-x',
      '120',
      '-y',
      '40',
      '-c',
      repositoryRoot,
      '-e',
      `${TEST_RUN_ENV}=true`,
      '-e',
      `${TEST_KDF_ITERATIONS_ENV}=${TEST_KDF_ITERATIONS}`,
      '-e',
      'LANG=C.UTF-8',
      `${command}; echo "client exited with $?"; sleep 600`,
    )

    await waitForScreen(`Accounts here: ${alice.username}`)
    // The input line shows its "> " once it takes keystrokes.
    await waitForScreen('> a /command')
    await typeLine('/login')
    await waitForScreen(`Password for ${alice.username}:`)
    await tmux('send-keys', '-t', session, '-l', alice.password)
    const masked = await waitForScreen('*'.repeat(alice.password.length))
    expect(masked).not.toContain(alice.password)
    await tmux('send-keys', '-t', session, 'Enter')
    await waitForScreen('● online')
    await waitForScreen('> a /command')

    await typeLine(`/chat ${bob.username}`)
    await waitForScreen(`Conversation with ${bob.username}`)
    await typeLine('hello from tmux')
    await waitForScreen(/\d\d:\d\d you: hello from tmux ✓/)

    expect((await bob.read()).map((line) => line.text)).toEqual(['hello from tmux'])
    await bob.send(alice, 'reply from bob')
    const final = await waitForScreen(new RegExp(`\\d\\d:\\d\\d ${bob.username}: reply from bob`))
    // bob's read sent a receipt: the first message is now delivered.
    await waitForScreen('you: hello from tmux ✓✓')
    expect(final).not.toContain(alice.password)

    // ↑ recalls the last line typed; the command line is not a place passwords pass through.
    await tmux('send-keys', '-t', session, 'Up')
    await waitForScreen('> hello from tmux')
    await tmux('send-keys', '-t', session, 'C-u')
    await tmux('send-keys', '-t', session, 'Down')

    await typeLine('/quit')
    await waitForScreen('client exited with 0')
  }, 300_000)
})
