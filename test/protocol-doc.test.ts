/**
 * docs/protocol.md is the project's specification and repeats every limit, version, label, error
 * code and known answer the code uses, every content type clients put inside envelopes, and every
 * route the server serves. This test parses its Markdown tables and fails, naming the constant,
 * type or route, whenever the document and the code are out of step. Routes come from the real
 * application (built as the server tests build it), not from reading its source.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { build } from '../server/app.js'
import { ServerErrorCode } from '../server/errors.js'
import {
  LINK_TOKEN_TTL_MS,
  MAX_DEVICES_PER_ACCOUNT,
  MAX_LINK_TOKENS_PER_ACCOUNT,
  MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS,
  MAX_TLS_HANDSHAKES_IN_PROGRESS_PER_ADDRESS,
  MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS,
  PROVISIONING_BODY_LIMIT_BYTES,
  PROVISIONING_CHANNEL_TTL_MS,
  PROVISIONING_OPEN_RATE_LIMIT,
  PROVISIONING_POLL_INTERVAL_MS,
  PROVISIONING_RATE_LIMIT,
  TLS_HANDSHAKE_RATE_PER_ADDRESS,
  TLS_HANDSHAKE_TIMEOUT_MS,
} from '../server/limits.js'
import { createTestDatabase, type TestDatabase } from '../server/test/databases.js'
import { TEST_BCRYPT_COST } from '../server/test/harness.js'
import { RELAY_PATH } from '../server/ws/relay.js'
import {
  SEALED_VERSION,
  STORAGE_KEY_MIN_ITERATIONS,
  STORAGE_KEY_PARAMETERS_VERSION,
  STORAGE_KEY_SALT_BYTES,
} from '../shared/at-rest.js'
import { toHex } from '../shared/bytes.js'
import {
  CONTENT_SCHEMAS,
  CONTENT_VERSION,
  MAX_MESSAGE_TEXT_LENGTH,
  MAX_RECEIPT_IDS,
  MAX_RETRY_IDS,
  OWN_DEVICE_CONTENT_SCHEMAS,
} from '../shared/client/content.js'
import { RECORDS_VERSION } from '../shared/client/migrations.js'
import { API_PREFIX } from '../shared/codec/api.js'
import { ENVELOPE_VERSION, UNBOUND_ENVELOPE_VERSION } from '../shared/codec/envelope.js'
import { FRAME_VERSION } from '../shared/codec/frames.js'
import {
  AES_256_KEY_BYTES,
  AES_GCM_NONCE_BYTES,
  AES_GCM_TAG_BYTES,
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  RSA_OAEP_MAX_PLAINTEXT_BYTES,
  RSA_OAEP_MODULUS_BITS,
  X25519_KEY_BYTES,
} from '../shared/crypto/primitives.js'
import { SEALED_DEVICE_NAME_VERSION } from '../shared/device-name.js'
import { ProtocolErrorCode } from '../shared/errors.js'
import {
  DISTRIBUTION_ID_BYTES,
  GROUP_MESSAGE_HEADER_BYTES,
  GROUP_MESSAGE_VERSION,
  SENDER_KEY_DISTRIBUTION_BYTES,
  SENDER_KEY_DISTRIBUTION_VERSION,
} from '../shared/group/sender-key-codec.js'
import { SENDER_KEY_RECORD_SERIALIZATION_VERSION } from '../shared/group/sender-key-serialization.js'
import { IDENTITY_EXPORT_VERSION, PREKEY_EXPORT_VERSION } from '../shared/identity.js'
import * as labels from '../shared/labels.js'
import * as limits from '../shared/limits.js'
import { MESSAGE_ID_TIME_BYTES } from '../shared/message-id.js'
import {
  LINK_CHECK_DIGITS,
  LINK_CODE_VERSION,
  MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES,
  MAX_PROVISIONING_SEALED_BYTES,
  PROVISIONING_CHANNEL_ID_BYTES,
  PROVISIONING_CHANNEL_SECRET_BYTES,
  PROVISIONING_SEALED_VERSION,
} from '../shared/provisioning.js'
import { LINK_ANSWER_VERSION, PROVISIONING_CONTENT_VERSION } from '../shared/provisioning-content.js'
import { MAX_RETIRED_RATCHET_KEYS } from '../shared/ratchet/double-ratchet.js'
import { SAFETY_NUMBER_QR_VERSION, SAFETY_NUMBER_VERSION } from '../shared/safety-number.js'
import {
  SESSION_RECORD_SERIALIZATION_VERSION,
  SESSION_SERIALIZATION_VERSION,
} from '../shared/session-serialization.js'
import { IDENTITY_AD_BYTES, SHARED_SECRET_BYTES } from '../shared/x3dh.js'
import { type RegisteredRoute, registeredRoutes } from './registered-routes.js'

const root = join(import.meta.dirname, '..')
const DOC = 'docs/protocol.md'
const doc = readFileSync(join(root, DOC), 'utf8')

const LIMITS_HEADER = ['constant', 'value', 'reason']
const LABELS_HEADER = ['constant', 'bytes']
const ERRORS_HEADER = ['name', 'code', 'meaning']
const SERVER_ERRORS_HEADER = ['server code', 'http status', 'when']
const CONTENT_HEADER = ['content `type`', 'fields (besides `v`, `type`)', 'meaning']
const ROUTES_HEADER = ['method', 'path', 'auth', 'request', 'success']

/** Constants documented outside shared/limits.ts, in the same table format. */
const OTHER_CONSTANTS: Record<string, number> = {
  MAX_RETIRED_RATCHET_KEYS,
  STORAGE_KEY_MIN_ITERATIONS,
  STORAGE_KEY_SALT_BYTES,
  STORAGE_KEY_PARAMETERS_VERSION,
  SEALED_VERSION,
  SAFETY_NUMBER_VERSION,
  SAFETY_NUMBER_QR_VERSION,
  ENVELOPE_VERSION,
  UNBOUND_ENVELOPE_VERSION,
  FRAME_VERSION,
  SESSION_SERIALIZATION_VERSION,
  SESSION_RECORD_SERIALIZATION_VERSION,
  RECORDS_VERSION,
  IDENTITY_EXPORT_VERSION,
  PREKEY_EXPORT_VERSION,
  SHARED_SECRET_BYTES,
  IDENTITY_AD_BYTES,
  X25519_KEY_BYTES,
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  AES_256_KEY_BYTES,
  AES_GCM_NONCE_BYTES,
  AES_GCM_TAG_BYTES,
  RSA_OAEP_MODULUS_BITS,
  RSA_OAEP_MAX_PLAINTEXT_BYTES,
  MESSAGE_ID_TIME_BYTES,
  CONTENT_VERSION,
  MAX_MESSAGE_TEXT_LENGTH,
  MAX_RECEIPT_IDS,
  MAX_RETRY_IDS,
  LINK_CODE_VERSION,
  PROVISIONING_CHANNEL_ID_BYTES,
  PROVISIONING_CHANNEL_SECRET_BYTES,
  PROVISIONING_SEALED_VERSION,
  LINK_CHECK_DIGITS,
  MAX_PROVISIONING_SEALED_BYTES,
  MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES,
  PROVISIONING_CONTENT_VERSION,
  LINK_ANSWER_VERSION,
  SEALED_DEVICE_NAME_VERSION,
  SENDER_KEY_DISTRIBUTION_VERSION,
  GROUP_MESSAGE_VERSION,
  DISTRIBUTION_ID_BYTES,
  SENDER_KEY_DISTRIBUTION_BYTES,
  GROUP_MESSAGE_HEADER_BYTES,
  SENDER_KEY_RECORD_SERIALIZATION_VERSION,
}

