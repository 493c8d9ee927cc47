/**
 * Hostile and broken input on the relay: oversized, malformed, wrongly typed and out-of-order
 * frames get stable error codes, cost the sender at most its own connection, never disturb anyone
 * else's connection and never change stored data. Ends with a fuzz run from several sockets.
 */
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { FRAME_VERSION } from '../../shared/codec/frames.js'
import type { Db } from '../db/schema.js'
import { ServerErrorCode } from '../errors.js'
import { MAX_BAD_FRAMES_PER_CONNECTION, MAX_FRAME_BYTES, WS_MAX_PAYLOAD_BYTES } from '../limits.js'
import { createTestDatabase, DIALECTS, postgresUnavailable } from '../test/databases.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, newMessageId, openSocket, type RelaySocket } from '../test/ws-client.js'

const pgSkip = await postgresUnavailable()

type Member = Awaited<ReturnType<typeof signUp>>

/** Everything stored about these users, in a comparable form. */
async function snapshot(db: Db, usernames: string[]): Promise<string> {
  const users = await db
    .selectFrom('users')
    .selectAll()
    .where('username', 'in', usernames)
    .orderBy('id')
    .execute()
  const ids = users.map((user) => user.id)
  const [signed, oneTime, tokens, messages] = await Promise.all([
    db.selectFrom('signed_prekeys').selectAll().where('user_id', 'in', ids).orderBy('id').execute(),
    db
      .selectFrom('one_time_prekeys')
      .selectAll()
      .where('user_id', 'in', ids)
      .orderBy('user_id')
      .orderBy('key_id')
      .execute(),
    db.selectFrom('auth_tokens').selectAll().where('user_id', 'in', ids).orderBy('token_hash').execute(),
    db
      .selectFrom('messages')
      .selectAll()
      .where((eb) => eb.or([eb('recipient_id', 'in', ids), eb('sender_id', 'in', ids)]))
      .orderBy('seq')
      .execute(),
  ])
  return JSON.stringify({ users, signed, oneTime, tokens, messages }, (_key, value) =>
    value instanceof Uint8Array || (value && value.type === 'Buffer')
      ? toBase64Url(new Uint8Array(value.data ?? value))
      : value,
  )
}

