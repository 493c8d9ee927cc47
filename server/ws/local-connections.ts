/**
 * The sockets this process holds: every connection (authenticated or not), each online user with
 * their connections here, oldest first, and who here watches whose presence.
 *
 * It enforces the per-user connection limit (a new connection beyond it closes the oldest) and says
 * which users are *held* here: those with a connection here or a watcher here, whose events this
 * process needs from the relay bus. It does not know what happens next: how a send is stored, how
 * presence, revocations and commits reach other processes (relay-bus.ts), or what is in the queue.
 * So "online" here means "online on this process".
 */
import { ServerErrorCode } from '../errors.js'
import type { ConnectionUser, DeviceQueue, RelayConnection } from './connection.js'

/** A device's queue with at least one connection here. */
export interface LocalDeviceQueue extends DeviceQueue {
  ackedUpTo: number
  commitEpoch: number
  /** This device's connections here, oldest first. */
  readonly connections: RelayConnection[]
}

/** A user with at least one authenticated connection here, and the state those connections share. */
export interface LocalUser extends ConnectionUser {
  /** Oldest first, every device's. */
  readonly connections: RelayConnection[]
  /** By device id: the queues of the devices with a connection here. */
  readonly devices: Map<number, LocalDeviceQueue>
}

/** What a connection's departure changed. */
export interface Departure {
  /** The connection's user, if it was their last connection here. */
  readonly offline: LocalUser | undefined
  /** Users no longer held here (no connection, no watcher): their events are not needed any more. */
  readonly released: readonly number[]
  /** The connection's device, if it was that device's last connection here: its queue's commits are not needed any more. */
  readonly releasedQueue: number | undefined
}

export class LocalConnections {
  /** Every connection this process holds, from the upgrade until the socket closes. */
  readonly all = new Set<RelayConnection>()
  private readonly users = new Map<number, LocalUser>()
  private readonly watchers = new Map<number, Set<RelayConnection>>()

  constructor(private readonly maxConnectionsPerUser: number) {}

  add(connection: RelayConnection): void {
    this.all.add(connection)
  }

  user(userId: number): LocalUser | undefined {
    return this.users.get(userId)
  }

  /** The user of this authenticated connection (current as long as the connection is). */
  userOf(connection: RelayConnection): LocalUser | undefined {
    const user = connection.user && this.users.get(connection.user.id)
    // A user leaves the map only with their last connection, so an open connection's user is current.
    return user === connection.user ? user : undefined
  }

  /** A user's first connection here is about to join: `user` has no connections yet. */
  addUser(user: LocalUser): void {
    this.users.set(user.id, user)
  }

  /** An authenticated connection joins its user (added first); beyond the limit the oldest is closed. */
  attach(user: LocalUser, connection: RelayConnection): void {
    while (user.connections.length >= this.maxConnectionsPerUser) {
      const oldest = user.connections.shift()!
      oldest.refuse(
        ServerErrorCode.TooManyConnections,
        `expected at most ${this.maxConnectionsPerUser} connections per user, got another: closing the oldest`,
      )
    }
    user.connections.push(connection)
  }

  /** The connection watches this user; true when that makes the user held here. */
  watch(userId: number, connection: RelayConnection): boolean {
    let set = this.watchers.get(userId)
    const held = set !== undefined || this.users.has(userId)
    if (!set) {
      set = new Set()
      this.watchers.set(userId, set)
    }
    set.add(connection)
    return !held
  }

  /** The connection stops watching this user; true when that leaves the user held here no more. */
  unwatch(userId: number, connection: RelayConnection): boolean {
    const set = this.watchers.get(userId)
    if (!set?.delete(connection)) return false
    if (set.size > 0) return false
    this.watchers.delete(userId)
    return !this.users.has(userId)
  }

  watchersOf(userId: number): ReadonlySet<RelayConnection> | undefined {
    return this.watchers.get(userId)
  }

  /** A connection closed: it leaves its user, its device's queue and its watches. */
  remove(connection: RelayConnection): Departure {
    this.all.delete(connection)
    const unwatched: number[] = []
    for (const watched of connection.subscriptions) {
      const set = this.watchers.get(watched)
      if (!set) continue
      set.delete(connection)
      if (set.size === 0) {
        this.watchers.delete(watched)
        unwatched.push(watched)
      }
    }
    connection.subscriptions.clear()
    const user = this.userOf(connection)
    let offline: LocalUser | undefined
    let releasedQueue: number | undefined
    if (user) {
      const index = user.connections.indexOf(connection)
      if (index >= 0) user.connections.splice(index, 1)
      const deviceId = connection.device?.deviceId
      const queue = deviceId === undefined ? undefined : user.devices.get(deviceId)
      if (queue) {
        const at = queue.connections.indexOf(connection)
        if (at >= 0) queue.connections.splice(at, 1)
        if (queue.connections.length === 0) {
          user.devices.delete(deviceId!)
          releasedQueue = deviceId
        }
      }
      if (user.connections.length === 0) {
        this.users.delete(user.id)
        offline = user
      }
    }
    const released = unwatched.filter((userId) => !this.users.has(userId))
    if (offline && !this.watchers.has(offline.id) && !released.includes(offline.id)) released.push(offline.id)
    return { offline, released, releasedQueue }
  }
}
