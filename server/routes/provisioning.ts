/**
 * Provisioning channels (issue 12, linking a device; docs/protocol.md §13.7): a one-time relay of
 * ciphertext between a new device, which has no account yet, and an existing device of the
 * account, which links it. The server reads none of it (shared/provisioning.ts seals what matters).
 *
 *   POST   /provisioning                     none         the new device opens a channel: id, secret, expiry
 *   POST   /provisioning/:channelId/new      token        the existing device posts for the new one (claims it)
 *   GET    /provisioning/:channelId/new      secret       the new device reads them (a long poll)
 *   POST   /provisioning/:channelId/existing secret       the new device posts for the existing one
 *   GET    /provisioning/:channelId/existing token        the existing device reads them (a long poll)
 *   DELETE /provisioning/:channelId          either       closes it
 *
 * *token* is the existing device's session token, *secret* the channel secret the new device got
 * when it opened the channel, both as `Authorization: Bearer`, checked before a body is read. The
 * secret is stored as its SHA-256 and compared in constant time. State lives in the database
 * (db/provisioning.ts), so a channel opened through one node works through any other; a waiting
 * read on this node wakes at once for a post here, and otherwise finds a post made elsewhere by
 * checking the database every PROVISIONING_POLL_INTERVAL_MS. The log gets event names only.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { fromBase64Url, toBase64Url } from '../../shared/bytes.js'
import {
  ProvisioningAnswerRequest,
  ProvisioningChannelParams,
  ProvisioningChannelResponse,
  ProvisioningMessageRequest,
  ProvisioningMessagesResponse,
  ProvisioningPostResponse,
  ProvisioningReadQuery,
} from '../../shared/codec/api.js'
import { base64UrlLength, Type } from '../../shared/codec/schema.js'
import { MAX_PROVISIONING_ANSWER_BYTES, MAX_PROVISIONING_MESSAGES_PER_CHANNEL } from '../../shared/limits.js'
import {
  MAX_PROVISIONING_SEALED_BYTES,
  PROVISIONING_CHANNEL_ID_BYTES,
  PROVISIONING_CHANNEL_SECRET_BYTES,
} from '../../shared/provisioning.js'
import { parseBearerToken } from '../auth/tokens.js'
import type { ServerContext } from '../context.js'
import {
  type ChannelRefusal,
  channelRefusal,
  closeProvisioningChannel,
  findProvisioningChannel,
  openProvisioningChannel,
  postProvisioningMessage,
  readProvisioningMessages,
} from '../db/provisioning.js'
import type { ProvisioningChannelRow, ProvisioningSide } from '../db/schema.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'
import { PROVISIONING_BODY_LIMIT_BYTES } from '../limits.js'
import { requireSession, sessionOf } from '../plugins/auth.js'
import { addressKey } from '../plugins/client-address.js'
import { ProvisioningWaits } from '../provisioning-waits.js'
import { errorResponses } from './common.js'

/** The purpose of the key the opening address is hashed under (RelationsKey.deriveKey). */
export const PROVISIONING_OPENER_KEY_PURPOSE = 'provisioning channel opener'

const sha256 = (bytes: Uint8Array) => new Uint8Array(createHash('sha256').update(bytes).digest())

/** The refusal of a channel in the state `refusal` names, with its stable code. */
export function provisioningRefused(refusal: ChannelRefusal): ServerError {
  switch (refusal) {
    case 'unknown':
      return new ServerError(
        ServerErrorCode.LinkUnknown,
        404,
        'expected a link code this server gave out, got an unknown one (mistyped, or expired a while ago)',
      )
    case 'expired':
      return new ServerError(
        ServerErrorCode.LinkExpired,
        410,
        'expected an open link code, got one that expired: link code expired, start again for a new one',
      )
    case 'used':
      return new ServerError(
        ServerErrorCode.LinkUsed,
        410,
        'expected an open link code, got one already used: its channel was closed',
      )
    case 'refused':
      return new ServerError(
        ServerErrorCode.LinkRefused,
        410,
        'expected an open link code, got one the existing device closed: linking was refused there (or given up), nothing was linked',
      )
    case 'claimed':
      return new ServerError(
        ServerErrorCode.LinkClaimed,
        409,
        "expected a link code answered by this account's devices only, got one another account's device answered first",
      )
    case 'full':
      return new ServerError(
        ServerErrorCode.TooManyLinkMessages,
        409,
        `expected at most ${MAX_PROVISIONING_MESSAGES_PER_CHANNEL} messages on a link channel, got one more`,
      )
  }
}

