/**
 * The non-interactive commands for scripts: register, reinstall, send, read, history, verify,
 * accept-key, delete-account, password, block, unblock, devices, rename-device, remove-device.
 * Each opens the local account, does one thing, and exits with a code from exit-codes.ts; results
 * go to stdout (text, or JSON with --json), diagnostics to stderr as single lines.
 *
 * Commands that go online first catch up with the server (the core's `caught-up`: every queued
 * message stored and acknowledged), so nothing is left half-received, and before leaving give the
 * delivery receipts for what arrived a bounded moment to go out (`flush`; what does not is sent on
 * the next connection).
 */
import {
  accountDeletedText,
  type ChatClient,
  type ClientEvents,
  type ConnectionState,
  type DeliveryState,
  type DeviceView,
  type MessageKind,
  type MessageView,
  noticeText,
} from '../shared/client/chat-client.js'
import { ClientError, ClientErrorCode, isClientError } from '../shared/client/errors.js'
import { MAX_HISTORY_TRANSFER_BYTES } from '../shared/limits.js'
import {
  assertNoLocalAccount,
  type ClientSettings,
  chooseAccount,
  completeDeviceLink,
  ensureLoggedIn,
  kdfOverride,
  normalizedUsername,
  openAccount,
  registerAccount,
  reinstallAccount,
  removeLocalAccount,
  startDeviceLink,
} from './accounts.js'
import { type Invocation, USAGE } from './args.js'
import { describeCertificateNotice, KnownCertificates } from './certificates.js'
import { CommandError, describeFailure, ExitCode, exitCodeFor, UsageError } from './exit-codes.js'
import { readPassword, readPasswordChange } from './password.js'
import { accountFile, certificatesFile, dataDirectory, localAccounts } from './paths.js'
import { qrLines } from './qr-text.js'
import { askYesNo } from './question.js'
import { openSqliteStore, type SqliteStore, StoreFileError } from './store.js'
import { describeNetworkError, isCertificateError, parseServerUrl } from './transport.js'
import { trustContext, trustedCertificates } from './trust.js'
import {
  DELIVERY_MARKS,
  deviceLine,
  formatTimestamp,
  messageTime,
  safeText,
  safetyNumberRows,
  terminalJson,
} from './view.js'

/** Waiting for the relay to accept our login (the core gives up after this long). */
export const ONLINE_TIMEOUT_MS = 30_000
/** Waiting for the whole queued backlog to arrive and be stored. */
export const CATCH_UP_TIMEOUT_MS = 120_000
/** Waiting for the server to accept a sent message. */
export const ACCEPT_TIMEOUT_MS = 30_000
/** How long receipts for what arrived may take to go out before we leave (they are kept if not). */
export const RECEIPT_FLUSH_TIMEOUT_MS = 10_000
/** Messages read from history per step while collecting unread ones. */
const HISTORY_PAGE = 100

/**
 * How long `approve-link` waits for the approved device to finish linking before it sends the
 * history: the approval's link token lives 10 minutes (docs/protocol.md §13.8), so no later.
 */
const NEW_DEVICE_WAIT_MS = 10 * 60_000

/**
 * How long `link --history` waits for the first part of the history, and between parts: the other
 * device starts as soon as it sees this one linked (it asks every second).
 */
const HISTORY_FIRST_PART_WAIT_MS = 60_000

export interface CliIo {
  readonly stdin: NodeJS.ReadStream
  readonly stdout: { write(text: string): unknown }
  readonly stderr: { write(text: string): unknown }
  readonly env: NodeJS.ProcessEnv
}

interface CommandContext {
  readonly io: CliIo
  /** Whether standard output takes ANSI colours (a terminal, NO_COLOR unset): for the QR code. */
  readonly colorOutput: boolean
  /** Standard output as it is, for the QR code's colours (made here, nothing from elsewhere in it). */
  readonly rawStdout: { write(text: string): unknown }
  readonly settings: ClientSettings
  /** --user, or the environment's SECURE_CHAT_USER. */
  readonly user: string | undefined
  /** The first relay failure that retrying cannot cure (an untrusted certificate), if any. */
  readonly fatalRelayError: () => Error | undefined
}

type ScriptInvocation = Exclude<Invocation, { command: 'interactive' } | { command: 'help' }>

function warn(io: CliIo, text: string): void {
  io.stderr.write(`secure-chat: ${text}\n`)
}

/**
 * Settings shared by all commands (and the interactive client): server, trusted certificate
 * authorities (--ca, else the system's), data directory, and the test-only key derivation cost.
 * Everything is checked here, before any file is touched or any connection made.
 */
export function clientSettings(
  options: { server: string; ca: string | undefined; dataDir: string | undefined },
  env: NodeJS.ProcessEnv,
  extra: Pick<ClientSettings, 'onCertificate' | 'onSocketError'> = {},
): ClientSettings {
  let serverUrl: string
  try {
    serverUrl = parseServerUrl(options.server)
  } catch (error) {
    throw new UsageError(describeFailure(error))
  }
  return {
    serverUrl,
    trust: trustContext(trustedCertificates(options.ca, env)),
    dataDir: dataDirectory(options.dataDir, env),
    keyDerivation: kdfOverride(env),
    ...extra,
  }
}

/**
 * Standard output and error with everything written made safe to print (safe-text.ts, line breaks
 * kept). The commands print names, server messages and message text; whichever line quotes them,
 * nothing reaches the terminal raw. JSON lines come from terminalJson, which this leaves unchanged.
 */
export function printableIo(io: CliIo): CliIo {
  return {
    stdin: io.stdin,
    env: io.env,
    stdout: { write: (text: string) => io.stdout.write(safeText(text, { keepNewlines: true })) },
    stderr: { write: (text: string) => io.stderr.write(safeText(text, { keepNewlines: true })) },
  }
}

