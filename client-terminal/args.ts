/**
 * The command line: `secure-chat [command] [arguments] [options]`. No command starts the
 * interactive client; a command runs once for scripts (cli.ts). Pure: argv and env in, an
 * Invocation or a UsageError out.
 */
import { parseArgs } from 'node:util'
import { DEFAULT_HISTORY, MAX_DEVICE_ID, MAX_HISTORY_COUNT } from './commands.js'
import { UsageError } from './exit-codes.js'

export const DEFAULT_SERVER = 'https://localhost:8443'
/** Longest --wait accepted: a day; scripts that want longer loop. */
export const MAX_WAIT_SECONDS = 86_400

export const USAGE = `Usage:
  secure-chat [options]                              the interactive client
  secure-chat register <user> [options]              create an account (here and on the server)
  secure-chat reinstall <user> [options]             start over here after losing the account's keys:
                                                     new keys replace them, contacts are told your safety
                                                     number changed, messages sent to the old keys are
                                                     asked for again
  secure-chat send <user> <text> [options]           send a message; returns once the server accepted it
  secure-chat read [--from <user>] [--json] [--wait <seconds>] [options]
                                                     print unread messages and mark them read
  secure-chat history <user> [-n <count>] [--json]   print the conversation stored here, oldest first:
                                                     the last ${DEFAULT_HISTORY} messages, or <count> (up to ${MAX_HISTORY_COUNT}); marks
                                                     nothing read and needs no server
  secure-chat verify <user> [--json]                 print the safety number to compare
  secure-chat verify <user> --confirm --number <digits> [--json]
                                                     mark it verified: <digits> are the 60 you compared
                                                     (spaces allowed); a different number is refused
  secure-chat accept-key <user>                      accept a contact's changed identity key
  secure-chat delete-account <user>                  delete the account <user> (typed again to confirm;
                                                     the local one with --user) on the server, and its
                                                     data here: it cannot be undone
  secure-chat password [--end-other-sessions]        change the password, here and on the server: the
                                                     current one as usual, the new one from
                                                     SECURE_CHAT_NEW_PASSWORD, typed twice at a terminal,
                                                     or as the second line of standard input
  secure-chat block <user>                           block a user: the server drops their messages (they
                                                     are not told) and hides your presence from them
  secure-chat unblock <user>                         unblock a user
  secure-chat devices [--json]                       list this account's devices: id, name, when added
                                                     and last seen, which one is this device
  secure-chat rename-device <name>                   name this device (quoted if it has spaces; only the
                                                     account's devices can read it)
  secure-chat remove-device <id>                     remove another of the account's devices: its
                                                     sessions end, its queue and keys are deleted
  secure-chat link [--name <name>] [--wait <seconds>] [--history] [--json]
                                                     make this device another device of an account:
                                                     shows a code (QR and text) to approve on a device
                                                     that has the account, and the check both show;
                                                     waits until approved (until the code expires, or
                                                     <seconds>), then asks for the account's password;
                                                     --history: then waits for the other device's history
  secure-chat approve-link <code> [--yes] [--history]
                                                     link the device that shows <code> to this account:
                                                     prints its name and the check, asks to approve
                                                     (--yes: no question; the check is still printed);
                                                     --history (or a yes when asked): then sends it this
                                                     device's conversations, with progress
  secure-chat erase-local <user>                     erase the account's data on this device only (typed
                                                     again to confirm; for a removed device): nothing
                                                     changes on the server
  secure-chat help

Options:
  --server <url>     the server (SECURE_CHAT_SERVER; default ${DEFAULT_SERVER})
  --ca <file>        trust only this PEM certificate, for a self-signed server (SECURE_CHAT_CA);
                     without it, the system's trust store: Node's CAs and the system bundle
                     (SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt or the like)
  --data-dir <dir>   local data (default $XDG_DATA_HOME/secure-chat or ~/.local/share/secure-chat)
  --user <name>      the local account to use (SECURE_CHAT_USER; default: the only one)

The password comes from SECURE_CHAT_PASSWORD or standard input (typed without echo at a terminal).
Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 wrong password, 4 refused by the server,
5 network, 6 a contact's identity key changed, 7 local database problem,
8 the safety number given with --number is not the contact's, 9 no such device,
10 the account's last device, 11 this device was removed, 12 linking did not complete,
13 the link code expired (or link --wait ran out), 14 linking refused,
15 approve-link: an unknown, expired or used link code.`

