/**
 * The client's link to the relay: one WebSocket at a time, authenticated with the session token,
 * reopened with exponential backoff (and jitter) while the owner wants to be connected, incoming
 * frames parsed against the shared schema and handed over in the order they arrived, as batches
 * (whatever arrived while the previous batch was being handled, up to MAX_FRAMES_PER_BATCH, so a
 * backlog is stored many messages per commit), and acknowledgements gathered into one cumulative
 * `ack` per burst.
 *
 * Every socket is a "connection": a frame handed to the owner says which one it came on, and an
 * acknowledgement for a connection that has closed is dropped (the server sends those deliveries
 * again on the next one). Timers and randomness come in from outside, so tests can drive them.
 *
 * What it does not know: what frames mean (the owner's `onFrame`), messages, sessions, contacts.
 */
import { type ClientFrame, decodeServerFrame, FRAME_VERSION, type ServerFrame } from '../codec/frames.js'
import { ProtocolErrorCode } from '../errors.js'
import { ClientError, ClientErrorCode } from './errors.js'
import { type WebSocketFactory, type WebSocketLike, webSocketUrl } from './transport.js'
import type { ConnectionState } from './views.js'

/** Reconnect backoff: doubles from the first delay up to the cap, with ±20 % jitter. */
export const RECONNECT_INITIAL_DELAY_MS = 500
export const RECONNECT_MAX_DELAY_MS = 30_000
/**
 * Frames handed over at once, at most. The server sends a backlog up to its socket's high-water
 * mark, so this bounds the memory one batch holds (frames of up to 64 KiB) and the work one commit
 * has to redo if the store fails. Half the server's delivery window (500 unacknowledged deliveries,
 * docs/protocol.md §13.2): the batch's acknowledgement lets the server send more while the other
 * half is being handled, where a batch of the whole window left the client waiting for the next
 * one after every commit.
 */
export const MAX_FRAMES_PER_BATCH = 250

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const systemTimers: Timers = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
}

/** One socket's lifetime; frames carry the one they arrived on. */
export interface Connection {
  readonly id: number
}

export interface ReceivedFrame {
  readonly frame: ServerFrame
  readonly connection: Connection
}

export interface RelayLinkOptions {
  readonly serverUrl: string
  readonly webSocket: WebSocketFactory
  /** The session token to authenticate with (throws when there is none). */
  readonly token: () => string
  /** Handles a batch of frames, in order; the next batch waits. A rejection is reported and the next goes on. */
  readonly onFrames: (frames: readonly ReceivedFrame[]) => Promise<void>
  readonly onState: (state: ConnectionState) => void
  /** A socket closed (the owner forgets what was in flight on it). */
  readonly onClosed?: () => void
  readonly onProblem: (code: string, message: string) => void
  readonly onError: (error: unknown) => void
  readonly timers?: Timers
  /** In [0, 1), for the backoff's jitter. */
  readonly random?: () => number
}

export class RelayLink {
  private readonly options: RelayLinkOptions
  private readonly timers: Timers
  private readonly random: () => number
  private socket: WebSocketLike | undefined
  private current: Connection | undefined
  private connections = 0
  private stateValue: ConnectionState = 'offline'
  private wanted = false
  private attempts = 0
  private reconnectTimer: unknown
  /** Frames received and not yet handed over; `draining` while a batch is being handled. */
  private readonly received: ReceivedFrame[] = []
  private draining: Promise<void> | undefined
  private pendingAck = 0

  constructor(options: RelayLinkOptions) {
    this.options = options
    this.timers = options.timers ?? systemTimers
    this.random = options.random ?? Math.random
  }

  get state(): ConnectionState {
    return this.stateValue
  }

  /** True while `connection` is the open socket (a frame from an older one is stale). */
  isCurrent(connection: Connection): boolean {
    return this.current === connection
  }

  /** Connects, and keeps reconnecting with backoff until `disconnect` or `refuse`. */
  connect(): void {
    this.wanted = true
    if (this.stateValue === 'logged-out') this.setState('offline')
    if (!this.socket) this.open()
  }