/** Splits a Markdown table row into trimmed cells; a `|` inside a code span or escaped stays put. */
function splitRow(line: string): string[] {
  const body = line.trim().replace(/^\|/, '').replace(/\|$/, '')
  const cells: string[] = []
  let current = ''
  let inCode = false
  for (let i = 0; i < body.length; i++) {
    const char = body[i]
    if (char === '\\' && body[i + 1] === '|') {
      current += '|'
      i++
      continue
    }
    if (char === '`') inCode = !inCode
    if (char === '|' && !inCode) {
      cells.push(current.trim())
      current = ''
      continue
    }
    current += char
  }
  cells.push(current.trim())
  return cells
}

const isTableLine = (line: string | undefined): line is string => line?.trimStart().startsWith('|') ?? false

/** The body rows of every table whose header names exactly these columns (case-insensitive). */
function tableRows(header: readonly string[]): string[][] {
  const lines = doc.split('\n')
  const rows: string[][] = []
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]
    if (!isTableLine(line)) continue
    const names = splitRow(line).map((cell) => cell.toLowerCase())
    if (names.length !== header.length || names.some((name, j) => name !== header[j])) continue
    // Line i + 1 is the |---| separator; the body runs until the first line that is not a row.
    for (let j = i + 2; isTableLine(lines[j]); j++) rows.push(splitRow(lines[j] as string))
    i += 1
  }
  return rows
}

