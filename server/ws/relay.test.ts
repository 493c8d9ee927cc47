/**
 * The relay over TLS with real `ws` clients, on SQLite and PostgreSQL: authentication, sending,
 * the offline queue and its drain, acknowledgements, idempotency, limits, presence, prekeys.low,
 * several connections per user, restart persistence and graceful shutdown.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { FRAME_VERSION } from '../../shared/codec/frames.js'
import { MAX_ENVELOPE_BYTES, ONE_TIME_PREKEY_REFILL_THRESHOLD } from '../../shared/limits.js'
import { primaryDevice } from '../db/devices.js'
import { countQueued } from '../db/queue.js'
import { ServerErrorCode } from '../errors.js'
import { createTestDatabase, DIALECTS, postgresUnavailable } from '../test/databases.js'
import { login, type StartOptions, signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, newMessageId, openSocket, type RelaySocket, sharePresence } from '../test/ws-client.js'

const pgSkip = await postgresUnavailable()

type Member = Awaited<ReturnType<typeof signUp>>

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`relay over WSS (${dialect})`, () => {
    const servers: TestServer[] = []
    const sockets: RelaySocket[] = []
    let clock = Date.now()

    async function serve(options: StartOptions = {}): Promise<TestServer> {
      const server = await startServer({
        now: () => clock,
        database: options.database ?? (await createTestDatabase(dialect)),
        ...options,
      })
      servers.push(server)
      return server
    }
    const track = <T extends RelaySocket>(socket: T): T => {
      sockets.push(socket)
      return socket
    }
    const online = async (server: TestServer, member: Member, label?: string) =>
      track(await connect(server, member.token, label ?? member.client.username))
    const name = (member: Member) => member.client.username

    afterAll(async () => {
      for (const socket of sockets) await socket.close()
      for (const server of servers) {
        await server.stop()
        await server.database.dispose()
      }
    })

    describe('with default limits', () => {
      let server: TestServer
      let alice: Member
      let bob: Member
      let carol: Member
      beforeAll(async () => {
        server = await serve()
        ;[alice, bob, carol] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      })

      it('authenticates with the first frame and answers ready with the name and queue size', async () => {
        const socket = await online(server, alice)
        expect(socket.ready).toEqual({ v: 1, type: 'ready', username: name(alice), queued: 0 })
        expect(socket.invalid).toEqual([])
      })

      it('refuses any other first frame with E2E_ERR_UNAUTHENTICATED and closes 1008', async () => {
        const socket = track(await openSocket(server))
        socket.sendMessage(name(bob))
        const error = await socket.next('error')
        expect(error.code).toBe(ServerErrorCode.Unauthenticated)
        expect(error.message).toMatch(/expected an auth frame first, got send/)
        expect((await socket.closed).code).toBe(1008)
      })

      it('refuses a malformed first frame and closes', async () => {
        const socket = track(await openSocket(server))
        socket.send('{"v":1,"type":"auth","token":"short"}')
        expect((await socket.next('error')).code).toBe(ServerErrorCode.BadFrame)
        expect((await socket.closed).code).toBe(1008)
      })

      it('refuses an unknown token, a logged-out token and an expired one', async () => {
        const unknown = track(await openSocket(server))
        unknown.auth(crypto.getRandomValues(new Uint8Array(32)))
        expect((await unknown.next('error')).code).toBe(ServerErrorCode.Unauthenticated)
        expect((await unknown.closed).code).toBe(1008)

        const dave = await signUp(server)
        const logout = await server.request('/api/v1/logout', { method: 'POST', token: dave.token })
        expect(logout.status).toBe(204)
        const loggedOut = track(await openSocket(server))
        loggedOut.auth(dave.token)
        expect((await loggedOut.next('error')).code).toBe(ServerErrorCode.Unauthenticated)

        const erin = await signUp(server)
        const saved = clock
        clock += 31 * 24 * 60 * 60 * 1000
        try {
          const expired = track(await openSocket(server))
          expired.auth(erin.token)
          expect((await expired.next('error')).code).toBe(ServerErrorCode.Unauthenticated)
          expect((await expired.closed).code).toBe(1008)
        } finally {
          clock = saved
        }
      })

      it('closes a live socket when its session logs out', async () => {
        const frank = await signUp(server)
        const socket = await online(server, frank)
        await server.request('/api/v1/logout', { method: 'POST', token: frank.token })
        const error = await socket.next('error')
        expect(error.code).toBe(ServerErrorCode.Unauthenticated)
        expect((await socket.closed).code).toBe(1008)
      })

      it('relays online: accepted to the sender, deliver (stamped with the sender) to the recipient', async () => {
        const [a, b] = [await online(server, alice), await online(server, bob)]
        const body = toBase64Url(crypto.getRandomValues(new Uint8Array(300)))
        const id = a.sendMessage(name(bob), { body })
        const accepted = await a.next('accepted')
        const deliver = await b.next('deliver')
        expect(accepted).toEqual({ v: 1, type: 'accepted', id, ts: clock })
        expect(deliver).toEqual({
          v: 1,
          type: 'deliver',
          seq: deliver.seq,
          id,
          from: name(alice),
          body,
          ts: clock,
        })
        b.ack(deliver.seq)
        await Promise.all([a.close(), b.close()])
      })

      it('relays the largest envelope the protocol allows', async () => {
        const dave = await signUp(server)
        const [a, d] = [await online(server, alice), await online(server, dave)]
        const body = toBase64Url(new Uint8Array(randomBytes(MAX_ENVELOPE_BYTES)))
        const id = a.sendMessage(name(dave), { body })
        expect((await a.next('accepted')).id).toBe(id)
        const delivered = await d.next('deliver')
        expect(delivered.body).toBe(body)
        d.ack(delivered.seq)
        await d.fence()
        await Promise.all([a.close(), d.close()])
      })

      it('queues for an offline recipient and drains in order on connect; unacknowledged ones come back', async () => {
        const a = await online(server, alice)
        const ids = Array.from({ length: 5 }, () => a.sendMessage(name(carol)))
        expect((await a.take('accepted', 5)).map((frame) => frame.id)).toEqual(ids)

        const first = await online(server, carol)
        expect(first.ready.queued).toBe(5)
        const delivered = await first.take('deliver', 5)
        expect(delivered.map((frame) => frame.id)).toEqual(ids)
        expect(delivered.every((frame) => frame.from === name(alice))).toBe(true)
        const seqs = delivered.map((frame) => frame.seq)
        expect([...seqs].sort((x, y) => x - y)).toEqual(seqs)
        first.ack(seqs[2]!)
        await first.fence()
        await first.close()
        await settled(server, carol, 2)

        const second = await online(server, carol)
        expect(second.ready.queued).toBe(2)
        expect((await second.take('deliver', 2)).map((frame) => frame.id)).toEqual(ids.slice(3))
        second.ack(seqs[4]!)
        await second.fence()
        await second.close()
        await settled(server, carol, 0)

        const third = await online(server, carol)
        expect(third.ready.queued).toBe(0)
        await a.close()
      })

      it('live messages follow the drained ones without reordering', async () => {
        const a = await online(server, alice)
        const queued = Array.from({ length: 30 }, () => a.sendMessage(name(carol)))
        await a.take('accepted', 30)
        const c = await online(server, carol)
        const live = Array.from({ length: 30 }, () => a.sendMessage(name(carol)))
        const delivered = await c.take('deliver', 60)
        expect(delivered.map((frame) => frame.id)).toEqual([...queued, ...live])
        c.ack(delivered.at(-1)!.seq)
        await c.fence()
        await Promise.all([a.close(), c.close()])
      })

      it('is idempotent: a retry is accepted again with the original time and delivered once', async () => {
        const bob = await signUp(server)
        const [a, b] = [await online(server, alice), await online(server, bob)]
        const id = newMessageId()
        const body = toBase64Url(new Uint8Array(64).fill(7))
        a.sendMessage(name(bob), { id, body })
        a.sendMessage(name(bob), { id, body })
        const [first, second] = await a.take('accepted', 2)
        expect(first).toEqual(second)
        const delivered = await b.next('deliver')
        expect(delivered.id).toBe(id)
        // The next message is queued behind any duplicate delivery, so its arrival is the fence.
        const fence = a.sendMessage(name(bob))
        const next = await b.next('deliver')
        expect(next.id).toBe(fence)
        expect((await a.next('accepted')).id).toBe(fence)
        b.ack(next.seq)
        await b.fence()

        // A retry after the recipient acknowledged (a tombstone) is accepted and not queued again.
        const saved = clock
        clock += 60_000
        try {
          a.sendMessage(name(bob), { id, body })
          expect(await a.next('accepted')).toEqual(first)
          const after = a.sendMessage(name(bob))
          expect((await b.next('deliver')).id).toBe(after)
          expect(b.all('deliver').filter((frame) => frame.id === id)).toHaveLength(1)
        } finally {
          clock = saved
        }
        await Promise.all([a.close(), b.close()])
      })

      it('refuses a claimed sender (the schema is closed) and delivers nothing', async () => {
        const bob = await signUp(server)
        const [a, b] = [await online(server, alice), await online(server, bob)]
        const id = newMessageId()
        a.send({ v: FRAME_VERSION, type: 'send', id, to: name(bob), body: 'AAAA', from: name(carol) })
        const error = await a.next('error')
        expect(error.code).toBe(ServerErrorCode.BadFrame)
        expect(error.message).toMatch(/send frame/)
        const fence = a.sendMessage(name(bob))
        expect((await b.next('deliver')).id).toBe(fence)
        expect(b.all('deliver').map((frame) => frame.id)).not.toContain(id)
        expect(a.all('accepted').map((frame) => frame.id)).toEqual([fence])
        await Promise.all([a.close(), b.close()])
      })

      it('answers an unknown or impossible recipient with E2E_ERR_USER_NOT_FOUND and the id', async () => {
        const a = await online(server, alice)
        const unknown = a.sendMessage('nobody-here-at-all')
        expect(await a.next('error')).toMatchObject({ code: ServerErrorCode.UserNotFound, id: unknown })
        const impossible = a.sendMessage('!!')
        expect(await a.next('error')).toMatchObject({ code: ServerErrorCode.UserNotFound, id: impossible })
        // A recipient named in another case or width is the same user (names are normalised).
        const upper = a.sendMessage(name(carol).toUpperCase())
        expect((await a.next('accepted')).id).toBe(upper)
        await a.close()
        const c = await online(server, carol)
        const delivered = await c.next('deliver')
        expect(delivered.id).toBe(upper)
        c.ack(delivered.seq)
        await c.fence()
        await c.close()
      })

      it('delivers to every connection of a user; an acknowledgement from one clears it for all', async () => {
        const a = await online(server, alice)
        const bob = await signUp(server)
        const [b1, b2] = [await online(server, bob, 'bob-1'), await online(server, bob, 'bob-2')]
        const id = a.sendMessage(name(bob))
        const [d1, d2] = [await b1.next('deliver'), await b2.next('deliver')]
        expect(d1).toEqual(d2)
        expect(d1.id).toBe(id)
        b1.ack(d1.seq)
        await b1.fence()
        await settled(server, bob, 0)
        const b3 = await online(server, bob, 'bob-3')
        expect(b3.ready.queued).toBe(0)
        await Promise.all([a.close(), b1.close(), b2.close(), b3.close()])
      })

      it('presence: current state on subscribe, then online with the first connection, offline after the last', async () => {
        const [alice, bob] = [await signUp(server), await signUp(server)]
        // Both let carol see their presence (their clients do that for their contacts).
        await sharePresence(server, alice.token, [name(carol)])
        await sharePresence(server, bob.token, [name(carol)])
        const c = await online(server, carol)
        c.subscribe([name(alice), 'nobody-here-at-all', '!!', name(bob)])
        const [first, second] = await c.take('presence', 2)
        expect(first).toEqual({ v: 1, type: 'presence', username: name(alice), online: false })
        expect(second).toEqual({ v: 1, type: 'presence', username: name(bob), online: false })

        const a1 = await online(server, alice, 'alice-1')
        expect(await c.next('presence')).toEqual({
          v: 1,
          type: 'presence',
          username: name(alice),
          online: true,
        })
        const a2 = await online(server, alice, 'alice-2')
        await a1.close()
        await a2.close()
        expect(await c.next('presence')).toEqual({
          v: 1,
          type: 'presence',
          username: name(alice),
          online: false,
        })
        // Exactly one change each way, whatever the number of connections.
        await c.fence()
        expect(c.all('presence').filter((frame) => frame.username === name(alice))).toHaveLength(3)
        await c.close()
      })

      it('sends prekeys.low when a bundle fetch leaves the owner below the threshold, and on connect', async () => {
        const grace = await signUp(server, { oneTimePreKeys: ONE_TIME_PREKEY_REFILL_THRESHOLD + 1 })
        const g = await online(server, grace)
        await g.fence()
        expect(g.all('prekeys.low')).toEqual([])
        const bundle = `/api/v1/users/${name(grace)}/bundle`
        expect((await server.request(bundle, { token: alice.token })).status).toBe(200)
        // Ten left is not below the threshold; nine is.
        expect((await server.request(bundle, { token: alice.token })).status).toBe(200)
        expect(await g.next('prekeys.low')).toEqual({ v: 1, type: 'prekeys.low', remaining: 9 })
        await g.fence()
        expect(g.all('prekeys.low')).toHaveLength(1)
        await g.close()

        const again = await online(server, grace)
        expect(await again.next('prekeys.low')).toEqual({ v: 1, type: 'prekeys.low', remaining: 9 })
        await again.close()
      })
    })

    it('refuses sends beyond the recipient queue depth with E2E_ERR_QUEUE_FULL and the id', async () => {
      const server = await serve({ limits: { maxQueuedMessagesPerRecipient: 3 } })
      const [alice, bob] = [await signUp(server), await signUp(server)]
      const a = await online(server, alice)
      const ids = Array.from({ length: 4 }, () => a.sendMessage(name(bob)))
      const accepted = await a.take('accepted', 3)
      expect(accepted.map((frame) => frame.id)).toEqual(ids.slice(0, 3))
      expect(await a.next('error')).toMatchObject({ code: ServerErrorCode.QueueFull, id: ids[3] })

      const b = await online(server, bob)
      const delivered = await b.take('deliver', 3)
      b.ack(delivered[2]!.seq)
      await b.fence()
      await b.close()
      await settled(server, bob, 0)
      a.sendMessage(name(bob), { id: ids[3] })
      expect((await a.next('accepted')).id).toBe(ids[3])
    })

    it('rate-limits sends per user with E2E_ERR_RATE_LIMITED and the id', async () => {
      const server = await serve({ limits: { sendRatePerUser: { perSecond: 1, burst: 2 } } })
      const [alice, bob] = [await signUp(server), await signUp(server)]
      const a = await online(server, alice)
      const ids = [a.sendMessage(name(bob)), a.sendMessage(name(bob)), a.sendMessage(name(bob))]
      expect(await a.next('error')).toMatchObject({ code: ServerErrorCode.RateLimited, id: ids[2] })
      expect((await a.take('accepted', 2)).map((frame) => frame.id)).toEqual(ids.slice(0, 2))
      clock += 1_000
      a.sendMessage(name(bob), { id: ids[2] })
      expect((await a.next('accepted')).id).toBe(ids[2])
    })

    it('drains with at most the delivery window unacknowledged, continuing as acks arrive', async () => {
      const server = await serve({ limits: { deliveryWindow: 4 } })
      const [alice, bob] = [await signUp(server), await signUp(server)]
      const a = await online(server, alice)
      const ids = Array.from({ length: 10 }, () => a.sendMessage(name(bob)))
      await a.take('accepted', 10)
      const b = await online(server, bob)
      expect(b.ready.queued).toBe(10)
      const received: number[] = []
      for (const expected of [4, 6, 8, 10]) {
        const batch = await b.take('deliver', expected - received.length)
        received.push(...batch.map((frame) => frame.seq))
        await b.fence()
        expect(b.all('deliver')).toHaveLength(expected)
        // Acknowledge all but the last two: two window slots open.
        if (expected < 10) b.ack(received[expected - 3]!)
      }
      expect(b.all('deliver').map((frame) => frame.id)).toEqual(ids)
    })

    it('closes the oldest connection beyond the per-user limit with E2E_ERR_TOO_MANY_CONNECTIONS', async () => {
      const server = await serve({ limits: { maxConnectionsPerUser: 2 } })
      const alice = await signUp(server)
      const first = await online(server, alice, 'first')
      const second = await online(server, alice, 'second')
      const third = await online(server, alice, 'third')
      expect((await first.next('error')).code).toBe(ServerErrorCode.TooManyConnections)
      expect((await first.closed).code).toBe(1008)
      await second.fence()
      await third.fence()
    })

    it('closes the socket of a token revoked because newer log-ins passed the per-user limit', async () => {
      const server = await serve({ limits: { maxTokensPerDevice: 2 } })
      const alice = await signUp(server)
      const oldest = await online(server, alice, 'oldest')
      // Tokens are ordered by when they were issued: one millisecond apart on the test clock.
      clock += 1
      const second = await login(server, alice.client)
      const kept = await online(server, { ...alice, token: second }, 'kept')
      await oldest.fence()
      // The third log-in revokes the first token: its socket ends as after a logout.
      clock += 1
      await login(server, alice.client)
      const error = await oldest.next('error')
      expect(error.code).toBe(ServerErrorCode.Unauthenticated)
      expect((await oldest.closed).code).toBe(1008)
      await kept.fence()
      expect(kept.all('error')).toEqual([])
    })

    it('closes a socket that does not authenticate within the auth timeout', async () => {
      const server = await serve({ limits: { authTimeoutMs: 50 } })
      const socket = track(await openSocket(server))
      const error = await socket.next('error')
      expect(error.code).toBe(ServerErrorCode.Unauthenticated)
      expect(error.message).toMatch(/within 50 ms/)
      expect((await socket.closed).code).toBe(1008)
    })

    it('expires undelivered messages after their lifetime', async () => {
      const server = await serve({ limits: { messageTtlMs: 1_000 } })
      const [alice, bob] = [await signUp(server), await signUp(server)]
      const a = await online(server, alice)
      a.sendMessage(name(bob))
      await a.next('accepted')
      clock += 1_000
      const b = await online(server, bob)
      expect(b.ready.queued).toBe(0)
      const live = a.sendMessage(name(bob))
      expect((await b.next('deliver')).id).toBe(live)
    })

    it('keeps queued messages across a restart on the same database', async () => {
      const database = await createTestDatabase(dialect)
      const first = await serve({ database })
      const [alice, bob] = [await signUp(first), await signUp(first)]
      const a = track(await connect(first, alice.token))
      const ids = Array.from({ length: 3 }, () => a.sendMessage(name(bob)))
      await a.take('accepted', 3)
      await first.stop()
      expect((await a.closed).code).toBe(1001)

      // A new app on a new handle to the same file or schema.
      await database.close()
      const reopened = await database.reopen()
      const second = await serve({ database: { ...database, ...reopened } })
      const b = track(await connect(second, bob.token))
      expect(b.ready.queued).toBe(3)
      expect((await b.take('deliver', 3)).map((frame) => frame.id)).toEqual(ids)
    })

    it('shuts down gracefully: every accepted message is stored, then sockets close with 1001', async () => {
      const database = await createTestDatabase(dialect)
      const server = await serve({ database })
      const [alice, bob] = [await signUp(server), await signUp(server)]
      const a = track(await connect(server, alice.token))
      const b = track(await connect(server, bob.token))
      const ids = Array.from({ length: 200 }, () => a.sendMessage(name(bob)))
      // Close once the first batch is on its way: the rest are in flight or unread.
      await a.next('accepted')
      await server.stop()
      expect((await a.closed).code).toBe(1001)
      expect((await b.closed).code).toBe(1001)
      const accepted = a.all('accepted').map((frame) => frame.id)
      expect(accepted.length).toBeGreaterThan(0)
      const stored = await database.db.selectFrom('messages').select('client_id').execute()
      const storedIds = new Set(stored.map((row) => toBase64Url(new Uint8Array(row.client_id))))
      for (const id of accepted) expect(storedIds.has(id)).toBe(true)
      for (const id of storedIds) expect(ids).toContain(id)
    })
  })
}

/**
 * Waits until the relay has committed every frame it has taken (the caller fenced its socket first,
 * so the acknowledgement was taken), then checks the user's queue.
 */
async function settled(server: TestServer, member: Member, count: number) {
  await server.app.relay.settled()
  const user = await server.database.db
    .selectFrom('users')
    .select('id')
    .where('username', '=', member.client.username)
    .executeTakeFirstOrThrow()
  expect(await countQueued(server.database.db, primaryDevice(user.id))).toBe(count)
}
