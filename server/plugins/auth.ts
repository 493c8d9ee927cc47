/**
 * Bearer-token authentication as an onRequest hook (before the body is even parsed, so anonymous
 * callers learn nothing from validation errors). Routes that need a user add `requireSession`; the
 * session (user id and name, from the token's row, never from the request body) is then on
 * `request.session`. Every key route acts on that user only.
 */
import type { FastifyRequest } from 'fastify'
import { hashSessionToken, parseBearerToken } from '../auth/tokens.js'
import type { ServerContext } from '../context.js'
import { findSession, tokenEnding } from '../db/tokens.js'
import { serverErrors } from '../errors.js'

export interface RequestSession {
  readonly userId: number
  /** The device the token was issued to. */
  readonly deviceId: number
  readonly username: string
  readonly tokenHash: Uint8Array
}

declare module 'fastify' {
  interface FastifyRequest {
    session: RequestSession | null
  }
}

export function requireSession(context: Pick<ServerContext, 'db' | 'now'>) {
  return async function authenticate(request: FastifyRequest): Promise<void> {
    const token = parseBearerToken(request.headers.authorization)
    if (!token) {
      throw serverErrors.unauthenticated(
        'expected an Authorization: Bearer <session token> header, got none or a malformed one',
      )
    }
    const tokenHash = hashSessionToken(token)
    token.fill(0)
    const session = await findSession(context.db, tokenHash, context.now())
    if (!session) {
      // Looked up only when the token is no session: what the deleted account's devices are told.
      const ending = await tokenEnding(context.db, tokenHash, context.now())
      if (ending === 'account-deleted') throw serverErrors.sessionOfDeletedAccount()
      if (ending === 'device-removed') throw serverErrors.sessionOfRemovedDevice()
      throw serverErrors.unauthenticated(
        'expected a valid session token, got an unknown, revoked or expired one',
      )
    }
    request.session = {
      userId: session.userId,
      deviceId: session.deviceId,
      username: session.username,
      tokenHash,
    }
  }
}

/** The authenticated session of a route guarded by requireSession. */
export function sessionOf(request: FastifyRequest): RequestSession {
  if (!request.session) throw serverErrors.unauthenticated('expected an authenticated request, got none')
  return request.session
}