/** The contents of the first `code span` in a cell. */
function codeSpan(cell: string | undefined): string | undefined {
  return cell?.match(/`([^`]*)`/)?.[1]
}

/** Documented rows keyed by the identifier in the first column's code span. */
function rowsByName(header: readonly string[]): Map<string, string[][]> {
  const byName = new Map<string, string[][]>()
  for (const row of tableRows(header)) {
    const name = codeSpan(row[0]) ?? row[0] ?? ''
    byName.set(name, [...(byName.get(name) ?? []), row])
  }
  return byName
}

/** The one row documenting `name`, failing with a message that names it otherwise. */
function onlyRow(byName: Map<string, string[][]>, name: string, table: string): string[] {
  const rows = byName.get(name) ?? []
  expect(rows.length, `${DOC}: ${table} table has no row for \`${name}\``).toBeGreaterThan(0)
  expect(rows.length, `${DOC}: ${table} table documents \`${name}\` ${rows.length} times`).toBe(1)
  return rows[0] as string[]
}

const limitConstants = Object.entries(limits)
const documentedConstants = rowsByName(LIMITS_HEADER)

describe(`${DOC}: limits and constants tables (| constant | value | reason |)`, () => {
  it('exist and every export of shared/limits.ts is a number', () => {
    expect(documentedConstants.size, `${DOC}: no | constant | value | reason | table found`).toBeGreaterThan(
      0,
    )
    for (const [name, value] of limitConstants) {
      expect(typeof value, `shared/limits.ts: \`${name}\` is not a number`).toBe('number')
    }
  })

  it.each([...limitConstants, ...Object.entries(OTHER_CONSTANTS)])(
    '`%s` is documented as %s',
    (name, value) => {
      const row = onlyRow(documentedConstants, name, 'constants')
      const cell = row[1] ?? ''
      expect(
        cell,
        `${DOC}: \`${name}\` value must be a plain integer without separators, got "${cell}"`,
      ).toMatch(/^\d+$/)
      expect(Number(cell), `${DOC}: \`${name}\` is documented as ${cell} but the code says ${value}`).toBe(
        value,
      )
    },
  )

  it('document no constant the code does not define', () => {
    const known = new Set([...limitConstants.map(([name]) => name), ...Object.keys(OTHER_CONSTANTS)])
    const unknown = [...documentedConstants.keys()].filter((name) => !known.has(name))
    expect(unknown, `${DOC}: constants table rows that match no exported constant`).toEqual([])
  })
})

const textDecoder = new TextDecoder('utf-8', { fatal: true })

/** The label as text when it is printable UTF-8, otherwise undefined (documented as hex instead). */
function labelText(bytes: Uint8Array): string | undefined {
  try {
    const text = textDecoder.decode(bytes)
    return /^[\x20-\x7e]+$/.test(text) ? text : undefined
  } catch {
    return undefined
  }
}

const labelExports = Object.entries(labels)
const documentedLabels = rowsByName(LABELS_HEADER)

describe(`${DOC}: labels table (| constant | bytes |)`, () => {
  it('exists and every export of shared/labels.ts is bytes', () => {
    expect(documentedLabels.size, `${DOC}: no | constant | bytes | table found`).toBeGreaterThan(0)
    for (const [name, value] of labelExports) {
      expect(value, `shared/labels.ts: \`${name}\` is not a Uint8Array`).toBeInstanceOf(Uint8Array)
    }
  })

  it.each(labelExports)('`%s` is documented with its exact bytes', (name, bytes) => {
    const text = labelText(bytes)
    const expected = text ?? `0x${toHex(bytes)}`
    const documented = codeSpan(onlyRow(documentedLabels, name, 'labels')[1])
    const form = text === undefined ? 'hex' : 'UTF-8 text'
    expect(
      documented,
      `${DOC}: label \`${name}\` is documented as \`${documented}\` but the code's ${form} is \`${expected}\``,
    ).toBe(expected)
  })

  it('documents no label the code does not define', () => {
    const known = new Set(labelExports.map(([name]) => name))
    const unknown = [...documentedLabels.keys()].filter((name) => !known.has(name))
    expect(unknown, `${DOC}: labels table rows that match no export of shared/labels.ts`).toEqual([])
  })
})

