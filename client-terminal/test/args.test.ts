import { describe, expect, it } from 'vitest'
import { DEFAULT_SERVER, parseInvocation } from '../args.js'
import { DEFAULT_HISTORY, MAX_HISTORY_COUNT } from '../commands.js'
import { UsageError } from '../exit-codes.js'

const env = {}

describe('parseInvocation', () => {
  it('starts the interactive client without a command', () => {
    expect(parseInvocation(['--server', 'https://h:1', '--ca', 'c.pem', '--data-dir', 'd'], env)).toEqual({
      command: 'interactive',
      options: { server: 'https://h:1', ca: 'c.pem', dataDir: 'd', user: undefined },
    })
    expect(parseInvocation([], env)).toMatchObject({ options: { server: DEFAULT_SERVER } })
  })

  it('takes server, CA and user from the environment, options winning', () => {
    const fromEnv = {
      SECURE_CHAT_SERVER: 'https://env:2',
      SECURE_CHAT_CA: 'env.pem',
      SECURE_CHAT_USER: 'eve',
    }
    expect(parseInvocation(['read'], fromEnv)).toMatchObject({
      options: { server: 'https://env:2', ca: 'env.pem', user: 'eve' },
    })
    expect(parseInvocation(['read', '--server', 'https://opt:3', '--user', 'bob'], fromEnv)).toMatchObject({
      options: { server: 'https://opt:3', ca: 'env.pem', user: 'bob' },
    })
  })

  it('parses each command', () => {
    expect(parseInvocation(['register', 'alice'], env)).toMatchObject({
      command: 'register',
      username: 'alice',
    })
    expect(parseInvocation(['reinstall', 'alice'], env)).toMatchObject({
      command: 'reinstall',
      username: 'alice',
    })
    expect(parseInvocation(['send', 'bob', 'hello', 'there'], env)).toMatchObject({
      command: 'send',
      peer: 'bob',
      text: 'hello there',
      json: false,
    })
    expect(parseInvocation(['send', 'bob', 'hi', '--json'], env)).toMatchObject({ json: true })
    expect(parseInvocation(['read', '--from', 'bob', '--json', '--wait', '2.5'], env)).toMatchObject({
      command: 'read',
      from: 'bob',
      json: true,
      waitSeconds: 2.5,
    })
    expect(parseInvocation(['read'], env)).toMatchObject({
      from: undefined,
      json: false,
      waitSeconds: undefined,
    })
    const number = '12345 67890 '.repeat(6).trim()
    expect(parseInvocation(['verify', 'bob', '--confirm', '--number', number], env)).toMatchObject({
      command: 'verify',
      confirm: true,
      number: '1234567890'.repeat(6),
    })
    expect(parseInvocation(['verify', 'bob'], env)).toMatchObject({ confirm: false, number: undefined })
    expect(parseInvocation(['accept-key', 'bob'], env)).toMatchObject({ command: 'accept-key', peer: 'bob' })
    expect(parseInvocation(['block', 'bob'], env)).toMatchObject({ command: 'block', peer: 'bob' })
    expect(parseInvocation(['unblock', 'bob'], env)).toMatchObject({ command: 'unblock', peer: 'bob' })
    expect(() => parseInvocation(['block'], env)).toThrow(/block/)
    expect(parseInvocation(['history', 'bob'], env)).toMatchObject({
      command: 'history',
      peer: 'bob',
      count: DEFAULT_HISTORY,
      json: false,
    })
    expect(parseInvocation(['history', 'bob', '-n', '5', '--json'], env)).toMatchObject({
      count: 5,
      json: true,
    })
    expect(parseInvocation(['history', '-n7', 'bob'], env)).toMatchObject({ peer: 'bob', count: 7 })
    expect(parseInvocation(['history', 'bob', '-n', String(MAX_HISTORY_COUNT)], env)).toMatchObject({
      count: MAX_HISTORY_COUNT,
    })
    expect(parseInvocation(['devices'], env)).toMatchObject({ command: 'devices', json: false })
    expect(parseInvocation(['devices', '--json'], env)).toMatchObject({ command: 'devices', json: true })
    expect(parseInvocation(['rename-device', 'Work laptop'], env)).toMatchObject({
      command: 'rename-device',
      name: 'Work laptop',
    })
    expect(parseInvocation(['remove-device', '2'], env)).toMatchObject({
      command: 'remove-device',
      deviceId: 2,
    })
    expect(parseInvocation(['remove-device', '4294967295'], env)).toMatchObject({ deviceId: 0xffff_ffff })
    expect(parseInvocation(['link'], env)).toMatchObject({
      command: 'link',
      name: undefined,
      waitSeconds: undefined,
      json: false,
    })
    expect(parseInvocation(['link', '--name', 'Work laptop', '--wait', '30', '--json'], env)).toMatchObject({
      command: 'link',
      name: 'Work laptop',
      waitSeconds: 30,
      json: true,
    })
    expect(parseInvocation(['approve-link', 'sc1AAAA'], env)).toMatchObject({
      command: 'approve-link',
      code: 'sc1AAAA',
      yes: false,
    })
    expect(parseInvocation(['approve-link', 'sc1AAAA', '--yes'], env)).toMatchObject({ yes: true })
    expect(parseInvocation(['approve-link', 'sc1AAAA', '-y'], env)).toMatchObject({ yes: true })
    expect(parseInvocation(['erase-local', 'alice'], env)).toMatchObject({
      command: 'erase-local',
      confirmation: 'alice',
    })
    expect(parseInvocation(['help'], env)).toEqual({ command: 'help' })
    expect(parseInvocation(['read', '--help'], env)).toEqual({ command: 'help' })
  })

  const mistakes: [string[], string][] = [
    [['frobnicate'], 'expected one of'],
    [['register'], 'register: expected <user>'],
    [['register', 'a', 'b'], 'register: expected <user>'],
    [['reinstall'], 'reinstall: expected <user>'],
    [['reinstall', 'alice', '--confirm'], '--confirm: expected only with verify'],
    [['send', 'bob'], 'send: expected <user> <text>'],
    [['read', 'extra'], 'read: expected no arguments'],
    [['read', '--wait', 'soon'], '--wait: expected seconds'],
    [['read', '--wait=-1'], '--wait: expected seconds'],
    [['read', '--confirm'], '--confirm: expected only with verify'],
    [['send', 'bob', 'hi', '--from', 'x'], '--from: expected only with read'],
    [['register', 'alice', '--json'], '--json: expected only with'],
    [['read', '--bogus'], 'bogus'],
    [['verify', 'bob', '--confirm'], '--confirm: expected the safety number you compared, with --number'],
    [['verify', 'bob', '--number', '1'.repeat(60)], '--number: expected only with --confirm'],
    [['verify', 'bob', '--confirm', '--number', '1'.repeat(59)], '--number: expected 60 digits'],
    [['verify', 'bob', '--confirm', '--number', `${'1'.repeat(59)}x`], '--number: expected 60 digits'],
    [['read', '--number', '1'], '--number: expected only with verify'],
    [['history'], 'history: expected <user>'],
    [['history', 'bob', 'carol'], 'history: expected <user>'],
    [['history', 'bob', '-n', '0'], `-n: expected a whole number from 1 to ${MAX_HISTORY_COUNT}, got "0"`],
    [['history', 'bob', '-n-3'], '-n: expected a whole number from 1 to'],
    [['history', 'bob', '-n', '2.5'], '-n: expected a whole number from 1 to'],
    [['history', 'bob', '-n', '1e2'], '-n: expected a whole number from 1 to'],
    [['history', 'bob', '-n', ' 5'], '-n: expected a whole number from 1 to'],
    [['history', 'bob', '-n', ''], '-n: expected a whole number from 1 to'],
    [['history', 'bob', '-n', String(MAX_HISTORY_COUNT + 1)], '-n: expected a whole number from 1 to'],
    [['history', 'bob', '-n'], "'-n"],
    [['history', 'bob', '--wait', '1'], '--wait: expected only with read'],
    [['read', '-n', '5'], '-n: expected only with history'],
    [['devices', 'all'], 'devices: expected no arguments'],
    [['rename-device'], 'rename-device: expected <name>'],
    [['rename-device', 'Work', 'laptop'], 'rename-device: expected <name>'],
    [['rename-device', 'x', '--json'], '--json: expected only with'],
    [['remove-device'], 'remove-device: expected <id>'],
    [['remove-device', '0'], 'remove-device: expected a device id (a positive whole number), got "0"'],
    [['remove-device', '02'], 'remove-device: expected a device id'],
    [['remove-device', '1e2'], 'remove-device: expected a device id'],
    [['remove-device', '4294967296'], 'remove-device: expected a device id'],
    [['link', 'alice'], 'link: expected no arguments'],
    [['link', '--wait', '-1'], "'--wait"],
    [['link', '--wait', 'soon'], '--wait: expected seconds from 0 to'],
    [['link', '--yes'], '--yes: expected only with approve-link'],
    [['devices', '--name', 'x'], '--name: expected only with link'],
    [['approve-link'], 'approve-link: expected <code>'],
    [['approve-link', 'a', 'b'], 'approve-link: expected <code>'],
    [['approve-link', 'sc1AAAA', '--json'], '--json: expected only with'],
    [['erase-local'], 'erase-local: expected <user>'],
  ]
  it.each(mistakes)('refuses %j', (argv, message) => {
    expect(() => parseInvocation(argv, env)).toThrow(UsageError)
    expect(() => parseInvocation(argv, env)).toThrow(message)
  })
})
