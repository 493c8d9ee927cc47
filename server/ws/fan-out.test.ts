/**
 * `send.devices` on the real server (docs/protocol.md §13.2): one envelope per device of the
 * recipient and per other device of the sender, compared with the accounts' devices
 * (`devices.mismatch`, nothing stored), stored all or none, delivered to each device with the
 * sending device named.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { FRAME_VERSION } from '../../shared/codec/frames.js'
import { MAX_ENVELOPE_BYTES } from '../../shared/limits.js'
import { countQueued } from '../db/queue.js'
import { DIALECTS, postgresUnavailable } from '../test/databases.js'
import { linkDevice } from '../test/devices.js'
import { signUp, startServer, type TestClient, type TestServer } from '../test/harness.js'
import { connect, newMessageId, type RelaySocket } from '../test/ws-client.js'

const pgSkip = await postgresUnavailable()
const body = (length = 48) => toBase64Url(randomBytes(length))
const none = { missing: [], extra: [], stale: [] }

function sendDevices(
  socket: RelaySocket,
  to: string,
  messages: number[],
  own: number[] = [],
  options: { id?: string; size?: number } = {},
): { id: string; bodies: Map<number, string>; copies: Map<number, string> } {
  const id = options.id ?? newMessageId()
  // The recipient's devices and the sender's share ids (both start at 1): one map each.
  const bodies = new Map<number, string>()
  const copies = new Map<number, string>()
  const envelopes = (devices: number[], into: Map<number, string>) =>
    devices.map((device) => {
      const text = body(options.size)
      into.set(device, text)
      return { device, body: text }
    })
  socket.send({
    v: FRAME_VERSION,
    type: 'send.devices',
    id,
    to,
    messages: envelopes(messages, bodies),
    own: envelopes(own, copies),
  })
  return { id, bodies, copies }
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`send.devices (${dialect})`, () => {
    let server: TestServer
    beforeAll(async () => {
      server = await startServer({ dialect, limits: { maxQueuedMessagesPerRecipient: 3 } })
    })
    afterAll(async () => {
      await server?.close()
    })

    const userIdOf = async (client: TestClient) =>
      (
        await server.database.db
          .selectFrom('users')
          .select('id')
          .where('username', '=', client.username)
          .executeTakeFirstOrThrow()
      ).id

    it('answers a list that differs with what is missing, extra or stale, and stores nothing', async () => {
      const alice = await signUp(server)
      const bob = await signUp(server)
      const bob2 = await linkDevice(server, bob.client, bob.token)
      const bob3 = await linkDevice(server, bob.client, bob.token)
      const removed = await server.request(`/api/v1/devices/${bob3.deviceId}`, {
        method: 'DELETE',
        token: bob.token,
      })
      expect(removed.status).toBe(204)
      const socket = await connect(server, alice.token, 'alice')

      const missing = sendDevices(socket, bob.client.username, [1])
      expect(await socket.next('devices.mismatch')).toEqual({
        v: FRAME_VERSION,
        type: 'devices.mismatch',
        id: missing.id,
        recipient: { missing: [bob2.deviceId], extra: [], stale: [] },
        own: none,
      })
      const wrong = sendDevices(socket, bob.client.username, [1, 2, 3, 9])
      expect(await socket.next('devices.mismatch')).toMatchObject({
        id: wrong.id,
        recipient: { missing: [], extra: [9], stale: [3] },
        own: none,
      })
      // Alice has one device: a sent copy names a device she does not have.
      const copy = sendDevices(socket, bob.client.username, [1, 2], [2])
      expect(await socket.next('devices.mismatch')).toMatchObject({
        id: copy.id,
        recipient: none,
        own: { missing: [], extra: [2], stale: [] },
      })
      await socket.fence()
      const bobId = await userIdOf(bob.client)
      for (const deviceId of [1, 2, 3]) {
        expect(await countQueued(server.database.db, { userId: bobId, deviceId })).toBe(0)
      }
      expect(socket.all('accepted')).toEqual([])
      await socket.close()
    })

    it('delivers one envelope to each device of the recipient and a sent copy to the sender’s others', async () => {
      const alice = await signUp(server)
      const bob = await signUp(server)
      const alice2 = await linkDevice(server, alice.client, alice.token)
      const bob2 = await linkDevice(server, bob.client, bob.token)
      const [a1, a2, b1, b2] = await Promise.all([
        connect(server, alice.token, 'alice1'),
        connect(server, alice2.token, 'alice2'),
        connect(server, bob.token, 'bob1'),
        connect(server, bob2.token, 'bob2'),
      ])

      // From Alice's device 1: Bob's two devices, and her device 2's sent copy.
      const first = sendDevices(a1, bob.client.username, [1, 2], [2])
      expect((await a1.next('accepted')).id).toBe(first.id)
      for (const [socket, device] of [
        [b1, 1],
        [b2, 2],
      ] as const) {
        const delivered = await socket.next('deliver')
        expect(delivered).toMatchObject({ id: first.id, from: alice.client.username, seq: 1 })
        expect(delivered.body).toBe(first.bodies.get(device))
        // From device 1: no `device`, as clients before devices know the frame.
        expect('device' in delivered).toBe(false)
      }
      const sentCopy = await a2.next('deliver')
      expect(sentCopy).toMatchObject({ id: first.id, from: alice.client.username })
      expect(sentCopy.body).toBe(first.copies.get(2))
      expect(sentCopy.body).not.toBe(first.bodies.get(2))

      // From Bob's device 2: the sending device is named on every copy.
      const reply = sendDevices(b2, alice.client.username, [1, 2], [1])
      expect((await b2.next('accepted')).id).toBe(reply.id)
      const toAlice = await a1.next('deliver')
      expect(toAlice).toMatchObject({ id: reply.id, from: bob.client.username, device: bob2.deviceId })
      expect((await a2.next('deliver')).device).toBe(bob2.deviceId)
      const bobsCopy = await b1.next('deliver')
      expect(bobsCopy).toMatchObject({ id: reply.id, from: bob.client.username, device: bob2.deviceId })
      expect(bobsCopy.body).toBe(reply.copies.get(1))
      expect(toAlice.body).toBe(reply.bodies.get(1))

      // Sent again with the same id (its answer lost): accepted, stored and delivered once.
      sendDevices(b2, alice.client.username, [1, 2], [1], { id: reply.id })
      expect((await b2.next('accepted')).id).toBe(reply.id)
      const fenceId = sendDevices(b2, alice.client.username, [1, 2], [1]).id
      expect((await a1.next('deliver')).id).toBe(fenceId)
      expect(a1.all('deliver').filter((frame) => frame.id === reply.id)).toHaveLength(1)

      // A note to oneself goes to one's other devices, in `messages`.
      const note = sendDevices(a2, alice.client.username, [1])
      expect((await a2.next('accepted')).id).toBe(note.id)
      expect(await a1.next('deliver', (frame) => frame.id === note.id)).toMatchObject({
        from: alice.client.username,
        device: alice2.deviceId,
        body: note.bodies.get(1),
      })
      for (const socket of [a1, a2, b1, b2]) await socket.close()
    })

    it('stores a send to several devices all or none: one full queue refuses every copy', async () => {
      const alice = await signUp(server)
      const bob = await signUp(server)
      const bob2 = await linkDevice(server, bob.client, bob.token)
      const socket = await connect(server, alice.token, 'alice')
      // Bob's device 2 has its 3 places taken (the server's limit here), device 1 none.
      for (let i = 0; i < 3; i++) {
        socket.send({
          v: FRAME_VERSION,
          type: 'send.devices',
          id: newMessageId(),
          to: bob.client.username,
          messages: [
            { device: bob2.deviceId, body: body() },
            { device: 1, body: body() },
          ],
          own: [],
        })
        await socket.next('accepted')
      }
      const bobId = await userIdOf(bob.client)
      expect(await countQueued(server.database.db, { userId: bobId, deviceId: 1 })).toBe(3)
      const b1 = await connect(server, bob.token, 'bob1')
      b1.ack((await b1.take('deliver', 3)).at(-1)!.seq)
      await b1.fence()
      await server.app.relay.settled()
      expect(await countQueued(server.database.db, { userId: bobId, deviceId: 1 })).toBe(0)

      const refused = sendDevices(socket, bob.client.username, [1, 2])
      expect(await socket.next('error')).toMatchObject({ code: 'E2E_ERR_QUEUE_FULL', id: refused.id })
      await server.app.relay.settled()
      expect(await countQueued(server.database.db, { userId: bobId, deviceId: 1 })).toBe(0)
      await b1.fence()
      expect(b1.unread('deliver')).toEqual([])
      await b1.close()
      await socket.close()
    })

    it('takes a send.devices beyond one envelope’s frame, and refuses impossible lists as bad frames', async () => {
      const alice = await signUp(server)
      const bob = await signUp(server)
      await linkDevice(server, bob.client, bob.token)
      await linkDevice(server, bob.client, bob.token)
      const socket = await connect(server, alice.token, 'alice')
      // Three of the largest envelopes: some 263 KB, where any other frame stops at 90 KiB.
      const large = sendDevices(socket, bob.client.username, [1, 2, 3], [], { size: MAX_ENVELOPE_BYTES })
      expect((await socket.next('accepted')).id).toBe(large.id)

      const twice = newMessageId()
      socket.send({
        v: FRAME_VERSION,
        type: 'send.devices',
        id: twice,
        to: bob.client.username,
        messages: [
          { device: 1, body: body() },
          { device: 1, body: body() },
        ],
        own: [],
      })
      expect(await socket.next('error')).toMatchObject({
        code: 'E2E_ERR_BAD_FRAME',
        id: twice,
        message: expect.stringMatching(/each device once/),
      })
      const ownDevice = newMessageId()
      socket.send({
        v: FRAME_VERSION,
        type: 'send.devices',
        id: ownDevice,
        to: bob.client.username,
        messages: [{ device: 1, body: body() }],
        own: [{ device: 1, body: body() }],
      })
      expect(await socket.next('error')).toMatchObject({
        code: 'E2E_ERR_BAD_FRAME',
        id: ownDevice,
        message: expect.stringMatching(/sending device/),
      })
      const toSelf = sendDevices(socket, alice.client.username, [1])
      expect(await socket.next('error')).toMatchObject({
        code: 'E2E_ERR_BAD_FRAME',
        id: toSelf.id,
        message: expect.stringMatching(/sending device \(1\) in messages/),
      })
      await socket.close()
    })
  })
}