/** Two honest users still exchange a message both ways. */
async function exchange(server: TestServer, alice: Member, bob: Member): Promise<void> {
  const a = await connect(server, alice.token, 'honest-alice')
  const b = await connect(server, bob.token, 'honest-bob')
  const toBob = a.sendMessage(bob.client.username)
  const toAlice = b.sendMessage(alice.client.username)
  const [atBob, atAlice] = await Promise.all([b.next('deliver'), a.next('deliver')])
  expect(atBob).toMatchObject({ id: toBob, from: alice.client.username })
  expect(atAlice).toMatchObject({ id: toAlice, from: bob.client.username })
  a.ack(atAlice.seq)
  b.ack(atBob.seq)
  await Promise.all([a.fence(), b.fence()])
  await Promise.all([a.close(), b.close()])
  expect([...a.invalid, ...b.invalid]).toEqual([])
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(
    `relay under bad input (${dialect})`,
    () => {
      let server: TestServer
      let alice: Member
      let bob: Member
      let mallory: Member
      const sockets: RelaySocket[] = []
      beforeAll(async () => {
        server = await startServer({ database: await createTestDatabase(dialect) })
        ;[alice, bob, mallory] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      })
      afterAll(async () => {
        for (const socket of sockets) await socket.close()
        await server?.stop()
        await server?.database.dispose()
      })
      const online = async (member: Member, label: string) => {
        const socket = await connect(server, member.token, label)
        sockets.push(socket)
        return socket
      }

      it('answers each kind of bad frame with its code and keeps the connection (below the limit)', async () => {
        const m = await online(mallory, 'mallory')
        const b = await online(bob, 'bob')
        const id = newMessageId()
        const to = bob.client.username
        const cases: [string, string | Buffer, string][] = [
          ['not JSON', '{"v":1,', ServerErrorCode.BadFrame],
          ['not an object', '42', ServerErrorCode.BadFrame],
          ['unknown type', JSON.stringify({ v: 1, type: 'deliver', seq: 1 }), ServerErrorCode.BadFrame],
          ['wrong version', JSON.stringify({ v: 2, type: 'ack', upTo: 1 }), ServerErrorCode.BadFrame],
          ['wrong field type', JSON.stringify({ v: 1, type: 'ack', upTo: 'all' }), ServerErrorCode.BadFrame],
          [
            'short id',
            JSON.stringify({ v: 1, type: 'send', id: 'AAAA', to, body: 'AAAA' }),
            ServerErrorCode.BadFrame,
          ],
          [
            'bad body',
            JSON.stringify({ v: 1, type: 'send', id, to, body: 'not base64!' }),
            ServerErrorCode.BadFrame,
          ],
          // 22 characters whose last one carries stray bits: the same 16 bytes as another id.
          [
            'non-canonical id',
            JSON.stringify({ v: 1, type: 'send', id: `${'A'.repeat(21)}B`, to, body: 'AAAA' }),
            ServerErrorCode.BadFrame,
          ],
          [
            'second auth',
            JSON.stringify({ v: 1, type: 'auth', token: toBase64Url(mallory.token) }),
            ServerErrorCode.BadFrame,
          ],
          ['binary', Buffer.from('{"v":1,"type":"ack","upTo":1}'), ServerErrorCode.BadFrame],
        ]
        // Two connections, each kept below the bad-frame limit.
        const n = await online(mallory, 'mallory-2')
        for (const [index, [what, data, code]] of cases.entries()) {
          const socket = index < cases.length / 2 ? m : n
          socket.ws.send(data)
          const error = await socket.next('error')
          expect(error.code, what).toBe(code)
          expect(error.message.length, what).toBeGreaterThan(0)
        }
        await Promise.all([m.fence(), n.fence()])
        expect(m.ws.readyState).toBe(m.ws.OPEN)
        expect(n.ws.readyState).toBe(n.ws.OPEN)
        // Nothing reached bob.
        await b.fence()
        expect(b.all('deliver')).toEqual([])
        await Promise.all([m.close(), n.close()])
      })

      it('answers a frame over MAX_FRAME_BYTES with E2E_ERR_TOO_LARGE, and closes 1009 over the hard cap', async () => {
        const m = await online(mallory, 'mallory-large')
        const b = await online(bob, 'bob-large')
        m.ws.send('x'.repeat(MAX_FRAME_BYTES + 1))
        expect((await m.next('error')).code).toBe(ServerErrorCode.TooLarge)
        m.ws.send('x'.repeat(WS_MAX_PAYLOAD_BYTES + 1))
        expect((await m.closed).code).toBe(1009)
        await b.fence()
        expect(b.ws.readyState).toBe(b.ws.OPEN)
      })

      it('closes invalid UTF-8 with 1007 (ws) and nobody else', async () => {
        const m = await openSocket(server, 'mallory-utf8')
        sockets.push(m)
        m.auth(mallory.token)
        await m.next('ready')
        // A text frame with an invalid UTF-8 sequence, sent through ws's sender without validation.
        ;(m.ws as unknown as { _sender: { send(data: Buffer, options: object): void } })._sender.send(
          Buffer.from([0x22, 0xc3, 0x28, 0x22]),
          { binary: false, fin: true, mask: true, compress: false, rsv1: false, opcode: 1, readOnly: false },
        )
        expect((await m.closed).code).toBe(1007)
      })

      it(`closes its own connection after ${MAX_BAD_FRAMES_PER_CONNECTION} bad frames, and only that one`, async () => {
        const m = await online(mallory, 'mallory-repeat')
        const other = await online(mallory, 'mallory-other')
        const b = await online(bob, 'bob-repeat')
        for (let i = 0; i < MAX_BAD_FRAMES_PER_CONNECTION; i++) m.send('nope')
        expect((await m.closed).code).toBe(1008)
        const errors = m.all('error')
        expect(errors).toHaveLength(MAX_BAD_FRAMES_PER_CONNECTION + 1)
        expect(errors.at(-1)!.message).toMatch(/closing this connection/)
        // The same user's other connection and other users' connections carry on.
        const id = other.sendMessage(bob.client.username)
        expect((await b.next('deliver')).id).toBe(id)
        b.ack(b.all('deliver').at(-1)!.seq)
        await b.fence()
      })

      it('clamps an acknowledgement to what this connection was sent: nothing undelivered is dropped', async () => {
        const a = await online(alice, 'alice-clamp')
        const carol = await signUp(server)
        const ids = [a.sendMessage(carol.client.username), a.sendMessage(carol.client.username)]
        await a.take('accepted', 2)
        const c = await online(carol, 'carol-clamp')
        const first = await c.next('deliver')
        c.ack(Number.MAX_SAFE_INTEGER)
        await c.fence()
        const second = await c.next('deliver')
        expect([first.id, second.id]).toEqual(ids)
      })

      it('fuzz: random and mutated frames from several sockets change nothing; honest users still talk', async () => {
        // Honest users with no earlier activity, so no commit of theirs is still under way.
        const [alice, bob] = await Promise.all([signUp(server), signUp(server)])
        const before = await snapshot(server.database.db, [alice.client.username, bob.client.username])
        const fuzzers = await Promise.all([signUp(server), signUp(server), signUp(server)])
        const honest = new Set([alice.client.username, bob.client.username])
        const valid = (to: string) => [
          { v: FRAME_VERSION, type: 'send', id: newMessageId(), to, body: toBase64Url(randomBytes(40)) },
          { v: FRAME_VERSION, type: 'ack', upTo: 1 },
          { v: FRAME_VERSION, type: 'presence.subscribe', users: [to] },
          { v: FRAME_VERSION, type: 'auth', token: toBase64Url(randomBytes(32)) },
        ]
        // Mutations of valid frames: drop, retype or add fields (including a claimed sender).
        const json = fc.jsonValue({ maxDepth: 3 })
        const target = fc.constantFrom(
          ...fuzzers.map((fuzzer) => fuzzer.client.username),
          'nobody-at-all',
          '',
        )
        const mutated = fc
          .tuple(
            target,
            fc.nat(3),
            fc.constantFrom('v', 'type', 'id', 'to', 'body', 'upTo', 'users', 'token', 'from'),
            json,
            fc.boolean(),
          )
          .map(([to, index, key, value, remove]) => {
            const frame: Record<string, unknown> = { ...valid(to)[index]! }
            if (remove) delete frame[key]
            else frame[key] = key === 'to' && typeof value === 'string' && honest.has(value) ? 'x' : value
            return JSON.stringify(frame)
          })
        const frame = fc.oneof(
          mutated,
          json.map((value) => JSON.stringify(value)),
          fc.string({ maxLength: 200 }),
          fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
          target.map((to) => JSON.stringify(valid(to)[0])),
        )
        const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31)
        const frames = fc.sample(frame, { numRuns: 6_000, seed })

        // Each fuzzer throws its share; a socket closed for bad frames is replaced by a new one.
        const perSocket = Math.ceil(frames.length / 6)
        let thrown = 0
        await Promise.all(
          Array.from({ length: 6 }, async (_, index) => {
            const fuzzer = fuzzers[index % fuzzers.length]!
            const authenticated = index % 3 !== 2
            let socket: RelaySocket | undefined
            for (const data of frames.slice(index * perSocket, (index + 1) * perSocket)) {
              if (!socket || socket.ws.readyState !== socket.ws.OPEN) {
                if (socket) await socket.closed
                socket = authenticated
                  ? await connect(server, fuzzer.token, `fuzz${index}`)
                  : await openSocket(server)
              }
              socket.ws.send(data)
              thrown += 1
            }
            await socket?.close()
            expect(socket?.invalid ?? []).toEqual([])
          }),
        )
        expect(thrown, `seed ${seed}`).toBe(frames.length)
        // The server still answers HTTP, and nothing stored about the honest users changed.
        expect((await server.request('/api/v1/health')).status).toBe(200)
        expect(
          await snapshot(server.database.db, [alice.client.username, bob.client.username]),
          `seed ${seed}`,
        ).toBe(before)
        await exchange(server, alice, bob)
      })
    },
  )
}
