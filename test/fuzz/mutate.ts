/**
 * Mutations of a valid JSON value, for the fuzz campaign: structural ones that keep the text JSON
 * (a field dropped, added, retyped, given a hostile number or string, an array grown or emptied,
 * deep nesting, a duplicate key, a root that is not an object) and byte-level ones that usually
 * break it (bit flips, truncation, inserted or deleted bytes, invalid UTF-8). Each takes the
 * seeded generator, so an input is reproducible from its seed.
 */
import type { Prng } from './prng.js'

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

export interface Mutated {
  /** The mutation's name, for the campaign's counts. */
  readonly operator: string
  readonly bytes: Buffer
}

/** Strings that have broken parsers, validators and normalisers elsewhere. */
export const HOSTILE_STRINGS: readonly string[] = [
  '',
  ' ',
  'null',
  '0',
  'a'.repeat(65),
  'A'.repeat(5_000),
  'ａｌｉｃｅ', // fullwidth: NFKC makes it "alice"
  'Ⅻ', // NFKC makes it two letters
  'ﬃ'.repeat(40), // NFKC triples its length
  'e\u0301', // a combining accent
  'alice\u202e', // a bidirectional override
  '\u2066x\u2069',
  '\u0000',
  '\u001b[31m', // a terminal escape sequence
  '\ud800', // a lone surrogate (valid JSON, invalid UTF-16)
  '\udfff\ud800',
  '😀'.repeat(40),
  '\ufeff',
  '\u00a0',
  '../../etc/passwd',
  '%00',
  '%2e%2e%2f',
  "' OR 1=1 --",
  '"; DROP TABLE users; --',
  '<script>alert(1)</script>',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a log-injection probe, meant literally
  '${jndi:ldap://x}',
  '\\',
  '"',
  '\r\n\t',
  '__proto__',
  'constructor',
  'AAAAAAAAAAAAAAAAAAAAAA', // 22 base64url characters
  'AAAAAAAAAAAAAAAAAAAAAB', // 22 characters with stray trailing bits
  'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
  '-_-_-_-_-_-_-_-_-_-_-_',
  '====',
]

export const HOSTILE_NUMBERS: readonly number[] = [
  0,
  -0,
  -1,
  1,
  1.5,
  -0.5,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 53 + 2,
  -(2 ** 53),
  1e21,
  1e308,
  -1e308,
  Number.MIN_VALUE,
]

/** Number texts JSON.stringify never writes: overflow to Infinity, exponents, and invalid JSON. */
const HOSTILE_NUMBER_TEXTS: readonly string[] = [
  '1e400',
  '-1e400',
  '1E2',
  '1.0',
  '-0',
  '9'.repeat(400),
  '0x10',
  '01',
  '.5',
  'NaN',
  'Infinity',
  '+1',
]

/** Field names a client must not be able to smuggle in. */
const EXTRA_FIELD_NAMES: readonly string[] = [
  'from',
  'admin',
  'userId',
  'seq',
  'v',
  'type',
  'id',
  '__proto__',
  'constructor',
  'prototype',
  '',
  'username',
]

type Path = (string | number)[]

function isObject(value: Json): value is { [key: string]: Json } {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Every node's path, the root's (empty) included. */
function paths(value: Json, prefix: Path = [], out: Path[] = []): Path[] {
  out.push(prefix)
  if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) paths(item, [...prefix, index], out)
  } else if (isObject(value))
    for (const [key, item] of Object.entries(value)) paths(item, [...prefix, key], out)
  return out
}

function clone(value: Json): Json {
  return JSON.parse(JSON.stringify(value)) as Json
}

function get(value: Json, path: Path): Json {
  let node = value
  for (const step of path) node = (node as Record<string | number, Json>)[step] as Json
  return node
}

/** Replaces the node at `path` (not the root) in place. */
function set(root: Json, path: Path, replacement: Json): void {
  const parent = get(root, path.slice(0, -1)) as Record<string | number, Json>
  parent[path.at(-1)!] = replacement
}

function remove(root: Json, path: Path): void {
  const parent = get(root, path.slice(0, -1))
  const last = path.at(-1)!
  if (Array.isArray(parent)) parent.splice(last as number, 1)
  else delete (parent as Record<string, Json>)[last as string]
}

function randomValue(rng: Prng, depth = 0): Json {
  switch (rng.below(depth > 2 ? 4 : 6)) {
    case 0:
      return null
    case 1:
      return rng.chance(0.5)
    case 2:
      return rng.pick(HOSTILE_NUMBERS)
    case 3:
      return rng.pick(HOSTILE_STRINGS)
    case 4:
      return Array.from({ length: rng.below(4) }, () => randomValue(rng, depth + 1))
    default: {
      const object: Record<string, Json> = {}
      for (let i = rng.below(4); i > 0; i--) object[rng.pick(EXTRA_FIELD_NAMES)] = randomValue(rng, depth + 1)
      return object
    }
  }
}

