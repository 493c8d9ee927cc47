/**
 * The client core's transport interfaces (shared/client/transport.ts) for Node: REST over
 * node:https and the relay over `ws`, both verifying the server against one TLS context (trust.ts:
 * the system's certificate authorities or, for a self-signed server, exactly the CA given with --ca).
 *
 * Each new TLS connection reports the server certificate's SHA-256 fingerprint to `onCertificate`
 * (certificates.ts remembers them and says when one is new). WebSocket failures go to
 * `onSocketError` too: the core only sees the socket close and retries, which never cures an
 * untrusted certificate (`isCertificateError`), so the commands stop on one and say why.
 */
import { request as httpsRequest } from 'node:https'
import type { SecureContext, TLSSocket } from 'node:tls'
import WebSocket from 'ws'
import { ClientError, ClientErrorCode } from '../shared/client/errors.js'
import {
  type HttpClient,
  type HttpMethod,
  type HttpResponse,
  parseJson,
  type WebSocketFactory,
  type WebSocketLike,
} from '../shared/client/transport.js'
import { API_PREFIX } from '../shared/codec/api.js'
import { MAX_ENVELOPE_BYTES } from '../shared/limits.js'

/** Largest REST response read: the biggest real one (a search or a bundle) is a few kilobytes. */
export const MAX_RESPONSE_BYTES = 1024 * 1024
/** A request that has had no answer for this long is abandoned as a network failure. */
export const REQUEST_TIMEOUT_MS = 30_000
/** The WebSocket handshake gives up after this long (the core then retries with backoff). */
export const WEBSOCKET_HANDSHAKE_TIMEOUT_MS = 15_000
/** Largest relay frame accepted: an envelope of the maximum size in base64url, plus the JSON around it. */
export const MAX_FRAME_BYTES = Math.ceil((MAX_ENVELOPE_BYTES * 4) / 3) + 4096

export interface ServerCertificate {
  /** SHA-256 of the DER certificate, as colon-separated upper-case hex (like `openssl x509 -fingerprint`). */
  readonly fingerprint256: string
  readonly subject: string
  readonly validTo: string
}

export interface TransportOptions {
  /**
   * The certificate authorities to trust, made once (trust.ts `trustContext`); unset, Node's
   * built-in list.
   */
  readonly trust?: SecureContext | undefined
  /** Called once for each new TLS connection, with the server's certificate. */
  readonly onCertificate?: ((certificate: ServerCertificate) => void) | undefined
}

export interface WebSocketOptions extends TransportOptions {
  /** A WebSocket failed (the core only sees that it closed, and retries). */
  readonly onSocketError?: ((error: Error) => void) | undefined
}

/** Certificate verification failures, reported with a hint instead of OpenSSL's bare code. */
const UNTRUSTED_CERTIFICATE_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_UNTRUSTED',
])

/** A failure that retrying cannot fix: the server's certificate is not one we trust. */
export function isCertificateError(error: unknown): boolean {
  const code = error instanceof Error && 'code' in error ? String(error.code) : undefined
  return (
    code !== undefined &&
    (UNTRUSTED_CERTIFICATE_CODES.has(code) ||
      code === 'ERR_TLS_CERT_ALTNAME_INVALID' ||
      code === 'CERT_HAS_EXPIRED' ||
      code === 'CERT_NOT_YET_VALID')
  )
}

/** Words for a failed connection: no stack, no secret, the one thing the user can act on. */
export function describeNetworkError(serverUrl: string, error: unknown): string {
  const code = error instanceof Error && 'code' in error ? String(error.code) : undefined
  if (code !== undefined && UNTRUSTED_CERTIFICATE_CODES.has(code)) {
    return `expected a certificate we trust from ${serverUrl}, got an untrusted one (${code}); for a self-signed server pass --ca <certificate.pem> (or add its CA to the system's store)`
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `expected a certificate for ${new URL(serverUrl).hostname}, got one for another name (${code})`
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    return `expected a valid certificate from ${serverUrl}, got ${code}`
  }
  if (code === 'ECONNREFUSED') return `expected a server at ${serverUrl}, got the connection refused`
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN')
    return `expected ${new URL(serverUrl).hostname} to resolve, got ${code}`
  return `expected a reply from ${serverUrl}, got ${code ?? (error instanceof Error ? error.message : 'a network error')}`
}

function certificateOf(socket: TLSSocket): ServerCertificate | undefined {
  const certificate = socket.getPeerCertificate()
  if (!certificate?.fingerprint256) return undefined
  return {
    fingerprint256: certificate.fingerprint256,
    subject: [certificate.subject?.CN ?? ''].flat().join(', '),
    validTo: certificate.valid_to,
  }
}

