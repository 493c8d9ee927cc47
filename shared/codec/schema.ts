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
const precompiledChecks = new WeakMap<object, (value: unknown) => boolean>()

/**
 * Checks compiled ahead of time for these schema objects (the PWA's build makes them:
 * client-web/build/precompiled-validators.ts), used instead of compiling at run time, which a
 * page whose policy forbids `eval` cannot do; they may come after the first decodes, which then
 * were checked the slower way. A schema's errors are still found at run time,
 * only when its check has failed.
 */
export function usePrecompiledChecks(
  entries: readonly (readonly [schema: object, check: (value: unknown) => boolean])[],
): void {
  for (const [schema, check] of entries) {
    precompiledChecks.set(schema, check)
    // Checks may arrive after the first decodes (the PWA loads them beside its first screen).
    validators.delete(schema as TSchema)
  }
}

/** True when `schema` is checked by a check compiled ahead of time (see usePrecompiledChecks). */
export function isPrecompiled(schema: TSchema): boolean {
  return precompiledChecks.has(schema)
}

/** A check compiled ahead of time; its errors, wanted only after a failure, found at run time. */
class PrecompiledValidator implements Validator {
  private full: Validator | undefined

  constructor(
    private readonly schema: TSchema,
    readonly Check: (value: unknown) => boolean,
  ) {}

  Errors(value: unknown): Iterable<{ instancePath: string; message: string }> {
    this.full ??= Compile(this.schema) as unknown as Validator
    return this.full.Errors(value)
  }
}

function validatorFor(schema: TSchema): Validator {
  let validator = validators.get(schema)
  if (!validator) {
    const check = precompiledChecks.get(schema)
    if (check) {
      validator = new PrecompiledValidator(schema, check)
    } else {
      validator = Compile(schema) as unknown as Validator
    }
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
