/**
 * The interactive client's command line: a pure parser from what the user typed to a Command.
 * Text that does not start with "/" is a message to the open chat; "//text" sends "/text".
 */

export type Command =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'register'; readonly username: string }
  | { readonly kind: 'reinstall'; readonly username: string }
  | { readonly kind: 'login'; readonly username: string | undefined }
  | { readonly kind: 'logout' }
  | { readonly kind: 'delete-account' }
  | { readonly kind: 'password' }
  | { readonly kind: 'users'; readonly query: string | undefined }
  | { readonly kind: 'chat'; readonly username: string }
  | { readonly kind: 'msg'; readonly username: string; readonly text: string }
  | { readonly kind: 'history'; readonly count: number | undefined }
  | { readonly kind: 'contacts' }
  | { readonly kind: 'verify'; readonly username: string }
  | { readonly kind: 'accept-key'; readonly username: string }
  | { readonly kind: 'block'; readonly username: string }
  | { readonly kind: 'unblock'; readonly username: string }
  | { readonly kind: 'devices' }
  | { readonly kind: 'rename-device'; readonly name: string }
  | { readonly kind: 'remove-device'; readonly deviceId: number }
  | { readonly kind: 'link-device'; readonly code: string }
  | { readonly kind: 'help' }
  | { readonly kind: 'quit' }
  | { readonly kind: 'empty' }
  | { readonly kind: 'invalid'; readonly message: string }

/** Messages of a conversation shown when no count is given (/history, `secure-chat history`). */
export const DEFAULT_HISTORY = 50
/**
 * The most messages /history and `secure-chat history` read at once: each is decrypted and held in
 * memory, and a thousand is more than a screen or a glance at a log shows.
 */
export const MAX_HISTORY_COUNT = 1_000

/** The largest device id the server assigns (an unsigned 32-bit integer, as the client core checks). */
export const MAX_DEVICE_ID = 0xffff_ffff

export interface CommandHelp {
  readonly usage: string
  readonly description: string
}

export const COMMAND_HELP: readonly CommandHelp[] = [
  { usage: '/register <user>', description: 'create an account on this device and the server' },
  { usage: '/reinstall <user>', description: 'start over here after losing your keys (warns first)' },
  { usage: '/login [user]', description: 'open your account (asks for the password)' },
  { usage: '/logout', description: 'end the session on the server (history stays here)' },
  {
    usage: '/delete-account',
    description: 'delete this account on the server and its data here (asks its name and password)',
  },
  { usage: '/password', description: 'change your password (here and on the server)' },
  { usage: '/users [query]', description: 'find users whose names start with query; alone: who is online' },
  { usage: '/chat <user>', description: 'open the conversation with user' },
  { usage: '/msg <user> <text>', description: 'send text to user (and open that conversation)' },
  { usage: '/history [n]', description: 'show the last n messages of the open conversation (default 50)' },
  { usage: '/contacts', description: 'list contacts: unread, online, verified, key changes' },
  { usage: '/verify <user>', description: 'compare safety numbers with user and mark them verified' },
  { usage: '/accept-key <user>', description: "accept user's changed identity key" },
  { usage: '/block <user>', description: 'block user: their messages are dropped, your presence hidden' },
  { usage: '/unblock <user>', description: 'unblock user (the conversation stayed)' },
  { usage: '/devices', description: "list this account's devices: name, id, added, last seen, this one" },
  { usage: '/rename-device <name>', description: 'name this device (only your devices can read it)' },
  { usage: '/remove-device <id>', description: 'remove another of your devices: its sessions end at once' },
  {
    usage: '/link-device <code>',
    description: 'link the new device showing code (secure-chat link): shows its check, asks to approve',
  },
  { usage: '/help', description: 'this list' },
  { usage: '/quit', description: 'leave (Ctrl+C too)' },
]

function invalid(message: string): Command {
  return { kind: 'invalid', message }
}

function oneName(name: string, args: string[], usage: string): Command | string {
  if (args.length !== 1 || !args[0]) return invalid(`${name}: expected ${usage}`)
  return args[0]
}

