/**
 * Flow control of the queue's drain towards a client that does not read: the relay stops writing
 * deliveries once a socket's send buffer passes SOCKET_HIGH_WATER_BYTES, keeps the rest in the
 * queue, and goes on when the buffer drains, so a slow reader gets everything once and in order
 * and is never dropped for a backlog the server itself wrote.
 *
 * The server's side is observed at its TLS sockets: every write the relay makes is followed by a
 * look at how many bytes the socket still holds (its writable length, the same figure the relay's
 * flow control reads).
 */
import { randomBytes } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { MAX_ENVELOPE_BYTES } from '../../shared/limits.js'
import {
  MAX_FRAME_BYTES,
  MAX_QUEUED_BYTES_PER_RECIPIENT,
  SOCKET_HIGH_WATER_BYTES,
  SOCKET_MAX_BUFFERED_BYTES,
} from '../limits.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, openSocket, type RelaySocket, WAIT_TIMEOUT_MS } from '../test/ws-client.js'

/**
 * Largest envelopes, enough of them that their frames (about 88 KB each, 26 MB in all) are more than
 * the kernel's socket buffers on loopback can absorb, and more than SOCKET_MAX_BUFFERED_BYTES.
 */
const MESSAGES = 300

describe('drain towards a client that does not read', () => {
  let server: TestServer
  const sockets: RelaySocket[] = []
  /** The most bytes any server socket held right after a write. */
  let mostBuffered = 0
  let overHighWater: () => void = () => {}

  /** Resolves at the first write that leaves a server socket holding more than the mark. */
  function highWaterPassed(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`expected a server socket over the high-water mark, got at most ${mostBuffered} bytes`),
          ),
        WAIT_TIMEOUT_MS,
      )
      overHighWater = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  beforeAll(async () => {
    // One sender queues all of it: its share may be the whole queue here (this is about flow
    // control; fair-queue.test.ts is about the share).
    server = await startServer({ limits: { maxQueuedBytesPerSender: MAX_QUEUED_BYTES_PER_RECIPIENT } })
    server.app.server.on('secureConnection', (socket: TLSSocket) => {
      const write = socket.write
      socket.write = function (this: TLSSocket, ...args: Parameters<TLSSocket['write']>) {
        const result = write.apply(this, args)
        mostBuffered = Math.max(mostBuffered, socket.writableLength)
        if (socket.writableLength > SOCKET_HIGH_WATER_BYTES) overHighWater()
        return result
      } as TLSSocket['write']
    })
  })
  afterAll(async () => {
    for (const socket of sockets) await socket.close()
    await server?.close()
  })

  it('stops at the high-water mark, then delivers everything once and in order when the reader resumes', async () => {
    const [alice, bob] = [await signUp(server), await signUp(server)]
    const a = await connect(server, alice.token, 'alice')
    sockets.push(a)
    const bodies = Array.from({ length: MESSAGES }, () => toBase64Url(randomBytes(MAX_ENVELOPE_BYTES)))
    const ids = bodies.map((body) => a.sendMessage(bob.client.username, { body }))
    expect((await a.take('accepted', MESSAGES)).map((frame) => frame.id)).toEqual(ids)

    // Bob's client stops reading its TCP socket before it authenticates: the server answers ready
    // and starts the drain into a socket whose peer takes nothing.
    const b = await openSocket(server, 'bob')
    sockets.push(b)
    b.ws.pause()
    const passed = highWaterPassed()
    b.auth(bob.token)
    await passed
    expect(mostBuffered).toBeLessThan(SOCKET_MAX_BUFFERED_BYTES)

    b.ws.resume()
    expect((await b.next('ready')).queued).toBe(MESSAGES)
    b.username = bob.client.username
    const delivered = await b.receive(MESSAGES)
    expect(delivered.map((frame) => frame.id)).toEqual(ids)
    expect(delivered.every((frame, index) => frame.body === bodies[index])).toBe(true)
    // Nothing more arrives (no duplicate), and the connection is still up and answering.
    await b.fence()
    expect(b.all('deliver')).toHaveLength(MESSAGES)
    expect(b.all('error')).toEqual([])
    expect(b.invalid).toEqual([])

    // The server wrote past the high-water mark by at most the frame that crossed it.
    expect(mostBuffered).toBeGreaterThan(SOCKET_HIGH_WATER_BYTES)
    expect(mostBuffered).toBeLessThanOrEqual(SOCKET_HIGH_WATER_BYTES + 2 * MAX_FRAME_BYTES)
  })
})
