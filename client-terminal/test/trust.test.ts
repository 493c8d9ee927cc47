/**
 * Which certificate authorities the client trusts (trust.ts): the --ca file alone, else Node's list
 * plus the system bundle (SSL_CERT_FILE, else the distribution's file), checked against a real TLS
 * server with a self-signed certificate.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testCertificate } from '../../server/test/harness.js'
import { isClientError } from '../../shared/client/errors.js'
import { UsageError } from '../exit-codes.js'
import { httpsClient, isCertificateError } from '../transport.js'
import { SYSTEM_CA_FILE_ENV, systemCaBundle, trustContext, trustedCertificates } from '../trust.js'

const root = mkdtempSync(join(tmpdir(), 'secure-chat-trust-'))
const missing = join(root, 'missing.pem')
/** Some other certificate authority, so a bundle holds more than the one that matters. */
const otherRoot = rootCertificates[0] as string

let selfSigned: string
let server: Server
let origin: string

function file(name: string, contents: string): string {
  const path = join(root, name)
  writeFileSync(path, contents)
  return path
}

beforeAll(async () => {
  const material = await testCertificate()
  selfSigned = material.cert
  server = createServer({ cert: material.cert, key: material.key }, (_request, response) => {
    response.setHeader('content-type', 'application/json')
    response.end('{"ok":true}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
})

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve))
  rmSync(root, { recursive: true, force: true })
})

describe('the system bundle', () => {
  it('is the file SSL_CERT_FILE names, before any distribution file', () => {
    const named = file('named.pem', otherRoot)
    const distribution = file('distribution.pem', selfSigned)
    expect(systemCaBundle({ [SYSTEM_CA_FILE_ENV]: named }, [distribution])).toEqual({
      file: named,
      pem: otherRoot,
    })
  })

  it('is otherwise the first distribution file that exists, or none', () => {
    const second = file('second.pem', otherRoot)
    const third = file('third.pem', selfSigned)
    expect(systemCaBundle({}, [missing, second, third])?.file).toBe(second)
    expect(systemCaBundle({ [SYSTEM_CA_FILE_ENV]: '' }, [missing, third])?.file).toBe(third)
    expect(systemCaBundle({}, [missing])).toBeUndefined()
  })

  it('refuses an SSL_CERT_FILE that cannot be read or holds no certificate', () => {
    expect(() => systemCaBundle({ [SYSTEM_CA_FILE_ENV]: missing }, [])).toThrow(UsageError)
    expect(() => systemCaBundle({ [SYSTEM_CA_FILE_ENV]: missing }, [])).toThrow(
      `SSL_CERT_FILE: expected a readable PEM file, got ENOENT for ${missing}`,
    )
    const empty = file('empty.pem', 'no certificates here\n')
    expect(() => systemCaBundle({ [SYSTEM_CA_FILE_ENV]: empty }, [])).toThrow(
      /SSL_CERT_FILE: expected PEM certificates .*, got none in/,
    )
  })
})

describe('the trusted certificates', () => {
  it('are the --ca file alone when given, without Node or system roots', () => {
    const ca = file('ca.pem', selfSigned)
    const system = file('system.pem', otherRoot)
    expect(trustedCertificates(ca, { [SYSTEM_CA_FILE_ENV]: system })).toEqual([selfSigned])
    expect(() => trustedCertificates(missing, {})).toThrow('--ca: expected a readable PEM file')
  })

  it("are Node's roots and the system's without --ca", () => {
    const system = file('system-bundle.pem', `${otherRoot}\n${selfSigned}`)
    expect(trustedCertificates(undefined, { [SYSTEM_CA_FILE_ENV]: system }, [])).toEqual([
      ...rootCertificates,
      `${otherRoot}\n${selfSigned}`,
    ])
    expect(trustedCertificates(undefined, {}, [missing])).toEqual([...rootCertificates])
  })
})

describe('connections', () => {
  function get(certificates: readonly string[]) {
    return httpsClient(origin, { trust: trustContext(certificates) }).request('GET', '/anything')
  }

  it('trust a server whose certificate is in the system bundle, without --ca', async () => {
    const system = file('with-server.pem', `${otherRoot}\n${selfSigned}`)
    const response = await get(trustedCertificates(undefined, { [SYSTEM_CA_FILE_ENV]: system }, []))
    expect(response).toEqual({ status: 200, body: { ok: true } })
  })

  it('refuse it when neither the system bundle nor Node knows it', async () => {
    const system = file('without-server.pem', otherRoot)
    const failure = await get(trustedCertificates(undefined, { [SYSTEM_CA_FILE_ENV]: system }, [])).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(isClientError(failure)).toBe(true)
    expect(isCertificateError((failure as Error).cause)).toBe(true)
    expect((failure as Error).message).toContain('got an untrusted one (DEPTH_ZERO_SELF_SIGNED_CERT)')
  })
})
