/**
 * TLS for the server: the first-run self-signed localhost certificate, loading an operator's
 * certificate instead, and the protocol settings of Mozilla's "intermediate" profile
 * (https://ssl-config.mozilla.org/, guidelines v5.7): TLS 1.2 and 1.3 only, ECDHE key exchange
 * with AEAD ciphers only, no server cipher preference, HSTS for two years.
 */
import { createHash, X509Certificate } from 'node:crypto'
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { SecureContextOptions, TlsOptions } from 'node:tls'
import { generate } from 'selfsigned'

export const SELF_SIGNED_CERT_FILE = 'localhost.pem'
export const SELF_SIGNED_KEY_FILE = 'localhost-key.pem'

/** Validity of the generated certificate; browsers refuse leaf certificates valid over 398 days. */
export const SELF_SIGNED_VALIDITY_DAYS = 365
/** A stored self-signed certificate this close to expiry is replaced at startup. */
export const SELF_SIGNED_RENEW_BEFORE_DAYS = 30

/** Mozilla intermediate: Strict-Transport-Security max-age of two years. */
export const HSTS_MAX_AGE_SECONDS = 63_072_000

/**
 * Mozilla intermediate TLS 1.2 suites minus the DHE ones: ECDHE key exchange with AES-GCM or
 * ChaCha20-Poly1305 only. TLS 1.3 suites (all AEAD) are listed explicitly too.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** Mozilla intermediate key-exchange groups. */
export const TLS_ECDH_CURVES = 'X25519:prime256v1:secp384r1'

export interface TlsMaterial {
  readonly cert: string
  readonly key: string
  readonly certFile: string
  readonly keyFile: string
  /** SHA-256 of the DER certificate, colon-separated hex (what browsers show). */
  readonly fingerprint256: string
  /** Base64 SHA-256 of the SubjectPublicKeyInfo (Chromium's --ignore-certificate-errors-spki-list). */
  readonly spkiSha256: string
  readonly selfSigned: boolean
  /** True when this call generated the self-signed certificate. */
  readonly created: boolean
}

/** Options for `https.createServer` / Fastify's `https` option. */
export function httpsOptions(material: Pick<TlsMaterial, 'cert' | 'key'>): TlsOptions & SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    minVersion: 'TLSv1.2',
    ciphers: TLS_CIPHERS,
    ecdhCurve: TLS_ECDH_CURVES,
    // Mozilla intermediate leaves the choice to the client (which knows whether it has AES hardware).
    honorCipherOrder: false,
  }
}

/** Uses the operator's files when given, else the self-signed certificate in `certDir`. */
export async function loadTls(
  files: { certFile: string; keyFile: string } | undefined,
  certDir: string,
  now: Date = new Date(),
): Promise<TlsMaterial> {
  if (files) {
    const [cert, key] = await Promise.all([readFile(files.certFile, 'utf8'), readFile(files.keyFile, 'utf8')])
    return describe(cert, key, files.certFile, files.keyFile, false, false)
  }
  return ensureSelfSignedCertificate(certDir, now)
}

/**
 * Returns the self-signed localhost certificate in `certDir`, generating it on first run (or when the
 * stored one is unreadable, expired or about to expire): EC P-256, signed with SHA-256, SANs
 * localhost, 127.0.0.1 and ::1. The key file is written with mode 0600.
 */
export async function ensureSelfSignedCertificate(
  certDir: string,
  now: Date = new Date(),
): Promise<TlsMaterial> {
  const certFile = join(certDir, SELF_SIGNED_CERT_FILE)
  const keyFile = join(certDir, SELF_SIGNED_KEY_FILE)
  const existing = await readExisting(certFile, keyFile, now)
  if (existing) return describe(existing.cert, existing.key, certFile, keyFile, true, false)

  const generated = await createSelfSignedCertificate(now)
  await mkdir(certDir, { recursive: true })
  await writeAtomically(keyFile, generated.key, 0o600)
  await writeAtomically(certFile, generated.cert, 0o644)
  return describe(generated.cert, generated.key, certFile, keyFile, true, true)
}

/** A new self-signed localhost certificate and its PEM key, in memory (see ensureSelfSignedCertificate). */
export async function createSelfSignedCertificate(
  now: Date = new Date(),
): Promise<{ cert: string; key: string }> {
  const notAfter = new Date(now.getTime() + SELF_SIGNED_VALIDITY_DAYS * 24 * 60 * 60 * 1000)
  const generated = await generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: now,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  })
  return { cert: generated.cert, key: generated.private }
}

async function readExisting(
  certFile: string,
  keyFile: string,
  now: Date,
): Promise<{ cert: string; key: string } | undefined> {
  let cert: string
  let key: string
  try {
    ;[cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')])
  } catch {
    return undefined
  }
  try {
    const x509 = new X509Certificate(cert)
    const renewAt = new Date(x509.validTo).getTime() - SELF_SIGNED_RENEW_BEFORE_DAYS * 24 * 60 * 60 * 1000
    if (now.getTime() >= renewAt) return undefined
  } catch {
    return undefined
  }
  // An earlier run or a copy may have widened the mode; the key stays private to this user.
  await chmod(keyFile, 0o600)
  return { cert, key }
}

async function writeAtomically(file: string, contents: string, mode: number): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`
  await writeFile(temporary, contents, { mode })
  await chmod(temporary, mode)
  await rename(temporary, file)
}

function describe(
  cert: string,
  key: string,
  certFile: string,
  keyFile: string,
  selfSigned: boolean,
  created: boolean,
): TlsMaterial {
  const x509 = new X509Certificate(cert)
  const spki = x509.publicKey.export({ type: 'spki', format: 'der' })
  return {
    cert,
    key,
    certFile,
    keyFile,
    fingerprint256: x509.fingerprint256,
    spkiSha256: createHash('sha256').update(spki).digest('base64'),
    selfSigned,
    created,
  }
}
