/** Helpers for tests of the client core against the real server: Node transports and fast accounts. */
import { Agent } from 'node:https'
import WebSocket from 'ws'
import { httpsFetch, strongPassword, type TestServer } from '../server/test/harness.js'
import { ChatClient, type ChatClientOptions } from '../shared/client/chat-client.js'
import { MemoryStore } from '../shared/client/store.js'
import type { HttpClient, WebSocketFactory, WebSocketLike } from '../shared/client/transport.js'

/** Low PBKDF2 iterations keep tests fast; production refuses fewer than 600,000. */
export const TEST_KDF_ITERATIONS = 1_000

export function nodeHttpClient(server: TestServer): HttpClient {
  const agent = new Agent({ ca: server.ca, keepAlive: true })
  return {
    async request(method, path, options = {}) {
      const response = await httpsFetch(agent, server.origin, `/api/v1${path}`, {
        method,
        ...(options.body !== undefined ? { body: options.body } : {}),
        ...(options.token ? { headers: { authorization: `Bearer ${options.token}` } } : {}),
      })
      return { status: response.status, body: response.body }
    },
  }
}

export function nodeWebSocketFactory(server: TestServer): WebSocketFactory {
  return (url) => new WebSocket(url, { ca: server.ca }) as unknown as WebSocketLike
}

export function clientOptions(
  server: TestServer,
  overrides: Partial<ChatClientOptions> = {},
): ChatClientOptions {
  return {
    serverUrl: server.origin,
    http: nodeHttpClient(server),
    webSocket: nodeWebSocketFactory(server),
    store: new MemoryStore(),
    storageKeyIterations: TEST_KDF_ITERATIONS,
    minimumStorageKeyIterations: TEST_KDF_ITERATIONS,
    ...overrides,
  }
}

let counter = 0

export async function registerClient(
  server: TestServer,
  overrides: Partial<ChatClientOptions> = {},
): Promise<{ client: ChatClient; password: string; options: ChatClientOptions }> {
  counter++
  const password = strongPassword()
  const options = clientOptions(server, overrides)
  const client = await ChatClient.register(options, `c${process.pid}n${counter}`, password)
  return { client, password, options }
}