export interface GlobalOptions {
  readonly server: string
  readonly ca: string | undefined
  readonly dataDir: string | undefined
  readonly user: string | undefined
}

export type Invocation =
  | { readonly command: 'interactive'; readonly options: GlobalOptions }
  | { readonly command: 'help' }
  | { readonly command: 'register'; readonly options: GlobalOptions; readonly username: string }
  | { readonly command: 'reinstall'; readonly options: GlobalOptions; readonly username: string }
  | {
      readonly command: 'send'
      readonly options: GlobalOptions
      readonly peer: string
      readonly text: string
      readonly json: boolean
    }
  | {
      readonly command: 'read'
      readonly options: GlobalOptions
      readonly from: string | undefined
      readonly json: boolean
      readonly waitSeconds: number | undefined
    }
  | {
      readonly command: 'history'
      readonly options: GlobalOptions
      readonly peer: string
      /** How many of the newest messages to print (1 to MAX_HISTORY_COUNT). */
      readonly count: number
      readonly json: boolean
    }
  | {
      readonly command: 'verify'
      readonly options: GlobalOptions
      readonly peer: string
      readonly confirm: boolean
      /** With --confirm: the 60 digits the user compared (spaces removed). */
      readonly number: string | undefined
      readonly json: boolean
    }
  | { readonly command: 'accept-key'; readonly options: GlobalOptions; readonly peer: string }
  | {
      readonly command: 'delete-account'
      readonly options: GlobalOptions
      /** The account's name as typed: the confirmation (and, without --user, the choice). */
      readonly confirmation: string
    }
  | { readonly command: 'password'; readonly options: GlobalOptions; readonly endOtherSessions: boolean }
  | { readonly command: 'block' | 'unblock'; readonly options: GlobalOptions; readonly peer: string }
  | { readonly command: 'devices'; readonly options: GlobalOptions; readonly json: boolean }
  | { readonly command: 'rename-device'; readonly options: GlobalOptions; readonly name: string }
  | { readonly command: 'remove-device'; readonly options: GlobalOptions; readonly deviceId: number }
  | {
      readonly command: 'link'
      readonly options: GlobalOptions
      /** The name the approving device shows and the account's list of devices keeps. */
      readonly name: string | undefined
      /** How long to wait for the approval; unset, until the code expires. */
      readonly waitSeconds: number | undefined
      /** Once linked, wait for the approving device's history. */
      readonly history: boolean
      readonly json: boolean
    }
  | {
      readonly command: 'approve-link'
      readonly options: GlobalOptions
      readonly code: string
      /** Approve without asking (the check is printed all the same). */
      readonly yes: boolean
      /** Send this device's history to the new device once it is linked (asked, without --yes). */
      readonly history: boolean
    }
  | {
      readonly command: 'erase-local'
      readonly options: GlobalOptions
      /** The account's name as typed: the confirmation. */
      readonly confirmation: string
    }

const COMMANDS = [
  'register',
  'reinstall',
  'send',
  'read',
  'history',
  'verify',
  'accept-key',
  'delete-account',
  'password',
  'block',
  'unblock',
  'devices',
  'rename-device',
  'remove-device',
  'link',
  'approve-link',
  'erase-local',
  'help',
] as const
type CommandName = (typeof COMMANDS)[number]

