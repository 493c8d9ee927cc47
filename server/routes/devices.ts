/**
 * The devices of an account (issue 12; docs/protocol.md §13.8):
 *
 * - GET /devices: the session's account's devices (ids, sealed names, when added and last seen).
 * - PUT /devices/current/name: the session's device sets its sealed name.
 * - DELETE /devices/:id: removes a device (another one, or this one): its tokens end, its sockets
 *   close, its queue and prekeys go; contacts stop sending to it at their next device-list check.
 * - POST /devices/link-token: a device of the account approves a new one: a single-use token,
 *   reserving the new device's id, that travels to it inside the sealed provisioning message.
 * - POST /devices: the new device adds itself with that token, its login key and its prekeys,
 *   signed with the account's identity key for the reserved id; answered with its first session.
 *
 * Names are sealed by the account's devices and opaque here. Device ids are never reused, so a
 * contact's session with a removed device cannot be taken for one with a later device.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { fromBase64Url, toBase64Url } from '../../shared/bytes.js'
import {
  AddDeviceRequest,
  AddDeviceResponse,
  DeviceParams,
  DevicesResponse,
  LinkTokenResponse,
  RenameDeviceRequest,
} from '../../shared/codec/api.js'
import { preKeyFromJson } from '../../shared/codec/keys.js'
import { Type } from '../../shared/codec/schema.js'
import { importRsaOaepPublicKey, rsaOaepEncrypt } from '../../shared/crypto/primitives.js'
import { verifyOneTimePreKey, verifySignedPreKey } from '../../shared/identity.js'
import { hashSessionToken, newSessionToken } from '../auth/tokens.js'
import type { ServerContext } from '../context.js'
import {
  addDevice,
  insertLinkToken,
  linkTokenAccount,
  listDevices,
  removeDevice,
  renameDevice,
} from '../db/devices.js'
import { insertOneTimePreKeys, insertSignedPreKey } from '../db/prekeys.js'
import { insertToken } from '../db/tokens.js'
import { findUserById } from '../db/users.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'
import { requireSession, sessionOf } from '../plugins/auth.js'
import { assertDistinctKeyIds, errorResponses } from './common.js'

export const deviceRoutes: FastifyPluginAsyncTypebox<ServerContext> = async (app, context) => {
  const { db, now, limits } = context
  const session = requireSession(context)

  const tooManyDevices = () =>
    new ServerError(
      ServerErrorCode.TooManyDevices,
      409,
      `expected at most ${limits.maxDevicesPerAccount} devices per account, got one more: remove a device first`,
    )

  app.get(
    '/devices',
    { schema: { response: { 200: DevicesResponse, ...errorResponses } }, onRequest: session },
    async (request) => {
      const { userId, deviceId } = sessionOf(request)
      const devices = await listDevices(db, userId)
      return {
        devices: devices.map((device) => ({
          id: Number(device.device_id),
          ...(device.name ? { name: toBase64Url(device.name) } : {}),
          createdAt: device.created_at,
          lastSeenAt: device.last_seen_at,
          current: Number(device.device_id) === deviceId,
        })),
      }
    },
  )

  app.put(
    '/devices/current/name',
    {
      schema: { body: RenameDeviceRequest, response: { 204: Type.Null(), ...errorResponses } },
      onRequest: session,
    },
    async (request, reply) => {
      const { userId, deviceId } = sessionOf(request)
      const name = request.body.name === undefined ? null : fromBase64Url(request.body.name)
      if (!(await renameDevice(db, { userId, deviceId }, name))) throw serverErrors.deviceNotFound()
      return reply.code(204).send(null)
    },
  )

  app.delete(
    '/devices/:id',
    {
      schema: { params: DeviceParams, response: { 204: Type.Null(), ...errorResponses } },
      onRequest: session,
    },
    async (request, reply) => {
      const { userId } = sessionOf(request)
      const removed = await removeDevice(db, { userId, deviceId: Number(request.params.id) }, now())
      if (removed === 'not-found') throw serverErrors.deviceNotFound()
      if (removed === 'last-device') {
        throw new ServerError(
          ServerErrorCode.LastDevice,
          409,
          "expected another of the account's devices, got its last one: delete the account instead",
        )
      }
      // Its sockets end now, wherever they are, saying why.
      for (const tokenHash of removed) context.relay.sessionRevoked(userId, tokenHash, 'device-removed')
      request.log.info({ event: 'device-removed', userId }, 'device removed')
      return reply.code(204).send(null)
    },
  )

  app.post(
    '/devices/link-token',
    {
      schema: { response: { 201: LinkTokenResponse, ...errorResponses } },
      onRequest: session,
      config: {
        rateLimit: { max: limits.registerRateLimit.max, timeWindow: limits.registerRateLimit.timeWindowMs },
      },
    },
    async (request, reply) => {
      const { userId } = sessionOf(request)
      const token = newSessionToken()
      const issuedAt = now()
      const expiresAt = issuedAt + limits.linkTokenTtlMs
      const reserved = await insertLinkToken(
        db,
        { tokenHash: hashSessionToken(token), userId, now: issuedAt, expiresAt },
        { maxPerAccount: limits.maxLinkTokensPerAccount, maxDevices: limits.maxDevicesPerAccount },
      )
      if (reserved === 'not-found') throw serverErrors.userNotFound()
      if (reserved === 'too-many-devices') throw tooManyDevices()
      const linkToken = toBase64Url(token)
      token.fill(0)
      return reply.code(201).send({ linkToken, deviceId: reserved.deviceId, expiresAt })
    },
  )

  app.post(
    '/devices',
    {
      schema: { body: AddDeviceRequest, response: { 201: AddDeviceResponse, ...errorResponses } },
      config: {
        rateLimit: { max: limits.registerRateLimit.max, timeWindow: limits.registerRateLimit.timeWindowMs },
      },
    },
    async (request, reply) => {
      const body = request.body
      const linkToken = fromBase64Url(body.linkToken)
      const linkTokenHash = hashSessionToken(linkToken)
      linkToken.fill(0)
      // The account the token is for, to check the keys against its identity before anything is
      // stored; the addition below uses the token up (or finds it gone: then nothing is added).
      const userId = await linkTokenAccount(db, linkTokenHash, now())
      const user = userId === undefined ? undefined : await findUserById(db, userId)
      if (!user) throw serverErrors.linkTokenInvalid()
      const signedPreKey = preKeyFromJson(body.signedPreKey)
      const oneTimePreKeys = body.oneTimePreKeys.map(preKeyFromJson)
      assertDistinctKeyIds(oneTimePreKeys, 'one-time prekeys')
      const loginKey = fromBase64Url(body.loginKey)
      await importRsaOaepPublicKey(loginKey)
      // Signed for this device by the account's identity key: a key of another device (or a
      // server's own) is refused here, and by contacts, who check the same.
      await verifySignedPreKey(user.signing_key, body.deviceId, signedPreKey)
      await Promise.all(
        oneTimePreKeys.map((preKey) => verifyOneTimePreKey(user.signing_key, body.deviceId, preKey)),
      )

      const addedAt = now()
      const added = await addDevice(
        db,
        {
          linkTokenHash,
          deviceId: body.deviceId,
          loginKey,
          name: body.name === undefined ? null : fromBase64Url(body.name),
          now: addedAt,
          maxDevices: limits.maxDevicesPerAccount,
        },
        async (trx, device) => {
          await insertSignedPreKey(trx, device, signedPreKey, addedAt)
          await insertOneTimePreKeys(trx, device, oneTimePreKeys)
        },
      )
      if (added === 'link-token-invalid') throw serverErrors.linkTokenInvalid()
      if (added === 'too-many-devices') throw tooManyDevices()

      // Its first session, as /login would give it.
      const token = newSessionToken()
      const expiresAt = addedAt + limits.tokenLifetimeMs
      const encryptedToken = await rsaOaepEncrypt(await importRsaOaepPublicKey(loginKey), token)
      await insertToken(
        db,
        { tokenHash: hashSessionToken(token), device: added, now: addedAt, expiresAt },
        limits.maxTokensPerDevice,
      )
      token.fill(0)
      request.log.info({ event: 'device-added', userId: added.userId }, 'device linked')
      return reply.code(201).send({
        username: user.username,
        deviceId: added.deviceId,
        encryptedToken: toBase64Url(encryptedToken),
        expiresAt,
      })
    },
  )
}
