/**
 * Server certificates seen before, per server, in `<server dir>/certificates.json`, so the client
 * can show a certificate's fingerprint the first time it meets it (to compare with the one the server
 * printed at start) and say when a server's certificate changed. TLS verification itself is done by
 * the transport against the system store or --ca; this file only informs.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { ServerCertificate } from './transport.js'

/** Fingerprints remembered per server (a renewal every few months adds one; old ones fall off). */
export const MAX_REMEMBERED_CERTIFICATES = 20

interface RememberedCertificate {
  readonly fingerprint256: string
  readonly firstSeen: number
}

export type CertificateNotice =
  | { readonly kind: 'first'; readonly fingerprint256: string }
  | { readonly kind: 'changed'; readonly fingerprint256: string; readonly previous: string }

function isRemembered(value: unknown): value is RememberedCertificate {
  return (
    typeof value === 'object' &&
    value !== null &&
    'fingerprint256' in value &&
    typeof value.fingerprint256 === 'string' &&
    'firstSeen' in value &&
    typeof value.firstSeen === 'number'
  )
}

export class KnownCertificates {
  private readonly seenThisRun = new Set<string>()

  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
  ) {}

  private load(): RememberedCertificate[] {
    try {
      const parsed: unknown = JSON.parse(readFileSync(this.file, 'utf8'))
      const list =
        typeof parsed === 'object' && parsed !== null && 'certificates' in parsed
          ? parsed.certificates
          : undefined
      return Array.isArray(list) ? list.filter(isRemembered) : []
    } catch {
      // Missing or unreadable: the next certificate is shown as new, which is the safe side.
      return []
    }
  }

  /** Records a certificate; returns what to tell the user, or undefined when it is a known one. */
  observe(certificate: ServerCertificate): CertificateNotice | undefined {
    const fingerprint = certificate.fingerprint256
    if (this.seenThisRun.has(fingerprint)) return undefined
    this.seenThisRun.add(fingerprint)
    const remembered = this.load()
    if (remembered.some((entry) => entry.fingerprint256 === fingerprint)) return undefined
    const previous = remembered.at(-1)
    const updated = [...remembered, { fingerprint256: fingerprint, firstSeen: this.now() }].slice(
      -MAX_REMEMBERED_CERTIFICATES,
    )
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 })
    const temporary = `${this.file}.${process.pid}.tmp`
    writeFileSync(temporary, `${JSON.stringify({ certificates: updated }, null, 2)}\n`, { mode: 0o600 })
    renameSync(temporary, this.file)
    return previous
      ? { kind: 'changed', fingerprint256: fingerprint, previous: previous.fingerprint256 }
      : { kind: 'first', fingerprint256: fingerprint }
  }
}

/** One line for the user about a certificate notice. */
export function describeCertificateNotice(notice: CertificateNotice, serverUrl: string): string {
  return notice.kind === 'first'
    ? `first connection to ${serverUrl}: its certificate's SHA-256 fingerprint is ${notice.fingerprint256} (compare it with the one the server printed when it started)`
    : `the certificate of ${serverUrl} changed: its SHA-256 fingerprint is now ${notice.fingerprint256} (it was ${notice.previous})`
}
