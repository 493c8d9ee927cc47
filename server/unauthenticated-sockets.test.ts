/**
 * Relay sockets that have not authenticated yet are limited per address (issue 10, item 8): over
 * real TLS, with clients bound to distinct loopback addresses.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { signUp, startServer, type TestServer } from './test/harness.js'
import { RelaySocket, relayUrl } from './test/ws-client.js'

const LIMIT = 3
let server: TestServer

beforeAll(async () => {
  server = await startServer({ limits: { maxUnauthenticatedSocketsPerAddress: LIMIT } })
})

afterAll(async () => {
  await server?.close()
})

function open(from: string, label: string): RelaySocket {
  return new RelaySocket(new WebSocket(relayUrl(server), { ca: server.ca, localAddress: from }), label)
}

/** The HTTP status of a refused upgrade. */
function refusal(socket: RelaySocket): Promise<number> {
  return new Promise((resolve, reject) => {
    socket.ws.once('unexpected-response', (request, response) => {
      // The server ends the refused connection itself (a client cannot keep it open).
      response.socket.once('close', () => resolve(response.statusCode ?? 0))
      response.resume()
      void request
    })
    socket.ws.once('open', () => reject(new Error(`${socket.label}: expected a refusal, got an open socket`)))
  })
}

describe('unauthenticated sockets per address', () => {
  it('refuses one more than the limit from one address while another address still connects', async () => {
    const { token } = await signUp(server)
    const held = Array.from({ length: LIMIT }, (_, i) => open('127.0.0.1', `held${i}`))
    await Promise.all(held.map((socket) => socket.opened))

    const extra = open('127.0.0.1', 'extra')
    expect(await refusal(extra)).toBe(429)

    const other = open('127.0.0.2', 'other')
    await other.opened
    other.auth(token)
    expect((await other.next('ready')).type).toBe('ready')

    // A socket that authenticates no longer counts, and neither does one that closed.
    held[0]!.auth(token)
    await held[0]!.next('ready')
    const afterAuth = open('127.0.0.1', 'after-auth')
    await afterAuth.opened
    expect(await refusal(open('127.0.0.1', 'still-full'))).toBe(429)
    await held[1]!.close()
    const afterClose = open('127.0.0.1', 'after-close')
    await afterClose.opened

    for (const socket of [...held, other, afterAuth, afterClose]) await socket.close()
  })
})
