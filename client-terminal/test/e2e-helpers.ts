/**
 * End-to-end helpers: the real CLI as child processes (`node client-terminal/bin.mjs`, what the
 * `secure-chat` command runs: main.ts from its bundle, rebuilt first when a source changed)
 * against the real server over TLS on loopback, each account in its own temporary data directory.
 * Child processes run asynchronously: the server lives in the test's own process and must keep
 * answering while they run.
 */
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SecureContext } from 'node:tls'
import { strongPassword } from '../../server/test/harness.js'
import type { ChatClientOptions } from '../../shared/client/chat-client.js'
import type { ClientStore } from '../../shared/client/store.js'
import { TEST_KDF_ITERATIONS_ENV, TEST_RUN_ENV } from '../accounts.js'
import { httpsClient, webSocketFactory } from '../transport.js'

export const repositoryRoot = join(import.meta.dirname, '..', '..')
export const binScript = join(repositoryRoot, 'client-terminal', 'bin.mjs')

/** PBKDF2 iterations for test accounts (production's 600,000 would cost ~0.5 s per unlock). */
export const TEST_KDF_ITERATIONS = '1000'

export interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export class TestWorkspace {
  readonly root = mkdtempSync(join(tmpdir(), 'secure-chat-e2e-'))
  readonly caFile: string
  private users = 0

  constructor(
    readonly origin: string,
    ca: string,
  ) {
    this.caFile = join(this.root, 'ca.pem')
    writeFileSync(this.caFile, ca)
  }

  /** A username no other test run uses. */
  username(prefix: string): string {
    this.users++
    return `${prefix}${process.pid}n${this.users}`
  }

  account(prefix: string): TestAccount {
    const username = this.username(prefix)
    return new TestAccount(this, username, strongPassword(), join(this.root, username))
  }

  dispose(): void {
    rmSync(this.root, { recursive: true, force: true })
  }
}

export interface RunOptions {
  readonly password?: string | null
  readonly stdin?: string
  readonly trustCa?: boolean
  /** More environment for the process (it gets only PATH, HOME and the test settings otherwise). */
  readonly env?: Record<string, string>
}

export class TestAccount {
  constructor(
    readonly workspace: TestWorkspace,
    readonly username: string,
    readonly password: string,
    readonly dataDir: string,
  ) {}

  /** Runs the CLI as this account (its data directory; the password in the environment unless given). */
  run(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
    return runCli(...this.invocation(args, options), options.stdin)
  }

  /** Starts the CLI as `run` does, for a test that reads its output while it runs. */
  start(args: readonly string[], options: RunOptions = {}): RunningCli {
    return startCli(...this.invocation(args, options), options.stdin)
  }

  private invocation(args: readonly string[], options: RunOptions): [string[], Record<string, string>] {
    const password = options.password === undefined ? this.password : options.password
    const ca = options.trustCa === false ? [] : ['--ca', this.workspace.caFile]
    return [
      [...args, '--server', this.workspace.origin, ...ca, '--data-dir', this.dataDir],
      {
        ...(password === null ? {} : { SECURE_CHAT_PASSWORD: password }),
        ...options.env,
      },
    ]
  }

  /** Runs the CLI and fails with its output unless it exits 0. */
  async ok(args: readonly string[]): Promise<CliResult> {
    const result = await this.run(args)
    if (result.code !== 0) {
      throw new Error(`secure-chat ${args.join(' ')} exited ${result.code}\n${result.stderr}${result.stdout}`)
    }
    return result
  }

  async register(): Promise<void> {
    await this.ok(['register', this.username])
  }

  async send(to: TestAccount, text: string): Promise<void> {
    await this.ok(['send', to.username, text])
  }

  async read(extra: readonly string[] = []): Promise<ReadLine[]> {
    const { stdout } = await this.ok(['read', '--json', ...extra])
    return stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as ReadLine)
  }

  get databaseFile(): string {
    return this.databaseFileOf(this.username)
  }

  /** Where this data directory keeps the database of account `username`. */
  databaseFileOf(username: string): string {
    const port = new URL(this.workspace.origin).port
    return join(this.dataDir, `127.0.0.1_${port}`, `${username}.sqlite`)
  }
}

