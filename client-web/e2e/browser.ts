/**
 * Browser-test helpers: Debian's Chromium through playwright-core, one persistent profile (a fresh
 * --user-data-dir) per simulated device so IndexedDB and the service worker survive closing and
 * reopening it, trusting the test server's self-signed certificate by its public key only.
 *
 * No helper bounds anything by wall-clock time: Playwright's timeouts are switched off and the
 * test's own timeout is the one failure guard. To find where a hanging test waits, run it with
 * E2E_ACTION_TIMEOUT_MS=20000: Playwright then fails the stuck step with its locator. Under
 * CI=true that is on by default at CI_ACTION_TIMEOUT_MS, below the test's own timeout: a step
 * that hangs there (it happened, and never here) is then named in the failure instead of the
 * test only timing out.
 */
import { createHash, X509Certificate } from 'node:crypto'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type BrowserContext, chromium, type Locator, type Page } from 'playwright-core'
import { chromiumArgs } from '../../vitest.config.js'

/**
 * Playwright's bound on one step in CI (see above): well below the web-e2e project's 180 s test
 * timeout (vitest.config.ts), far above any step's time on a loaded machine (seconds).
 */
export const CI_ACTION_TIMEOUT_MS = 120_000

export function chromiumPath(): string {
  return process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
}

export const SCREENSHOT_DIR = fileURLToPath(new URL('../../test-artifacts/screenshots/', import.meta.url))

/** Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, for --ignore-certificate-errors-spki-list. */
export function spkiSha256(certificatePem: string): string {
  const spki = new X509Certificate(certificatePem).publicKey.export({ type: 'spki', format: 'der' })
  return createHash('sha256').update(spki).digest('base64')
}

export const PHONE = { width: 390, height: 844 }
export const DESKTOP = { width: 1280, height: 800 }

/**
 * Messages Chromium logs that are expected. TypeBox (the core's schema library) probes once
 * whether it may compile validators with `new Function`; the CSP refuses, as it should, and TypeBox
 * falls back to interpreting the schemas.
 */
const EXPECTED_CONSOLE_ERRORS = [/Refused to evaluate a string as JavaScript because 'unsafe-eval'/]

export interface DeviceOptions {
  readonly viewport?: { width: number; height: number }
  readonly deviceScaleFactor?: number
}

export class Device {
  context!: BrowserContext
  page!: Page
  /** Uncaught page errors and unexpected console errors, for the tests to assert on. */
  readonly errors: string[] = []
  /** Console warnings, for diagnostics when a test fails (never asserted on). */
  readonly warnings: string[] = []
  /** The last console messages of every kind and the page's socket events, for a failed test's report. */
  private readonly recent: string[] = []
  private readonly pending = new Set<string>()
  /** Set by `start`: the server's origin, its certificate's key hash, and the profile directory. */
  private origin = ''
  private spki = ''
  private dir = ''

  /** A device whose browser is not started yet: `start` opens it on a server. */
  constructor(
    readonly name: string,
    private readonly options: DeviceOptions = {},
  ) {}

  static async open(name: string, server: { origin: string; ca: string }, options: DeviceOptions = {}) {
    const device = new Device(name, options)
    await device.start(server)
    return device
  }