export function parseCommand(line: string): Command {
  const trimmed = line.trim()
  if (trimmed === '') return { kind: 'empty' }
  if (!trimmed.startsWith('/')) return { kind: 'text', text: line.trim() }
  if (trimmed.startsWith('//')) return { kind: 'text', text: trimmed.slice(1) }

  const match = /^\/(\S+)\s*([\s\S]*)$/.exec(trimmed)
  const name = (match?.[1] ?? '').toLowerCase()
  const rest = match?.[2] ?? ''
  const args = rest.split(/\s+/).filter((word) => word !== '')

  switch (name) {
    case 'register': {
      const username = oneName('/register', args, '/register <user>')
      return typeof username === 'string' ? { kind: 'register', username } : username
    }
    case 'reinstall': {
      const username = oneName('/reinstall', args, '/reinstall <user>')
      return typeof username === 'string' ? { kind: 'reinstall', username } : username
    }
    case 'login':
      if (args.length > 1) return invalid('/login: expected /login [user]')
      return { kind: 'login', username: args[0] }
    case 'logout':
      return args.length === 0 ? { kind: 'logout' } : invalid('/logout: expected no arguments')
    case 'delete-account':
      return args.length === 0
        ? { kind: 'delete-account' }
        : invalid('/delete-account: expected no arguments (it asks for the name and the password)')
    case 'password':
      return args.length === 0 ? { kind: 'password' } : invalid('/password: expected no arguments')
    case 'users':
    case 'who':
      if (args.length > 1) return invalid('/users: expected /users [query]')
      return { kind: 'users', query: args[0] }
    case 'chat':
    case 'open': {
      const username = oneName('/chat', args, '/chat <user>')
      return typeof username === 'string' ? { kind: 'chat', username } : username
    }
    case 'msg': {
      const msg = /^(\S+)\s+([\s\S]*\S)\s*$/.exec(rest)
      if (!msg) return invalid('/msg: expected /msg <user> <text>')
      return { kind: 'msg', username: msg[1] as string, text: msg[2] as string }
    }
    case 'history': {
      if (args.length === 0) return { kind: 'history', count: undefined }
      const count = Number(args[0])
      if (args.length > 1 || !Number.isInteger(count) || count < 1 || count > MAX_HISTORY_COUNT) {
        return invalid(`/history: expected a number of messages from 1 to ${MAX_HISTORY_COUNT}`)
      }
      return { kind: 'history', count }
    }
    case 'contacts':
      return args.length === 0 ? { kind: 'contacts' } : invalid('/contacts: expected no arguments')
    case 'verify': {
      const username = oneName('/verify', args, '/verify <user>')
      return typeof username === 'string' ? { kind: 'verify', username } : username
    }
    case 'accept-key': {
      const username = oneName('/accept-key', args, '/accept-key <user>')
      return typeof username === 'string' ? { kind: 'accept-key', username } : username
    }
    case 'block':
    case 'unblock': {
      const username = oneName(`/${name}`, args, `/${name} <user>`)
      return typeof username === 'string' ? { kind: name, username } : username
    }
    case 'devices':
      return args.length === 0 ? { kind: 'devices' } : invalid('/devices: expected no arguments')
    case 'rename-device':
      // The whole rest of the line, spaces and all; the client core checks the name.
      return rest.trim() === ''
        ? invalid('/rename-device: expected /rename-device <name>')
        : { kind: 'rename-device', name: rest.trim() }
    case 'remove-device': {
      if (args.length !== 1) return invalid('/remove-device: expected /remove-device <id>')
      const id = args[0] as string
      // The same rule as `secure-chat remove-device` (args.ts): digits, as /devices shows the ids.
      if (!/^[1-9]\d*$/.test(id) || Number(id) > MAX_DEVICE_ID) {
        return invalid(`/remove-device: expected a device id (a positive whole number), got "${id}"`)
      }
      return { kind: 'remove-device', deviceId: Number(id) }
    }
    case 'link-device':
      // The rest of the line: a pasted code may have been broken by spaces or line ends (the core
      // ignores them, and checks the code).
      return rest.trim() === ''
        ? invalid('/link-device: expected /link-device <code> (the code secure-chat link shows)')
        : { kind: 'link-device', code: rest.trim() }
    case 'help':
    case '?':
      return { kind: 'help' }
    case 'quit':
    case 'exit':
      return { kind: 'quit' }
    default:
      return invalid(`unknown command /${name}: type /help for the list`)
  }
}
