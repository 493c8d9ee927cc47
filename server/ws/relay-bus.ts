/**
 * The relay bus: what one server process tells the processes holding a user's sockets (itself
 * included), as plain data addressed to a user and device. in-process-bus.ts is the implementation
 * for a single process (the default); redis-bus.ts carries the same events between several
 * processes over Redis sharded pub/sub, one channel per address, as bus-codec.ts encodes them
 * (docs/protocol.md §13.5). Any other transport (NATS) must keep the same contract; the suite in
 * relay-bus-contract.test.ts runs against each.
 *
 * The durable queue stays the truth. `message.committed` says "this address's queue has a new row":
 * it may carry a copy of the row so the recipient's process can push it without a read, but a
 * process that gets the signal without the copy reads the queue, and one that misses the signal
 * (not subscribed yet, a dropped event) still finds the row on its next read or the client's next
 * connection. So a lost event delays a delivery and never loses a message. Revocations, identity
 * changes and deleted accounts are also in the database; the event only makes their sockets close now rather than at
 * their next authentication.
 *
 * Events are data a transport can encode: numbers, strings, booleans, byte arrays, and nothing that
 * lives in one process (no socket, connection, function or class instance). A listener must not
 * change them; the bus may hold one until its `publish` resolves.
 *
 * What the bus does not know: who is connected where (local-connections.ts), what is in the queue,
 * or whether anyone is listening on an address (publishing to one nobody holds is a no-op). Who is
 * online across processes is not on it either: in a cluster that is kept in Redis beside it
 * (cluster-presence.ts, which says what is stored there); a single process answers from its own
 * sockets.
 */

import { type DeviceAddress, PRIMARY_DEVICE_ID, primaryDevice } from '../db/devices.js'

/** Where an event is for: a user's device. One queue per address (db/devices.ts). */
export type Address = DeviceAddress

/** The device that registered the account: every account has it until devices can be linked. */
export const PRIMARY_DEVICE = PRIMARY_DEVICE_ID

export function primaryAddress(userId: number): Address {
  return primaryDevice(userId)
}

/** One name per address (a Redis channel name can be built on it; the braces make it a hash tag). */
export function addressKey(address: Address): string {
  return `{${address.userId}.${address.deviceId}}`
}

/** A copy of a committed queue row, as the `deliver` frame carries it. */
export interface CommittedMessage {
  /** The sender's message id, unpadded base64url. */
  readonly id: string
  /** The sender's normalised username. */
  readonly sender: string
  /** The sending device (absent: device 1). */
  readonly senderDevice?: number
  /** The envelope as unpadded base64url text, in ASCII bytes (as it arrived in the send frame). */
  readonly body: Uint8Array
  readonly createdAt: number
}

/** A message for this address was committed to its durable queue under `seq`. */
export interface MessageCommitted {
  readonly kind: 'message.committed'
  readonly address: Address
  readonly seq: number
  /** The row itself, so the recipient's process may push it without reading the queue. */
  readonly copy?: CommittedMessage
}

/** The user at this address came online or went offline (on the process that publishes it). */
export interface PresenceChanged {
  readonly kind: 'presence.changed'
  readonly address: Address
  readonly username: string
  readonly online: boolean
}

/** A session token of this address's user was revoked: sockets opened with it close. */
export interface SessionRevoked {
  readonly kind: 'session.revoked'
  readonly address: Address
  /** SHA-256 of the token, as the tokens table keeps it. */
  readonly tokenHash: Uint8Array
  /** Why, when the socket should say so: its device was removed from the account. */
  readonly reason?: 'device-removed'
}

/** This address's user replaced their identity key: their sockets close, their watchers are told. */
export interface IdentityChanged {
  readonly kind: 'identity.changed'
  readonly address: Address
  readonly username: string
}

/**
 * This address's user deleted their account: their sockets close, processes forget the name, and
 * their watchers are told (as `identity.changed`: the identity is gone).
 */
export interface AccountDeleted {
  readonly kind: 'account.deleted'
  readonly address: Address
  readonly username: string
}

/** This address's prekey bundle was handed out: its sockets hear if one-time prekeys run low. */
export interface PreKeysServed {
  readonly kind: 'prekeys.served'
  readonly address: Address
}

