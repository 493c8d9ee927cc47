/** Pieces the route plugins share: error response schemas, username parsing, key checks. */
import { ErrorResponse } from '../../shared/codec/api.js'
import { isProtocolError } from '../../shared/errors.js'
import type { PublicPreKey } from '../../shared/identity.js'
import { normalizeUsername } from '../../shared/username.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'

/** Every route declares its error bodies too, so nothing else can leave through an error path. */
export const errorResponses = { '4xx': ErrorResponse, '5xx': ErrorResponse } as const

/** The canonical username, or ServerError(InvalidUsername) naming the broken rule. */
export function parseUsername(input: string): string {
  try {
    return normalizeUsername(input)
  } catch (error) {
    if (isProtocolError(error)) throw new ServerError(ServerErrorCode.InvalidUsername, 400, error.message)
    throw error
  }
}

/** Refuses a batch in which two prekeys share an id (the database would refuse it less clearly). */
export function assertDistinctKeyIds(preKeys: readonly PublicPreKey[], what: string): void {
  const seen = new Set<number>()
  for (const preKey of preKeys) {
    if (seen.has(preKey.keyId)) {
      throw serverErrors.preKeyIdConflict(`${what}: expected distinct key ids, got ${preKey.keyId} twice`)
    }
    seen.add(preKey.keyId)
  }
}