/** Checks and normalises a server address: an https:// origin, nothing after it. */
export function parseServerUrl(input: string): string {
  let url: URL
  try {
    url = new URL(input)
  } catch {
    throw new ClientError(ClientErrorCode.InvalidInput, `server: expected an https:// URL, got "${input}"`)
  }
  if (url.protocol !== 'https:') {
    throw new ClientError(
      ClientErrorCode.InvalidInput,
      `server: expected an https:// URL, got ${url.protocol}//`,
    )
  }
  if (
    url.username ||
    url.password ||
    (url.pathname !== '/' && url.pathname !== '') ||
    url.search ||
    url.hash
  ) {
    throw new ClientError(
      ClientErrorCode.InvalidInput,
      `server: expected just the origin (https://host:port), got "${input}"`,
    )
  }
  return url.origin
}

/** An HttpClient over node:https: one TLS connection per request (nothing lingers after a command). */
export function httpsClient(serverUrl: string, options: TransportOptions = {}): HttpClient {
  const base = new URL(`${serverUrl}${API_PREFIX}`)
  return {
    request(method: HttpMethod, path: string, requestOptions = {}): Promise<HttpResponse> {
      const payload = requestOptions.body === undefined ? undefined : JSON.stringify(requestOptions.body)
      const headers: Record<string, string> = { accept: 'application/json' }
      if (requestOptions.token) headers.authorization = `Bearer ${requestOptions.token}`
      if (payload !== undefined) {
        headers['content-type'] = 'application/json'
        headers['content-length'] = String(Buffer.byteLength(payload))
      }
      const url = new URL(`${base.pathname}${path}`, base)
      return new Promise<HttpResponse>((resolve, reject) => {
        const fail = (cause: unknown) =>
          reject(
            requestOptions.signal?.aborted
              ? new ClientError(ClientErrorCode.Cancelled, `${method} ${path}: given up`, { cause })
              : new ClientError(ClientErrorCode.Network, describeNetworkError(serverUrl, cause), { cause }),
          )
        const request = httpsRequest(
          url,
          {
            method,
            headers,
            agent: false,
            timeout: REQUEST_TIMEOUT_MS,
            ...(requestOptions.signal ? { signal: requestOptions.signal } : {}),
            ...(options.trust !== undefined ? { secureContext: options.trust } : {}),
          },
          (response) => {
            const chunks: Buffer[] = []
            let length = 0
            response.on('data', (chunk: Buffer) => {
              length += chunk.length
              if (length > MAX_RESPONSE_BYTES) {
                request.destroy(new Error(`response larger than ${MAX_RESPONSE_BYTES} bytes`))
                return
              }
              chunks.push(chunk)
            })
            response.on('error', fail)
            response.on('end', () =>
              resolve({
                status: response.statusCode ?? 0,
                body: parseJson(Buffer.concat(chunks).toString('utf8')),
              }),
            )
          },
        )
        request.on('socket', (socket) => {
          socket.once('secureConnect', () => {
            const certificate = certificateOf(socket as TLSSocket)
            if (certificate) options.onCertificate?.(certificate)
          })
        })
        request.on('timeout', () => request.destroy(new Error('request timed out')))
        request.on('error', fail)
        request.end(payload)
      })
    },
  }
}

/** `ws` behind the browser-shaped interface the core expects. */
class NodeWebSocket implements WebSocketLike {
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number; reason: string }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null

  constructor(
    private readonly socket: WebSocket,
    onSocketError: ((error: Error) => void) | undefined,
  ) {
    socket.on('open', () => this.onopen?.({}))
    socket.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      // The relay speaks JSON text frames only; a binary frame is passed on for the core to refuse.
      this.onmessage?.({ data: isBinary ? '' : rawDataToString(data) })
    })
    socket.on('close', (code: number, reason: Buffer) =>
      this.onclose?.({ code, reason: reason.toString('utf8') }),
    )
    socket.on('error', (error: Error) => {
      onSocketError?.(error)
      this.onerror?.(error)
    })
  }

  get readyState(): number {
    return this.socket.readyState
  }

  send(data: string): void {
    this.socket.send(data)
  }

  close(code?: number, reason?: string): void {
    this.socket.close(code, reason)
  }
}

function rawDataToString(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8')
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8')
  return Buffer.from(data).toString('utf8')
}

export function webSocketFactory(options: WebSocketOptions = {}): WebSocketFactory {
  return (url: string) => {
    const socket = new WebSocket(url, {
      handshakeTimeout: WEBSOCKET_HANDSHAKE_TIMEOUT_MS,
      maxPayload: MAX_FRAME_BYTES,
      perMessageDeflate: false,
      ...(options.trust !== undefined ? { secureContext: options.trust } : {}),
    })
    socket.on('upgrade', (response) => {
      const certificate = certificateOf(response.socket as TLSSocket)
      if (certificate) options.onCertificate?.(certificate)
    })
    return new NodeWebSocket(socket, options.onSocketError)
  }
}
