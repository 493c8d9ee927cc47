/**
 * The caller's own keys: GET /keys/status, GET and POST /keys/one-time, PUT /keys/signed. Every route acts
 * on the authenticated user; no request names a user, so nobody can upload keys for someone else.
 * Each uploaded signature is verified against the signing key stored at registration.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import {
  OneTimePreKeyIdsResponse,
  PreKeyStatusResponse,
  RotateSignedPreKeyRequest,
  UploadOneTimePreKeysRequest,
} from '../../shared/codec/api.js'
import { preKeyFromJson } from '../../shared/codec/keys.js'
import { verifyOneTimePreKey, verifySignedPreKey } from '../../shared/identity.js'
import type { ServerContext } from '../context.js'
import type { DeviceAddress } from '../db/devices.js'
import {
  countOneTimePreKeys,
  currentSignedPreKey,
  listOneTimePreKeyIds,
  rotateSignedPreKey,
  uploadOneTimePreKeys,
} from '../db/prekeys.js'
import type { Db } from '../db/schema.js'
import { findUserById } from '../db/users.js'
import { serverErrors } from '../errors.js'
import { requireSession, sessionOf } from '../plugins/auth.js'
import { assertDistinctKeyIds, errorResponses } from './common.js'

/** A device's prekeys on the server. */
export async function preKeyStatus(db: Db, device: DeviceAddress): Promise<PreKeyStatusResponse> {
  const [oneTimePreKeys, signed] = await Promise.all([
    countOneTimePreKeys(db, device),
    currentSignedPreKey(db, device),
  ])
  if (!signed) throw serverErrors.userNotFound()
  return { oneTimePreKeys, signedPreKeyId: signed.key_id, signedPreKeyCreatedAt: signed.created_at }
}

async function signingKeyOf(db: Db, userId: number): Promise<Uint8Array> {
  const user = await findUserById(db, userId)
  if (!user) throw serverErrors.userNotFound()
  return user.signing_key
}

/** The session's device: prekeys are per device. */
function sessionDevice(request: FastifyRequest): DeviceAddress {
  const { userId, deviceId } = sessionOf(request)
  return { userId, deviceId }
}

export const keyRoutes: FastifyPluginAsyncTypebox<ServerContext> = async (app, context) => {
  const { db, now, limits } = context
  app.addHook('onRequest', requireSession(context))

  app.get(
    '/keys/status',
    { schema: { response: { 200: PreKeyStatusResponse, ...errorResponses } } },
    async (request) => preKeyStatus(db, sessionDevice(request)),
  )

  // Which one-time prekeys are still here, so the owner can tell which were handed out and delete
  // those no message uses within ONE_TIME_PREKEY_UNUSED_LIFETIME_MS (shared/limits.ts).
  app.get(
    '/keys/one-time',
    { schema: { response: { 200: OneTimePreKeyIdsResponse, ...errorResponses } } },
    async (request) => ({ keyIds: await listOneTimePreKeyIds(db, sessionDevice(request)) }),
  )

  app.post(
    '/keys/one-time',
    {
      schema: {
        body: UploadOneTimePreKeysRequest,
        response: { 200: PreKeyStatusResponse, ...errorResponses },
      },
    },
    async (request) => {
      const device = sessionDevice(request)
      const preKeys = request.body.oneTimePreKeys.map(preKeyFromJson)
      assertDistinctKeyIds(preKeys, 'one-time prekeys')
      const signingKey = await signingKeyOf(db, device.userId)
      await Promise.all(preKeys.map((preKey) => verifyOneTimePreKey(signingKey, device.deviceId, preKey)))
      await uploadOneTimePreKeys(db, device, preKeys, limits.maxOneTimePreKeysPerUser)
      return preKeyStatus(db, device)
    },
  )

  app.put(
    '/keys/signed',
    {
      schema: { body: RotateSignedPreKeyRequest, response: { 200: PreKeyStatusResponse, ...errorResponses } },
    },
    async (request) => {
      const device = sessionDevice(request)
      const preKey = preKeyFromJson(request.body.signedPreKey)
      await verifySignedPreKey(await signingKeyOf(db, device.userId), device.deviceId, preKey)
      await rotateSignedPreKey(db, device, preKey, now(), limits.signedPreKeysKept)
      return preKeyStatus(db, device)
    },
  )
}
