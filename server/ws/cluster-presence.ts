/**
 * Who is connected on which node, kept in Redis for a cluster (with REDIS_URL), so that presence
 * and the per-user connection limit hold across nodes. Without Redis there is no cluster presence:
 * the hub answers from its own sockets (local-connections.ts), exactly as a single node always did.
 *
 * What is stored, under the deployment's prefix (the bus's channel prefix, "secure-chat:"):
 *   - `<prefix>presence:nodes`, a sorted set: each live node's id, scored by the time (Redis's
 *     clock, ms) until which it counts as alive. A node renews it every
 *     CLUSTER_PRESENCE_REFRESH_INTERVAL_MS; one that stops (killed, cut off) counts as dead once
 *     CLUSTER_PRESENCE_NODE_TTL_MS have passed since its last renewal.
 *   - `<prefix>presence:sockets:{<userId>}`, a sorted set per user: one member `<nodeId>.<n>` per
 *     authenticated socket, scored by when it opened (Redis's clock, µs). A user is online while
 *     one of its members belongs to a live node; the oldest live members are the ones the
 *     connection limit closes.
 *   - `<prefix>presence:node:<nodeId>`, a hash per node: user id → username for the users it holds
 *     sockets of, so that whoever sweeps a dead node knows whose presence to announce "offline".
 *   - `<prefix>presence:displaced:<nodeId>`, a list per node: its sockets that a connection on
 *     another node pushed over the limit. The `connection.displaced` event tells the node at once;
 *     the list is what it reads at its next refresh, so a lost event delays the close and never
 *     leaves a socket beyond the limit open.
 * User ids, usernames and node ids: nothing about messages or keys. Every change is one Lua script
 * (atomic), which reads Redis's own clock, so nodes' clocks need not agree. The scripts touch keys
 * of several hash slots: one Redis (or a proxy), not Redis Cluster, as the bus.
 *
 * Transitions: a user comes online when a socket is added and no live one was there before, and
 * goes offline when the last live one is removed, or when the sweep (every node runs it at each
 * refresh) removes a dead node's members and the user is left with none. Only the caller (the hub)
 * publishes them, on the bus as `presence.changed`. Two transitions on two nodes may reach a
 * watcher's node out of order (they travel on two nodes' connections), so that node takes an event
 * as "look again" and reads the state here (the hub's `confirmPresence`): the last read comes after
 * the last transition, so watchers end on the truth.
 */
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { Redis, type Result } from 'ioredis'
import { CLUSTER_PRESENCE_NODE_TTL_MS, CLUSTER_PRESENCE_REFRESH_INTERVAL_MS } from '../limits.js'
import {
  DEFAULT_REDIS_CHANNEL_PREFIX,
  nodeRedisOptions,
  RedisUnreachableError,
  redisAddressForLog,
} from './redis-bus.js'

/** One authenticated socket, as the cluster knows it. */
export interface ClusterSocket {
  readonly userId: number
  readonly username: string
  /** `<nodeId>.<n>`: unique in the cluster, and names the node that holds it. */
  readonly socketId: string
}

export interface Connected {
  /** No live socket of the user was anywhere before this one: they came online. */
  readonly first: boolean
  /** Sockets (any node's) beyond the limit, oldest first: their holders close them. */
  readonly displaced: readonly string[]
}

export interface PresenceRefresh {
  /**
   * This node had counted as dead (its entry expired or was swept): its sockets may be gone from
   * Redis, and the caller announces them again.
   */
  readonly revived: boolean
  /** Users who went offline because the nodes that held their sockets died. */
  readonly expired: readonly { readonly userId: number; readonly username: string }[]
  /** This node's sockets that connections elsewhere displaced since the last refresh: to close. */
  readonly displaced: readonly string[]
}