/** Options each command takes beyond the global ones. */
const COMMAND_OPTIONS: Record<CommandName | 'interactive', readonly string[]> = {
  interactive: [],
  help: [],
  register: [],
  reinstall: [],
  send: ['json'],
  read: ['from', 'json', 'wait'],
  history: ['n', 'json'],
  verify: ['confirm', 'number', 'json'],
  'accept-key': [],
  'delete-account': [],
  password: ['end-other-sessions'],
  block: [],
  unblock: [],
  devices: ['json'],
  'rename-device': [],
  'remove-device': [],
  link: ['name', 'wait', 'history', 'json'],
  'approve-link': ['yes', 'history'],
  'erase-local': [],
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}

export function parseInvocation(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const { values, positionals } = parsed
  if (values.help) return { command: 'help' }
  const [first, ...rest] = positionals
  const command: CommandName | 'interactive' =
    first === undefined
      ? 'interactive'
      : (COMMANDS as readonly string[]).includes(first)
        ? (first as CommandName)
        : 'interactive'
  if (first !== undefined && command === 'interactive') {
    throw new UsageError(`command: expected one of ${COMMANDS.join(', ')}, got "${first}"`)
  }
  if (command === 'help') return { command: 'help' }

  for (const name of [
    'from',
    'json',
    'wait',
    'n',
    'confirm',
    'number',
    'end-other-sessions',
    'name',
    'yes',
  ] as const) {
    if (values[name] !== undefined && !COMMAND_OPTIONS[command].includes(name)) {
      throw new UsageError(
        `${optionName(name)}: expected only with ${commandsTaking(name)}, got it with ${command}`,
      )
    }
  }
  const options: GlobalOptions = {
    server: nonEmpty(values.server) ?? nonEmpty(env.SECURE_CHAT_SERVER) ?? DEFAULT_SERVER,
    ca: nonEmpty(values.ca) ?? nonEmpty(env.SECURE_CHAT_CA),
    dataDir: nonEmpty(values['data-dir']),
    user: nonEmpty(values.user) ?? nonEmpty(env.SECURE_CHAT_USER),
  }
  const json = values.json === true

  switch (command) {
    case 'interactive':
      return { command, options }
    case 'register':
    case 'reinstall': {
      const [username] = exactly(command, rest, ['<user>'])
      return { command, options, username: username as string }
    }
    case 'send': {
      const [peer, ...words] = rest
      if (peer === undefined || words.length === 0) {
        throw new UsageError('send: expected <user> <text>, got too few arguments')
      }
      return { command, options, peer, text: words.join(' '), json }
    }
    case 'read': {
      exactly(command, rest, [])
      return { command, options, from: nonEmpty(values.from), json, waitSeconds: waitSeconds(values.wait) }
    }
    case 'history': {
      const [peer] = exactly(command, rest, ['<user>'])
      return { command, options, peer: peer as string, count: historyCount(values.n), json }
    }
    case 'verify': {
      const [peer] = exactly(command, rest, ['<user>'])
      const confirm = values.confirm === true
      return {
        command,
        options,
        peer: peer as string,
        confirm,
        number: comparedNumber(confirm, values.number),
        json,
      }
    }
    case 'accept-key':
    case 'block':
    case 'unblock': {
      const [peer] = exactly(command, rest, ['<user>'])
      return { command, options, peer: peer as string }
    }
    case 'delete-account': {
      const [confirmation] = exactly(command, rest, ['<user>'])
      return { command, options, confirmation: confirmation as string }
    }
    case 'password': {
      exactly(command, rest, [])
      return { command, options, endOtherSessions: values['end-other-sessions'] === true }
    }
    case 'devices': {
      exactly(command, rest, [])
      return { command, options, json }
    }
    case 'rename-device': {
      // Checked by the client core (shared/device-name.ts), which knows the rules.
      const [name] = exactly(command, rest, ['<name>'])
      return { command, options, name: name as string }
    }
    case 'remove-device': {
      const [id] = exactly(command, rest, ['<id>'])
      return { command, options, deviceId: deviceId(id as string) }
    }
    case 'link': {
      exactly(command, rest, [])
      // Checked by the client core (shared/device-name.ts), before any connection.
      return {
        command,
        options,
        name: values.name,
        waitSeconds: waitSeconds(values.wait),
        history: values.history === true,
        json,
      }
    }
    case 'approve-link': {
      // Checked by the client core (shared/provisioning.ts), which knows the format.
      const [code] = exactly(command, rest, ['<code>'])
      return {
        command,
        options,
        code: code as string,
        yes: values.yes === true,
        history: values.history === true,
      }
    }
    case 'erase-local': {
      const [confirmation] = exactly(command, rest, ['<user>'])
      return { command, options, confirmation: confirmation as string }
    }
  }
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      server: { type: 'string' },
      ca: { type: 'string' },
      'data-dir': { type: 'string' },
      user: { type: 'string' },
      from: { type: 'string' },
      json: { type: 'boolean' },
      wait: { type: 'string' },
      // Only the short form is documented (`-n 20`, as head and tail take it); `--n` is its long name.
      n: { type: 'string', short: 'n' },
      confirm: { type: 'boolean' },
      number: { type: 'string' },
      'end-other-sessions': { type: 'boolean' },
      name: { type: 'string' },
      yes: { type: 'boolean', short: 'y' },
      history: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

/** How an option is written: `-n`, `--json`. */
function optionName(option: string): string {
  return option.length === 1 ? `-${option}` : `--${option}`
}

function commandsTaking(option: string): string {
  return Object.entries(COMMAND_OPTIONS)
    .filter(([, options]) => options.includes(option))
    .map(([name]) => name)
    .join(', ')
}

function exactly(command: string, args: readonly string[], names: readonly string[]): string[] {
  if (args.length !== names.length) {
    const expected = names.length === 0 ? 'no arguments' : names.join(' ')
    throw new UsageError(`${command}: expected ${expected}, got ${args.length} argument(s)`)
  }
  return [...args]
}

function waitSeconds(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined
  const seconds = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(seconds) || seconds < 0 || seconds > MAX_WAIT_SECONDS) {
    throw new UsageError(`--wait: expected seconds from 0 to ${MAX_WAIT_SECONDS}, got "${raw}"`)
  }
  return seconds
}