export async function runCli(invocation: Invocation, rawIo: CliIo): Promise<ExitCode> {
  const io = printableIo(rawIo)
  try {
    if (invocation.command === 'help') {
      io.stdout.write(`${USAGE}\n`)
      return ExitCode.Ok
    }
    if (invocation.command === 'interactive') throw new UsageError('interactive: expected a terminal command')
    let certificates: KnownCertificates | undefined
    let fatalRelayError: Error | undefined
    const settings = clientSettings(invocation.options, io.env, {
      onCertificate: (certificate) => {
        const notice = certificates?.observe(certificate)
        if (notice) warn(io, describeCertificateNotice(notice, settings.serverUrl))
      },
      // The core only sees the socket close and tries again, which never cures an untrusted certificate.
      onSocketError: (error) => {
        if (isCertificateError(error)) fatalRelayError ??= error
      },
    })
    certificates = new KnownCertificates(certificatesFile(settings.dataDir, settings.serverUrl))
    await COMMANDS[invocation.command](
      {
        io,
        colorOutput: (rawIo.stdout as { isTTY?: boolean }).isTTY === true && !rawIo.env.NO_COLOR,
        rawStdout: rawIo.stdout,
        settings,
        user: invocation.options.user,
        fatalRelayError: () => fatalRelayError,
      },
      invocation as never,
    )
    return ExitCode.Ok
  } catch (error) {
    const code = exitCodeFor(error)
    warn(
      io,
      `${describeFailure(error)}${code === ExitCode.DeviceRemoved ? removedDeviceHint(invocation) : ''}`,
    )
    return code
  }
}

/** What is left to do on a device removed from its account: read what is here, or erase it. */
function removedDeviceHint(invocation: Invocation): string {
  const user = (invocation.command === 'help' ? undefined : invocation.options.user) ?? '<user>'
  return ` (its conversations stay here to read with secure-chat history; secure-chat erase-local ${user} erases them)`
}

const COMMANDS: {
  [K in ScriptInvocation['command']]: (
    context: CommandContext,
    invocation: Extract<ScriptInvocation, { command: K }>,
  ) => Promise<void>
} = {
  register: registerCommand,
  reinstall: reinstallCommand,
  send: sendCommand,
  read: readCommand,
  history: historyCommand,
  verify: verifyCommand,
  'accept-key': acceptKeyCommand,
  'delete-account': deleteAccountCommand,
  password: passwordCommand,
  block: blockCommand,
  unblock: blockCommand,
  devices: devicesCommand,
  'rename-device': renameDeviceCommand,
  'remove-device': removeDeviceCommand,
  link: linkCommand,
  'approve-link': approveLinkCommand,
  'erase-local': eraseLocalCommand,
}

async function registerCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'register' }>,
): Promise<void> {
  const username = normalizedUsername(invocation.username)
  const password = await readPassword(context.io, { confirm: true })
  const client = await registerAccount(context.settings, username, password)
  await client.close()
  context.io.stdout.write(`registered ${username} on ${context.settings.serverUrl}\n`)
}

/**
 * Starting over on a device without the account's keys. Refused before asking for the password when
 * this data directory holds the account; a password the server refuses changes nothing anywhere.
 */
async function reinstallCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'reinstall' }>,
): Promise<void> {
  const username = normalizedUsername(invocation.username)
  assertNoLocalAccount(context.settings, username)
  const password = await readPassword(context.io)
  let client: ChatClient
  try {
    client = await reinstallAccount(context.settings, username, password)
  } catch (error) {
    if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_CREDENTIALS') {
      throw new CommandError(
        ExitCode.ServerRefused,
        `reinstall: expected ${username}'s password, got one the server refused (${error.serverCode}: a wrong password, or no such user); nothing was changed, here or on the server`,
      )
    }
    throw error
  }
  await client.close()
  context.io.stdout.write(
    `started over as ${username} on ${context.settings.serverUrl} with new keys: your contacts are told your safety number changed, and messages sent to the old keys are asked for again (they arrive once each sender accepts the new key)\n`,
  )
}

/** Opens the chosen account with the password from the environment or stdin. */
async function openChosenAccount(context: CommandContext): Promise<{ client: ChatClient; password: string }> {
  const username = chooseAccount(context.settings, context.user)
  const password = await readPassword(context.io)
  return { client: await openAccount(context.settings, username, password), password }
}

/** The core events after which `until` checks its condition again. */
const WAKING_EVENTS = [
  'connection',
  'caught-up',
  'message',
  'delivery',
  'problem',
] as const satisfies readonly (keyof ClientEvents)[]

/** Resolves true once `condition` holds, checked now and after every core event above; false after `timeoutMs`. */
function until(client: ChatClient, condition: () => boolean, timeoutMs: number): Promise<boolean> {
  if (condition()) return Promise.resolve(true)
  return new Promise((resolve) => {
    const check = () => {
      if (condition()) finish(true)
    }
    const stops = WAKING_EVENTS.map((event) => client.events.on(event, check))
    const timer = setTimeout(() => finish(false), timeoutMs)
    function finish(result: boolean): void {
      clearTimeout(timer)
      for (const stop of stops) stop()
      resolve(result)
    }
  })
}

/** Connects and waits until online, refused, or failed for good; the state reached. */
async function connectOnce(context: CommandContext, client: ChatClient): Promise<ConnectionState> {
  client.connect()
  // A socket error is followed by its close, which the core reports as a connection change.
  await until(
    client,
    () =>
      client.connection === 'online' ||
      client.connection === 'logged-out' ||
      context.fatalRelayError() !== undefined,
    ONLINE_TIMEOUT_MS,
  )
  const fatal = context.fatalRelayError()
  if (fatal) {
    throw new ClientError(ClientErrorCode.Network, describeNetworkError(context.settings.serverUrl, fatal))
  }
  return client.connection
}