export interface ReadLine {
  readonly from: string
  readonly id: string
  readonly kind: string
  readonly text: string
  readonly sentAt: number
  readonly receivedAt: number
  readonly verified: boolean
  readonly identityChanged: boolean
  readonly device: number
}

function childEnvironment(env: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    [TEST_RUN_ENV]: 'true',
    [TEST_KDF_ITERATIONS_ENV]: TEST_KDF_ITERATIONS,
    ...env,
  }
}

export function runCli(
  args: readonly string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [binScript, ...args],
      { cwd: repositoryRoot, env: childEnvironment(env), encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1
        resolve({ code, stdout, stderr })
      },
    )
    child.stdin?.end(stdin ?? '')
  })
}

/** A CLI process still running: lines of its standard output as soon as they are written, and its end. */
export interface RunningCli {
  /**
   * The first line of standard output that `pattern` matches (any line without one); rejects if
   * the process ends without writing one.
   */
  line(pattern?: RegExp): Promise<string>
  /** Sends SIGINT, as Ctrl+C at a terminal does. */
  interrupt(): void
  readonly done: Promise<CliResult>
}

export function startCli(args: readonly string[], env: Record<string, string>, stdin?: string): RunningCli {
  const child = spawn(process.execPath, [binScript, ...args], {
    cwd: repositoryRoot,
    env: childEnvironment(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  let ended: CliResult | undefined
  const waiting = new Set<() => void>()
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk
    for (const wake of waiting) wake()
  })
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk
  })
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code) => {
      ended = { code: code ?? 1, stdout, stderr }
      for (const wake of waiting) wake()
      resolve(ended)
    })
  })
  child.stdin.end(stdin ?? '')
  return {
    done,
    interrupt: () => child.kill('SIGINT'),
    line(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const lines = stdout.split('\n').slice(0, -1)
          const found = lines.find((line) => pattern?.test(line) ?? true)
          if (found !== undefined || ended) waiting.delete(check)
          if (found !== undefined) resolve(found)
          else if (ended) {
            reject(new Error(`secure-chat ended (${ended.code}) before the line\n${ended.stderr}${stdout}`))
          }
        }
        waiting.add(check)
        check()
      })
    },
  }
}

export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex')
}

/**
 * Whether `secret` can be read from `bytes` without a key: as UTF-8, UTF-16 (either byte order),
 * hex, or base64 / base64url at any of the three alignments a value can have inside a longer
 * encoded string.
 */
export function revealedIn(bytes: Buffer, secret: string): boolean {
  const plain = Buffer.from(secret, 'utf8')
  const forms: Buffer[] = [
    plain,
    Buffer.from(secret, 'utf16le'),
    Buffer.from(secret, 'utf16le').swap16(),
    Buffer.from(plain.toString('hex')),
    Buffer.from(plain.toString('hex').toUpperCase()),
  ]
  for (let offset = 0; offset < 3; offset++) {
    const shifted = Buffer.concat([Buffer.alloc(offset), plain])
    for (const encoding of ['base64', 'base64url'] as const) {
      const encoded = shifted.toString(encoding).replace(/=+$/, '')
      // Only the characters that depend on the secret alone: not the first group when it mixes in
      // the padding bytes, not the last group, which mixes in whatever follows.
      const inner = encoded.slice(offset === 0 ? 0 : 4, -4)
      if (inner.length >= 4) forms.push(Buffer.from(inner))
    }
  }
  return forms.some((form) => bytes.includes(form))
}

/**
 * Options for a client core in the test's own process, on the terminal's transport, trusting the
 * test server's certificate as the CLI does with its CA file, with the CLI tests' cheap KDF.
 */
export function inProcessClientOptions(
  server: { readonly origin: string },
  trust: SecureContext,
  store: ClientStore,
): ChatClientOptions {
  return {
    serverUrl: server.origin,
    http: httpsClient(server.origin, { trust }),
    webSocket: webSocketFactory({ trust }),
    store,
    storageKeyIterations: Number(TEST_KDF_ITERATIONS),
    minimumStorageKeyIterations: Number(TEST_KDF_ITERATIONS),
    loginSecretIterations: Number(TEST_KDF_ITERATIONS),
  }
}
