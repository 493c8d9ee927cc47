/**
 * Real `ws` WebSocket clients for relay tests, trusting the test certificate. Every frame the server
 * sends is decoded with shared/codec/frames.ts `decodeServerFrame` (so a test fails if the server
 * ever sends an invalid frame) and kept in arrival order; `next` takes the first unread frame of a
 * type, waiting for it if needed. Waits are event-driven; their timeout only turns a hang into a
 * failure with a useful message.
 */
import { randomBytes } from 'node:crypto'
import WebSocket from 'ws'
import { toBase64Url } from '../../shared/bytes.js'
import { decodeServerFrame, FRAME_VERSION, type ServerFrame } from '../../shared/codec/frames.js'
import type { TestServer } from './harness.js'

/** Only a failure guard: every wait ends on an event long before this in a passing run. */
export const WAIT_TIMEOUT_MS = 20_000

export type FrameOf<T extends ServerFrame['type']> = Extract<ServerFrame, { type: T }>

export interface Closed {
  readonly code: number
  readonly reason: string
}

export class RelaySocket {
  /** Every decoded frame, in arrival order. */
  readonly frames: ServerFrame[] = []
  private readonly read = new Set<ServerFrame>()
  private waiters: (() => void)[] = []
  readonly closed: Promise<Closed>
  readonly opened: Promise<void>
  /** Frames that did not decode (should stay empty). */
  readonly invalid: string[] = []

  constructor(
    readonly ws: WebSocket,
    readonly label: string,
  ) {
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString() })
        this.wake()
      })
    })
    ws.on('error', () => {})
    ws.on('message', (data) => {
      const text = data.toString()
      try {
        this.frames.push(decodeServerFrame(JSON.parse(text)))
      } catch {
        this.invalid.push(text)
      }
      this.wake()
    })
  }

  private wake(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter()
  }

  /** Resolves when `check` returns a value, re-checking on every frame. */
  until<T>(check: () => T | undefined, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`${this.label}: expected ${what} within ${WAIT_TIMEOUT_MS} ms, got ${this.summary()}`),
          ),
        WAIT_TIMEOUT_MS,
      )
      const attempt = () => {
        let result: T | undefined
        try {
          result = check()
        } catch (error) {
          clearTimeout(timer)
          reject(error)
          return
        }
        if (result !== undefined) {
          clearTimeout(timer)
          resolve(result)
        } else if (this.ws.readyState === WebSocket.CLOSED) {
          clearTimeout(timer)
          reject(new Error(`${this.label}: expected ${what}, got a closed socket after ${this.summary()}`))
        } else {
          this.waiters.push(attempt)
        }
      }
      attempt()
    })
  }

  /** Takes the first unread frame of `type` (matching `where`), waiting for it. */
  next<T extends ServerFrame['type']>(
    type: T,
    where: (frame: FrameOf<T>) => boolean = () => true,
  ): Promise<FrameOf<T>> {
    return this.until(() => {
      const frame = this.frames.find(
        (candidate) => candidate.type === type && !this.read.has(candidate) && where(candidate as FrameOf<T>),
      )
      if (frame) this.read.add(frame)
      return frame as FrameOf<T> | undefined
    }, `a ${type} frame`)
  }

  /** Frames received so far, counted by type, and the last few in full. */
  summary(): string {
    const counts: Record<string, number> = {}
    for (const frame of this.frames) counts[frame.type] = (counts[frame.type] ?? 0) + 1
    return `frames ${JSON.stringify(counts)}, the last: ${JSON.stringify(this.frames.slice(-3))}`
  }

  /**
   * Takes the next `count` deliveries as a client does: acknowledging cumulatively whenever it has
   * read everything that arrived (the server sends no more than its window without acks).
   */
  async receive(count: number): Promise<FrameOf<'deliver'>[]> {
    const out: FrameOf<'deliver'>[] = []
    while (out.length < count) {
      const frame = await this.next('deliver')
      out.push(frame)
      if (this.unread('deliver').length === 0) this.ack(frame.seq)
    }
    return out
  }

  /** Takes the next `count` unread frames of `type`, in order. */
  async take<T extends ServerFrame['type']>(type: T, count: number): Promise<FrameOf<T>[]> {
    const out: FrameOf<T>[] = []
    for (let i = 0; i < count; i++) out.push(await this.next(type))
    return out
  }

  /** Unread frames of a type received so far. */
  unread<T extends ServerFrame['type']>(type: T): FrameOf<T>[] {
    return this.frames.filter((frame) => frame.type === type && !this.read.has(frame)) as FrameOf<T>[]
  }

  /** All frames of a type received so far, read or not. */
  all<T extends ServerFrame['type']>(type: T): FrameOf<T>[] {
    return this.frames.filter((frame) => frame.type === type) as FrameOf<T>[]
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  auth(token: Uint8Array): void {
    this.send({ v: FRAME_VERSION, type: 'auth', token: toBase64Url(token) })
  }

  /** Sends a message; returns its id. */
  sendMessage(to: string, options: { id?: string; body?: string } = {}): string {
    const id = options.id ?? newMessageId()
    this.send({ v: FRAME_VERSION, type: 'send', id, to, body: options.body ?? toBase64Url(randomBytes(48)) })
    return id
  }

  ack(upTo: number): void {
    this.send({ v: FRAME_VERSION, type: 'ack', upTo })
  }

  subscribe(users: string[]): void {
    this.send({ v: FRAME_VERSION, type: 'presence.subscribe', users })
  }

  /** Lets these users see this socket's user's presence (stored; `fence` waits until it is). */
  share(users: string[]): void {
    this.send({ v: FRAME_VERSION, type: 'presence.share', users })
  }

  /** The authenticated user (set by `connect`). */
  username: string | undefined

  /**
   * A round trip through the server behind every frame sent so far: the relay handles a
   * connection's frames in order and answers a subscription at once, so when the answer (our own
   * presence) arrives, every frame that earlier frames caused synchronously (errors, refusals) has
   * arrived too. Results of a commit (accepted, deliver) need a later send as their fence instead.
   */
  async fence(): Promise<void> {
    const self = this.username
    if (!self) throw new Error(`${this.label}: fence needs an authenticated socket`)
    const before = this.all('presence').filter((frame) => frame.username === self).length
    this.subscribe([self])
    await this.until(
      () =>
        this.all('presence').filter((frame) => frame.username === self).length > before ? true : undefined,
      'the fence presence frame',
    )
    for (const frame of this.all('presence')) if (frame.username === self) this.read.add(frame)
  }

  async close(): Promise<Closed> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.close(1000)
    return this.closed
  }
}