/** Goes online (logging in again if the server refused the stored session) and stores the backlog. */
async function goOnline(context: CommandContext, client: ChatClient, password: string): Promise<void> {
  await ensureLoggedIn(client, password)
  let caughtUp = false
  const stop = client.events.on('caught-up', () => {
    caughtUp = true
  })
  try {
    let state = await connectOnce(context, client)
    if (state === 'logged-out') {
      // The server no longer knows the stored session: log in once more and reconnect.
      await client.login(password)
      state = await connectOnce(context, client)
    }
    if (state !== 'online') {
      throw new ClientError(
        ClientErrorCode.Network,
        `expected the relay of ${context.settings.serverUrl} within ${ONLINE_TIMEOUT_MS / 1000} s, got ${state === 'logged-out' ? 'a refused login' : 'no connection'}`,
      )
    }
    if (!(await until(client, () => caughtUp, CATCH_UP_TIMEOUT_MS))) {
      throw new ClientError(
        ClientErrorCode.Network,
        `expected the queued messages within ${CATCH_UP_TIMEOUT_MS / 1000} s, got only part of them`,
      )
    }
  } finally {
    stop()
  }
}

/** Reports messages that arrive and cannot be read; returns the function that stops. */
function reportUndecryptable(context: CommandContext, client: ChatClient): () => void {
  return client.events.on('undecryptable', ({ peer, reason, kind }) =>
    warn(context.io, `${noticeText({ kind, peer })} (${reason})`),
  )
}

/** Gives the outbox (delivery receipts for what arrived) a bounded moment to reach the server. */
async function flushReceipts(client: ChatClient): Promise<void> {
  try {
    await client.flush(RECEIPT_FLUSH_TIMEOUT_MS)
  } catch (error) {
    // Not accepted in time: the outbox keeps it for the next connection.
    if (!isClientError(error, ClientErrorCode.Network)) throw error
  }
}

async function sendCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'send' }>,
): Promise<void> {
  const peer = normalizedUsername(invocation.peer)
  const { client, password } = await openChosenAccount(context)
  // Recorded from the start, so an answer that comes before `send` returns is not missed.
  const states = new Map<string, DeliveryState>()
  const refusals = new Map<string, { code: string; message: string }>()
  const stops = [
    reportUndecryptable(context, client),
    client.events.on('delivery', ({ id, state }) => states.set(id, state)),
    client.events.on('problem', ({ id, code, message }) => {
      if (id !== undefined) refusals.set(id, { code, message })
    }),
  ]
  try {
    await goOnline(context, client, password)
    const message = await client.send(peer, invocation.text)
    // A refusal comes as a `problem` with the message's id (after the `failed` state, if final).
    const answered = await until(
      client,
      () =>
        refusals.has(message.id) ||
        states.get(message.id) === 'accepted' ||
        states.get(message.id) === 'delivered',
      ACCEPT_TIMEOUT_MS,
    )
    const refusal = refusals.get(message.id)
    if (refusal) {
      throw new CommandError(
        ExitCode.ServerRefused,
        `expected the server to accept the message, got ${refusal.code}: ${refusal.message}${
          refusal.code === 'E2E_ERR_USER_NOT_FOUND' || refusal.code === 'E2E_ERR_ACCOUNT_DELETED'
            ? ''
            : ' (it stays queued here and is sent again on the next connection)'
        }`,
      )
    }
    if (states.get(message.id) === 'failed') {
      throw new CommandError(
        ExitCode.ServerRefused,
        `expected the server to accept the message to ${peer}, got a refusal`,
      )
    }
    if (!answered) {
      throw new ClientError(
        ClientErrorCode.Network,
        `expected the server to accept the message within ${ACCEPT_TIMEOUT_MS / 1000} s, got no answer (it stays queued and is sent on the next connection)`,
      )
    }
    if (invocation.json) {
      context.io.stdout.write(
        `${terminalJson({ to: peer, id: message.id, sentAt: message.sentAt, state: 'accepted' })}\n`,
      )
    }
    await flushReceipts(client)
  } finally {
    for (const stop of stops) stop()
    await client.close()
  }
}

export interface ReadMessage {
  readonly from: string
  readonly id: string
  /**
   * "text" for a message; otherwise a notice in its place ("undecryptable", "outdated", "lost", "unreadable",
   * "unsupported"), whose `text` is the sentence that says what happened.
   */
  readonly kind: MessageKind
  readonly text: string
  /** The sender's clock when written (ms since the epoch). */
  readonly sentAt: number
  /** When the server first accepted it (ms since the epoch). */
  readonly receivedAt: number | undefined
  readonly verified: boolean
  /** The sender's identity key changed and the change is not yet accepted. */
  readonly identityChanged: boolean
  /** The sending device's id (1: the one that registered the account). */
  readonly device: number
}

/** A line of `read --json`: a message, or a notice in its place with its kind and sentence. */
export function readRecord(
  message: MessageView,
  contact: { readonly verified: boolean; readonly identityChanged: boolean },
): ReadMessage {
  return {
    from: message.peer,
    id: message.id,
    kind: message.kind,
    text: noticeText(message) ?? message.text,
    sentAt: message.sentAt,
    receivedAt: message.serverAt,
    verified: contact.verified,
    identityChanged: contact.identityChanged,
    device: message.device ?? 1,
  }
}

/**
 * A message as plain `read` prints it, "2026-11-25 14:05:09 bob: text" (a notice's sentence in
 * place of the text), later lines indented; made safe to print, the sender's name too.
 */
