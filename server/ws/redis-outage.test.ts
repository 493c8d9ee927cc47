/**
 * A node that loses Redis while running: it keeps serving its own sockets (deliveries between two
 * of them do not need Redis), reports the loss (status, ready()), and once Redis is back it
 * reconnects and delivers what its sockets missed, exactly once. Redis here is a redis-server of
 * this test's own (the shared one must not be stopped), on a free loopback port.
 */
import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { RelationsKey } from '../db/relations.js'
import { createTestDatabase, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { freePort } from '../test/processes.js'
import { hasRedisServer, startRedisServer, stopRedisServer, testChannelPrefix } from '../test/redis.js'
import { connect, type RelaySocket } from '../test/ws-client.js'
import { RedisRelayBus } from './redis-bus.js'

const pgSkip = await postgresUnavailable()
const redisServerInstalled = hasRedisServer()

/** Long enough never to be what delivers here: only the reconnect may. */
const NO_RECHECK_MS = 60 * 60 * 1000
const EVENT_TIMEOUT_MS = 20_000

function until(check: () => boolean, what: string): Promise<void> {
  return vi.waitFor(
    () => {
      if (!check()) throw new Error(`expected ${what}`)
    },
    { timeout: EVENT_TIMEOUT_MS, interval: 10 },
  )
}

describe.skipIf(pgSkip !== undefined || !redisServerInstalled)(
  'a node that loses Redis while running',
  () => {
    let database: TestDatabase
    let port: number
    let redis: ChildProcess
    const buses: RedisRelayBus[] = []
    const nodes: TestServer[] = []
    const sockets: RelaySocket[] = []

    beforeAll(async () => {
      database = await createTestDatabase('postgres')
      port = await freePort()
      redis = await startRedisServer(port)
      const channelPrefix = testChannelPrefix()
      const relationsKey = RelationsKey.random()
      const silent = { error: () => {}, warn: () => {}, info: () => {} }
      for (let index = 0; index < 2; index++) {
        const bus = await RedisRelayBus.connect({
          url: `redis://127.0.0.1:${port}`,
          channelPrefix,
          log: silent,
        })
        buses.push(bus)
        nodes.push(
          await startServer({
            database,
            relayBus: bus,
            relationsKey,
            limits: { relayRecheckIntervalMs: NO_RECHECK_MS },
          }),
        )
      }
    })

    afterAll(async () => {
      for (const socket of sockets) await socket.close()
      for (const node of nodes) await node.close()
      for (const bus of buses) await bus.close()
      if (redis) await stopRedisServer(redis)
      await database?.dispose()
    })

    it('keeps delivering between its own sockets, reports the loss, and catches up when Redis is back', async () => {
      const [alice, bob, carol] = await Promise.all([signUp(nodes[0]!), signUp(nodes[0]!), signUp(nodes[1]!)])
      const a = await connect(nodes[0]!, alice.token, 'alice@1')
      const b = await connect(nodes[0]!, bob.token, 'bob@1')
      const c = await connect(nodes[1]!, carol.token, 'carol@2')
      sockets.push(a, b, c)
      await expect(buses[0]!.ready()).resolves.toBe(true)

      await stopRedisServer(redis)
      await until(() => buses[0]!.status === 'down' && buses[1]!.status === 'down', 'both buses down')
      await expect(buses[0]!.ready()).resolves.toBe(false)
      expect(nodes[0]!.app.relayBus.status).toBe('down')
      const unready = await nodes[0]!.request('/ready')
      expect(unready.status).toBe(503)
      expect(unready.body.checks).toEqual({ database: 'ok', bus: 'failed' })

      // Within node 1: delivered live as ever, though the publish to Redis fails.
      const failed = buses[0]!.counters.publishFailed
      const local = a.sendMessage(bob.client.username)
      expect((await b.next('deliver')).id).toBe(local)
      expect(buses[0]!.counters.publishFailed).toBeGreaterThan(failed)

      // To node 2: stored (accepted), but no signal can reach carol while Redis is away.
      const remote = a.sendMessage(carol.client.username)
      await a.next('accepted', (frame) => frame.id === remote)

      // Bob logs out through node 2: its session.revoked cannot reach his socket on node 1 now.
      const logout = await nodes[1]!.request('/api/v1/logout', { method: 'POST', token: bob.token })
      expect(logout.status).toBe(204)
      const bobClosed = b.closed

      redis = await startRedisServer(port)
      await until(() => buses[0]!.status === 'up' && buses[1]!.status === 'up', 'both buses up again')
      expect((await c.next('deliver')).id).toBe(remote)
      expect(buses[1]!.counters.resumed).toBe(1)
      expect((await nodes[1]!.request('/ready')).status).toBe(200)
      // Node 1, back on Redis, finds bob's session gone and ends his socket as the event would have.
      expect((await b.next('error')).code).toBe('E2E_ERR_UNAUTHENTICATED')
      expect((await bobClosed).code).toBe(1008)

      // Live across nodes again, and nothing twice.
      const after = a.sendMessage(carol.client.username)
      expect((await c.next('deliver')).id).toBe(after)
      expect(c.all('deliver').map((frame) => frame.id)).toEqual([remote, after])
      expect(b.all('deliver').map((frame) => frame.id)).toEqual([local])
    })
  },
)
