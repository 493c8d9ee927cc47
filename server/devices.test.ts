/**
 * The devices of an account over the real server (TLS on loopback, both dialects): a link token
 * reserves the next id, a new device adds itself with prekeys signed for that id, logs in as
 * itself, has a queue of its own, can be renamed, listed and removed (its tokens end, its sockets
 * close saying why, its queue and prekeys go), and every bad input changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fromBase64Url, toBase64Url } from '../shared/bytes.js'
import { preKeyBundleFromJson } from '../shared/codec/keys.js'
import { rsaOaepDecrypt } from '../shared/crypto/primitives.js'
import { verifyPreKeyBundle } from '../shared/identity.js'
import { countOneTimePreKeys } from './db/prekeys.js'
import { countQueued } from './db/queue.js'
import { DIALECTS, postgresUnavailable } from './test/databases.js'
import { addDeviceBody, linkDevice, linkedDeviceLoginKey } from './test/devices.js'
import { loginSecretFor, signUp, startServer, type TestClient, type TestServer } from './test/harness.js'
import { connect, openSocket } from './test/ws-client.js'

const pgSkip = await postgresUnavailable()

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`devices (${dialect})`, () => {
    let server: TestServer
    beforeAll(async () => {
      server = await startServer({ dialect, limits: { maxDevicesPerAccount: 3 } })
    })
    afterAll(async () => {
      await server?.close()
    })

    const linkToken = async (token: Uint8Array) => {
      const response = await server.request('/api/v1/devices/link-token', { method: 'POST', token })
      expect(response.status).toBe(201)
      return response.body as { linkToken: string; deviceId: number; expiresAt: number }
    }
    const userIdOf = async (client: TestClient) =>
      (
        await server.database.db
          .selectFrom('users')
          .select('id')
          .where('username', '=', client.username)
          .executeTakeFirstOrThrow()
      ).id

    const link = (client: TestClient, token: Uint8Array) => linkDevice(server, client, token)

    it('links a device: the token reserves its id, it adds itself, is listed and has a session of its own', async () => {
      const { client, token } = await signUp(server)
      const second = await link(client, token)
      expect(second.deviceId).toBe(2)

      const listed = await server.request('/api/v1/devices', { token: second.token })
      expect(listed.status).toBe(200)
      expect(listed.body.devices).toEqual([
        { id: 1, createdAt: expect.any(Number), lastSeenAt: expect.any(Number), current: false },
        {
          id: 2,
          name: toBase64Url(new Uint8Array(40).fill(7)),
          createdAt: expect.any(Number),
          lastSeenAt: expect.any(Number),
          current: true,
        },
      ])
      // Its prekeys are its own; device 1's are untouched.
      const userId = await userIdOf(client)
      expect(await countOneTimePreKeys(server.database.db, { userId, deviceId: 2 })).toBe(3)
      expect(await countOneTimePreKeys(server.database.db, { userId, deviceId: 1 })).toBe(5)
      const status = await server.request('/api/v1/keys/status', { token: second.token })
      expect(status.body).toMatchObject({ oneTimePreKeys: 3, signedPreKeyId: 1 })
      // Others see both devices.
      const { token: other } = await signUp(server)
      const devices = await server.request(`/api/v1/users/${client.username}/devices`, { token: other })
      expect(devices.body).toEqual({ devices: [1, 2] })
      // Each device's bundle, signed for that device (device 1's answer has no deviceId, as before).
      const bundle = await server.request(`/api/v1/users/${client.username}/bundle?device=2`, {
        token: other,
      })
      expect(bundle.status).toBe(200)
      expect(bundle.body.deviceId).toBe(2)
      await verifyPreKeyBundle(preKeyBundleFromJson(bundle.body), client.username)
      const first = await server.request(`/api/v1/users/${client.username}/bundle`, { token: other })
      expect(first.body).not.toHaveProperty('deviceId')
      await verifyPreKeyBundle(preKeyBundleFromJson(first.body), client.username)
      const none = await server.request(`/api/v1/users/${client.username}/bundle?device=5`, { token: other })
      expect(none.status).toBe(404)
      expect(none.body.error.code).toBe('E2E_ERR_DEVICE_NOT_FOUND')

      // It logs in as itself later (the password proves the account, the token is its own).
      const login = await server.request('/api/v1/login', {
        body: { username: client.username, loginSecret: loginSecretFor(client.password), device: 2 },
      })
      expect(login.status).toBe(200)
      const again = await rsaOaepDecrypt(
        (await linkedDeviceLoginKey()).privateKey,
        fromBase64Url(login.body.encryptedToken),
      )
      const relisted = await server.request('/api/v1/devices', { token: again })
      expect(relisted.body.devices.map((device: { current: boolean }) => device.current)).toEqual([
        false,
        true,
      ])
      // A log-in as a device the account never had is a wrong credential like any other.
      const unknown = await server.request('/api/v1/login', {
        body: { username: client.username, loginSecret: loginSecretFor(client.password), device: 7 },
      })
      expect(unknown.status).toBe(401)
      expect(unknown.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')
    })

    it('renames the current device with a sealed name, and clears it', async () => {
      const { token } = await signUp(server)
      const name = toBase64Url(new Uint8Array(60).fill(3))
      expect(
        (await server.request('/api/v1/devices/current/name', { method: 'PUT', token, body: { name } }))
          .status,
      ).toBe(204)
      expect((await server.request('/api/v1/devices', { token })).body.devices[0].name).toBe(name)
      const tooLong = toBase64Url(new Uint8Array(385))
      const refused = await server.request('/api/v1/devices/current/name', {
        method: 'PUT',
        token,
        body: { name: tooLong },
      })
      expect(refused.status).toBe(400)
      expect((await server.request('/api/v1/devices', { token })).body.devices[0].name).toBe(name)
      await server.request('/api/v1/devices/current/name', { method: 'PUT', token, body: {} })
      expect((await server.request('/api/v1/devices', { token })).body.devices[0]).not.toHaveProperty('name')
    })

    it('refuses keys not signed for the reserved id, a used, unknown or expired token, and a device over the limit, changing nothing', async () => {
      const { client, token } = await signUp(server)
      const userId = await userIdOf(client)
      const reserved = await linkToken(token)
      // Keys signed for device 1 (or any other id) do not pass as device 2's.
      const wrongKeys = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, reserved.linkToken, reserved.deviceId, 1),
      })
      expect(wrongKeys.status).toBe(400)
      expect(wrongKeys.body.error.code).toBe('E2E_ERR_BAD_SIGNATURE')
      // Another account's identity key signs nothing here either.
      const { client: mallory } = await signUp(server)
      const forged = await server.request('/api/v1/devices', {
        body: await addDeviceBody(mallory.identity, reserved.linkToken, reserved.deviceId),
      })
      expect(forged.body.error.code).toBe('E2E_ERR_BAD_SIGNATURE')
      // Another id than the reserved one.
      const otherId = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, reserved.linkToken, reserved.deviceId + 1),
      })
      expect(otherId.status).toBe(401)
      expect(otherId.body.error.code).toBe('E2E_ERR_LINK_TOKEN_INVALID')
      // None of that used the token up or added anything.
      expect((await server.request('/api/v1/devices', { token })).body.devices).toHaveLength(1)
      const added = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, reserved.linkToken, reserved.deviceId),
      })
      expect(added.status).toBe(201)
      // Used once: a second addition with it is refused.
      const reused = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, reserved.linkToken, reserved.deviceId),
      })
      expect(reused.body.error.code).toBe('E2E_ERR_LINK_TOKEN_INVALID')
      const unknown = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, toBase64Url(new Uint8Array(32).fill(1)), 3),
      })
      expect(unknown.body.error.code).toBe('E2E_ERR_LINK_TOKEN_INVALID')
      // Expired (its row's time passed).
      const stale = await linkToken(token)
      await server.database.db
        .updateTable('link_tokens')
        .set({ expires_at: 1 })
        .where('user_id', '=', userId)
        .execute()
      const expired = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, stale.linkToken, stale.deviceId),
      })
      expect(expired.body.error.code).toBe('E2E_ERR_LINK_TOKEN_INVALID')
      // The limit (3 here): a third device, then neither a token nor a fourth device.
      const third = await linkToken(token)
      const late = await linkToken(token)
      expect(
        (
          await server.request('/api/v1/devices', {
            body: await addDeviceBody(client.identity, third.linkToken, third.deviceId),
          })
        ).status,
      ).toBe(201)
      const over = await server.request('/api/v1/devices', {
        body: await addDeviceBody(client.identity, late.linkToken, late.deviceId),
      })
      expect(over.status).toBe(409)
      expect(over.body.error.code).toBe('E2E_ERR_TOO_MANY_DEVICES')
      const noToken = await server.request('/api/v1/devices/link-token', { method: 'POST', token })
      expect(noToken.body.error.code).toBe('E2E_ERR_TOO_MANY_DEVICES')
      const ids = (await server.request('/api/v1/devices', { token })).body.devices.map(
        (device: { id: number }) => device.id,
      )
      // The expired token's id was never a device's, so the next token took it again.
      expect(ids).toEqual([1, 2, 3])
    })

    it('removes a device: its sockets close saying why, its tokens end, its queue and prekeys go; the last one stays', async () => {
      const { client, token } = await signUp(server)
      const second = await link(client, token)
      const userId = await userIdOf(client)
      // A message waiting in device 2's queue, and a socket of device 2.
      await server.database.db
        .insertInto('messages')
        .values({
          recipient_id: userId,
          recipient_device: 2,
          seq: 1,
          sender_id: userId,
          sender_device: 1,
          client_id: new Uint8Array(16).fill(4),
          body: new Uint8Array(10),
          created_at: 1,
          expires_at: Date.now() + 60_000,
        })
        .execute()
      const socket = await connect(server, second.token)
      expect(socket.ready).toMatchObject({ queued: 1 })

      const removed = await server.request('/api/v1/devices/2', { method: 'DELETE', token })
      expect(removed.status).toBe(204)
      expect(await socket.next('error')).toMatchObject({ code: 'E2E_ERR_DEVICE_REMOVED' })
      await socket.closed
      // Its token says why it ended, on REST and on the relay.
      const after = await server.request('/api/v1/devices', { token: second.token })
      expect(after.status).toBe(401)
      expect(after.body.error.code).toBe('E2E_ERR_DEVICE_REMOVED')
      const again = await openSocket(server)
      again.auth(second.token)
      expect(await again.next('error')).toMatchObject({ code: 'E2E_ERR_DEVICE_REMOVED' })
      // A log-in as it is refused: it can only be linked anew.
      const login = await server.request('/api/v1/login', {
        body: { username: client.username, loginSecret: loginSecretFor(client.password), device: 2 },
      })
      expect(login.body.error.code).toBe('E2E_ERR_DEVICE_REMOVED')
      expect(await countQueued(server.database.db, { userId, deviceId: 2 })).toBe(0)
      expect(await countOneTimePreKeys(server.database.db, { userId, deviceId: 2 })).toBe(0)
      expect((await server.request('/api/v1/devices', { token })).body.devices).toHaveLength(1)

      // Gone already; the last device cannot go (delete the account instead).
      expect((await server.request('/api/v1/devices/2', { method: 'DELETE', token })).body.error.code).toBe(
        'E2E_ERR_DEVICE_NOT_FOUND',
      )
      const last = await server.request('/api/v1/devices/1', { method: 'DELETE', token })
      expect(last.status).toBe(409)
      expect(last.body.error.code).toBe('E2E_ERR_LAST_DEVICE')
      // The next device linked is 3: 2 stays taken.
      expect((await link(client, token)).deviceId).toBe(3)
    })

    it('keeps one queue per device on the relay: acknowledgements of one leave the other', async () => {
      const { client, token } = await signUp(server)
      const second = await link(client, token)
      const userId = await userIdOf(client)
      const row = (deviceId: number, seq: number) => ({
        recipient_id: userId,
        recipient_device: deviceId,
        seq,
        sender_id: userId,
        sender_device: 3 - deviceId,
        client_id: new Uint8Array(16).fill(seq + deviceId * 10),
        body: new TextEncoder().encode(`for ${deviceId}`),
        created_at: 1,
        expires_at: Date.now() + 60_000,
      })
      await server.database.db
        .insertInto('messages')
        .values([row(1, 1), row(2, 1), row(2, 2)])
        .execute()
      const first = await connect(server, token)
      const other = await connect(server, second.token)
      expect(first.ready).toMatchObject({ queued: 1 })
      expect(other.ready).toMatchObject({ queued: 2 })
      const delivered = await other.take('deliver', 2)
      expect(delivered.map((frame) => frame.seq)).toEqual([1, 2])
      other.ack(2)
      await other.fence()
      await server.app.relay.settled()
      expect(await countQueued(server.database.db, { userId, deviceId: 2 })).toBe(0)
      expect(await countQueued(server.database.db, { userId, deviceId: 1 })).toBe(1)
      expect((await first.next('deliver')).seq).toBe(1)
      first.ws.close()
      other.ws.close()
    })
  })
}