/** A value of another JSON type than `value`'s. */
function retyped(rng: Prng, value: Json): Json {
  const kind = (v: Json) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)
  for (;;) {
    const candidate = randomValue(rng)
    if (kind(candidate) !== kind(value)) return candidate
  }
}

/** A string like `text` with one character changed, added or removed (case flips included). */
export function tweakedString(rng: Prng, text: string): string {
  const at = rng.below(text.length + 1)
  switch (rng.below(4)) {
    case 0:
      return text.slice(0, at) + text.slice(at + 1)
    case 1:
      return text.slice(0, at) + rng.pick(['A', '-', '_', '=', '+', '/', 'é', '\u0000', '.']) + text.slice(at)
    case 2:
      return text.toUpperCase()
    default:
      return text.slice(0, at) + rng.pick(['A', 'B', 'z', '9']) + text.slice(at + 1)
  }
}

/** JSON text with a placeholder value replaced by raw text (for what JSON.stringify cannot write). */
function withRawValue(root: Json, path: Path, raw: string): string {
  if (path.length === 0) return raw
  const marker = '\u0001fuzz-marker\u0001'
  const copy = clone(root)
  set(copy, path, marker)
  return JSON.stringify(copy).replace(JSON.stringify(marker), raw)
}

/** Every character as a \\u escape or with white space around tokens: the same value, other bytes. */
function reencoded(rng: Prng, value: Json): string {
  const text = JSON.stringify(value, null, rng.chance(0.5) ? 2 : undefined)
  if (rng.chance(0.5)) return text
  return text.replace(/"((?:[^"\\]|\\.)*)"/g, (_match, inner: string) => {
    const escaped = [...inner].map((char) =>
      /[A-Za-z0-9]/.test(char) && rng.chance(0.5)
        ? `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`
        : char,
    )
    return `"${escaped.join('')}"`
  })
}

const STRUCTURAL = [
  'drop-field',
  'extra-field',
  'retype',
  'hostile-number',
  'hostile-number-text',
  'hostile-string',
  'tweak-string',
  'grow-array',
  'empty-array',
  'deep-nesting',
  'duplicate-key',
  'non-object-root',
  're-encoded',
] as const

const BYTE_LEVEL = ['bit-flip', 'truncate', 'insert-bytes', 'delete-bytes', 'invalid-utf8'] as const

export type Operator = (typeof STRUCTURAL)[number] | (typeof BYTE_LEVEL)[number]