export function readLine(message: MessageView, timeZone?: string): string {
  return scriptLine(message, message.peer, '', timeZone)
}

/** "time author: text suffix", the text's later lines indented, everything made safe to print. */
function scriptLine(
  message: MessageView,
  author: string,
  suffix: string,
  timeZone: string | undefined,
): string {
  const text = safeText(noticeText(message) ?? message.text, { keepNewlines: true }).replace(/\n/g, '\n    ')
  return `${formatTimestamp(messageTime(message), timeZone)} ${safeText(author)}: ${text}${suffix}\n`
}

/** The newest `count` incoming messages from `peer`, oldest first. */
async function newestIncoming(client: ChatClient, peer: string, count: number): Promise<MessageView[]> {
  const found: MessageView[] = []
  let before: number | undefined
  while (found.length < count) {
    const page = await client.history(peer, {
      limit: HISTORY_PAGE,
      ...(before !== undefined ? { beforeOrder: before } : {}),
    })
    for (let i = page.length - 1; i >= 0 && found.length < count; i--) {
      const message = page[i] as MessageView
      if (message.direction === 'in') found.push(message)
    }
    if (page.length < HISTORY_PAGE) break
    before = (page[0] as MessageView).order
  }
  return found.reverse()
}

async function unreadCount(client: ChatClient, from: string | undefined): Promise<number> {
  const contacts = await client.contacts()
  return contacts
    .filter((contact) => from === undefined || contact.username === from)
    .reduce((sum, contact) => sum + contact.unread, 0)
}

async function readCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'read' }>,
): Promise<void> {
  const from = invocation.from === undefined ? undefined : normalizedUsername(invocation.from)
  const { client, password } = await openChosenAccount(context)
  let arrived = false
  const stops = [
    reportUndecryptable(context, client),
    client.events.on('message', (message) => {
      if (message.direction === 'in' && (from === undefined || message.peer === from)) arrived = true
    }),
  ]
  try {
    await goOnline(context, client, password)
    if (invocation.waitSeconds !== undefined && (await unreadCount(client, from)) === 0) {
      await until(client, () => arrived, invocation.waitSeconds * 1000)
    }
    await flushReceipts(client)
    // Offline before collecting: nothing arrives between counting the unread messages and listing them.
    await client.disconnect()

    const messages: { message: MessageView; verified: boolean; identityChanged: boolean }[] = []
    for (const contact of await client.contacts()) {
      if (contact.accountDeleted) warn(context.io, accountDeletedText(contact.username))
      if (contact.identityChanged) {
        warn(
          context.io,
          `${contact.username}'s identity key changed: compare safety numbers (secure-chat verify ${contact.username}), then accept it (secure-chat accept-key ${contact.username}); sending to ${contact.username} is blocked until then`,
        )
      }
      if (contact.unread === 0 || (from !== undefined && contact.username !== from)) continue
      for (const message of await newestIncoming(client, contact.username, contact.unread)) {
        messages.push({ message, verified: contact.verified, identityChanged: contact.identityChanged })
      }
    }
    messages.sort((a, b) => a.message.order - b.message.order)
    for (const { message, verified, identityChanged } of messages) {
      context.io.stdout.write(
        invocation.json
          ? `${terminalJson(readRecord(message, { verified, identityChanged }))}\n`
          : readLine(message),
      )
    }
    // Read up to the newest message printed from each sender, and no further.
    const newest = new Map<string, number>()
    for (const { message } of messages) newest.set(message.peer, message.order)
    for (const [peer, order] of newest) await client.markRead(peer, order)
    // Marking read tells our other devices (their unread counts clear too): sent before exiting.
    if (newest.size > 0 && (await client.hasUnsent())) {
      await goOnline(context, client, password)
      await flushReceipts(client)
    }
  } finally {
    for (const stop of stops) stop()
    await client.close()
  }
}

/**
 * A line of `history --json`. Where a field means what it means in `read --json` it has that name
 * (`from` is who wrote it: the contact, or this account for what it sent); `state` only for what
 * this account sent; `device` is the device that wrote it (the contact's, or which of this
 * account's). Scripts are told to ignore fields they do not know, so more can be added.
 */
export interface HistoryEntry {
  readonly direction: 'in' | 'out'
  readonly from: string
  readonly to: string
  readonly id: string
  readonly kind: MessageKind
  readonly text: string
  /** The writer's clock when written (ms since the epoch). */
  readonly sentAt: number
  /** When the server accepted it (ms since the epoch); unset while an outgoing one is still sending. */
  readonly receivedAt: number | undefined
  /** Outgoing only: sending, accepted (by the server), delivered (to the contact's device), failed. */
  readonly state?: Exclude<DeliveryState, 'received'>
  /** The writing device's id: the contact's, or this account's (another one for a sent copy). */
  readonly device: number
}

/** An entry of the conversation between `self` (this account) and `message.peer`, as `history --json` prints it. */
export function historyRecord(message: MessageView, self: string): HistoryEntry {
  const outgoing = message.direction === 'out'
  return {
    direction: message.direction,
    from: outgoing ? self : message.peer,
    to: outgoing ? message.peer : self,
    id: message.id,
    kind: message.kind,
    text: noticeText(message) ?? message.text,
    sentAt: message.sentAt,
    receivedAt: message.serverAt,
    ...(outgoing && message.state !== 'received' ? { state: message.state } : {}),
    device: message.device ?? 1,
  }
}

/**
 * An entry as plain `history` prints it: what arrived as `read` prints it, what this account sent
 * under its own name with the delivery mark the interactive client shows ("… ✓ ✓✓ ✗").
 */
export function historyLine(message: MessageView, self: string, timeZone?: string): string {
  if (message.direction === 'in') return readLine(message, timeZone)
  const mark = DELIVERY_MARKS[message.state]
  return scriptLine(message, self, mark === '' ? '' : ` ${mark}`, timeZone)
}