/**
 * The user at this address (a viewer) was just let see `ownerId`'s presence: their connections
 * that asked for it and got nothing are answered now.
 */
export interface PresenceGranted {
  readonly kind: 'presence.granted'
  readonly address: Address
  readonly ownerId: number
  /** The owner's normalised username, for the `presence` frame. */
  readonly username: string
}

/**
 * The user at this address (an owner) no longer lets `viewerId` see their presence (a block):
 * that viewer's watches of them end.
 */
export interface PresenceRevoked {
  readonly kind: 'presence.revoked'
  readonly address: Address
  readonly viewerId: number
  /** The owner's normalised username, for the last `presence` frame. */
  readonly username: string
}

/**
 * A socket of this address's user, on whichever node holds it, is one too many across the cluster
 * (ws/cluster-presence.ts): that node closes it as it closes the oldest beyond the limit.
 */
export interface ConnectionDisplaced {
  readonly kind: 'connection.displaced'
  readonly address: Address
  /** The socket's cluster id, `<nodeId>.<n>`. */
  readonly socketId: string
}

export type RelayEvent =
  | MessageCommitted
  | ConnectionDisplaced
  | PresenceChanged
  | SessionRevoked
  | IdentityChanged
  | AccountDeleted
  | PreKeysServed
  | PresenceGranted
  | PresenceRevoked

/** Called with each event for an address it is subscribed to; it must not throw (the bus logs if it does). */
export type RelayListener = (event: RelayEvent) => void

/**
 * Where the transport stands. `up`: events flow. `down`: the transport is lost (this process
 * still delivers to its own listeners and is reconnecting); events for other processes are not
 * carried until it is `up` again. `closed`: `close` was called.
 */
export type RelayBusStatus = 'up' | 'down' | 'closed'

/** Plain counts since the bus was made, for metrics to read (nothing resets them). */
export interface RelayBusCounters {
  /** Events handed to the transport (and to this process's own listeners). */
  published: number
  /** Publishes the transport refused or failed (the event still reached this process's listeners). */
  publishFailed: number
  /** Events from other processes handed to listeners here. */
  received: number
  /** Messages off the transport that were malformed or not for the channel they came on: dropped. */
  dropped: number
  /** Times the transport came back after a loss (each one a `resumed` callback). */
  resumed: number
}

export interface RelayBus {
  /**
   * True when events may be lost without the transport noticing (a network bus): the hub then
   * re-reads the queues of caught-up connections now and then, so that a lost `message.committed`
   * only delays. The in-process bus never loses one.
   */
  readonly lossy: boolean
  readonly status: RelayBusStatus
  readonly counters: Readonly<RelayBusCounters>
  /**
   * Whether the transport is reachable now, for the server's /ready (plugins/health.ts): resolves
   * true when it is, false when not (it never rejects). Cheap (a ping), and it must not hang for
   * long: /ready gives up on it after READY_CHECK_TIMEOUT_MS anyway.
   */
  ready(): Promise<boolean>
  /**
   * `callback` runs each time the transport comes back after a loss (reconnected and every
   * subscription renewed): events published meanwhile were not heard, so listeners should look at
   * the durable state again (the hub re-reads the queues of caught-up connections).
   */
  onResumed(callback: () => void): void
  /**
   * Hands the event to every listener subscribed to its address, in whichever process. Resolves
   * once the transport has taken it; rejects if it could not (the caller logs: see above for why
   * nothing is lost).
   */
  publish(event: RelayEvent): Promise<void>
  /**
   * From the moment this resolves, events published for the address reach the listener.
   * Subscribing the same listener twice is the same as once; calls for one address take effect in
   * the order they were made. While a network bus is `down` it resolves at once (this process's
   * own events reach the listener; other processes' do once the bus resumes: `onResumed`).
   */
  subscribe(address: Address, listener: RelayListener): Promise<void>
  /** The listener hears nothing more for the address (at once in this process). */
  unsubscribe(address: Address, listener: RelayListener): Promise<void>
  /** Ends every subscription and the transport's connections; later calls resolve and do nothing. */
  close(): Promise<void>
}