/** Presence and connection counts across nodes; redis: RedisClusterPresence. */
export interface ClusterPresence {
  readonly nodeId: string
  /** How often the hub calls `refresh`. */
  readonly refreshIntervalMs: number
  /** A new id for a socket of this node. */
  nextSocketId(): string
  /** Adds the socket; beyond `maxSockets` live ones for the user, the oldest are displaced. */
  connected(socket: ClusterSocket, maxSockets: number): Promise<Connected>
  /**
   * Removes the socket (`lastHere`: the user has no other socket on this node); true when that
   * was the user's last live socket anywhere (they went offline).
   */
  disconnected(socket: ClusterSocket, lastHere: boolean): Promise<boolean>
  isOnline(userId: number): Promise<boolean>
  /** Renews this node's entry and sweeps dead nodes. */
  refresh(): Promise<PresenceRefresh>
  /** Marks this node dead at once (its sockets were removed already) and closes the connection. */
  close(): Promise<void>
}

// Shared by the scripts: Redis's clock, and the live-member count that ignores dead nodes' members
// (only the sweep removes those, so that it sees who went offline and says so).
const LUA_COMMON = `
local function nowMicros()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function liveMembers(socketsKey, nodesKey, nowMs)
  local live = {}
  local alive = {}
  for _, member in ipairs(redis.call('ZRANGE', socketsKey, 0, -1)) do
    local node = string.match(member, '^(.*)%.[0-9]+$') or ''
    local state = alive[node]
    if state == nil then
      local expires = redis.call('ZSCORE', nodesKey, node)
      if expires == false then
        -- A node that closed or was swept: its member is left over; nobody else will remove it.
        redis.call('ZREM', socketsKey, member)
        state = 'gone'
      elseif tonumber(expires) > nowMs then
        state = 'live'
      else
        state = 'dead'
      end
      alive[node] = state
    elseif state == 'gone' then
      redis.call('ZREM', socketsKey, member)
    end
    if state == 'live' then table.insert(live, member) end
  end
  return live
end
`

/** KEYS: sockets, nodes, node users. ARGV: member, max, userId, username, key prefix. */
const CONNECT_SCRIPT = `${LUA_COMMON}
local now = nowMicros()
local before = liveMembers(KEYS[1], KEYS[2], math.floor(now / 1000))
-- As text: Lua would print a number this large in exponent form.
redis.call('ZADD', KEYS[1], 'NX', string.format('%.0f', now), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
local excess = #before + 1 - tonumber(ARGV[2])
local displaced = {}
for _, member in ipairs(before) do
  if excess <= 0 then break end
  if member ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], member)
    table.insert(displaced, member)
    -- For its node's next refresh, in case the event that tells it now is lost.
    local node = string.match(member, '^(.*)%.[0-9]+$') or ''
    redis.call('RPUSH', ARGV[5] .. 'presence:displaced:' .. node, member)
    excess = excess - 1
  end
end
local first = 1
if #before > 0 then first = 0 end
return {first, displaced}
`

/** KEYS: sockets, nodes, node users. ARGV: member, userId, lastHere ("1" or "0"). */
const DISCONNECT_SCRIPT = `${LUA_COMMON}
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[3] == '1' then redis.call('HDEL', KEYS[3], ARGV[2]) end
local left = liveMembers(KEYS[1], KEYS[2], math.floor(nowMicros() / 1000))
if removed == 1 and #left == 0 then return 1 end
return 0
`

/** KEYS: sockets, nodes. */
const ONLINE_SCRIPT = `${LUA_COMMON}
if #liveMembers(KEYS[1], KEYS[2], math.floor(nowMicros() / 1000)) > 0 then return 1 end
return 0
`

/**
 * KEYS: nodes. ARGV: nodeId, ttlMs, key prefix. Renews this node and takes its list of displaced
 * sockets, then sweeps every node whose time ran out: its members go, and each of its users left
 * with no member at all is returned (flat: userId, username, …) as gone offline. ZREM claims a
 * dead node, so one sweeper handles it.
 */
