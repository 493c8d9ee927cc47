/** Paths, remembered certificates, the test-only KDF setting and exit codes. */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ClientError, ClientErrorCode } from '../../shared/client/errors.js'
import { ProtocolError } from '../../shared/errors.js'
import { kdfOverride, TEST_KDF_ITERATIONS_ENV, TEST_RUN_ENV } from '../accounts.js'
import { describeCertificateNotice, KnownCertificates } from '../certificates.js'
import { clientSettings } from '../cli.js'
import { CommandError, ExitCode, exitCodeFor, UsageError } from '../exit-codes.js'
import { accountFile, dataDirectory, localAccounts, serverDirectoryName } from '../paths.js'
import { StoreFileError } from '../store.js'
import { parseServerUrl } from '../transport.js'

const root = mkdtempSync(join(tmpdir(), 'secure-chat-files-'))
afterAll(() => rmSync(root, { recursive: true, force: true }))

describe('paths', () => {
  it('follows XDG_DATA_HOME, ignoring a relative one, then ~/.local/share', () => {
    expect(dataDirectory('/explicit', { XDG_DATA_HOME: '/xdg' })).toBe('/explicit')
    expect(dataDirectory(undefined, { XDG_DATA_HOME: '/xdg', HOME: '/home/u' })).toBe('/xdg/secure-chat')
    expect(dataDirectory(undefined, { XDG_DATA_HOME: 'relative', HOME: '/home/u' })).toBe(
      '/home/u/.local/share/secure-chat',
    )
    expect(dataDirectory(undefined, { HOME: '/home/u' })).toBe('/home/u/.local/share/secure-chat')
  })

  it('names one directory per server and one file per account', () => {
    expect(serverDirectoryName('https://localhost:8443')).toBe('localhost_8443')
    expect(serverDirectoryName('https://Chat.Example.org')).toBe('chat.example.org_443')
    expect(serverDirectoryName('https://[::1]:8443')).toBe('--1_8443')
    expect(accountFile('/d', 'https://127.0.0.1:9', 'alice')).toBe('/d/127.0.0.1_9/alice.sqlite')
  })

  it('lists the accounts that have a database for a server', () => {
    const dir = join(root, '127.0.0.1_1')
    mkdirSync(dir, { recursive: true })
    for (const name of ['bob.sqlite', 'alice.sqlite', 'certificates.json', 'notes.txt', 'Bad Name.sqlite']) {
      writeFileSync(join(dir, name), '')
    }
    expect(localAccounts(root, 'https://127.0.0.1:1')).toEqual(['alice', 'bob'])
    expect(localAccounts(root, 'https://127.0.0.1:2')).toEqual([])
  })

  it('accepts only an https origin as the server', () => {
    expect(parseServerUrl('https://localhost:8443/')).toBe('https://localhost:8443')
    for (const bad of [
      'http://localhost:8443',
      'localhost:8443',
      'https://h/api',
      'https://u:p@h',
      'nonsense',
    ]) {
      expect(() => parseServerUrl(bad), bad).toThrow(ClientError)
    }
  })
})

describe('KnownCertificates', () => {
  it('tells about a certificate the first time, a changed one, and nothing for known ones', () => {
    const file = join(root, 'server', 'certificates.json')
    const known = new KnownCertificates(file, () => 1)
    const first = { fingerprint256: 'AA:BB', subject: 'localhost', validTo: '' }
    expect(known.observe(first)).toEqual({ kind: 'first', fingerprint256: 'AA:BB' })
    expect(known.observe(first)).toBeUndefined()
    expect(statSync(file).mode & 0o777).toBe(0o600)
    // A later run remembers it.
    const later = new KnownCertificates(file)
    expect(later.observe(first)).toBeUndefined()
    const renewed = { ...first, fingerprint256: 'CC:DD' }
    const notice = later.observe(renewed)
    expect(notice).toEqual({ kind: 'changed', fingerprint256: 'CC:DD', previous: 'AA:BB' })
    expect(describeCertificateNotice(notice!, 'https://h:1')).toContain('CC:DD')
    expect(JSON.parse(readFileSync(file, 'utf8')).certificates).toHaveLength(2)
  })

  it('treats an unreadable file as empty', () => {
    const file = join(root, 'damaged', 'certificates.json')
    mkdirSync(join(root, 'damaged'))
    writeFileSync(file, '{not json')
    expect(
      new KnownCertificates(file).observe({ fingerprint256: 'EE', subject: '', validTo: '' })?.kind,
    ).toBe('first')
  })
})

