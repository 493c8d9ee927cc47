/**
 * The schema library (TypeBox: JSON Schema with static types) as the project uses it: building
 * blocks for binary fields, and `decode`, the one way untrusted JSON becomes a typed value.
 * Fastify compiles the same schemas for its routes; clients and the WebSocket layer use `decode`.
 */
import Type, { type Static, type TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { describeValue, ProtocolError, ProtocolErrorCode } from '../errors.js'

/** Characters of unpadded base64url for `bytes` bytes. */
export function base64UrlLength(bytes: number): number {
  return Math.ceil((bytes * 4) / 3)
}

const BASE64URL_PATTERN = '^[A-Za-z0-9_-]*$'

/** A binary field: unpadded base64url of at most `maxBytes` bytes (and at least `minBytes`). */
export function Base64Url(minBytes: number, maxBytes: number, description?: string) {
  return Type.String({
    pattern: BASE64URL_PATTERN,
    minLength: base64UrlLength(minBytes),
    maxLength: base64UrlLength(maxBytes),
    ...(description ? { description } : {}),
  })
}

/** A binary field of exactly `bytes` bytes (keys, signatures, ids). */
export function FixedBase64Url(bytes: number, description?: string) {
  return Base64Url(bytes, bytes, description)
}

type Validator = {
  Check(value: unknown): boolean
  Errors(value: unknown): Iterable<{ instancePath: string; message: string }>
}
const validators = new WeakMap<TSchema, Validator>()

function validatorFor(schema: TSchema): Validator {
  let validator = validators.get(schema)
  if (!validator) {
    validator = Compile(schema) as unknown as Validator
    validators.set(schema, validator)
  }
  return validator
}

/**
 * Checks `value` (typically from JSON.parse) against `schema` and returns it typed, or throws
 * ProtocolError(MalformedMessage) naming the first failing field. Never echoes the value itself.
 */
export function decode<S extends TSchema>(schema: S, value: unknown, what: string): Static<S> {
  const validator = validatorFor(schema)
  if (validator.Check(value)) return value as Static<S>
  let detail = `got ${describeValue(value)}`
  for (const error of validator.Errors(value)) {
    detail = `${error.instancePath || '/'} ${error.message}`
    break
  }
  throw new ProtocolError(
    ProtocolErrorCode.MalformedMessage,
    `${what}: expected a valid ${what}, got: ${detail}`,
  )
}

/** True when `value` matches `schema` (for tests and discriminating unions). */
export function matches<S extends TSchema>(schema: S, value: unknown): value is Static<S> {
  return validatorFor(schema).Check(value)
}

export { type Static, type TSchema, Type }
