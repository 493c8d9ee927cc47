/**
 * What the parts of the client core share: the store (raw and sealed), the session records, the
 * per-contact queues, the clock, the events the UIs listen to, and two ways out: the REST API (with
 * the session token) and the relay link. Each part (contacts, outbox, inbox, retries, prekey
 * upkeep) gets this and nothing else, so none of them knows how the others are built.
 */
import type { ClientFrame } from '../codec/frames.js'
import { isProtocolError } from '../errors.js'
import type { Identity } from '../identity.js'
import type { KeyGeneration } from '../key-generation.js'
import { isClientError } from './errors.js'
import type { Emitter } from './events.js'
import type { PeerQueues } from './peer-queues.js'
import type { SealedStore } from './sealed-store.js'
import type { SessionManager } from './session-manager.js'
import type { ClientStore } from './store.js'
import type { ClientEvents, ConnectionState } from './views.js'

export interface ClientContext {
  readonly username: string
  /** Which of the account's devices this client is (its prekeys are signed for it). */
  readonly deviceId: number
  readonly store: ClientStore
  readonly records: SealedStore
  readonly sessions: SessionManager
  readonly peerQueues: PeerQueues
  readonly events: Emitter<ClientEvents>
  readonly keys: KeyGeneration
  identity(): Identity
  now(): number
  /** The next position in the conversations' order (strictly increasing on this device). */
  nextOrder(): number
  /** The newest position handed out so far. */
  lastOrder(): number
  connection(): ConnectionState
  /** Sends a frame on the relay link if it is open; false when it is not. */
  sendFrame(frame: ClientFrame): boolean
  /** A REST request with the session token; the decoded JSON body, or a ClientError. */
  api(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<unknown>
  /** Reports a failure of background work as a `problem` event (never a secret). */
  report(error: unknown): void
}

/** The `problem` event for a failure: its stable code, and its message (which never holds secrets). */
export function problemOf(error: unknown): { code: string; message: string } {
  const code = isClientError(error) || isProtocolError(error) ? error.code : 'E2E_ERR_INTERNAL'
  return { code, message: error instanceof Error ? error.message : 'unexpected failure' }
}