/** `remove-device <id>`: a positive whole number in digits, as `secure-chat devices` prints it. */
function deviceId(raw: string): number {
  const id = Number(raw)
  if (!/^[1-9]\d*$/.test(raw) || id > MAX_DEVICE_ID) {
    throw new UsageError(`remove-device: expected a device id (a positive whole number), got "${raw}"`)
  }
  return id
}

/** `history -n`: a whole number of messages, written in digits, from 1 to MAX_HISTORY_COUNT. */
function historyCount(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_HISTORY
  const count = Number(raw)
  if (!/^\d+$/.test(raw) || count < 1 || count > MAX_HISTORY_COUNT) {
    throw new UsageError(`-n: expected a whole number from 1 to ${MAX_HISTORY_COUNT}, got "${raw}"`)
  }
  return count
}

/**
 * The safety number the user compared, which --confirm requires: marking verified whatever number
 * this run computed would record a comparison nobody made.
 */
function comparedNumber(confirm: boolean, raw: string | undefined): string | undefined {
  if (raw === undefined) {
    if (confirm) {
      throw new UsageError(
        '--confirm: expected the safety number you compared, with --number "<60 digits>" (secure-chat verify <user> prints it)',
      )
    }
    return undefined
  }
  if (!confirm) throw new UsageError('--number: expected only with --confirm, got it alone')
  const digits = raw.replace(/\s+/g, '')
  if (!/^\d{60}$/.test(digits)) {
    const count = /^\d*$/.test(digits) ? `${digits.length} digits` : 'other characters'
    throw new UsageError(`--number: expected 60 digits (spaces allowed), got ${count}`)
  }
  return digits
}