/**
 * The stored conversation with a user, the newest `count` entries oldest first. Local only: the
 * password unlocks the store, nothing connects, and nothing is marked read or written.
 */
async function historyCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'history' }>,
): Promise<void> {
  const peer = normalizedUsername(invocation.peer)
  const { client } = await openChosenAccount(context)
  try {
    for (const message of await client.history(peer, { limit: invocation.count })) {
      context.io.stdout.write(
        invocation.json
          ? `${terminalJson(historyRecord(message, client.username))}\n`
          : historyLine(message, client.username),
      )
    }
  } finally {
    await client.close()
  }
}

async function verifyCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'verify' }>,
): Promise<void> {
  const peer = normalizedUsername(invocation.peer)
  const { client, password } = await openChosenAccount(context)
  try {
    let contact = await client.contact(peer)
    if (!contact) {
      // First time we hear of them: fetch their identity key from the server (trust on first use).
      await ensureLoggedIn(client, password)
      contact = await client.addContact(peer)
    }
    const safetyNumber = await client.safetyNumber(peer)
    if (invocation.number !== undefined) {
      if (invocation.number !== safetyNumber.digits) {
        throw new CommandError(
          ExitCode.SafetyNumberMismatch,
          `verify: expected the safety number with ${peer}, got a different one (the first difference is in group ${firstDifferentGroup(invocation.number, safetyNumber.digits)}): ${peer} was not marked as verified; if you copied it correctly, someone may be intercepting`,
        )
      }
      // The number the user compared is the one accepted: a key that changed again since (after
      // the comparison, before this line) is refused by the core.
      await client.confirmSafetyNumber(peer, invocation.number)
    }
    const verified = invocation.confirm || contact.verified
    if (invocation.json) {
      context.io.stdout.write(
        `${terminalJson({
          user: peer,
          safetyNumber: safetyNumber.digits,
          groups: safetyNumber.groups,
          verified,
          identityChanged: contact.identityChanged && !invocation.confirm,
        })}\n`,
      )
    } else {
      const rows = safetyNumberRows(safetyNumber.groups).map((row) => `  ${row}`)
      context.io.stdout.write(`Safety number with ${peer}:\n${rows.join('\n')}\n`)
      if (invocation.confirm) context.io.stdout.write(`${peer} is now marked as verified\n`)
    }
    if (contact.identityChanged && !invocation.confirm) {
      warn(
        context.io,
        `${peer}'s identity key changed: this is the safety number of the new key; if it matches, run secure-chat verify ${peer} --confirm --number "<the 60 digits>"`,
      )
    }
  } finally {
    await client.close()
  }
}

/** Which five-digit group (1–12) of two 60-digit numbers first differs. */
function firstDifferentGroup(given: string, expected: string): number {
  let index = 0
  while (index < expected.length && given[index] === expected[index]) index++
  return Math.floor(index / 5) + 1
}

async function acceptKeyCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'accept-key' }>,
): Promise<void> {
  const peer = normalizedUsername(invocation.peer)
  const { client } = await openChosenAccount(context)
  try {
    const contact = await client.contact(peer)
    if (!contact) throw new CommandError(ExitCode.Usage, `accept-key: expected a known contact, got ${peer}`)
    if (!contact.identityChanged) {
      context.io.stdout.write(`${peer}'s identity key has not changed\n`)
      return
    }
    await client.acceptIdentityChange(peer)
    context.io.stdout.write(
      `accepted ${peer}'s new identity key (not verified: compare safety numbers with secure-chat verify ${peer})\n`,
    )
  } finally {
    await client.close()
  }
}

/**
 * Deletes the account on the server, then its data here. The name typed on the command line is the
 * confirmation: it must be the local account's (the one --user names, else the typed one), checked
 * before the password is even asked for; the core checks it again, and the server the password.
 */
async function deleteAccountCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'delete-account' }>,
): Promise<void> {
  const typed = normalizedUsername(invocation.confirmation)
  const username = chooseAccount(context.settings, context.user ?? typed)
  if (typed !== username) {
    throw new UsageError(
      `delete-account: expected the name of the account to delete (${username}) typed to confirm, got ${typed}; nothing was deleted`,
    )
  }
  const password = await readPassword(context.io)
  const client = await openAccount(context.settings, username, password)
  try {
    await client.deleteAccount(password, invocation.confirmation)
  } catch (error) {
    if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_CREDENTIALS') {
      throw new CommandError(
        ExitCode.ServerRefused,
        `delete-account: expected ${username}'s password, got one the server refused (${error.serverCode}); nothing was deleted, here or on the server`,
      )
    }
    throw error
  } finally {
    await client.close()
  }
  removeLocalAccount(context.settings, username)
  context.io.stdout.write(
    `deleted ${username} on ${context.settings.serverUrl} and its data on this device; contacts see that the account was deleted, and the server holds the name so that nobody else can take it for a while\n`,
  )
}

/**
 * Changes the password: this device's data is sealed again under the new one (progress on
 * standard error), then the server takes the new login secret; with --end-other-sessions, every
 * other session of the account ends.
 */
async function passwordCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'password' }>,
): Promise<void> {
  const username = chooseAccount(context.settings, context.user)
  const { current, next } = await readPasswordChange(context.io)
  const client = await openAccount(context.settings, username, current)
  try {
    let shown = -1
    const { endedSessions } = await client.changePassword(current, next, {
      endOtherSessions: invocation.endOtherSessions,
      onProgress: (done, total) => {
        // A line per tenth, not per record: a long history would flood a log otherwise.
        const tenth = total === 0 ? 10 : Math.floor((done * 10) / total)
        if (tenth === shown) return
        shown = tenth
        context.io.stderr.write(`re-sealing this device's data: ${done}/${total}\n`)
      },
    })
    context.io.stdout.write(
      `password changed for ${username}, here and on the server${invocation.endOtherSessions ? `; ${endedSessions} other session(s) signed out` : ''}\n`,
    )
  } finally {
    await client.close()
  }
}

