/**
 * Which certificate authorities the client trusts: exactly the certificate given with --ca, or else
 * the system's trust store.
 *
 * Node 20 verifies TLS against the Mozilla list compiled into it (`tls.rootCertificates`), not the
 * system's store, so a CA an administrator installed (Debian's update-ca-certificates, Fedora's
 * update-ca-trust, a company root) would not be trusted. Without --ca the client therefore trusts
 * Node's list plus the system bundle, found the way OpenSSL finds it: `SSL_CERT_FILE` when set, else
 * the distribution's bundle file. The result is made into one TLS context per process: parsing a
 * few hundred roots costs tens of milliseconds, too much to repeat for every request.
 */
import { readFileSync } from 'node:fs'
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls'
import { UsageError } from './exit-codes.js'

/** The environment variable naming the system's CA bundle (OpenSSL's name for it). */
export const SYSTEM_CA_FILE_ENV = 'SSL_CERT_FILE'

/** Where distributions keep the system's CA bundle, in the order tried. */
export const SYSTEM_CA_BUNDLES: readonly string[] = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu, Alpine, Arch
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL
  '/etc/ssl/cert.pem', // macOS, the BSDs
]

const PEM_CERTIFICATE = '-----BEGIN CERTIFICATE-----'

export interface CaBundle {
  readonly file: string
  readonly pem: string
}

/**
 * Reads a PEM file that must hold at least one certificate. `what` names where the file came from
 * in the error ("--ca", "SSL_CERT_FILE").
 */
export function readPemCertificates(file: string, what: string): CaBundle {
  let pem: string
  try {
    pem = readFileSync(file, 'utf8')
  } catch (error) {
    throw new UsageError(
      `${what}: expected a readable PEM file, got ${(error as NodeJS.ErrnoException).code ?? 'an error'} for ${file}`,
    )
  }
  if (!pem.includes(PEM_CERTIFICATE)) {
    throw new UsageError(`${what}: expected PEM certificates (${PEM_CERTIFICATE}), got none in ${file}`)
  }
  return { file, pem }
}

/**
 * The system's CA bundle: the file `SSL_CERT_FILE` names (which must then be readable), else the
 * first of `candidates` that exists; undefined when there is none (Node's own list still applies).
 */
export function systemCaBundle(
  env: NodeJS.ProcessEnv,
  candidates: readonly string[] = SYSTEM_CA_BUNDLES,
): CaBundle | undefined {
  const named = env[SYSTEM_CA_FILE_ENV]
  if (named !== undefined && named !== '') return readPemCertificates(named, SYSTEM_CA_FILE_ENV)
  for (const file of candidates) {
    try {
      return { file, pem: readFileSync(file, 'utf8') }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw new UsageError(
        `system CA bundle: expected a readable file, got ${(error as NodeJS.ErrnoException).code ?? 'an error'} for ${file}`,
      )
    }
  }
  return undefined
}

/**
 * The certificates to trust, as PEM: the --ca file alone when given (a self-signed server is
 * trusted for what it is, nothing more), else Node's roots and the system's.
 */
export function trustedCertificates(
  caFile: string | undefined,
  env: NodeJS.ProcessEnv,
  candidates: readonly string[] = SYSTEM_CA_BUNDLES,
): readonly string[] {
  if (caFile !== undefined) return [readPemCertificates(caFile, '--ca').pem]
  const system = systemCaBundle(env, candidates)
  return system === undefined ? [...rootCertificates] : [...rootCertificates, system.pem]
}

/** One TLS context trusting exactly `certificates`, shared by every connection of the process. */
export function trustContext(certificates: string | readonly string[]): SecureContext {
  return createSecureContext({ ca: typeof certificates === 'string' ? certificates : [...certificates] })
}