const REFRESH_SCRIPT = `${LUA_COMMON}
local nowMs = math.floor(nowMicros() / 1000)
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], string.format('%.0f', nowMs + tonumber(ARGV[2])), ARGV[1])
local revived = 0
if previous == false or tonumber(previous) <= nowMs then revived = 1 end
local displacedKey = ARGV[3] .. 'presence:displaced:' .. ARGV[1]
local displaced = redis.call('LRANGE', displacedKey, 0, -1)
redis.call('DEL', displacedKey)
local expired = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', nowMs))) do
  if redis.call('ZREM', KEYS[1], node) == 1 then
    local usersKey = ARGV[3] .. 'presence:node:' .. node
    local users = redis.call('HGETALL', usersKey)
    for i = 1, #users, 2 do
      local socketsKey = ARGV[3] .. 'presence:sockets:{' .. users[i] .. '}'
      local removed = 0
      for _, member in ipairs(redis.call('ZRANGE', socketsKey, 0, -1)) do
        if string.match(member, '^(.*)%.[0-9]+$') == node then
          redis.call('ZREM', socketsKey, member)
          removed = removed + 1
        end
      end
      if removed > 0 and redis.call('ZCARD', socketsKey) == 0 then
        table.insert(expired, users[i])
        table.insert(expired, users[i + 1])
      end
    end
    redis.call('DEL', usersKey)
    redis.call('DEL', ARGV[3] .. 'presence:displaced:' .. node)
  end
end
return {revived, expired, displaced}
`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    presenceConnect(
      sockets: string,
      nodes: string,
      nodeUsers: string,
      member: string,
      max: number,
      userId: number,
      username: string,
      prefix: string,
    ): Result<[number, string[]], Context>
    presenceDisconnect(
      sockets: string,
      nodes: string,
      nodeUsers: string,
      member: string,
      userId: number,
      lastHere: string,
    ): Result<number, Context>
    presenceOnline(sockets: string, nodes: string): Result<number, Context>
    presenceRefresh(
      nodes: string,
      nodeId: string,
      ttlMs: number,
      prefix: string,
    ): Result<[number, string[], string[]], Context>
  }
}

export interface RedisClusterPresenceOptions {
  readonly url: string
  /** Default DEFAULT_REDIS_CHANNEL_PREFIX (the bus's). */
  readonly prefix?: string
  readonly log: Pick<FastifyBaseLogger, 'error' | 'warn' | 'info'>
  /** Default CLUSTER_PRESENCE_NODE_TTL_MS (tests make it short). */
  readonly nodeTtlMs?: number
  /** Default CLUSTER_PRESENCE_REFRESH_INTERVAL_MS; must be well under `nodeTtlMs`. */
  readonly refreshIntervalMs?: number
  readonly connectTimeoutMs?: number
}

export class RedisClusterPresence implements ClusterPresence {
  readonly nodeId = randomBytes(12).toString('base64url')
  readonly refreshIntervalMs: number
  private readonly nodeTtlMs: number
  private readonly prefix: string
  private readonly redis: Redis
  private sockets = 0

  /** Connects and registers this node as live, or throws RedisUnreachableError. */
  static async connect(options: RedisClusterPresenceOptions): Promise<RedisClusterPresence> {
    const presence = new RedisClusterPresence(options)
    let lastError: string | undefined
    presence.redis.on('error', (error: Error) => {
      lastError = error.message
    })
    try {
      await presence.redis.connect()
      await presence.refresh()
    } catch (error) {
      presence.redis.disconnect()
      throw new RedisUnreachableError(
        `cannot reach Redis at ${redisAddressForLog(options.url)}: ${lastError ?? (error as Error).message}`,
        { cause: error },
      )
    }
    return presence
  }

