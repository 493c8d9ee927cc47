import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, parseConfig, type ServerConfig } from './config.js'
import { removeDir } from './test/harness.js'

function configOf(argv: string[], env: Record<string, string> = {}, cwd = '/srv/chat'): ServerConfig {
  const parsed = parseConfig(argv, env, cwd)
  if (parsed.help) throw new Error('unexpected --help')
  return parsed.config
}

describe('configuration', () => {
  let dir: string
  let cert: string
  let key: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'secure-chat-config-'))
    cert = join(dir, 'fullchain.pem')
    key = join(dir, 'privkey.pem')
    await writeFile(cert, 'cert')
    await writeFile(key, 'key')
  })
  afterAll(async () => {
    await removeDir(dir)
  })

  it('has defaults that need no setup: loopback, 8443, ./data SQLite, self-signed ./certs', () => {
    expect(configOf([])).toEqual({
      host: 'localhost',
      port: 8443,
      dataDir: '/srv/chat/data',
      certDir: '/srv/chat/certs',
      tls: undefined,
      database: { kind: 'sqlite', file: '/srv/chat/data/secure-chat.sqlite' },
      redis: undefined,
      trustProxy: false,
      logLevel: 'info',
    })
  })

  it('makes a cluster member of REDIS_URL or --redis-url with PostgreSQL, the flag winning', () => {
    const postgres = { DATABASE_URL: 'postgres://chat@db:5432/chat' }
    expect(configOf([], { ...postgres, REDIS_URL: 'redis://cache:6379' }).redis).toEqual({
      url: 'redis://cache:6379',
    })
    expect(
      configOf(['--redis-url', 'rediss://u:p@cache:6380/2'], { ...postgres, REDIS_URL: 'redis://other' })
        .redis,
    ).toEqual({ url: 'rediss://u:p@cache:6380/2' })
  })

  it('refuses Redis with the embedded SQLite database, which several nodes cannot share', () => {
    const attempt = () => parseConfig([], { REDIS_URL: 'redis://127.0.0.1:6379' }, '/srv/chat')
    expect(attempt).toThrow(ConfigError)
    expect(attempt).toThrow(/expected DATABASE_URL to name PostgreSQL, got the embedded SQLite database/)
  })

  it('reads environment variables, and flags win over them', () => {
    const env = {
      HOST: '0.0.0.0',
      PORT: '9000',
      DATA_DIR: '/var/lib/chat',
      LOG_LEVEL: 'warn',
      TRUST_PROXY: '1',
    }
    expect(configOf([], env)).toMatchObject({
      host: '0.0.0.0',
      port: 9000,
      dataDir: '/var/lib/chat',
      database: { kind: 'sqlite', file: '/var/lib/chat/secure-chat.sqlite' },
      logLevel: 'warn',
      trustProxy: 1,
    })
    expect(configOf(['--host', '::', '--port', '0', '--data-dir', 'state'], env)).toMatchObject({
      host: '::',
      port: 0,
      dataDir: '/srv/chat/state',
    })
  })

  it('takes an operator certificate and key together', () => {
    expect(configOf(['--cert', cert, '--key', key]).tls).toEqual({ certFile: cert, keyFile: key })
    expect(configOf([], { TLS_CERT: cert, TLS_KEY: key }).tls).toEqual({ certFile: cert, keyFile: key })
  })

  it('selects PostgreSQL from DATABASE_URL', () => {
    expect(configOf([], { DATABASE_URL: 'postgres://chat@db:5432/chat' }).database).toEqual({
      kind: 'postgres',
      url: 'postgres://chat@db:5432/chat',
    })
    expect(configOf([], { DATABASE_URL: 'postgresql://chat@db/chat' }).database.kind).toBe('postgres')
  })

  it.each([
    [['--port', '70000'], {}, /--port\/PORT: expected an integer 0–65535, got "70000"/],
    [['--port', 'http'], {}, /expected an integer/],
    [[], { PORT: '-1' }, /expected an integer/],
    [['--cert', '/nonexistent.pem', '--key', '/nonexistent.pem'], {}, /expected a readable file/],
    [['--cert', '/etc/hostname'], {}, /expected both or neither, got only the certificate/],
    [[], { DATABASE_URL: 'mysql://secret:hunter2@db/chat' }, /got scheme "mysql:"/],
    [[], { DATABASE_URL: 'not a url' }, /unparsable/],
    [[], { DATABASE_URL: 'postgres://db/chat', REDIS_URL: 'http://u:hunter2@cache' }, /got scheme "http:"/],
    [
      ['--redis-url', 'not a url'],
      { DATABASE_URL: 'postgres://db/chat' },
      /--redis-url\/REDIS_URL: .*unparsable/,
    ],
    [['--log-level', 'loud'], {}, /--log-level\/LOG_LEVEL: expected one of/],
    [['--trust-proxy', 'everyone'], {}, /TRUST_PROXY: expected/],
    [['--host', 'bad host'], {}, /--host\/HOST: expected a hostname/],
    [['--unknown'], {}, /Unknown option '--unknown'/],
  ])('refuses %j %j with a clear ConfigError', (argv, env, message) => {
    const attempt = () => parseConfig(argv, env as Record<string, string>, '/srv/chat')
    expect(attempt).toThrow(ConfigError)
    expect(attempt).toThrow(message)
  })

  it('never echoes a database password in an error', () => {
    expect(() => parseConfig([], { DATABASE_URL: 'mysql://user:hunter2@db/chat' })).not.toThrow(/hunter2/)
    expect(() =>
      parseConfig([], { DATABASE_URL: 'postgres://db/chat', REDIS_URL: 'http://user:hunter2@cache' }),
    ).not.toThrow(/hunter2/)
  })

  it('recognises --help', () => {
    expect(parseConfig(['--help'], {})).toEqual({ help: true })
  })
})
