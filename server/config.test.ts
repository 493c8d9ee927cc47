import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ConfigError,
  DEFAULT_REDIS_PREFIX,
  describeConfig,
  maskUrl,
  parseConfig,
  type ServerConfig,
} from './config.js'
import { removeDir } from './test/harness.js'
import { DEFAULT_REDIS_CHANNEL_PREFIX } from './ws/redis-bus.js'

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
      metrics: { port: undefined, host: '127.0.0.1', token: undefined },
      replaceRelationsKey: false,
      maxDevicesPerAccount: undefined,
    })
  })

  it('takes --max-devices or MAX_DEVICES_PER_ACCOUNT, 1–64, the flag winning', () => {
    expect(configOf(['--max-devices', '3']).maxDevicesPerAccount).toBe(3)
    expect(configOf([], { MAX_DEVICES_PER_ACCOUNT: '10' }).maxDevicesPerAccount).toBe(10)
    expect(configOf(['--max-devices', '2'], { MAX_DEVICES_PER_ACCOUNT: '10' }).maxDevicesPerAccount).toBe(2)
    for (const bad of ['0', '65', '-1', '2.5', 'six']) {
      expect(() => configOf([`--max-devices=${bad}`])).toThrow(/max-devices.*expected an integer 1–64/)
    }
  })

  it('takes --replace-relations-key only as a flag: an environment file left with it would wipe relations on every start', () => {
    expect(configOf(['--replace-relations-key']).replaceRelationsKey).toBe(true)
    expect(configOf([], { REPLACE_RELATIONS_KEY: '1' }).replaceRelationsKey).toBe(false)
  })

  it('makes a cluster member of REDIS_URL or --redis-url with PostgreSQL, the flag winning', () => {
    const postgres = { DATABASE_URL: 'postgres://chat@db:5432/chat' }
    expect(configOf([], { ...postgres, REDIS_URL: 'redis://cache:6379' }).redis).toEqual({
      url: 'redis://cache:6379',
      channelPrefix: 'secure-chat:',
    })
    expect(
      configOf(['--redis-url', 'rediss://u:p@cache:6380/2'], { ...postgres, REDIS_URL: 'redis://other' })
        .redis,
    ).toEqual({ url: 'rediss://u:p@cache:6380/2', channelPrefix: 'secure-chat:' })
  })

  it('takes a Redis key prefix (REDIS_PREFIX or --redis-prefix), the default being the bus’s own, and refuses hash tags', () => {
    const postgres = { DATABASE_URL: 'postgres://chat@db:5432/chat', REDIS_URL: 'redis://cache:6379' }
    expect(DEFAULT_REDIS_PREFIX).toBe(DEFAULT_REDIS_CHANNEL_PREFIX)
    expect(configOf([], { ...postgres, REDIS_PREFIX: 'chat-b:' }).redis?.channelPrefix).toBe('chat-b:')
    expect(
      configOf(['--redis-prefix', 'chat-c:'], { ...postgres, REDIS_PREFIX: 'chat-b:' }).redis?.channelPrefix,
    ).toBe('chat-c:')
    expect(() => configOf([], { ...postgres, REDIS_PREFIX: '{all}' })).toThrow(
      '--redis-prefix/REDIS_PREFIX: expected 1–64 letters, digits or . _ : -, got "{all}"',
    )
    expect(() => configOf([], { REDIS_PREFIX: 'chat-b:' })).toThrow(
      '--redis-prefix/REDIS_PREFIX: expected it with --redis-url/REDIS_URL, got it alone',
    )
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
    [
      ['--metrics-port', '99999'],
      {},
      /--metrics-port\/METRICS_PORT: expected an integer 0–65535, got "99999"/,
    ],
    [['--port', '9000', '--metrics-port', '9000'], {}, /expected a port other than the server's/],
    [['--metrics-host', 'a b'], {}, /--metrics-host\/METRICS_HOST: expected a hostname/],
    [[], { METRICS_TOKEN: 'short' }, /METRICS_TOKEN: expected at least 32 visible ASCII characters/],
    [[], { METRICS_TOKEN: `${'x'.repeat(32)} y` }, /with others among them/],
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

  it('takes a metrics port, host and token; the token only from the environment', () => {
    const token = 'm'.repeat(40)
    expect(configOf(['--metrics-port', '9464'], { METRICS_TOKEN: token }).metrics).toEqual({
      port: 9464,
      host: '127.0.0.1',
      token,
    })
    expect(configOf([], { METRICS_PORT: '0', METRICS_HOST: '::1' }).metrics).toEqual({
      port: 0,
      host: '::1',
      token: undefined,
    })
    expect(() => parseConfig(['--metrics-token', token], {})).toThrow(/Unknown option '--metrics-token'/)
  })

  it('never echoes a metrics token in an error', () => {
    expect(() => parseConfig([], { METRICS_TOKEN: 'hunter2-token' })).toThrow(/got 13 characters/)
    expect(() => parseConfig([], { METRICS_TOKEN: 'hunter2-token' })).not.toThrow(/hunter2/)
  })

  it('describes the effective configuration without the database password or the metrics token', () => {
    const token = 'tok-'.repeat(10)
    const config = configOf(['--metrics-port', '9464', '--trust-proxy', '127.0.0.1'], {
      DATABASE_URL:
        'postgres://chat:pw-secret-42@db.internal:5432/chat?sslpassword=also-secret&application_name=x',
      METRICS_TOKEN: token,
    })
    const text = describeConfig(config).join('\n')
    expect(text).not.toContain('pw-secret-42')
    expect(text).not.toContain('also-secret')
    expect(text).not.toContain(token)
    expect(text).toContain(
      'database: PostgreSQL postgres://chat:***@db.internal:5432/chat?sslpassword=***&application_name=x',
    )
    expect(text).toContain(
      'metrics: http://127.0.0.1:9464/metrics (bearer token); on the main port with a bearer token (METRICS_TOKEN, not shown)',
    )
    expect(text).toContain('trust proxy: 127.0.0.1')
    expect(describeConfig(configOf([]))).toEqual([
      'host: localhost',
      'port: 8443',
      'data directory: /srv/chat/data',
      'certificate directory: /srv/chat/certs',
      'TLS: self-signed localhost certificate',
      'database: SQLite /srv/chat/data/secure-chat.sqlite',
      'relay bus: in this process (a single node)',
      'trust proxy: false',
      'log level: info',
      'metrics: not served (set METRICS_PORT or METRICS_TOKEN)',
    ])
    const cluster = configOf([], {
      DATABASE_URL: 'postgres://chat@db/chat',
      REDIS_URL: 'redis://relay:redis-secret@cache:6379/0',
    })
    expect(describeConfig(cluster)).toContain(
      'relay bus: Redis redis://relay:***@cache:6379/0 (a cluster member), key prefix secure-chat:',
    )
    expect(describeConfig(cluster).join('\n')).not.toContain('redis-secret')
    expect(maskUrl('postgres://chat@db/chat')).toBe('postgres://chat@db/chat')
    expect(maskUrl('redis://relay:redis-secret@cache:6379/0')).toBe('redis://relay:***@cache:6379/0')
  })

  it('recognises --help', () => {
    expect(parseConfig(['--help'], {})).toEqual({ help: true })
  })
})
