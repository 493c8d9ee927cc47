import { X509Certificate } from 'node:crypto'
import { mkdtemp, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type ConnectionOptions, connect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { removeDir, startServer, type TestServer } from './test/harness.js'
import { ensureSelfSignedCertificate, HSTS_MAX_AGE_SECONDS, loadTls } from './tls.js'

describe('self-signed certificate', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'secure-chat-tls-'))
  })
  afterAll(async () => {
    await removeDir(dir)
  })

  it('is made on first run: EC P-256, SHA-256, SANs localhost/127.0.0.1/::1, key file 0600', async () => {
    const material = await ensureSelfSignedCertificate(dir)
    expect(material.created).toBe(true)
    expect(material.certFile).toBe(join(dir, 'localhost.pem'))
    expect(material.keyFile).toBe(join(dir, 'localhost-key.pem'))
    const x509 = new X509Certificate(material.cert)
    expect(x509.publicKey.asymmetricKeyType).toBe('ec')
    expect(x509.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    expect(x509.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1')
    expect(x509.ca).toBe(false)
    expect(x509.checkHost('localhost')).toBe('localhost')
    expect(x509.checkIP('::1')).toBe('::1')
    // ecdsa-with-SHA256: OID 1.2.840.10045.4.3.2 in the DER.
    expect(x509.raw.includes(Buffer.from('06082a8648ce3d040302', 'hex'))).toBe(true)
    expect(material.fingerprint256).toBe(x509.fingerprint256)
    expect(material.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
    expect((await stat(material.keyFile)).mode & 0o777).toBe(0o600)
  })

  it('is reused on later runs, with the same fingerprint', async () => {
    const first = await ensureSelfSignedCertificate(dir)
    const again = await ensureSelfSignedCertificate(dir)
    expect(again.created).toBe(false)
    expect(again.fingerprint256).toBe(first.fingerprint256)
  })

  it('is replaced when close to expiry, and when unreadable', async () => {
    const current = await ensureSelfSignedCertificate(dir)
    const later = new Date(Date.now() + 340 * 24 * 60 * 60 * 1000)
    const renewed = await ensureSelfSignedCertificate(dir, later)
    expect(renewed.created).toBe(true)
    expect(renewed.fingerprint256).not.toBe(current.fingerprint256)
    await writeFile(join(dir, 'localhost.pem'), 'not a certificate')
    expect((await ensureSelfSignedCertificate(dir)).created).toBe(true)
  })

  it("loads an operator's certificate and key instead when given", async () => {
    const made = await ensureSelfSignedCertificate(dir)
    const loaded = await loadTls({ certFile: made.certFile, keyFile: made.keyFile }, join(dir, 'unused'))
    expect(loaded.selfSigned).toBe(false)
    expect(loaded.fingerprint256).toBe(made.fingerprint256)
  })
})

describe('TLS settings (Mozilla intermediate)', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await startServer()
  })
  afterAll(async () => {
    await server?.close()
  })

  function handshake(options: ConnectionOptions): Promise<string> {
    const { port } = new URL(server.origin)
    return new Promise((resolve) => {
      const socket = connect(
        { host: '127.0.0.1', port: Number(port), ca: server.ca, servername: 'localhost', ...options },
        () => {
          resolve(`${socket.getProtocol()} ${socket.getCipher().name}`)
          socket.destroy()
        },
      )
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(`refused ${error.code}`))
    })
  }

  it('speaks TLS 1.3 and TLS 1.2 with ECDHE AEAD suites', async () => {
    expect(await handshake({})).toMatch(/^TLSv1\.3 TLS_/)
    expect(await handshake({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' })).toBe(
      'TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256',
    )
    expect(await handshake({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' })).toBe(
      'TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305',
    )
  })

  it('refuses TLS 1.1 and CBC suites (the server sends the alert)', async () => {
    expect(
      await handshake({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    ).toBe('refused ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION')
    for (const cipher of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384']) {
      expect(await handshake({ maxVersion: 'TLSv1.2', ciphers: `${cipher}:@SECLEVEL=0` })).toBe(
        'refused ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
      )
    }
  })

  it('sends HSTS for two years', async () => {
    const response = await server.request('/api/v1/health')
    expect(response.status).toBe(200)
    expect(response.headers['strict-transport-security']).toBe(`max-age=${HSTS_MAX_AGE_SECONDS}`)
  })
})