describe(`${DOC}: error codes table (| name | code | meaning |)`, () => {
  const documented = rowsByName(ERRORS_HEADER)

  it.each(Object.entries(ProtocolErrorCode))('`%s` is documented as `%s`', (name, code) => {
    const row = onlyRow(documented, name, 'error codes')
    expect(codeSpan(row[1]), `${DOC}: error \`${name}\` must have code \`${code}\``).toBe(code)
  })

  it('documents no error code the code does not define', () => {
    const unknown = [...documented.keys()].filter((name) => !Object.hasOwn(ProtocolErrorCode, name))
    expect(unknown, `${DOC}: error table rows that match no ProtocolErrorCode`).toEqual([])
  })
})

describe(`${DOC}: server error codes table (| server code | HTTP status | when |)`, () => {
  const documented = rowsByName(SERVER_ERRORS_HEADER)

  it.each(Object.values(ServerErrorCode))('`%s` is documented', (code) => {
    onlyRow(documented, code, 'server error codes')
  })

  it('documents no server code the server does not define', () => {
    const known = new Set<string>(Object.values(ServerErrorCode))
    const unknown = [...documented.keys()].filter((code) => !known.has(code))
    expect(unknown, `${DOC}: server error rows that match no ServerErrorCode`).toEqual([])
  })
})

/** The content types of shared/client/content.ts: each `type` literal with the fields beside it. */
const contentTypes = [...Object.values(CONTENT_SCHEMAS), ...Object.values(OWN_DEVICE_CONTENT_SCHEMAS)].map(
  (schema) => ({
    type: schema.properties.type.const,
    fields: Object.keys(schema.properties).filter((field) => field !== 'v' && field !== 'type'),
  }),
)

describe(`${DOC}: message content types (| content \`type\` | fields | meaning |)`, () => {
  const documented = rowsByName(CONTENT_HEADER)

  it('finds the content union in shared/client/content.ts', () => {
    expect(contentTypes.length).toBeGreaterThan(0)
  })

  it.each(contentTypes.map(({ type, fields }) => [type, fields] as const))(
    '`%s` is documented with each of its fields',
    (type, fields) => {
      const row = onlyRow(documented, type, 'content types')
      const spans = [...(row[1] ?? '').matchAll(/`([^`]*)`/g)].map((match) => match[1] ?? '')
      for (const field of fields) {
        expect(
          spans.some((span) => span === field || span.startsWith(`${field}:`)),
          `${DOC}: content type \`${type}\` does not document its field \`${field}\``,
        ).toBe(true)
      }
    },
  )

  it('documents no content type the code does not define', () => {
    const known = new Set<string>(contentTypes.map(({ type }) => type))
    const unknown = [...documented.keys()].filter((type) => !known.has(type))
    expect(
      unknown,
      `${DOC}: content type rows that match no type of CONTENT_SCHEMAS or OWN_DEVICE_CONTENT_SCHEMAS`,
    ).toEqual([])
  })
})

const routeName = (route: RegisteredRoute) => `${route.method} ${route.path}`

/** A documented path in the form Fastify matches: no query, `{name}` parameters as `:name`. */
function fastifyPath(documented: string): string {
  return (documented.split('?')[0] ?? '').replace(/\{(\w+)\}/g, ':$1')
}

/** The routes of the protocol: the REST API and the relay (the rest is the web app's files). */
const isProtocolPath = (path: string) => path.startsWith(`${API_PREFIX}/`) || path === RELAY_PATH

describe(`${DOC}: REST routes table (| method | path | auth | request | success |)`, () => {
  const documented = tableRows(ROUTES_HEADER).map(
    (row): RegisteredRoute => ({ method: codeSpan(row[0]) ?? '', path: fastifyPath(codeSpan(row[1]) ?? '') }),
  )
  let database: TestDatabase
  let app: FastifyInstance
  let served: RegisteredRoute[]

  beforeAll(async () => {
    database = await createTestDatabase('sqlite')
    app = await build({ db: database.db, log: false, bcryptCost: TEST_BCRYPT_COST })
    await app.ready()
    served = registeredRoutes(app)
  })
  afterAll(async () => {
    await app?.close()
    await database?.dispose()
  })

  it('exists, and the application serves routes', () => {
    expect(
      documented.length,
      `${DOC}: no | method | path | auth | request | success | table found`,
    ).toBeGreaterThan(0)
    expect(served.filter((route) => isProtocolPath(route.path)).length).toBeGreaterThan(0)
  })

  it('documents every route the server registers under the API prefix and the relay', () => {
    const documentedNames = new Set(documented.map(routeName))
    const hasGet = new Set(served.filter((route) => route.method === 'GET').map((route) => route.path))
    const undocumented = served
      .filter((route) => isProtocolPath(route.path))
      // HEAD comes with every GET (Fastify's exposeHeadRoutes); §13.3 says so once for all of them.
      .filter((route) => !(route.method === 'HEAD' && hasGet.has(route.path)))
      .map(routeName)
      .filter((name) => !documentedNames.has(name))
    expect(undocumented, `${DOC}: routes the server registers that §13.3 does not list`).toEqual([])
  })

  it('documents no route the server does not register', () => {
    const servedNames = new Set(served.map(routeName))
    const phantom = documented.map(routeName).filter((name) => !servedNames.has(name))
    expect(phantom, `${DOC}: §13.3 rows that match no registered route`).toEqual([])
  })

  it('leaves only the web app outside the API and the relay: files read with GET or HEAD', () => {
    const others = served.filter((route) => !isProtocolPath(route.path))
    const writes = others.filter((route) => route.method !== 'GET' && route.method !== 'HEAD').map(routeName)
    expect(writes, 'routes outside the API and the relay that are not file reads (document them)').toEqual([])
  })
})