/** The channel id of the path, decoded strictly (the route's schema says the same, later). */
function channelIdOf(request: FastifyRequest): Uint8Array {
  const text = (request.params as { channelId?: unknown }).channelId
  const length = base64UrlLength(PROVISIONING_CHANNEL_ID_BYTES)
  if (typeof text === 'string' && text.length === length) {
    try {
      return fromBase64Url(text)
    } catch {
      // Refused below, as any other malformed id.
    }
  }
  throw serverErrors.badRequest(
    `channelId: expected ${PROVISIONING_CHANNEL_ID_BYTES} bytes as ${length} base64url characters, got something else`,
  )
}

/** Refuses a message over `maxBytes` as too large (413), whichever limit the body met first. */
function refuseLargeMessage(maxBytes: number) {
  const maxLength = base64UrlLength(maxBytes)
  return async function tooLarge(request: FastifyRequest): Promise<void> {
    const message = (request.body as { message?: unknown } | undefined)?.message
    if (typeof message === 'string' && message.length > maxLength) {
      throw new ServerError(
        ServerErrorCode.TooLarge,
        413,
        `message: expected at most ${maxBytes} bytes (${maxLength} base64url characters), got ${message.length} characters`,
      )
    }
  }
}

/** Which device a request on a channel comes from, once authenticated. */
type Caller = { readonly device: 'new' } | { readonly device: 'existing'; readonly userId: number }

