/**
 * Blocking (authentication required): PUT /blocks/:username blocks a user, DELETE unblocks them.
 * A block is stored as a relation of the caller's (db/relations.ts: the blocked user is kept only
 * inside a keyed hash), so the server can refuse what the blocked user does to the caller: their
 * sends are dropped (answered `accepted`), their presence subscriptions answered with nothing, and
 * their bundle fetches claim none of the caller's one-time prekeys. Nothing lists a user's blocks:
 * the client keeps its own list (the contact record) and repeats its blocks after connecting.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { UsernameParams } from '../../shared/codec/api.js'
import { Type } from '../../shared/codec/schema.js'
import type { ServerContext } from '../context.js'
import { block, unblock } from '../db/relations.js'
import { findUserByUsername } from '../db/users.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'
import { MAX_RELATIONS_PER_USER } from '../limits.js'
import { requireSession, sessionOf } from '../plugins/auth.js'
import { errorResponses, parseUsername } from './common.js'

export const blockRoutes: FastifyPluginAsyncTypebox<ServerContext> = async (app, context) => {
  const { db, relationsKey } = context
  app.addHook('onRequest', requireSession(context))

  async function otherUser(name: string, callerId: number): Promise<number> {
    const user = await findUserByUsername(db, parseUsername(name))
    if (!user) throw serverErrors.userNotFound()
    if (user.id === callerId) throw serverErrors.badRequest('username: expected another user, got yourself')
    return user.id
  }

  app.put(
    '/blocks/:username',
    { schema: { params: UsernameParams, response: { 204: Type.Null(), ...errorResponses } } },
    async (request, reply) => {
      const { userId, username } = sessionOf(request)
      const blockedId = await otherUser(request.params.username, userId)
      if (!(await block(db, relationsKey, userId, blockedId, MAX_RELATIONS_PER_USER))) {
        throw new ServerError(
          ServerErrorCode.TooManyRelations,
          409,
          `expected at most ${MAX_RELATIONS_PER_USER} users shared with or blocked, got one more`,
        )
      }
      // Their watches of the caller end now, wherever they are connected.
      context.relay.presenceRevoked(userId, username, blockedId)
      return reply.code(204).send(null)
    },
  )

  app.delete(
    '/blocks/:username',
    { schema: { params: UsernameParams, response: { 204: Type.Null(), ...errorResponses } } },
    async (request, reply) => {
      const { userId } = sessionOf(request)
      await unblock(db, relationsKey, userId, await otherUser(request.params.username, userId))
      return reply.code(204).send(null)
    },
  )
}