/**
 * Blocks or unblocks a user, on the server and in the contact record (the conversation stays). A
 * user the server does not know is refused there (exit code 4), and nothing changes here.
 */
async function blockCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'block' | 'unblock' }>,
): Promise<void> {
  const peer = normalizedUsername(invocation.peer)
  const { client } = await openChosenAccount(context)
  try {
    if (peer === client.username) {
      throw new CommandError(ExitCode.Usage, `${invocation.command}: expected another user, got yourself`)
    }
    if (invocation.command === 'block') {
      await client.blockContact(peer)
      context.io.stdout.write(
        `blocked ${peer}: the server drops their messages (they are not told) and hides your presence from them; the conversation stays\n`,
      )
    } else if (await client.unblockContact(peer)) {
      context.io.stdout.write(`unblocked ${peer}\n`)
    } else {
      context.io.stdout.write(`unblocked ${peer} (not a contact here)\n`)
    }
  } finally {
    await client.close()
  }
}

/** A line of `devices --json`: `name` is null for a device without one (or one that does not open). */
export interface DeviceRecord {
  readonly id: number
  readonly name: string | null
  /** When it was added (ms since the epoch). */
  readonly createdAt: number
  /** When it last logged in (ms since the epoch). */
  readonly lastSeenAt: number
  /** The device this command ran on. */
  readonly current: boolean
}

export function deviceRecord(device: DeviceView): DeviceRecord {
  return {
    id: device.id,
    name: device.name ?? null,
    createdAt: device.createdAt,
    lastSeenAt: device.lastSeenAt,
    current: device.current,
  }
}

/** Lists the account's devices, by id (names opened here; the server reads none of them). */
async function devicesCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'devices' }>,
): Promise<void> {
  const { client, password } = await openChosenAccount(context)
  try {
    await ensureLoggedIn(client, password)
    for (const device of await client.devices()) {
      context.io.stdout.write(
        invocation.json ? `${terminalJson(deviceRecord(device))}\n` : `${deviceLine(device)}\n`,
      )
    }
  } finally {
    await client.close()
  }
}

/** Names this device; the core checks the name (a bad one is a usage error) and seals it. */
async function renameDeviceCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'rename-device' }>,
): Promise<void> {
  const { client, password } = await openChosenAccount(context)
  try {
    await ensureLoggedIn(client, password)
    await client.renameDevice(invocation.name)
    context.io.stdout.write(`this device (${client.deviceId}) is now named "${invocation.name.trim()}"\n`)
  } finally {
    await client.close()
  }
}

/**
 * Removes another of the account's devices. This device is refused here: removing it would end
 * the session this command runs on and strand its data (another device removes it).
 */
async function removeDeviceCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'remove-device' }>,
): Promise<void> {
  const { client, password } = await openChosenAccount(context)
  try {
    await ensureLoggedIn(client, password)
    const devices = await client.devices()
    const device = devices.find((candidate) => candidate.id === invocation.deviceId)
    if (device?.current && devices.length > 1) {
      throw new UsageError(
        `remove-device: expected another device than this one (${device.id}), got this one; remove it from another of the account's devices`,
      )
    }
    await client.removeDevice(invocation.deviceId)
    const name = device?.name === undefined ? '' : ` ("${device.name}")`
    context.io.stdout.write(
      `removed device ${invocation.deviceId}${name}: its sessions ended, its queue and keys are gone\n`,
    )
  } finally {
    await client.close()
  }
}

/** "until 14:05:09" in the local time zone: when a link code expires (the server's clock). */
function clockTime(at: number): string {
  return formatTimestamp(at).slice(11)
}

/**
 * What a link refusal means on the new device, with its exit code: the code expired or --wait ran
 * out (13), the other device refused or closed it (14), Ctrl+C (12). Anything else is as it is.
 */
function linkWaitError(error: unknown, waitSeconds: number | undefined, timedOut: boolean): unknown {
  if (timedOut && isClientError(error, ClientErrorCode.Cancelled)) {
    return new CommandError(
      ExitCode.LinkExpired,
      `link: expected the approval within ${waitSeconds} s (--wait), got none: the code is closed; start again`,
    )
  }
  if (isClientError(error, ClientErrorCode.Cancelled)) {
    return new CommandError(
      ExitCode.LinkFailed,
      'link: given up while waiting for the approval (interrupted): the code is closed and nothing was linked',
    )
  }
  if (!isClientError(error)) return error
  // Unknown: the channel expired and the server's purge took it since (or a server that lost it).
  if (error.serverCode === 'E2E_ERR_LINK_EXPIRED' || error.serverCode === 'E2E_ERR_LINK_UNKNOWN') {
    return new CommandError(
      ExitCode.LinkExpired,
      `link: expected the approval before the code expired, got none (${error.serverCode}); start again`,
    )
  }
  if (error.serverCode === 'E2E_ERR_LINK_REFUSED') {
    return new CommandError(
      ExitCode.LinkRefused,
      `link: expected the other device to approve, got a refusal there (${error.serverCode}); nothing was linked`,
    )
  }
  // Closed, but not by the other device: given up here (another run with this code, say).
  if (error.serverCode === 'E2E_ERR_LINK_USED') {
    return new CommandError(
      ExitCode.LinkRefused,
      `link: expected the code to stay open until approved, got it closed (${error.serverCode}: given up on this device); nothing was linked`,
    )
  }
  return error
}

