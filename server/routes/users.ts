/**
 * The directory of other users (authentication required for all of it, so the directory is not
 * open to anonymous scraping): GET /users?query= (prefix search), GET /users/:username/identity and
 * GET /users/:username/bundle, which claims one one-time prekey per call (rate-limited per caller,
 * since each call uses up a key of the target's), except beyond the target's per-window claim limit
 * or on a re-fetch within the re-fetch window (server/limits.ts), which get the signed prekey alone.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { toBase64Url } from '../../shared/bytes.js'
import {
  BundleQuery,
  IdentityResponse,
  PreKeyBundleResponse,
  UserDevicesResponse,
  UsernameParams,
  UserSearchQuery,
  UserSearchResponse,
} from '../../shared/codec/api.js'
import { USER_SEARCH_MIN_LENGTH } from '../../shared/limits.js'
import type { ServerContext } from '../context.js'
import { type DeviceAddress, deviceIds, findDevice, PRIMARY_DEVICE_ID } from '../db/devices.js'
import { claimPreKeyBundle, currentSignedPreKey } from '../db/prekeys.js'
import { isBlocked } from '../db/relations.js'
import type { Db, PreKeyRow, UserRow } from '../db/schema.js'
import { findUserByUsername, isUsernameHeld, searchUsernames } from '../db/users.js'
import { serverErrors } from '../errors.js'
import { USER_SEARCH_LIMIT } from '../limits.js'
import { requireSession, sessionOf } from '../plugins/auth.js'
import { errorResponses, parseUsername } from './common.js'

function identityJson(user: UserRow) {
  return {
    identityKey: toBase64Url(user.identity_key),
    signingKey: toBase64Url(user.signing_key),
    identitySignature: toBase64Url(user.identity_signature),
  }
}

function preKeyJson(row: PreKeyRow) {
  return { keyId: row.key_id, publicKey: toBase64Url(row.public_key), signature: toBase64Url(row.signature) }
}

/** A bundle with the current signed prekey only: nothing claimed. */
async function unclaimedBundle(db: Db, target: DeviceAddress) {
  const signedPreKey = await currentSignedPreKey(db, target)
  return signedPreKey && { signedPreKey, oneTimePreKey: undefined, outcome: 'withheld' as const }
}

/** Characters a normalised username may contain; a prefix with others cannot match anybody. */
const USERNAME_PREFIX = /^[a-z0-9._-]+$/

export const userRoutes: FastifyPluginAsyncTypebox<ServerContext> = async (app, context) => {
  const { db, limits } = context
  app.addHook('onRequest', requireSession(context))

  async function userNamed(name: string): Promise<UserRow> {
    const username = parseUsername(name)
    const user = await findUserByUsername(db, username)
    if (user) return user
    // A contact checking on a deleted account learns that it was deleted, not that it never was.
    if (await isUsernameHeld(db, username, context.now())) throw serverErrors.accountDeleted()
    throw serverErrors.userNotFound()
  }

  app.get(
    '/users',
    { schema: { querystring: UserSearchQuery, response: { 200: UserSearchResponse, ...errorResponses } } },
    async (request) => {
      const prefix = request.query.query.normalize('NFKC').toLowerCase().trim()
      if (prefix.length < USER_SEARCH_MIN_LENGTH) {
        throw serverErrors.badRequest(
          `query: expected at least ${USER_SEARCH_MIN_LENGTH} characters of a username, got ${prefix.length}`,
        )
      }
      if (!USERNAME_PREFIX.test(prefix)) return { users: [] }
      const names = await searchUsernames(db, prefix, USER_SEARCH_LIMIT)
      return { users: names.map((username) => ({ username })) }
    },
  )

  app.get(
    '/users/:username/identity',
    { schema: { params: UsernameParams, response: { 200: IdentityResponse, ...errorResponses } } },
    async (request) => {
      const user = await userNamed(request.params.username)
      return { username: user.username, identity: identityJson(user) }
    },
  )

  // The devices to encrypt a message to (each has a queue and keys of its own); a send's device list
  // is checked against the same (docs/protocol.md §13.8).
  app.get(
    '/users/:username/devices',
    { schema: { params: UsernameParams, response: { 200: UserDevicesResponse, ...errorResponses } } },
    async (request) => {
      const user = await userNamed(request.params.username)
      return { devices: await deviceIds(db, user.id) }
    },
  )

  app.get(
    '/users/:username/bundle',
    {
      // A GET claims a one-time prekey, so Fastify's automatic HEAD twin would claim one too (with a
      // rate limit of its own) while answering nothing: there is none.
      exposeHeadRoute: false,
      schema: {
        params: UsernameParams,
        querystring: BundleQuery,
        response: { 200: PreKeyBundleResponse, ...errorResponses },
      },
      config: {
        rateLimit: {
          max: limits.bundleRateLimit.max,
          timeWindow: limits.bundleRateLimit.timeWindowMs,
          // After authentication, so the limit follows the account rather than the address.
          hook: 'preHandler',
          keyGenerator: (request) => `bundle:${sessionOf(request).userId}`,
        },
      },
    },
    async (request) => {
      const user = await userNamed(request.params.username)
      const target = { userId: user.id, deviceId: Number(request.query.device ?? PRIMARY_DEVICE_ID) }
      if (target.deviceId !== PRIMARY_DEVICE_ID && !(await findDevice(db, target))) {
        throw serverErrors.deviceNotFound()
      }
      // Someone the owner blocked claims none of their one-time prekeys, and is answered as if none
      // were left: an error would tell them they were blocked.
      const requesterId = sessionOf(request).userId
      const blocked = await isBlocked(db, context.relationsKey, user.id, requesterId)
      const bundle = blocked
        ? await unclaimedBundle(db, target)
        : await claimPreKeyBundle(db, target, {
            requesterId,
            now: context.now(),
            claimsPerTarget: limits.oneTimePreKeyClaimsPerTarget,
            refetchWindowMs: limits.bundleRefetchWindowMs,
          })
      if (!bundle) throw serverErrors.userNotFound()
      // The owner, if online, hears when their supply runs low (prekeys.low), so it refills in time.
      // A withheld key changed nothing, so a drain past the limit (or a blocked requester) costs the
      // owner no frames either.
      if (!blocked && 'outcome' in bundle && bundle.outcome !== 'withheld')
        context.relay.preKeyBundleServed(user.id, target.deviceId)
      // Neither the requester nor the target: the log must not record who fetched whose bundle.
      request.log.info({ event: 'bundle', oneTimePreKey: bundle.outcome }, 'prekey bundle served')
      return {
        username: user.username,
        // Only for another device than 1: clients before devices refuse a field they do not know.
        ...(target.deviceId !== PRIMARY_DEVICE_ID ? { deviceId: target.deviceId } : {}),
        identity: identityJson(user),
        signedPreKey: preKeyJson(bundle.signedPreKey),
        ...(bundle.oneTimePreKey ? { oneTimePreKey: preKeyJson(bundle.oneTimePreKey) } : {}),
      }
    },
  )
}
