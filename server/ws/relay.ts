/**
 * WSS /ws: the relay, as a Fastify plugin over @fastify/websocket (which wraps `ws`). The token
 * travels in the first frame, never in the URL (proxies and logs keep URLs), and since nothing is
 * carried by cookies a cross-site page gains nothing by opening the socket.
 *
 * ws options: no compression (envelopes are ciphertext and do not compress; compression would also
 * reopen CRIME-style length leaks), `maxPayload` as the hard frame cap, and frames of one read
 * handed over synchronously so a burst is handled, and answered, in one turn.
 */
import websocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import { WS_MAX_PAYLOAD_BYTES } from '../limits.js'
import type { RelayHub } from './hub.js'

export const RELAY_PATH = '/ws'

declare module 'fastify' {
  interface FastifyInstance {
    /** The relay's state (connections, online users), for tests and the benchmark to inspect. */
    readonly relay: RelayHub
  }
}

export async function installRelay(app: FastifyInstance, hub: RelayHub): Promise<void> {
  await app.register(websocket, {
    options: {
      maxPayload: WS_MAX_PAYLOAD_BYTES,
      perMessageDeflate: false,
      allowSynchronousEvents: true,
      clientTracking: false,
    },
    // Socket errors (a reset, a frame over maxPayload, invalid UTF-8) are the client's doing or the
    // network's, and ws already closes the socket (1009, 1007, …) after writing what was queued;
    // note them without the default error-level log, and without cutting that close short.
    errorHandler: (error, _socket, request) => {
      request.log.debug({ event: 'ws-error', code: (error as { code?: string }).code }, 'relay socket error')
    },
    preClose: async () => {
      await hub.shutdown()
    },
  })
  app.decorate('relay', hub)
  app.get(RELAY_PATH, { websocket: true }, (socket, request) => {
    hub.accept(socket, request.raw.socket)
  })
  app.addHook('onReady', async () => {
    hub.start()
  })
}
