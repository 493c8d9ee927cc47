/**
 * Turns every failure into `{ error: { code, message } }` with a stable code (errors.ts). Unknown
 * errors become E2E_ERR_INTERNAL with a generic message; their details go to the log only.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { isProtocolError, ProtocolErrorCode } from '../../shared/errors.js'
import { isServerError, ServerError, ServerErrorCode, serverErrors } from '../errors.js'

function fromFastify(error: FastifyError): ServerError | undefined {
  if (error.validation) {
    return serverErrors.badRequest(`expected a valid request, got one where ${error.message}`)
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ServerError(
        ServerErrorCode.TooLarge,
        413,
        'expected a smaller request body, got one over the limit',
      )
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ServerError(
        ServerErrorCode.MalformedBody,
        415,
        'expected Content-Type: application/json, got another media type',
      )
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ServerError(
        ServerErrorCode.MalformedBody,
        400,
        'expected a JSON body, got one that does not parse',
      )
  }
  if (error instanceof SyntaxError) {
    return new ServerError(
      ServerErrorCode.MalformedBody,
      400,
      'expected a JSON body, got one that does not parse',
    )
  }
  const status = error.statusCode
  if (status !== undefined && status >= 400 && status < 500) {
    return new ServerError(
      ServerErrorCode.BadRequest,
      status,
      `expected a well-formed HTTP request, got ${error.code}`,
    )
  }
  return undefined
}

export function toServerError(error: unknown): ServerError {
  if (isServerError(error)) return error
  if (isProtocolError(error)) {
    switch (error.code) {
      case ProtocolErrorCode.BadSignature:
        return new ServerError(ServerErrorCode.BadSignature, 400, error.message)
      case ProtocolErrorCode.InvalidKey:
        return new ServerError(ServerErrorCode.InvalidKey, 400, error.message)
      case ProtocolErrorCode.TooLarge:
        return new ServerError(ServerErrorCode.TooLarge, 413, error.message)
      case ProtocolErrorCode.InvalidInput:
      case ProtocolErrorCode.MalformedMessage:
        return serverErrors.badRequest(error.message)
    }
    return serverErrors.internal()
  }
  if (error instanceof Error && 'code' in error) {
    const mapped = fromFastify(error as FastifyError)
    if (mapped) return mapped
  }
  return serverErrors.internal()
}

function send(reply: FastifyReply, error: ServerError): FastifyReply {
  if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(error.retryAfterSeconds))
  if (error.code === ServerErrorCode.Unauthenticated) reply.header('www-authenticate', 'Bearer')
  return reply.code(error.statusCode).send({ error: { code: error.code, message: error.message } })
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const serverError = toServerError(error)
    if (serverError.statusCode >= 500) request.log.error({ err: error }, 'request failed')
    else request.log.info({ code: serverError.code }, 'request refused')
    return send(reply, serverError)
  })
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) =>
    send(
      reply,
      new ServerError(
        ServerErrorCode.NotFound,
        404,
        `expected a known route, got ${request.method} ${request.url.split('?', 1)[0]?.slice(0, 200)}`,
      ),
    ),
  )
}