/**
 * Makes this device another device of an existing account. Opens a provisioning channel on the
 * server of the settings (the code names no server: the approving device must use the same one),
 * shows the code, then the check once the other device has read it, waits for the approval (until
 * the code expires, or --wait), asks for the account's password (the same way as every command:
 * the local database is sealed under it, and later log-ins derive the login secret from it) and
 * stores the account as a log-in does. A password the server refuses undoes the link: this device
 * is removed again and nothing stays here.
 */
async function linkCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'link' }>,
): Promise<void> {
  const { io, settings } = context
  const pending = await startDeviceLink(settings, invocation.name)
  const stop = new AbortController()
  let timedOut = false
  const timer =
    invocation.waitSeconds === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true
          stop.abort()
        }, invocation.waitSeconds * 1000)
  // Ctrl+C while waiting gives up as --wait does, closing the code (exit code 12, "given up").
  const interrupt = () => stop.abort()
  process.once('SIGINT', interrupt)
  let provisioned: Awaited<ReturnType<typeof pending.waitForProvisioning>>
  try {
    if (invocation.json) {
      io.stdout.write(`${terminalJson({ code: pending.code })}\n`)
    } else {
      io.stdout.write(
        'To link this device, approve this code on a device that has the account: scan it there, or paste it into secure-chat approve-link <code>\n\n',
      )
      for (const line of qrLines(pending.code, { color: context.colorOutput })) {
        context.rawStdout.write(`${line}\n`)
      }
      io.stdout.write(
        `\n${pending.code}\n\nThe code works once, until ${clockTime(pending.expiresAt)}. Waiting for the other device…\n`,
      )
    }
    const check = await pending.waitForCheck(stop.signal)
    const compare = `check ${check}: approve on the other device only if it shows the same check`
    if (invocation.json) warn(io, compare)
    else io.stdout.write(`${compare}\n`)
    provisioned = await pending.waitForProvisioning(stop.signal)
  } catch (error) {
    await pending.cancel()
    throw linkWaitError(error, invocation.waitSeconds, timedOut)
  } finally {
    clearTimeout(timer)
    process.off('SIGINT', interrupt)
  }
  const { username, deviceId } = provisioned
  if (!invocation.json) {
    io.stdout.write(`approved on the other device: this device becomes device ${deviceId} of ${username}\n`)
  }
  let password: string
  try {
    // Refused before asking for the password: linking never overwrites a database.
    assertNoLocalAccount(settings, username)
    password = await readPassword(io)
  } catch (error) {
    await pending.cancel()
    throw error
  }
  const client = await completeDeviceLink(settings, pending, username, password).catch((error: unknown) => {
    // The approval's link token lives 10 minutes; a password typed after that is too late.
    if (isClientError(error) && error.serverCode === 'E2E_ERR_LINK_TOKEN_INVALID') {
      throw new CommandError(
        ExitCode.LinkExpired,
        `link: expected to add this device with the approval's link token, got it refused (${error.serverCode}: it lives 10 minutes, and is used once); nothing stays here: start again`,
      )
    }
    // The core checked the password with a log-in at once, and removed this device again.
    if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_CREDENTIALS') {
      throw new CommandError(
        ExitCode.ServerRefused,
        `link: expected ${username}'s password, got one the server refused (${error.serverCode}); this device was removed from the account again and nothing stays here: start again`,
      )
    }
    throw error
  })
  try {
    if (invocation.history) await receiveHistory(context, client, password)
  } finally {
    await client.close()
  }
  if (provisioned.omittedContacts > 0) {
    warn(
      io,
      `${provisioned.omittedContacts} contact(s) did not fit into the link and were left out: they are added again when you next write to each other`,
    )
  }
  io.stdout.write(
    invocation.json
      ? `${terminalJson({ linked: true, user: username, device: deviceId })}\n`
      : `linked: this device is device ${deviceId} of ${username} on ${settings.serverUrl}, with ${provisioned.contacts} contact(s)\n`,
  )
}

/**
 * On the new device, once linked (`link --history`): online until the other device's history has
 * arrived, every part of it, the progress on stderr. It waits HISTORY_FIRST_PART_WAIT_MS for the
 * first part (the other device starts once it sees this one linked) and as long again between parts.
 */
