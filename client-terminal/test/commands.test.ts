import { describe, expect, it } from 'vitest'
import { type Command, MAX_HISTORY_COUNT, parseCommand } from '../commands.js'

describe('parseCommand', () => {
  const cases: [string, Command][] = [
    ['hello there', { kind: 'text', text: 'hello there' }],
    ['  padded  ', { kind: 'text', text: 'padded' }],
    ['//not a command', { kind: 'text', text: '/not a command' }],
    ['', { kind: 'empty' }],
    ['   ', { kind: 'empty' }],
    ['/register alice', { kind: 'register', username: 'alice' }],
    ['/reinstall alice', { kind: 'reinstall', username: 'alice' }],
    ['/login', { kind: 'login', username: undefined }],
    ['/login bob', { kind: 'login', username: 'bob' }],
    ['/LOGIN bob', { kind: 'login', username: 'bob' }],
    ['/logout', { kind: 'logout' }],
    ['/users', { kind: 'users', query: undefined }],
    ['/users bo', { kind: 'users', query: 'bo' }],
    ['/chat bob', { kind: 'chat', username: 'bob' }],
    ['/msg bob hi there  you', { kind: 'msg', username: 'bob', text: 'hi there  you' }],
    ['/history', { kind: 'history', count: undefined }],
    ['/history 20', { kind: 'history', count: 20 }],
    ['/contacts', { kind: 'contacts' }],
    ['/verify bob', { kind: 'verify', username: 'bob' }],
    ['/accept-key bob', { kind: 'accept-key', username: 'bob' }],
    ['/block bob', { kind: 'block', username: 'bob' }],
    ['/unblock Bob', { kind: 'unblock', username: 'Bob' }],
    ['/devices', { kind: 'devices' }],
    ['/rename-device Work laptop', { kind: 'rename-device', name: 'Work laptop' }],
    ['/remove-device 2', { kind: 'remove-device', deviceId: 2 }],
    ['/link-device sc1AbC', { kind: 'link-device', code: 'sc1AbC' }],
    // A pasted code broken by spaces is kept whole (the core ignores the spaces).
    ['/link-device sc1Ab Cd ', { kind: 'link-device', code: 'sc1Ab Cd' }],
    ['/help', { kind: 'help' }],
    ['/quit', { kind: 'quit' }],
    ['/exit', { kind: 'quit' }],
  ]
  it.each(cases)('%j', (line, expected) => {
    expect(parseCommand(line)).toEqual(expected)
  })

  const invalid: [string, string][] = [
    ['/register', '/register <user>'],
    ['/register a b', '/register <user>'],
    ['/reinstall', '/reinstall <user>'],
    ['/reinstall a b', '/reinstall <user>'],
    ['/login a b', '/login [user]'],
    ['/logout now', 'no arguments'],
    ['/chat', '/chat <user>'],
    ['/msg bob', '/msg <user> <text>'],
    ['/msg', '/msg <user> <text>'],
    ['/history ten', 'number of messages'],
    ['/history 0', 'number of messages'],
    [`/history ${MAX_HISTORY_COUNT + 1}`, 'number of messages'],
    ['/verify', '/verify <user>'],
    ['/accept-key', '/accept-key <user>'],
    ['/block', '/block <user>'],
    ['/unblock a b', '/unblock <user>'],
    ['/devices all', 'no arguments'],
    ['/rename-device', '/rename-device <name>'],
    ['/remove-device', '/remove-device <id>'],
    ['/link-device', '/link-device <code>'],
    ['/remove-device 0', 'a device id (a positive whole number)'],
    ['/remove-device two', 'a device id (a positive whole number)'],
    ['/remove-device 1.5', 'a device id (a positive whole number)'],
    ['/remove-device 2 3', '/remove-device <id>'],
    ['/nope', 'unknown command /nope'],
  ]
  it.each(invalid)('refuses %j', (line, message) => {
    const command = parseCommand(line)
    expect(command.kind).toBe('invalid')
    expect(command.kind === 'invalid' && command.message).toContain(message)
  })
})
