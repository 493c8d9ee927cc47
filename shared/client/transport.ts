/**
 * How the client core reaches the server, as interfaces each UI fills in: the browser with
 * `fetch` and `WebSocket`, the terminal with Node's HTTPS and `ws` (trusting a given CA). The
 * adapters below work with any WHATWG `fetch` and any WebSocket class shaped like the browser's.
 */
import { API_PREFIX, ErrorResponse } from '../codec/api.js'
import { matches } from '../codec/schema.js'
import { ClientError, ClientErrorCode } from './errors.js'

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE'

export interface HttpResponse {
  readonly status: number
  /** The parsed JSON body (unknown: callers decode it against a schema), or undefined if none. */
  readonly body: unknown
}

export interface HttpClient {
  /**
   * `path` is relative to the API prefix, e.g. "/login". `token` goes in the Authorization header.
   * `signal` gives the request up when it fires (a long poll nobody waits for any more): it then
   * rejects with ClientErrorCode.Cancelled and its connection is closed.
   */
  request(
    method: HttpMethod,
    path: string,
    options?: { body?: unknown; token?: string; signal?: AbortSignal },
  ): Promise<HttpResponse>
}

/** The part of the browser's WebSocket the core uses (the `ws` package has the same shape). */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number; reason: string }) => void) | null
  onerror: ((event: unknown) => void) | null
  send(data: string): void
  close(code?: number, reason?: string): void
}

export type WebSocketFactory = (url: string) => WebSocketLike

/**
 * How long a request may take, reply body included, before it fails with a network error. The core
 * awaits some requests while it handles frames (the identity check after `identity.changed`): one
 * the server never answers must not hold up every delivery behind it. The terminal's HTTPS client
 * has the same bound (client-terminal/transport.ts); the server gives up on a request at 30 s too.
 */
export const REQUEST_TIMEOUT_MS = 30_000

type FetchFunction = (
  input: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<{
  status: number
  text(): Promise<string>
}>

/** An HttpClient over a WHATWG fetch (the browser's, or Node's global one for servers with public certificates). */
export function fetchHttpClient(
  serverUrl: string,
  fetchFunction: FetchFunction = globalThis.fetch,
  options: { readonly timeoutMs?: number } = {},
): HttpClient {
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS
  const base = `${serverUrl.replace(/\/+$/, '')}${API_PREFIX}`
  return {
    async request(method, path, options = {}) {
      const headers: Record<string, string> = { accept: 'application/json' }
      if (options.token) headers.authorization = `Bearer ${options.token}`
      if (options.body !== undefined) headers['content-type'] = 'application/json'
      const timeout = AbortSignal.timeout(timeoutMs)
      const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout
      try {
        const response = await fetchFunction(`${base}${path}`, {
          method,
          headers,
          signal,
          ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        })
        const text = await response.text()
        return { status: response.status, body: parseJson(text) }
      } catch (cause) {
        if (options.signal?.aborted) {
          throw new ClientError(ClientErrorCode.Cancelled, `${method} ${path}: given up`, { cause })
        }
        throw new ClientError(
          ClientErrorCode.Network,
          timeout.aborted
            ? `expected a reply from ${serverUrl} within ${timeoutMs / 1000} s, got none`
            : `expected a reply from ${serverUrl}, got a network error`,
          { cause },
        )
      }
    },
  }
}

export function parseJson(text: string): unknown {
  if (text.length === 0) return undefined
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** Turns a non-2xx response into a ClientError carrying the server's stable code. */
export function errorFromResponse(response: HttpResponse, what: string): ClientError {
  if (matches(ErrorResponse, response.body)) {
    const { code, message } = response.body.error
    // E2E_ERR_ACCOUNT_DELETED with 401 is about our own session (our account was deleted); with
    // 410 it is a contact's account. E2E_ERR_DEVICE_REMOVED: this device was removed, its session
    // ended (`serverCode` tells a UI to say so).
    const clientCode =
      code === 'E2E_ERR_UNAUTHENTICATED' ||
      code === 'E2E_ERR_DEVICE_REMOVED' ||
      (code === 'E2E_ERR_ACCOUNT_DELETED' && response.status === 401)
        ? ClientErrorCode.NotLoggedIn
        : code === 'E2E_ERR_USER_NOT_FOUND'
          ? ClientErrorCode.UnknownUser
          : code === 'E2E_ERR_ACCOUNT_DELETED'
            ? ClientErrorCode.AccountDeleted
            : ClientErrorCode.Server
    return new ClientError(clientCode, `${what}: ${message}`, {
      serverCode: code,
      serverMessage: message,
      status: response.status,
    })
  }
  return new ClientError(
    ClientErrorCode.Server,
    `${what}: expected a JSON reply, got status ${response.status}`,
    {
      status: response.status,
    },
  )
}

/** The WebSocket URL of a server given by its https:// URL. */
export function webSocketUrl(serverUrl: string): string {
  return `${serverUrl.replace(/\/+$/, '').replace(/^http/, 'ws')}/ws`
}