  /** Makes a fresh profile and starts the browser on it, trusting `server`. */
  async start(server: { origin: string; ca: string }): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `secure-chat-web-${this.name}-`))
    this.origin = server.origin
    this.spki = spkiSha256(server.ca)
    await this.launch()
  }

  private async launch(): Promise<void> {
    this.context = await chromium.launchPersistentContext(this.dir, {
      executablePath: chromiumPath(),
      headless: true,
      args: [...chromiumArgs, `--ignore-certificate-errors-spki-list=${this.spki}`],
      viewport: this.options.viewport ?? DESKTOP,
      deviceScaleFactor: this.options.deviceScaleFactor ?? 1,
      locale: 'en-GB',
      timezoneId: 'Europe/London',
      serviceWorkers: 'allow',
    })
    const diagnosticTimeout = Number(
      process.env.E2E_ACTION_TIMEOUT_MS ?? (process.env.CI === 'true' ? CI_ACTION_TIMEOUT_MS : 0),
    )
    this.context.setDefaultTimeout(diagnosticTimeout)
    this.context.setDefaultNavigationTimeout(diagnosticTimeout)
    // Lets a test pretend the tab is in the background (headless pages are always "visible").
    await this.context.addInitScript(() => {
      const real = Object.getOwnPropertyDescriptor(Document.prototype, 'visibilityState')
      Object.defineProperty(Document.prototype, 'visibilityState', {
        configurable: true,
        get(this: Document) {
          return (window as { __e2eHidden?: boolean }).__e2eHidden ? 'hidden' : real?.get?.call(this)
        },
      })
    })
    this.page = this.context.pages()[0] ?? (await this.context.newPage())
    this.watch(this.page)
  }

  /** Puts the page in the background (or brings it back), as switching tabs would. */
  async setHidden(hidden: boolean): Promise<void> {
    await this.page.evaluate((value) => {
      ;(window as { __e2eHidden?: boolean }).__e2eHidden = value
      document.dispatchEvent(new Event('visibilitychange'))
    }, hidden)
  }

  private watch(page: Page): void {
    page.on('pageerror', (error) => this.errors.push(`pageerror: ${error.message}`))
    const remember = (line: string): void => {
      this.recent.push(`${new Date().toISOString().slice(11, 23)} ${line}`)
      if (this.recent.length > 100) this.recent.shift()
    }
    page.on('websocket', (socket) => {
      remember(`websocket open ${socket.url()}`)
      socket.on('close', () => remember(`websocket closed ${socket.url()}`))
      socket.on('socketerror', (error) => remember(`websocket error ${error}`))
      // Frame types only (the payloads are ciphertext and ids): whether a delivery reached the page.
      const frameType = (payload: string | Buffer): string =>
        /"type":"([^"]+)"/.exec(payload.toString().slice(0, 200))?.[1] ?? '?'
      socket.on('framereceived', ({ payload }) => remember(`frame in ${frameType(payload)}`))
      socket.on('framesent', ({ payload }) => remember(`frame out ${frameType(payload)}`))
    })
    // Requests still unanswered when a test fails: a fetch that never settles stalls whatever awaits it.
    page.on('request', (request) => this.pending.add(`${request.method()} ${request.url()}`))
    const settled = (request: { method(): string; url(): string }) =>
      this.pending.delete(`${request.method()} ${request.url()}`)
    page.on('requestfinished', settled)
    page.on('requestfailed', (request) => {
      settled(request)
      remember(`request failed ${request.method()} ${request.url()}: ${request.failure()?.errorText}`)
    })
    page.on('console', (message) => {
      remember(`console.${message.type()}: ${message.text()}`)
      if (message.type() === 'warning') this.warnings.push(message.text())
      if (message.type() !== 'error') return
      const text = message.text()
      if (EXPECTED_CONSOLE_ERRORS.some((pattern) => pattern.test(text))) return
      this.errors.push(`console: ${text}`)
    })
  }

  /** Navigates to a path of the app (default: the start page). */
  async goto(path = '/'): Promise<void> {
    await this.page.goto(new URL(path, this.origin).href)
  }

  /** Closes the browser; the profile stays for `reopen`. */
  async close(): Promise<void> {
    await this.context.close()
  }

  /** Starts the browser again on the same profile (IndexedDB, service worker and caches kept). */
  async reopen(): Promise<void> {
    await this.launch()
  }

  /**
   * What this browser shows and has logged, for a failed test's report: the page's address, its
   * accessibility tree (through shadow roots), warnings and errors. Never throws.
   */
  async describe(): Promise<string> {
    const lines = [`--- device ${this.name} ---`]
    try {
      if (this.context.pages().length === 0) return [...lines, '(browser closed)'].join('\n')
      lines.push(`url: ${this.page.url()}`)
      lines.push(`hidden: ${await this.page.evaluate(() => document.visibilityState)}`)
      lines.push(await this.page.locator('body').ariaSnapshot({ timeout: 5_000 }))
    } catch (error) {
      lines.push(`(could not read the page: ${error instanceof Error ? error.message : String(error)})`)
    }
    lines.push(
      `errors: ${JSON.stringify(this.errors)}`,
      `requests unanswered: ${JSON.stringify([...this.pending])}`,
      'recent events:',
      ...this.recent,
    )
    return lines.join('\n')
  }

  async dispose(): Promise<void> {
    await this.context.close().catch(() => undefined)
    await rm(this.dir, { recursive: true, force: true })
  }

  async screenshot(name: string): Promise<void> {
    await mkdir(SCREENSHOT_DIR, { recursive: true })
    // Let fonts and the last layout pass settle: two animation frames.
    await this.page.evaluate(
      () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))),
    )
    await this.page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`) })
  }
}

/** Polls until `condition` holds; the test's timeout is the failure guard. */
export async function waitFor(condition: () => Promise<boolean> | boolean, intervalMs = 50): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, intervalMs))
}

// --- The app, as a user drives it (by role and label, like assistive technology) ----------------

export function passwordField(page: Page): Locator {
  return page.getByLabel('Password', { exact: true })
}

export async function register(device: Device, username: string, password: string): Promise<void> {
  const page = device.page
  const create = page.getByRole('button', { name: 'Create an account' })
  await page.getByRole('button', { name: /^(Register|Log in)$/ }).waitFor()
  if (await create.isVisible()) await create.click()
  await page.getByLabel('Username').fill(username)
  await passwordField(page).fill(password)
  await page.getByRole('button', { name: 'Register', exact: true }).click()
  await page.getByRole('heading', { name: 'Chats', level: 1 }).waitFor()
}

export async function logIn(device: Device, username: string, password: string): Promise<void> {
  const page = device.page
  await page.getByRole('button', { name: 'Log in', exact: true }).waitFor()
  await page.getByLabel('Username').fill(username)
  await passwordField(page).fill(password)
  await page.getByRole('button', { name: 'Log in', exact: true }).click()
}

/** Finds `peer` through the search field and opens the conversation. */
export async function startChat(device: Device, peer: string): Promise<void> {
  const page = device.page
  await page.getByLabel('Search').fill(peer)
  await page.getByRole('button', { name: `Start a chat with ${peer}`, exact: true }).click()
  await page.getByRole('heading', { name: peer, level: 2 }).waitFor()
}

/** The contact list's button for `username` (a conversation, or a search result). */
export function contactButton(device: Device, username: string): Locator {
  return device.page.locator(`sc-contact-list button.contact[data-username="${username}"]`)
}

/** Opens an existing conversation from the contact list. */
export async function openChat(device: Device, peer: string): Promise<void> {
  await contactButton(device, peer).click()
  await device.page.getByRole('heading', { name: peer, level: 2 }).waitFor()
}

export async function send(device: Device, text: string): Promise<void> {
  const field = device.page.getByLabel('Message', { exact: true })
  await field.fill(text)
  await field.press('Enter')
  // Sent once the composer has been cleared.
  await waitFor(async () => (await field.inputValue()) === '')
}

/** The texts of the message bubbles in the DOM, in order, with their direction. */
export async function bubbles(device: Device): Promise<{ direction: 'in' | 'out'; text: string }[]> {
  return device.page.locator('sc-message-list .message').evaluateAll((rows) =>
    rows.map((row) => ({
      direction: row.classList.contains('out') ? ('out' as const) : ('in' as const),
      text: row.querySelector('.text')?.textContent ?? '',
    })),
  )
}

export async function waitForBubbles(
  device: Device,
  count: number,
): Promise<{ direction: 'in' | 'out'; text: string }[]> {
  let current: { direction: 'in' | 'out'; text: string }[] = []
  await waitFor(async () => {
    current = await bubbles(device)
    return current.length >= count
  })
  return current
}

/** The state each outgoing bubble shows (sending, accepted, delivered), in order. */
export function outgoingStates(device: Device): Promise<string[]> {
  return device.page
    .locator('sc-message-list .message.out .state')
    .evaluateAll((marks) => marks.map((mark) => mark.classList[1] ?? ''))
}

/** Waits until every outgoing bubble shows `state` (sending, accepted, delivered). */
export async function waitForOutgoingState(device: Device, state: string): Promise<void> {
  await waitFor(async () => {
    const states = await outgoingStates(device)
    return states.length > 0 && states.every((value) => value === state)
  })
}

/**
 * Waits for the twelve groups of digits of the safety number named `name` (a group, found by its
 * label within `scope`: a page, or a dialog) and reads them.
 */
export async function safetyNumberGroups(scope: Page | Locator, name = 'Safety number'): Promise<string[]> {
  const number = scope.getByRole('group', { name })
  await waitFor(async () => (await number.locator('span').count()) === 12)
  return number.locator('span').allTextContents()
}

/** The control that has keyboard focus, through shadow roots, as "<role> <name>" (e.g. "textbox Username"). */
export function focusedControl(page: Page): Promise<string> {
  return page.evaluate(() => {
    let element = document.activeElement
    while (element?.shadowRoot?.activeElement) element = element.shadowRoot.activeElement
    if (!element || element === document.body) return 'none'
    const text = (value: string | null | undefined) => (value ?? '').replace(/\s+/g, ' ').trim()
    if (element instanceof HTMLInputElement || element instanceof HTMLTextAreaElement) {
      const role = element.type === 'checkbox' ? 'checkbox' : 'textbox'
      return `${role} ${text(element.getAttribute('aria-label') ?? element.labels?.[0]?.textContent)}`
    }
    return `${element.getAttribute('role') ?? element.localName} ${text(element.getAttribute('aria-label') ?? element.textContent)}`
  })
}

/** One IndexedDB record as stored: its database, object store, and every byte of its key and value. */
export interface StoredRecord {
  readonly database: string
  readonly store: string
  /**
   * The record flattened: each string (as UTF-8), number and byte array in its key and value, and
   * every base64 or base64url run found in those decoded again, so encoded plaintext shows too.
   */
  readonly chunks: Buffer[]
}

/**
 * Reads every record of every IndexedDB database of the page's origin, through a second
 * connection opened in the page (at the current version, so nothing is upgraded).
 */
export async function storedRecords(page: Page): Promise<StoredRecord[]> {
  const dumped = await page.evaluate(async () => {
    const base64 = (bytes: Uint8Array) => {
      let binary = ''
      for (const byte of bytes) binary += String.fromCharCode(byte)
      return btoa(binary)
    }
    const flatten = (value: unknown, out: string[]): void => {
      if (typeof value === 'string') out.push(base64(new TextEncoder().encode(value)))
      else if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
        out.push(base64(new TextEncoder().encode(String(value))))
      } else if (value instanceof ArrayBuffer) out.push(base64(new Uint8Array(value)))
      else if (ArrayBuffer.isView(value)) {
        out.push(base64(new Uint8Array(value.buffer, value.byteOffset, value.byteLength)))
      } else if (value instanceof Map) for (const entry of value) flatten(entry, out)
      else if (Array.isArray(value) || value instanceof Set) for (const item of value) flatten(item, out)
      else if (value instanceof Date) flatten(value.toISOString(), out)
      else if (value !== null && typeof value === 'object') {
        // A Blob or a CryptoKey would need its own reader: fail rather than search less than all.
        if (Object.getPrototypeOf(value) !== Object.prototype) {
          throw new Error(`expected plain data in IndexedDB, got a ${Object.prototype.toString.call(value)}`)
        }
        for (const [name, item] of Object.entries(value)) {
          flatten(name, out)
          flatten(item, out)
        }
      }
    }
    const records: { database: string; store: string; chunks: string[] }[] = []
    for (const { name } of await indexedDB.databases()) {
      if (!name) continue
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const request = indexedDB.open(name)
        request.onsuccess = () => resolve(request.result)
        request.onerror = () => reject(request.error)
      })
      try {
        for (const store of db.objectStoreNames) {
          const objects = db.transaction(store).objectStore(store)
          const [keys, values] = await Promise.all(
            [objects.getAllKeys(), objects.getAll()].map(
              (request) =>
                new Promise<unknown[]>((resolve, reject) => {
                  request.onsuccess = () => resolve(request.result)
                  request.onerror = () => reject(request.error)
                }),
            ),
          )
          values?.forEach((value, i) => {
            const chunks: string[] = []
            flatten(keys?.[i], chunks)
            flatten(value, chunks)
            records.push({ database: name, store, chunks })
          })
        }
      } finally {
        db.close()
      }
    }
    return records
  })
  return dumped.map(({ database, store, chunks }) => {
    const bytes = chunks.map((chunk) => Buffer.from(chunk, 'base64'))
    const decoded = bytes.flatMap((chunk) =>
      [...chunk.toString('latin1').matchAll(/[A-Za-z0-9+/_-]{16,}={0,2}/g)].map((run) =>
        Buffer.from(run[0].replace(/-/g, '+').replace(/_/g, '/'), 'base64'),
      ),
    )
    return { database, store, chunks: [...bytes, ...decoded] }
  })
}

/** The records in which `text` occurs, as UTF-8 or UTF-16 (either byte order), anywhere. */
export function recordsHolding(records: readonly StoredRecord[], text: string): StoredRecord[] {
  const needles = [
    Buffer.from(text, 'utf8'),
    Buffer.from(text, 'utf16le'),
    Buffer.from(text, 'utf16le').swap16(),
  ]
  return records.filter((record) =>
    record.chunks.some((chunk) => needles.some((needle) => chunk.includes(needle))),
  )
}