/** One structural mutation of `value` as JSON text. */
export function mutateStructure(rng: Prng, value: Json, operator = rng.pick(STRUCTURAL)): Mutated {
  const root = clone(value)
  const all = paths(root)
  const inner = all.filter((path) => path.length > 0)
  const text = (json: Json) => Buffer.from(JSON.stringify(json))
  const done = (name: string, bytes: Buffer | string): Mutated => ({
    operator: name,
    bytes: typeof bytes === 'string' ? Buffer.from(bytes) : bytes,
  })
  switch (operator) {
    case 'drop-field': {
      if (inner.length === 0) return done(operator, text(root))
      remove(root, rng.pick(inner))
      return done(operator, text(root))
    }
    case 'extra-field': {
      const objects = all.filter((path) => isObject(get(root, path)))
      if (objects.length === 0) return done(operator, text(root))
      const path = rng.pick(objects)
      const name = rng.chance(0.8) ? rng.pick(EXTRA_FIELD_NAMES) : `x${rng.next().toString(36)}`
      const raw = JSON.stringify(randomValue(rng))
      // Written as text: an object literal would turn "__proto__" into a prototype, not a field.
      const target = get(root, path) as Record<string, Json>
      const body = JSON.stringify(target)
      const widened =
        body === '{}'
          ? `{${JSON.stringify(name)}:${raw}}`
          : `{${JSON.stringify(name)}:${raw},${body.slice(1)}`
      return done(operator, withRawValue(root, path, widened))
    }
    case 'retype': {
      const path = rng.pick(all)
      if (path.length === 0) return done(operator, text(retyped(rng, root)))
      set(root, path, retyped(rng, get(root, path)))
      return done(operator, text(root))
    }
    case 'hostile-number':
    case 'hostile-string': {
      const numbers = operator === 'hostile-number'
      const matching = inner.filter((path) => typeof get(root, path) === (numbers ? 'number' : 'string'))
      const path = rng.pick(matching.length > 0 ? matching : inner.length > 0 ? inner : [[]])
      const replacement = numbers ? rng.pick(HOSTILE_NUMBERS) : rng.pick(HOSTILE_STRINGS)
      if (path.length === 0) return done(operator, text(replacement))
      set(root, path, replacement)
      return done(operator, text(root))
    }
    case 'hostile-number-text': {
      const numbers = inner.filter((path) => typeof get(root, path) === 'number')
      const path = rng.pick(numbers.length > 0 ? numbers : inner.length > 0 ? inner : [[]])
      return done(operator, withRawValue(root, path, rng.pick(HOSTILE_NUMBER_TEXTS)))
    }
    case 'tweak-string': {
      const strings = inner.filter((path) => typeof get(root, path) === 'string')
      if (strings.length === 0) return done(operator, text(root))
      const path = rng.pick(strings)
      set(root, path, tweakedString(rng, get(root, path) as string))
      return done(operator, text(root))
    }
    case 'grow-array':
    case 'empty-array': {
      const arrays = all.filter((path) => Array.isArray(get(root, path)))
      if (arrays.length === 0) return mutateStructure(rng, value, 'retype')
      const path = rng.pick(arrays)
      const array = get(root, path) as Json[]
      const grown =
        operator === 'empty-array'
          ? []
          : Array.from(
              { length: rng.pick([2, 101, 501, 1_001]) },
              (_, i) => array[i % Math.max(1, array.length)] ?? i,
            )
      if (path.length === 0) return done(operator, text(grown))
      set(root, path, grown)
      return done(operator, text(root))
    }
    case 'deep-nesting': {
      const depth = rng.pick([64, 1_000, 10_000, 30_000])
      const [open, close] = rng.chance(0.5) ? ['[', ']'] : ['{"a":', '}']
      const nested = `${open.repeat(depth)}${rng.chance(0.5) ? '1' : '[]'}${close.repeat(depth)}`
      return done(operator, withRawValue(root, rng.pick(inner.length > 0 ? inner : [[]]), nested))
    }
    case 'duplicate-key': {
      const objects = all.filter((path) => {
        const node = get(root, path)
        return isObject(node) && Object.keys(node).length > 0
      })
      if (objects.length === 0) return done(operator, text(root))
      const path = rng.pick(objects)
      const target = get(root, path) as Record<string, Json>
      const key = rng.pick(Object.keys(target))
      const again = JSON.stringify(rng.chance(0.5) ? randomValue(rng) : target[key]!)
      const body = JSON.stringify(target)
      // The duplicate first or last: parsers keep one of them, and which one matters.
      const doubled = rng.chance(0.5)
        ? `{${JSON.stringify(key)}:${again},${body.slice(1)}`
        : `${body.slice(0, -1)},${JSON.stringify(key)}:${again}}`
      return done(operator, withRawValue(root, path, doubled))
    }
    case 'non-object-root':
      return done(operator, rng.pick(['null', 'true', '42', '"text"', '[]', `[${JSON.stringify(root)}]`, '']))
    default:
      return done('re-encoded', reencoded(rng, root))
  }
}

/** One byte-level mutation of `bytes`. */
export function mutateBytes(rng: Prng, bytes: Buffer, operator = rng.pick(BYTE_LEVEL)): Mutated {
  const out = Buffer.from(bytes)
  switch (operator) {
    case 'bit-flip': {
      for (let flips = rng.between(1, 8); flips > 0 && out.length > 0; flips--) {
        out[rng.below(out.length)]! ^= 1 << rng.below(8)
      }
      return { operator, bytes: out }
    }
    case 'truncate':
      return { operator, bytes: out.subarray(0, rng.below(Math.max(1, out.length))) }
    case 'insert-bytes': {
      const at = rng.below(out.length + 1)
      return {
        operator,
        bytes: Buffer.concat([out.subarray(0, at), rng.bytes(rng.between(1, 16)), out.subarray(at)]),
      }
    }
    case 'delete-bytes': {
      const at = rng.below(Math.max(1, out.length))
      return { operator, bytes: Buffer.concat([out.subarray(0, at), out.subarray(at + rng.between(1, 16))]) }
    }
    default: {
      // A lone continuation byte, a truncated sequence, an overlong encoding, a UTF-16 surrogate.
      const invalid = rng.pick([
        [0x80],
        [0xc3],
        [0xc0, 0xaf],
        [0xed, 0xa0, 0x80],
        [0xff],
        [0xf4, 0x90, 0x80, 0x80],
      ])
      const at = rng.below(out.length + 1)
      return {
        operator: 'invalid-utf8',
        bytes: Buffer.concat([out.subarray(0, at), Buffer.from(invalid), out.subarray(at)]),
      }
    }
  }
}

/** A mutation of `value`: structural three times in four, else byte-level on its JSON text. */
export function mutate(rng: Prng, value: Json): Mutated {
  if (rng.chance(0.75)) return mutateStructure(rng, value)
  return mutateBytes(rng, Buffer.from(JSON.stringify(value)))
}