/**
 * Server limits the document states in prose (§13.3) rather than in a table: each must appear with
 * its value shortly before its name, so a changed constant fails here.
 */
const SERVER_PROSE_LIMITS: Record<string, number> = {
  MAX_TLS_HANDSHAKES_IN_PROGRESS_PER_ADDRESS,
  TLS_HANDSHAKE_TIMEOUT_MS: TLS_HANDSHAKE_TIMEOUT_MS / 1000,
  TLS_HANDSHAKE_RATE_PER_ADDRESS: TLS_HANDSHAKE_RATE_PER_ADDRESS.perSecond,
  MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS,
  // §13.7, the provisioning channel.
  PROVISIONING_CHANNEL_TTL_MS: PROVISIONING_CHANNEL_TTL_MS / 60_000,
  PROVISIONING_POLL_INTERVAL_MS: PROVISIONING_POLL_INTERVAL_MS / 1000,
  PROVISIONING_BODY_LIMIT_BYTES,
  PROVISIONING_OPEN_RATE_LIMIT: PROVISIONING_OPEN_RATE_LIMIT.max,
  MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS,
  PROVISIONING_RATE_LIMIT: PROVISIONING_RATE_LIMIT.max,
  // §13.8, devices.
  MAX_DEVICES_PER_ACCOUNT,
  LINK_TOKEN_TTL_MS: LINK_TOKEN_TTL_MS / 60_000,
  MAX_LINK_TOKENS_PER_ACCOUNT,
}

describe(`${DOC}: server limits stated in prose`, () => {
  it.each(Object.entries(SERVER_PROSE_LIMITS))('`%s` is stated as %s', (name, value) => {
    const at = doc.indexOf(`\`${name}\``)
    expect(at, `${DOC}: \`${name}\` is not mentioned`).toBeGreaterThan(0)
    const before = doc.slice(Math.max(0, at - 120), at)
    expect(
      new RegExp(`\\b${value}\\b`).test(before),
      `${DOC}: \`${name}\` must be stated with its value ${value} just before it`,
    ).toBe(true)
  })
  it('states the burst of TLS_HANDSHAKE_RATE_PER_ADDRESS', () => {
    const at = doc.indexOf('`TLS_HANDSHAKE_RATE_PER_ADDRESS`')
    expect(doc.slice(at - 120, at)).toContain(`${TLS_HANDSHAKE_RATE_PER_ADDRESS.burst}`)
  })
})

describe(`${DOC}: known answers`, () => {
  // Every KNOWN_ANSWERS… block: one per session version (§17.3 and §17.5), and sender keys' (§19.7).
  const blocks = ['kat.test.ts', 'sender-key.kat.test.ts'].flatMap((file) => {
    const kat = readFileSync(join(root, 'shared', 'test', file), 'utf8')
    return [...kat.matchAll(/const KNOWN_ANSWERS\w* = \{[\s\S]*?\n\}\n/g)].map((match) => match[0])
  })
  const pinned = [
    ...new Set(blocks.flatMap((block) => [...block.matchAll(/'([0-9a-f]{32,}|\d{60})'/g)].map((m) => m[1]!))),
  ]

  it('finds the pinned values in shared/test/kat.test.ts and sender-key.kat.test.ts', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(3)
    expect(pinned.length).toBeGreaterThanOrEqual(14)
  })

  it.each(pinned)('reproduces %s', (value) => {
    expect(doc.includes(value), `${DOC}: the known answer ${value} from a known-answer test is missing`).toBe(
      true,
    )
  })
})
