/**
 * The password of the non-interactive commands: from SECURE_CHAT_PASSWORD, else from standard
 * input: typed at a terminal without echo, or the first line of whatever is piped in.
 */
import { UsageError } from './exit-codes.js'

export const PASSWORD_ENV = 'SECURE_CHAT_PASSWORD'
/** `secure-chat password`: the new password, when not typed or piped as the second line. */
export const NEW_PASSWORD_ENV = 'SECURE_CHAT_NEW_PASSWORD'
/** Longer than any password the server accepts; stops reading a runaway pipe. */
const MAX_PASSWORD_INPUT_BYTES = 4096

export interface PasswordInput {
  readonly env: NodeJS.ProcessEnv
  readonly stdin: NodeJS.ReadStream
  readonly stderr: { write(text: string): unknown }
}

/** Reads one line from a terminal with echo off (raw mode); Ctrl+C or Ctrl+D cancels. */
function readHidden(input: PasswordInput, prompt: string): Promise<string> {
  const { stdin, stderr } = input
  stderr.write(prompt)
  return new Promise((resolve, reject) => {
    let value = ''
    const finish = (error?: Error) => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      stderr.write('\n')
      if (error) reject(error)
      else resolve(value)
    }
    const onData = (chunk: Buffer | string) => {
      for (const char of String(chunk)) {
        if (char === '\r' || char === '\n') return finish()
        if (char === '\u0003' || char === '\u0004') return finish(new UsageError('password entry cancelled'))
        if (char === '\u007f' || char === '\b') value = value.slice(0, -1)
        else if (char >= ' ') value += char
      }
    }
    stdin.setRawMode(true)
    stdin.setEncoding('utf8')
    stdin.on('data', onData)
    stdin.resume()
  })
}

/** The first `count` lines of a pipe (fewer if it ends first), reading no further than needed. */
async function readLines(stdin: NodeJS.ReadStream, count: number): Promise<string[]> {
  const chunks: Buffer[] = []
  let length = 0
  let newlines = 0
  for await (const chunk of stdin) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk))
    chunks.push(buffer)
    length += buffer.length
    for (const byte of buffer) if (byte === 0x0a) newlines++
    if (newlines >= count || length > MAX_PASSWORD_INPUT_BYTES * count) break
  }
  const text = Buffer.concat(chunks).toString('utf8')
  return text.split(/\r?\n/).slice(0, count)
}

async function readFirstLine(stdin: NodeJS.ReadStream): Promise<string> {
  return (await readLines(stdin, 1))[0] ?? ''
}

export async function readPassword(
  input: PasswordInput,
  options: { confirm?: boolean } = {},
): Promise<string> {
  const fromEnv = input.env[PASSWORD_ENV]
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv
  let password: string
  if (input.stdin.isTTY) {
    password = await readHidden(input, 'Password: ')
    if (options.confirm && (await readHidden(input, 'Repeat the password: ')) !== password) {
      throw new UsageError('password: expected the same password twice, got two different ones')
    }
  } else {
    password = await readFirstLine(input.stdin)
  }
  if (password === '') {
    throw new UsageError(`password: expected one in ${PASSWORD_ENV} or on standard input, got none`)
  }
  return password
}

/**
 * The current and the new password of `secure-chat password`: from SECURE_CHAT_PASSWORD and
 * SECURE_CHAT_NEW_PASSWORD, else typed at a terminal without echo (the new one twice), else the
 * first two lines piped in (current, then new).
 */
export async function readPasswordChange(input: PasswordInput): Promise<{ current: string; next: string }> {
  const fromEnv = (name: string) => {
    const value = input.env[name]
    return value === undefined || value === '' ? undefined : value
  }
  let current = fromEnv(PASSWORD_ENV)
  let next = fromEnv(NEW_PASSWORD_ENV)
  if (input.stdin.isTTY) {
    current ??= await readHidden(input, 'Current password: ')
    if (next === undefined) {
      next = await readHidden(input, 'New password: ')
      if ((await readHidden(input, 'Repeat the new password: ')) !== next) {
        throw new UsageError('new password: expected the same password twice, got two different ones')
      }
    }
  } else if (current === undefined || next === undefined) {
    const lines = await readLines(input.stdin, current === undefined ? 2 : 1)
    if (current === undefined) current = lines.shift()
    next ??= lines.shift()
  }
  if (!current) {
    throw new UsageError(
      `password: expected the current one in ${PASSWORD_ENV} or on standard input, got none`,
    )
  }
  if (!next) {
    throw new UsageError(
      `new password: expected it in ${NEW_PASSWORD_ENV} or on standard input (after the current one), got none`,
    )
  }
  return { current, next }
}