async function receiveHistory(context: CommandContext, client: ChatClient, password: string): Promise<void> {
  const { io } = context
  const parts = new Map<string, { received: Set<number>; parts: number; messages: number }>()
  let last = Date.now()
  const stop = client.events.on('history', ({ transfer, part, parts: total, messages }) => {
    const entry = parts.get(transfer) ?? { received: new Set<number>(), parts: total, messages: 0 }
    if (!entry.received.has(part)) entry.messages += messages
    entry.received.add(part)
    parts.set(transfer, entry)
    last = Date.now()
    warn(io, `history: ${entry.received.size} of ${total} part(s) received`)
  })
  try {
    warn(io, 'history: waiting for the other device to send it')
    await goOnline(context, client, password)
    const done = () => [...parts.values()].some((entry) => entry.received.size === entry.parts)
    while (!done()) {
      if (Date.now() - last > HISTORY_FIRST_PART_WAIT_MS) {
        throw new CommandError(
          ExitCode.LinkExpired,
          `link: expected the other device's history within ${HISTORY_FIRST_PART_WAIT_MS / 1000} s, got ${[...parts.values()].reduce((sum, entry) => sum + entry.received.size, 0)} part(s): this device is linked; what came is kept, the rest arrives when the other device sends it again`,
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const complete = [...parts.values()].find((entry) => entry.received.size === entry.parts)!
    warn(io, `history: ${complete.messages} message(s) stored`)
  } finally {
    stop()
  }
}

/**
 * What a refusal of the code means on the approving device: exit code 15 for a code that is none,
 * unknown, expired, used (or given up on the new device), or another account's.
 */
function linkCodeError(error: unknown): unknown {
  if (!isClientError(error)) return error
  if (error.code === ClientErrorCode.InvalidInput) {
    return new CommandError(ExitCode.LinkCodeInvalid, `approve-link: ${error.message}`)
  }
  const reasons: Record<string, string> = {
    E2E_ERR_LINK_UNKNOWN: 'an unknown one (mistyped, or expired long ago)',
    E2E_ERR_LINK_EXPIRED: 'an expired one',
    E2E_ERR_LINK_USED: 'one already used, or given up on the new device',
    E2E_ERR_LINK_CLAIMED: "one another account's device answered first: do not approve, start again",
  }
  const reason = error.serverCode === undefined ? undefined : reasons[error.serverCode]
  if (reason === undefined) return error
  return new CommandError(
    ExitCode.LinkCodeInvalid,
    `approve-link: expected a link code waiting for approval, got ${reason} (${error.serverCode}); nothing was linked`,
  )
}

/**
 * Approves a link from a device that has the account: reads the code, waits for the new device's
 * answer, prints its name and the check, and asks (unless --yes) before sending the account.
 */
async function approveLinkCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'approve-link' }>,
): Promise<void> {
  const { io } = context
  const { client, password } = await openChosenAccount(context)
  try {
    await ensureLoggedIn(client, password)
    const approval = await client.approveLink(invocation.code).catch((error: unknown) => {
      throw linkCodeError(error)
    })
    const who = approval.deviceName === undefined ? 'A device without a name' : `"${approval.deviceName}"`
    io.stdout.write(
      `${who} asks to be linked to ${client.username}\ncheck ${approval.check}: approve only if the new device shows the same check\n`,
    )
    if (!invocation.yes && !(await askYesNo(io, 'Approve?'))) {
      await approval.refuse()
      throw new CommandError(
        ExitCode.LinkRefused,
        'approve-link: expected a yes to link the device, got no: the link was refused and nothing was linked',
      )
    }
    const approved = await approval.approve().catch((error: unknown) => {
      throw linkCodeError(error)
    })
    if (approved.omittedContacts > 0) {
      warn(
        io,
        `${approved.omittedContacts} contact(s) did not fit into the link and were left out (the oldest conversations)`,
      )
    }
    io.stdout.write(`approved: the new device becomes device ${approved.deviceId} of ${client.username}\n`)
    const sendHistory =
      invocation.history ||
      (!invocation.yes && (await askYesNo(io, 'Send it the conversations on this device?')))
    if (sendHistory) await sendHistoryTo(context, client, password, approved.deviceId)
  } finally {
    await client.close()
  }
}

/**
 * After an approval: waits for the new device to finish linking (its user types the password
 * there; the link token lives NEW_DEVICE_WAIT_MS), then sends it this device's conversations, the
 * parts' progress on stderr.
 */
async function sendHistoryTo(
  context: CommandContext,
  client: ChatClient,
  password: string,
  deviceId: number,
): Promise<void> {
  const { io } = context
  warn(io, `history: waiting for device ${deviceId} to finish linking (its password, typed there)`)
  await goOnline(context, client, password)
  if (!(await client.waitForDevice(deviceId, { timeoutMs: NEW_DEVICE_WAIT_MS }))) {
    throw new CommandError(
      ExitCode.LinkExpired,
      `approve-link: expected device ${deviceId} to finish linking within ${NEW_DEVICE_WAIT_MS / 60_000} minutes, got no such device: the history was not sent (approve a new link to send it)`,
    )
  }
  const sent = await client.sendHistory({
    onProgress: (done, parts) => warn(io, `history: ${done} of ${parts} part(s) sent`),
  })
  io.stdout.write(
    `sent the history to device ${deviceId}: ${sent.messages} message(s) in ${sent.parts} part(s)${sent.leftOut > 0 ? `, ${sent.leftOut} older one(s) left out (over ${MAX_HISTORY_TRANSFER_BYTES} bytes)` : ''}\n`,
  )
}

/**
 * Erases an account's data on this device only: for a device removed from its account (which can
 * no longer log in), or one given away. The name typed is the confirmation; no password, since
 * whoever can delete the file can do so anyway. The server is not asked: the account and its other
 * devices stay, and so does this device in the account's list until another device removes it.
 */
async function eraseLocalCommand(
  context: CommandContext,
  invocation: Extract<Invocation, { command: 'erase-local' }>,
): Promise<void> {
  const { settings } = context
  const username = normalizedUsername(invocation.confirmation)
  if (!localAccounts(settings.dataDir, settings.serverUrl).includes(username)) {
    throw new ClientError(
      ClientErrorCode.NoAccount,
      `erase-local: expected an account of ${settings.serverUrl} in ${settings.dataDir}, got no ${username} there; nothing was erased`,
    )
  }
  // Opened first: a database another secure-chat process has open is refused (exit code 7), not
  // pulled from under it. Wiped before its files go (secure_delete zeroes the freed pages); one
  // that does not open as a store (damaged, foreign) goes all the same.
  let store: SqliteStore | undefined
  try {
    store = await openSqliteStore(accountFile(settings.dataDir, settings.serverUrl, username))
  } catch (error) {
    if (!(error instanceof StoreFileError) || error.problem === 'in-use') throw error
  }
  if (store) {
    try {
      await store.wipe()
    } finally {
      await store.close()
    }
  }
  removeLocalAccount(settings, username)
  context.io.stdout.write(
    `erased ${username}'s data on this device; nothing changed on the server (remove this device from another of the account's devices, if it is still listed)\n`,
  )
}