export const provisioningRoutes: FastifyPluginAsyncTypebox<ServerContext> = async (app, context) => {
  const { db, limits } = context
  const openerKey = context.relationsKey.deriveKey(PROVISIONING_OPENER_KEY_PURPOSE)
  const waits = new ProvisioningWaits()
  const callers = new WeakMap<FastifyRequest, Caller>()
  const rateLimit = {
    max: limits.provisioningRateLimit.max,
    timeWindow: limits.provisioningRateLimit.timeWindowMs,
  }
  // Waiting reads are answered (with what there is) before the server waits for requests to end.
  app.addHook('preClose', async () => {
    waits.endAll()
  })

  /** The address's keyed hash: the per-address count without keeping any address. */
  const openerHash = (ip: string) =>
    new Uint8Array(createHmac('sha256', openerKey).update(addressKey(ip), 'utf8').digest())

  /** True when the bearer is this channel's secret (compared as hashes, in constant time). */
  const holdsSecret = (channel: ProvisioningChannelRow, bearer: Uint8Array) => {
    const presented = sha256(bearer)
    const stored = channel.secret_hash
    return stored.length === presented.length && timingSafeEqual(presented, stored)
  }

  /** onRequest of the new device's routes: the channel's secret, before any body is read. */
  async function newDevice(request: FastifyRequest): Promise<void> {
    const bearer = parseBearerToken(request.headers.authorization)
    if (!bearer) {
      throw serverErrors.unauthenticated(
        'expected an Authorization: Bearer <channel secret> header, got none or a malformed one',
      )
    }
    const channel = await findProvisioningChannel(db, channelIdOf(request))
    if (!channel) throw provisioningRefused('unknown')
    const held = holdsSecret(channel, bearer)
    bearer.fill(0)
    if (!held) throw serverErrors.unauthenticated("expected this channel's secret, got another")
    callers.set(request, { device: 'new' })
  }

  const existingDevice = requireSession(context)

  /** onRequest of DELETE: the channel secret, or else a session token. */
  async function eitherDevice(request: FastifyRequest): Promise<void> {
    const bearer = parseBearerToken(request.headers.authorization)
    if (!bearer) {
      throw serverErrors.unauthenticated(
        'expected an Authorization: Bearer <channel secret or session token> header, got none or a malformed one',
      )
    }
    const channel = await findProvisioningChannel(db, channelIdOf(request))
    if (!channel) throw provisioningRefused('unknown')
    const held = holdsSecret(channel, bearer)
    bearer.fill(0)
    if (held) {
      callers.set(request, { device: 'new' })
      return
    }
    await existingDevice(request)
    callers.set(request, { device: 'existing', userId: sessionOf(request).userId })
  }

  const claimantOf = (request: FastifyRequest): { claimant?: number } => {
    const caller = callers.get(request)
    if (caller?.device === 'new') return {}
    return { claimant: sessionOf(request).userId }
  }

  async function post(
    request: FastifyRequest,
    recipient: ProvisioningSide,
    message: string,
    maxBytes: number,
  ) {
    const channelId = channelIdOf(request)
    const body = fromBase64Url(message)
    if (body.length > maxBytes) throw refuseLargeMessageError(maxBytes, body.length)
    const outcome = await postProvisioningMessage(db, {
      channelId,
      recipient,
      body,
      now: context.now(),
      maxMessages: MAX_PROVISIONING_MESSAGES_PER_CHANNEL,
      ...claimantOf(request),
    })
    if ('refused' in outcome) throw provisioningRefused(outcome.refused)
    waits.wake(waitKey(channelId, recipient))
    request.log.info({ event: 'provisioning.message' }, 'provisioning message relayed')
    return { position: outcome.position }
  }

  /**
   * The messages for `recipient` after `after`, waiting up to provisioningPollWaitMs for one:
   * answered at once when there are some, when a post on this node wakes it, at the periodic check
   * that finds one posted elsewhere, or with none when the wait ends (also when a newer read of the
   * same side replaces it, the client goes away, or the server closes). A channel that closes,
   * expires or is claimed by another account meanwhile is refused as such.
   */
  async function read(
    request: FastifyRequest,
    reply: FastifyReply,
    recipient: ProvisioningSide,
    after: number,
  ) {
    const channelId = channelIdOf(request)
    const claimant = claimantOf(request)
    const key = waitKey(channelId, recipient)
    const wait = waits.enter(key)
    const gone = () => wait.end()
    reply.raw.once('close', gone)
    const deadline = setTimeout(gone, limits.provisioningPollWaitMs)
    try {
      for (;;) {
        const channel = await findProvisioningChannel(db, channelId)
        const refusal = channelRefusal(channel, context.now(), claimant)
        if (refusal || !channel) throw provisioningRefused(refusal ?? 'unknown')
        const messages = await readProvisioningMessages(db, channelId, recipient, after)
        if (messages.length > 0 || wait.ended) {
          return {
            messages: messages.map((row) => ({ position: row.position, message: toBase64Url(row.body) })),
            expiresAt: channel.expires_at,
          }
        }
        await wait.next(limits.provisioningPollIntervalMs)
      }
    } finally {
      clearTimeout(deadline)
      reply.raw.off('close', gone)
      waits.leave(key, wait)
    }
  }

  app.post(
    '/provisioning',
    {
      schema: { response: { 201: ProvisioningChannelResponse, ...errorResponses } },
      config: {
        rateLimit: {
          max: limits.provisioningOpenRateLimit.max,
          timeWindow: limits.provisioningOpenRateLimit.timeWindowMs,
        },
      },
    },
    async (request, reply) => {
      const id = new Uint8Array(randomBytes(PROVISIONING_CHANNEL_ID_BYTES))
      const secret = new Uint8Array(randomBytes(PROVISIONING_CHANNEL_SECRET_BYTES))
      const now = context.now()
      const expiresAt = now + limits.provisioningChannelTtlMs
      const outcome = await openProvisioningChannel(
        db,
        { id, secretHash: sha256(secret), openerHash: openerHash(request.ip), now, expiresAt },
        limits.maxOpenProvisioningChannelsPerAddress,
      )
      if (!outcome.opened) {
        const retryAfterSeconds = Math.max(1, Math.ceil((outcome.retryAt - now) / 1000))
        throw new ServerError(
          ServerErrorCode.TooManyLinks,
          429,
          `expected at most ${limits.maxOpenProvisioningChannelsPerAddress} link codes open from this address at once, got one more; the first ends in ${retryAfterSeconds} s, or close one`,
          { retryAfterSeconds },
        )
      }
      const channelSecret = toBase64Url(secret)
      secret.fill(0)
      request.log.info({ event: 'provisioning.opened' }, 'provisioning channel opened')
      return reply.code(201).send({ channelId: toBase64Url(id), channelSecret, expiresAt })
    },
  )

  app.post(
    '/provisioning/:channelId/new',
    {
      onRequest: existingDevice,
      preValidation: refuseLargeMessage(MAX_PROVISIONING_SEALED_BYTES),
      bodyLimit: PROVISIONING_BODY_LIMIT_BYTES,
      schema: {
        params: ProvisioningChannelParams,
        body: ProvisioningMessageRequest,
        response: { 201: ProvisioningPostResponse, ...errorResponses },
      },
      config: { rateLimit },
    },
    async (request, reply) =>
      reply.code(201).send(await post(request, 'new', request.body.message, MAX_PROVISIONING_SEALED_BYTES)),
  )

  app.post(
    '/provisioning/:channelId/existing',
    {
      onRequest: newDevice,
      preValidation: refuseLargeMessage(MAX_PROVISIONING_ANSWER_BYTES),
      schema: {
        params: ProvisioningChannelParams,
        body: ProvisioningAnswerRequest,
        response: { 201: ProvisioningPostResponse, ...errorResponses },
      },
      config: { rateLimit },
    },
    async (request, reply) =>
      reply
        .code(201)
        .send(await post(request, 'existing', request.body.message, MAX_PROVISIONING_ANSWER_BYTES)),
  )

  const readOptions = (onRequest: (request: FastifyRequest) => Promise<void>) => ({
    onRequest,
    // A HEAD twin would wait as long as the read, to answer nothing.
    exposeHeadRoute: false,
    schema: {
      params: ProvisioningChannelParams,
      querystring: ProvisioningReadQuery,
      response: { 200: ProvisioningMessagesResponse, ...errorResponses },
    },
    config: { rateLimit },
  })

  app.get('/provisioning/:channelId/new', readOptions(newDevice), async (request, reply) =>
    read(request, reply, 'new', request.query.after ?? 0),
  )

  app.get('/provisioning/:channelId/existing', readOptions(existingDevice), async (request, reply) =>
    read(request, reply, 'existing', request.query.after ?? 0),
  )

  app.delete(
    '/provisioning/:channelId',
    {
      onRequest: eitherDevice,
      schema: { params: ProvisioningChannelParams, response: { 204: Type.Null(), ...errorResponses } },
      config: { rateLimit },
    },
    async (request, reply) => {
      const channelId = channelIdOf(request)
      const claimant = claimantOf(request)
      if (claimant.claimant !== undefined) {
        const channel = await findProvisioningChannel(db, channelId)
        if (!channel) throw provisioningRefused('unknown')
        if (channel.claimed_by !== null && channel.claimed_by !== claimant.claimant)
          throw provisioningRefused('claimed')
      }
      await closeProvisioningChannel(
        db,
        channelId,
        context.now(),
        claimant.claimant === undefined ? 'new' : 'existing',
      )
      // Waiting reads of both sides hear that it is closed.
      waits.wake(waitKey(channelId, 'new'))
      waits.wake(waitKey(channelId, 'existing'))
      request.log.info({ event: 'provisioning.closed' }, 'provisioning channel closed')
      return reply.code(204).send(null)
    },
  )
}

function refuseLargeMessageError(maxBytes: number, got: number): ServerError {
  return new ServerError(
    ServerErrorCode.TooLarge,
    413,
    `message: expected at most ${maxBytes} bytes, got ${got}`,
  )
}

const waitKey = (channelId: Uint8Array, side: ProvisioningSide) =>
  `${Buffer.from(channelId.buffer, channelId.byteOffset, channelId.byteLength).toString('hex')}:${side}`
