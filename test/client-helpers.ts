/** Helpers for tests of the client core against the real server: Node transports and fast accounts. */
import { Agent } from 'node:https'
import WebSocket from 'ws'
import { build } from '../server/app.js'
import type { TestDatabase } from '../server/test/databases.js'
import {
  httpsFetch,
  RELAXED_LIMITS,
  strongPassword,
  TEST_BCRYPT_COST,
  type TestServer,
  testCertificate,
} from '../server/test/harness.js'
import { httpsOptions } from '../server/tls.js'
import { ChatClient, type ChatClientOptions } from '../shared/client/chat-client.js'
import { MemoryStore, type StoreOperation } from '../shared/client/store.js'
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
    loginSecretIterations: TEST_KDF_ITERATIONS,
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

/** One frame as a tapped WebSocket saw it: what went out (`sent`) or came in (`received`). */
export interface TappedFrame {
  readonly direction: 'sent' | 'received'
  // biome-ignore lint/suspicious/noExplicitAny: tests read frames loosely and assert on them
  readonly frame: any
}

/** What to do with a frame on its way: let it through, lose it, or lose it and close the socket. */
export type FrameVerdict = 'pass' | 'drop' | 'drop-and-close'

/** The frames a tapped WebSocketFactory saw, and the rule that decides which of them are lost. */
export class SocketTap {
  /** Every frame that got through, on every socket the factory made, in order. */
  readonly frames: TappedFrame[] = []
  /**
   * Decides about each frame before it goes out or reaches the client: `drop` (as if lost on the
   * way) or `drop-and-close` (lost, then the client's socket closes, as when a connection dies
   * mid-exchange). Without a filter every frame passes.
   */
  filter: ((frame: TappedFrame) => FrameVerdict) | undefined
  private readonly waiting = new Set<(frame: TappedFrame) => void>()

  /** Records a frame that got through (it was sent, or handed to the client). */
  passed(frame: TappedFrame): void {
    this.frames.push(frame)
    for (const listener of [...this.waiting]) listener(frame)
  }

  /** Resolves with the first frame, already seen or still to come, that `predicate` accepts. */
  waitFor(predicate: (frame: TappedFrame) => boolean): Promise<TappedFrame> {
    const seen = this.frames.find(predicate)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve) => {
      const listener = (frame: TappedFrame) => {
        if (!predicate(frame)) return
        this.waiting.delete(listener)
        resolve(frame)
      }
      this.waiting.add(listener)
    })
  }

  /** The frames of one type that went one way. */
  // biome-ignore lint/suspicious/noExplicitAny: tests read frames loosely and assert on them
  of(direction: TappedFrame['direction'], type: string): any[] {
    return this.frames.filter((f) => f.direction === direction && f.frame.type === type).map((f) => f.frame)
  }
}

/**
 * A WebSocketFactory over real `ws` sockets that records every frame and can lose chosen ones: the
 * failures a test needs (a lost `accepted`, a lost `ack`) on an otherwise real connection.
 */
export function tappedWebSocketFactory(server: TestServer): { factory: WebSocketFactory; tap: SocketTap } {
  const tap = new SocketTap()
  const inner = nodeWebSocketFactory(server)
  const factory: WebSocketFactory = (url) => {
    const socket = inner(url)
    /** The frame if it goes through (recorded), else undefined (and the socket closed if asked). */
    const decide = (direction: TappedFrame['direction'], data: unknown): TappedFrame | undefined => {
      const seen: TappedFrame = { direction, frame: JSON.parse(String(data)) }
      const verdict = tap.filter?.(seen) ?? 'pass'
      if (verdict === 'drop-and-close') socket.close(4001, 'test: connection lost')
      return verdict === 'pass' ? seen : undefined
    }
    let onmessage: WebSocketLike['onmessage'] = null
    const wrapper: WebSocketLike = {
      get readyState() {
        return socket.readyState
      },
      get onopen() {
        return socket.onopen
      },
      set onopen(handler) {
        socket.onopen = handler
      },
      get onclose() {
        return socket.onclose
      },
      set onclose(handler) {
        socket.onclose = handler
      },
      get onerror() {
        return socket.onerror
      },
      set onerror(handler) {
        socket.onerror = handler
      },
      get onmessage() {
        return onmessage
      },
      set onmessage(handler) {
        onmessage = handler
        socket.onmessage = handler
          ? (event) => {
              const seen = decide('received', event.data)
              if (!seen) return
              handler(event)
              tap.passed(seen)
            }
          : null
      },
      send(data) {
        const seen = decide('sent', data)
        if (!seen) return
        socket.send(data)
        tap.passed(seen)
      },
      close(code, reason) {
        socket.close(code, reason)
      },
    }
    return wrapper
  }
  return { factory, tap }
}

/** A MemoryStore whose next commit matching a condition fails once, like a disk that is full for a moment. */
export class FlakyStore extends MemoryStore {
  private failWhen: ((operations: readonly StoreOperation[]) => boolean) | undefined
  /** Commits that failed, and those that went through, in order. */
  readonly failed: (readonly StoreOperation[])[] = []

  /** The next commit for which `condition` holds throws instead of storing anything. */
  failOnce(condition: (operations: readonly StoreOperation[]) => boolean): void {
    this.failWhen = condition
  }

  override async commit(operations: readonly StoreOperation[]): Promise<void> {
    if (this.failWhen?.(operations)) {
      this.failWhen = undefined
      this.failed.push(operations)
      throw new Error('test: the local database is unavailable')
    }
    await super.commit(operations)
  }
}

/**
 * An HttpClient that tells `onResponse` about each response once it has come back; the caller gets
 * the response only when the promise `onResponse` returns (if any) settles, so a test can hold one.
 */
export function observedHttpClient(
  server: TestServer,
  onResponse: (method: string, path: string, status: number) => Promise<void> | undefined,
): HttpClient {
  const inner = nodeHttpClient(server)
  return {
    async request(method, path, options) {
      const response = await inner.request(method, path, options)
      await onResponse(method, path, response.status)
      return response
    },
  }
}

/**
 * Stops `previous` and starts the server again on the same database and the same port, the way an
 * operator restarts it: clients see their sockets close and must find their way back on their own.
 */
export async function restartServer(previous: TestServer): Promise<TestServer> {
  const port = Number(new URL(previous.origin).port)
  await previous.stop()
  await previous.database.close()
  const reopened = await previous.database.reopen()
  const database: TestDatabase = { ...previous.database, db: reopened.db }
  const material = await testCertificate()
  const app = await build({
    bcryptCost: TEST_BCRYPT_COST,
    log: false,
    limits: RELAXED_LIMITS,
    db: database.db,
    https: httpsOptions(material),
  })
  await app.listen({ host: '127.0.0.1', port })
  const agent = new Agent({ ca: material.cert, keepAlive: true })
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    agent.destroy()
    await app.close()
  }
  return {
    app,
    database,
    origin: previous.origin,
    ca: material.cert,
    request: (path, options) => httpsFetch(agent, previous.origin, path, options),
    stop,
    close: async () => {
      await stop()
      await database.dispose()
    },
  }
}
