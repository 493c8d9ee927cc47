/**
 * Per-address limit on relay sockets that have not authenticated yet
 * (MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS): each holds a TLS session and a file descriptor for up
 * to AUTH_TIMEOUT_MS while costing its sender nothing, so one address could otherwise hold
 * thousands. The count is taken at the upgrade request, before the WebSocket handshake, and a
 * socket leaves it when it authenticates (the relay hub says so) or closes. Authenticated sockets
 * are limited per user instead (MAX_CONNECTIONS_PER_USER).
 */
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { ServerError, ServerErrorCode } from '../errors.js'
import { addressKey } from './client-address.js'

export class UnauthenticatedSockets {
  private readonly byAddress = new Map<string, Set<Socket>>()
  private readonly addresses = new WeakMap<Socket, string>()

  constructor(private readonly maxPerAddress: number) {}

  /** Counts the socket against its address, unless the address is at the limit (false). */
  admit(address: string, socket: Socket): boolean {
    let sockets = this.byAddress.get(address)
    if (sockets && sockets.size >= this.maxPerAddress) return false
    if (!sockets) {
      sockets = new Set()
      this.byAddress.set(address, sockets)
    }
    sockets.add(socket)
    this.addresses.set(socket, address)
    socket.once('close', () => this.release(socket))
    return true
  }

  /** The socket authenticated or closed: it no longer counts. */
  release(socket: Socket): void {
    const address = this.addresses.get(socket)
    if (address === undefined) return
    this.addresses.delete(socket)
    const sockets = this.byAddress.get(address)
    sockets?.delete(socket)
    if (sockets?.size === 0) this.byAddress.delete(address)
  }

  count(address: string): number {
    return this.byAddress.get(address)?.size ?? 0
  }
}

/** Refuses a WebSocket upgrade on `path` with 429 when its address is at the limit. */
export function limitUnauthenticatedSockets(
  app: FastifyInstance,
  path: string,
  sockets: UnauthenticatedSockets,
  options: { maxPerAddress: number; retryAfterSeconds: number },
): void {
  app.addHook('onRequest', async (request, reply) => {
    if (request.headers.upgrade?.toLowerCase() !== 'websocket') return
    if (request.url.split('?', 1)[0] !== path) return
    const socket = request.raw.socket
    if (sockets.admit(addressKey(request.ip), socket)) return
    // Refused before @fastify/websocket has claimed the socket, so ending it after the answer is
    // ours: otherwise the refused client could keep holding it.
    reply.header('connection', 'close')
    reply.raw.once('finish', () => socket.destroySoon())
    throw new ServerError(
      ServerErrorCode.RateLimited,
      429,
      `expected at most ${options.maxPerAddress} unauthenticated sockets from this address, got more; authenticate or close one first`,
      { retryAfterSeconds: options.retryAfterSeconds },
    )
  })
}
