/**
 * The PWA's schema checks compiled at build time (client-web/build/precompiled-validators.ts):
 * the generated module registers a check for every schema shared/ exports, each under its own
 * schema object, and each check accepts and refuses exactly what TypeBox's run-time check does.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import fc from 'fast-check'
import { Value } from 'typebox/value'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateValidators, schemaModules } from '../client-web/build/precompiled-validators.js'
import { CONTENT_SCHEMAS } from '../shared/client/content.js'
import { DeliverFrame, ServerFrame } from '../shared/codec/frames.js'
import {
  decode,
  isPrecompiled,
  matches,
  type TSchema,
  Type,
  usePrecompiledChecks,
} from '../shared/codec/schema.js'

const repositoryRoot = join(import.meta.dirname, '..')
const sharedDir = join(repositoryRoot, 'shared')
// Inside the repository (git-ignored), so that its package imports resolve.
const generatedDir = join(repositoryRoot, 'dist', 'test-precompiled-validators')

interface Found {
  readonly where: string
  readonly schema: TSchema
}

let found: Found[] = []
let generated: ReturnType<typeof generateValidators>

beforeAll(async () => {
  const modules = schemaModules(sharedDir)
  const namespaces: Record<string, unknown>[] = []
  for (const file of modules) namespaces.push(await import(file))
  found = namespaces.flatMap((namespace, index) =>
    Object.entries(namespace).flatMap(([name, value]) => {
      const where = `${modules[index]}: ${name}`
      if (typeof value === 'object' && value !== null && '~kind' in value)
        return [{ where, schema: value as TSchema }]
      if (typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype) {
        return Object.entries(value)
          .filter(([, inner]) => typeof inner === 'object' && inner !== null && '~kind' in inner)
          .map(([key, inner]) => ({ where: `${where}.${key}`, schema: inner as TSchema }))
      }
      return []
    }),
  )
  generated = generateValidators(modules, namespaces, join(sharedDir, 'codec', 'schema.ts'), repositoryRoot)
  mkdirSync(generatedDir, { recursive: true })
  const file = join(generatedDir, `validators-${process.pid}.mjs`)
  writeFileSync(file, generated.code)
  // Importing it registers every check, as the PWA's entry point does.
  await import(pathToFileURL(file).href)
})

afterAll(() => {
  rmSync(generatedDir, { recursive: true, force: true })
})

/** Values near `valid`: each property dropped, or replaced by values of other types; one extra. */
function mutations(valid: unknown): unknown[] {
  if (typeof valid !== 'object' || valid === null || Array.isArray(valid)) return []
  const out: unknown[] = [{ ...valid, unexpected: 1 }]
  for (const key of Object.keys(valid)) {
    const { [key]: _, ...rest } = valid as Record<string, unknown>
    out.push(rest)
    for (const other of [null, -1, 0.5, '', 'a+b/c=', 'x'.repeat(200), [], {}, true]) {
      out.push({ ...valid, [key]: other })
    }
  }
  return out
}

describe('precompiled schema checks', () => {
  it('cover every schema shared/ exports, with nothing left to run-time checking', () => {
    expect(generated.skipped).toEqual([])
    expect(found.length).toBeGreaterThan(30)
    expect(found.filter(({ schema }) => !isPrecompiled(schema)).map(({ where }) => where)).toEqual([])
    // The ones a backlog goes through, message after message.
    for (const schema of [ServerFrame, DeliverFrame, CONTENT_SCHEMAS.text, CONTENT_SCHEMAS.receipt]) {
      expect(isPrecompiled(schema)).toBe(true)
    }
  })

  it('accept and refuse what TypeBox checking at run time does, each for its own schema', () => {
    for (const { where, schema } of found) {
      const samples: unknown[] = fc.sample(fc.anything(), { numRuns: 50, seed: 20261202 })
      try {
        const valid = Value.Create(schema)
        samples.push(valid, ...mutations(valid))
      } catch {
        // Value.Create cannot make a value for some patterns; the other samples still compare.
      }
      for (const sample of samples) {
        expect({ where, sample, accepted: matches(schema, sample) }).toEqual({
          where,
          sample,
          accepted: Value.Check(schema, sample),
        })
      }
    }
  })

  it('check patterns, and a refusal still names the field', () => {
    const frame = { v: 1, type: 'deliver', seq: 3, id: 'A'.repeat(22), from: 'alice', body: 'QUJD', ts: 1 }
    expect(decode(DeliverFrame, frame, 'deliver frame')).toEqual(frame)
    expect(matches(DeliverFrame, { ...frame, body: 'QU+D' })).toBe(false)
    expect(() => decode(DeliverFrame, { ...frame, body: 'QU+D' }, 'deliver frame')).toThrow(/\/body/)
  })

  it('replace a run-time check already in use', () => {
    const schema = Type.Object({ name: Type.String() })
    expect(matches(schema, { name: 'x' })).toBe(true)
    usePrecompiledChecks([[schema, () => false]])
    expect(isPrecompiled(schema)).toBe(true)
    expect(matches(schema, { name: 'x' })).toBe(false)
  })
})