  /** Resolves once the connection is ready (or rejects after `timeoutMs`, or on a refusal). */
  waitUntilOnline(subscribe: (listener: (state: ConnectionState) => void) => () => void, timeoutMs: number) {
    if (this.stateValue === 'online') return Promise.resolve()
    const refused = () =>
      new ClientError(ClientErrorCode.NotLoggedIn, 'expected a valid session, got a refusal')
    if (this.stateValue === 'logged-out') return Promise.reject(refused())
    return new Promise<void>((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        stop()
        reject(
          new ClientError(
            ClientErrorCode.Network,
            `expected to be online within ${timeoutMs} ms, got ${this.stateValue}`,
          ),
        )
      }, timeoutMs)
      const stop = subscribe((state) => {
        if (state !== 'online' && state !== 'logged-out') return
        this.timers.clearTimeout(timer)
        stop()
        if (state === 'online') resolve()
        else reject(refused())
      })
    })
  }

  /** Closes the socket and stops reconnecting; resolves once frames already received are handled. */
  async disconnect(): Promise<void> {
    this.wanted = false
    this.timers.clearTimeout(this.reconnectTimer)
    this.reconnectTimer = undefined
    this.drop(1000, 'client closing')
    await this.draining
    if (this.stateValue !== 'logged-out') this.setState('offline')
  }

  /** The server refused our token: close, stop reconnecting, until `connect` is called again. */
  refuse(): void {
    this.wanted = false
    this.drop(1000, 'logged out')
    this.setState('logged-out')
  }

  /** A new login after a refusal: the link may connect again. */
  loggedIn(): void {
    if (this.stateValue === 'logged-out') this.setState('offline')
  }

  /** Closes the current socket on purpose (e.g. after a local failure); reconnects if wanted. */
  close(code: number, reason: string): void {
    this.socket?.close(code, reason)
  }

  /** Sends a frame if the socket is open; false when it is not (the caller keeps what it sent). */
  send(frame: ClientFrame): boolean {
    const socket = this.socket
    // 1 = OPEN, in the browser's WebSocket and in ws alike.
    if (socket?.readyState !== 1) return false
    socket.send(JSON.stringify(frame))
    return true
  }

  /**
   * Acknowledges deliveries up to `seq` on `connection`: one cumulative `ack` once the frames that
   * arrived together are handled. Ignored for a connection that is gone.
   */
  acknowledge(seq: number, connection: Connection): void {
    if (!this.isCurrent(connection)) return
    this.pendingAck = Math.max(this.pendingAck, seq)
    queueMicrotask(() => {
      if (this.pendingAck === 0 || !this.isCurrent(connection)) return
      if (this.send({ v: FRAME_VERSION, type: 'ack', upTo: this.pendingAck })) this.pendingAck = 0
    })
  }

  /** Marks the connection ready (after the server's `ready`): backoff starts from the beginning. */
  ready(): void {
    this.attempts = 0
    this.setState('online')
  }

  private setState(state: ConnectionState): void {
    if (this.stateValue === state) return
    this.stateValue = state
    this.options.onState(state)
  }

  private drop(code: number, reason: string): void {
    const socket = this.socket
    this.socket = undefined
    this.current = undefined
    if (!socket) return
    socket.onmessage = null
    socket.onclose = null
    // Not null: closing a socket still connecting makes some implementations (Node's `ws`) report
    // an error, and one nobody listens to is thrown. A dropped socket's errors are of no interest.
    socket.onerror = () => {}
    socket.close(code, reason)
    // Its onclose will not run: the owner forgets here what was in flight on it (an `accepted` on
    // its way is lost with it, so the send goes again on the next connection).
    this.options.onClosed?.()
  }

  private open(): void {
    this.setState('connecting')
    let socket: WebSocketLike
    try {
      socket = this.options.webSocket(webSocketUrl(this.options.serverUrl))
    } catch {
      this.scheduleReconnect()
      return
    }
    const connection: Connection = { id: ++this.connections }
    this.socket = socket
    this.current = connection
    this.pendingAck = 0
    socket.onopen = () => {
      try {
        this.send({ v: FRAME_VERSION, type: 'auth', token: this.options.token() })
      } catch (error) {
        this.options.onError(error)
        socket.close(1000, 'no session')
      }
    }
    socket.onmessage = (event) => {
      let frame: ServerFrame
      try {
        frame = decodeServerFrame(JSON.parse(String(event.data)))
      } catch {
        this.options.onProblem(ProtocolErrorCode.MalformedMessage, 'the server sent a malformed frame')
        return
      }
      this.received.push({ frame, connection })
      this.draining ??= this.drain()
    }
    socket.onerror = () => {}
    socket.onclose = () => {
      if (this.socket !== socket) return
      this.socket = undefined
      this.current = undefined
      this.options.onClosed?.()
      if (this.stateValue !== 'logged-out') this.setState('offline')
      if (this.wanted && this.stateValue !== 'logged-out') this.scheduleReconnect()
    }
  }

  private async drain(): Promise<void> {
    // Started from a socket event: the first batch gathers what else that read brought.
    await Promise.resolve()
    while (this.received.length > 0) {
      const batch = this.received.splice(0, MAX_FRAMES_PER_BATCH)
      try {
        await this.options.onFrames(batch)
      } catch (error) {
        this.options.onError(error)
      }
    }
    this.draining = undefined
  }

  private scheduleReconnect(): void {
    const base = Math.min(RECONNECT_MAX_DELAY_MS, RECONNECT_INITIAL_DELAY_MS * 2 ** this.attempts)
    const delay = base * (0.8 + this.random() * 0.4)
    this.attempts++
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = undefined
      if (this.wanted && !this.socket) this.open()
    }, delay)
  }
}