  private constructor(options: RedisClusterPresenceOptions) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_CHANNEL_PREFIX
    this.nodeTtlMs = options.nodeTtlMs ?? CLUSTER_PRESENCE_NODE_TTL_MS
    this.refreshIntervalMs = options.refreshIntervalMs ?? CLUSTER_PRESENCE_REFRESH_INTERVAL_MS
    if (this.refreshIntervalMs * 2 > this.nodeTtlMs) {
      throw new Error(
        `cluster presence: expected a refresh interval at most half the node TTL (${this.nodeTtlMs} ms), got ${this.refreshIntervalMs} ms`,
      )
    }
    // As the bus: nothing waits for a lost connection; the next refresh puts things right.
    this.redis = new Redis(options.url, {
      ...nodeRedisOptions(options.connectTimeoutMs),
      connectionName: `secure-chat-presence-${this.nodeId}`,
    })
    this.redis.on('error', () => {
      // Reported by the operations that fail (the hub logs them); ioredis would print each attempt.
    })
    this.redis.defineCommand('presenceConnect', { numberOfKeys: 3, lua: CONNECT_SCRIPT })
    this.redis.defineCommand('presenceDisconnect', { numberOfKeys: 3, lua: DISCONNECT_SCRIPT })
    this.redis.defineCommand('presenceOnline', { numberOfKeys: 2, lua: ONLINE_SCRIPT })
    this.redis.defineCommand('presenceRefresh', { numberOfKeys: 1, lua: REFRESH_SCRIPT })
  }

  private get nodesKey(): string {
    return `${this.prefix}presence:nodes`
  }

  private socketsKey(userId: number): string {
    return `${this.prefix}presence:sockets:{${userId}}`
  }

  private get nodeUsersKey(): string {
    return `${this.prefix}presence:node:${this.nodeId}`
  }

  nextSocketId(): string {
    this.sockets += 1
    return `${this.nodeId}.${this.sockets}`
  }

  async connected(socket: ClusterSocket, maxSockets: number): Promise<Connected> {
    const [first, displaced] = await this.redis.presenceConnect(
      this.socketsKey(socket.userId),
      this.nodesKey,
      this.nodeUsersKey,
      socket.socketId,
      maxSockets,
      socket.userId,
      socket.username,
      this.prefix,
    )
    return { first: first === 1, displaced }
  }

  async disconnected(socket: ClusterSocket, lastHere: boolean): Promise<boolean> {
    const last = await this.redis.presenceDisconnect(
      this.socketsKey(socket.userId),
      this.nodesKey,
      this.nodeUsersKey,
      socket.socketId,
      socket.userId,
      lastHere ? '1' : '0',
    )
    return last === 1
  }

  async isOnline(userId: number): Promise<boolean> {
    return (await this.redis.presenceOnline(this.socketsKey(userId), this.nodesKey)) === 1
  }

  async refresh(): Promise<PresenceRefresh> {
    const [revived, flat, displaced] = await this.redis.presenceRefresh(
      this.nodesKey,
      this.nodeId,
      this.nodeTtlMs,
      this.prefix,
    )
    const expired: { userId: number; username: string }[] = []
    for (let index = 0; index + 1 < flat.length; index += 2) {
      const userId = Number(flat[index])
      // Written by this code only; anything else is skipped rather than trusted.
      if (Number.isSafeInteger(userId) && userId > 0) expired.push({ userId, username: flat[index + 1]! })
    }
    // Only this node's own members were listed for it; anything else is skipped rather than trusted.
    const own = displaced.filter((member) => member.startsWith(`${this.nodeId}.`))
    return { revived: revived === 1, expired, displaced: own }
  }

  /** Test hook: the node stops as if killed (no cleanup), its entries left to expire. */
  abandon(): void {
    this.redis.disconnect()
  }

  async close(): Promise<void> {
    if (this.redis.status === 'end') return
    try {
      if (this.redis.status === 'ready') {
        // Dead at once: another node's sweep announces anyone still left here (none after a shutdown).
        await this.redis.zadd(this.nodesKey, 0, this.nodeId)
        await this.redis.quit()
        return
      }
    } catch {
      // Lost meanwhile: the entry expires by itself.
    }
    this.redis.disconnect()
  }
}