export function newMessageId(): string {
  return toBase64Url(randomBytes(16))
}

export function relayUrl(server: Pick<TestServer, 'origin'>): string {
  return `${server.origin.replace(/^https/, 'wss')}/ws`
}

let sockets = 0

/** An open socket that has not authenticated. */
export async function openSocket(
  server: Pick<TestServer, 'origin' | 'ca'>,
  label?: string,
): Promise<RelaySocket> {
  sockets += 1
  const socket = new RelaySocket(
    new WebSocket(relayUrl(server), { ca: server.ca }),
    label ?? `socket${sockets}`,
  )
  await socket.opened
  return socket
}

/** An authenticated socket, after its `ready` frame. */
export async function connect(
  server: Pick<TestServer, 'origin' | 'ca'>,
  token: Uint8Array,
  label?: string,
): Promise<RelaySocket & { ready: FrameOf<'ready'> }> {
  const socket = await openSocket(server, label)
  socket.auth(token)
  const ready = await socket.next('ready')
  socket.username = ready.username
  return Object.assign(socket, { ready })
}

/**
 * The owner lets these users see their presence, as a client does for its contacts: connects,
 * shares, waits until the server has stored it (frames are handled in order) and disconnects.
 */
export async function sharePresence(
  server: Pick<TestServer, 'origin' | 'ca'>,
  ownerToken: Uint8Array,
  viewers: string[],
): Promise<void> {
  const socket = await connect(server, ownerToken, 'sharing')
  socket.share(viewers)
  await socket.fence()
  await socket.close()
}