describe('test-only KDF iterations', () => {
  const testRun = { [TEST_RUN_ENV]: 'true' }

  it('changes nothing unless set, and refuses nonsense in a test run', () => {
    expect(kdfOverride({})).toEqual({})
    expect(kdfOverride(testRun)).toEqual({})
    expect(kdfOverride({ ...testRun, [TEST_KDF_ITERATIONS_ENV]: '1000' })).toEqual({
      storageKeyIterations: 1000,
      minimumStorageKeyIterations: 1000,
      loginSecretIterations: 1000,
    })
    expect(() => kdfOverride({ ...testRun, [TEST_KDF_ITERATIONS_ENV]: 'many' })).toThrow(UsageError)
    expect(() => kdfOverride({ ...testRun, [TEST_KDF_ITERATIONS_ENV]: '0' })).toThrow(UsageError)
  })

  it('is refused outside a test run, whatever the value', () => {
    for (const env of [
      { [TEST_KDF_ITERATIONS_ENV]: '1000' },
      { [TEST_KDF_ITERATIONS_ENV]: '1' },
      { [TEST_KDF_ITERATIONS_ENV]: '1000', [TEST_RUN_ENV]: '' },
    ]) {
      expect(() => kdfOverride(env)).toThrow(UsageError)
      expect(() => kdfOverride(env)).toThrow(
        `${TEST_KDF_ITERATIONS_ENV}: expected it unset outside the test suite, got "${env[TEST_KDF_ITERATIONS_ENV]}"`,
      )
    }
  })

  it('is refused by the settings every command starts from, before any file is made', () => {
    const dataDir = join(root, 'never-made')
    const options = { server: 'https://localhost:8443', ca: undefined, dataDir }
    expect(() => clientSettings(options, { [TEST_KDF_ITERATIONS_ENV]: '1000' })).toThrow(UsageError)
    expect(() => statSync(dataDir)).toThrow()
    expect(clientSettings(options, {}).keyDerivation).toEqual({})
    expect(clientSettings(options, { ...testRun, [TEST_KDF_ITERATIONS_ENV]: '1000' }).keyDerivation).toEqual({
      storageKeyIterations: 1000,
      minimumStorageKeyIterations: 1000,
      loginSecretIterations: 1000,
    })
  })
})

describe('exit codes', () => {
  it('maps each kind of failure to its documented code', () => {
    const client = (code: ClientErrorCode) => new ClientError(code, 'x')
    expect(exitCodeFor(new UsageError('x'))).toBe(ExitCode.Usage)
    expect(exitCodeFor(client(ClientErrorCode.InvalidInput))).toBe(ExitCode.Usage)
    expect(exitCodeFor(new ProtocolError('E2E_ERR_INVALID_INPUT', 'x'))).toBe(ExitCode.Usage)
    expect(exitCodeFor(client(ClientErrorCode.WrongPassword))).toBe(ExitCode.WrongPassword)
    expect(exitCodeFor(client(ClientErrorCode.Server))).toBe(ExitCode.ServerRefused)
    expect(exitCodeFor(client(ClientErrorCode.UnknownUser))).toBe(ExitCode.ServerRefused)
    expect(exitCodeFor(client(ClientErrorCode.Network))).toBe(ExitCode.Network)
    expect(exitCodeFor(client(ClientErrorCode.IdentityChanged))).toBe(ExitCode.IdentityChanged)
    expect(exitCodeFor(client(ClientErrorCode.CorruptStore))).toBe(ExitCode.LocalDatabase)
    expect(exitCodeFor(client(ClientErrorCode.NoAccount))).toBe(ExitCode.LocalDatabase)
    expect(exitCodeFor(new StoreFileError('in-use', '/f', 'busy'))).toBe(ExitCode.LocalDatabase)
    expect(exitCodeFor(new CommandError(ExitCode.ServerRefused, 'x'))).toBe(ExitCode.ServerRefused)
    expect(exitCodeFor(new Error('bug'))).toBe(ExitCode.Failure)
  })
})
