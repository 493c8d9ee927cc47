/**
 * Validators generated at build time for the PWA. The page's Content-Security-Policy allows no
 * `eval` (script-src 'self'), so TypeBox cannot compile a schema there and checks every value by
 * walking the schema instead: about 12 µs for a deliver frame, against 0.3 µs compiled, several
 * times per message of a backlog. Here every schema that shared/ exports is compiled in Node with
 * TypeBox's own code generator (`Code`, the one its run-time compiler uses), and the results go
 * into one module that registers each check with shared/codec/schema.ts (`usePrecompiledChecks`)
 * for the very schema object it was made from. A schema found nowhere in it is checked as before.
 *
 * Only what TypeBox's generated code refers to from outside is carried over: regular expressions
 * (patterns). A schema whose code needs anything else is left out, and said so (`skipped`).
 */
import { readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { Code } from 'typebox/compile'

/** The modules whose exported schemas are compiled: the protocol's codecs and the client core. */
export function schemaModules(sharedDir: string): string[] {
  const modules: string[] = []
  for (const dir of ['codec', 'client']) {
    for (const name of readdirSync(join(sharedDir, dir)).sort()) {
      if (name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts')) {
        modules.push(join(sharedDir, dir, name))
      }
    }
  }
  return modules
}

function isTypeBoxSchema(value: unknown): value is object {
  return typeof value === 'object' && value !== null && '~kind' in value
}

/** A schema and where the generated module finds it: a module's export, maybe inside an object. */
interface FoundSchema {
  readonly schema: object
  /** Index into the modules list. */
  readonly module: number
  /** Property path from the module namespace: ['CONTENT_SCHEMAS', 'text']. */
  readonly path: readonly string[]
}

/** Exported schemas, and schemas one level inside exported plain objects (tables of schemas). */
function findSchemas(modules: readonly Record<string, unknown>[]): FoundSchema[] {
  const found: FoundSchema[] = []
  modules.forEach((namespace, module) => {
    for (const [name, value] of Object.entries(namespace)) {
      if (isTypeBoxSchema(value)) {
        found.push({ schema: value, module, path: [name] })
      } else if (
        typeof value === 'object' &&
        value !== null &&
        Object.getPrototypeOf(value) === Object.prototype
      ) {
        for (const [key, inner] of Object.entries(value)) {
          if (isTypeBoxSchema(inner)) found.push({ schema: inner, module, path: [name, key] })
        }
      }
    }
  })
  return found
}

function externalValue(value: unknown): string | undefined {
  if (value instanceof RegExp)
    return `new RegExp(${JSON.stringify(value.source)}, ${JSON.stringify(value.flags)})`
  return undefined
}

const IMPORT_LINE = /^import \{ (\w+) \} from "(typebox\/[a-z]+)"$/

/**
 * One schema's check as an expression: TypeBox's standalone module for it, with its imports
 * lifted out (returned in `imports`), its external variables written in, and its exported
 * `Check` returned from a function scope of its own (every module names its helpers alike).
 */
function checkExpression(schema: object, imports: Map<string, string>): string | undefined {
  // biome-ignore lint/suspicious/noExplicitAny: TypeBox's Code takes its own schema type.
  const { Code: code, External: external } = Code(schema as any)
  const values = external.variables.map(externalValue)
  if (values.some((value) => value === undefined)) return undefined
  const body: string[] = []
  for (const line of code.split('\n')) {
    const imported = IMPORT_LINE.exec(line)
    if (imported) {
      imports.set(imported[1]!, imported[2]!)
      continue
    }
    if (line === `let ${external.identifier} = []`) {
      body.push(`const ${external.identifier} = [${values.join(', ')}]`)
    } else if (line.startsWith('export function SetExternal(')) {
      // The variables are written in above.
    } else if (line.startsWith('export function Check(')) {
      body.push(line.replace('export function Check(', 'return function Check('))
    } else if (line.startsWith('export ') || line.startsWith('import ')) {
      throw new Error(
        `precompiled validators: TypeBox's generated code has a line this build does not know: ${line}`,
      )
    } else {
      body.push(line)
    }
  }
  return `(() => {\n${body.join('\n')}\n})()`
}

export interface GeneratedValidators {
  /** The module's source (ES module, imports by absolute path). */
  readonly code: string
  /** How many schema objects got a precompiled check. */
  readonly compiled: number
  /** Schemas left to run-time checking, by where they are exported. */
  readonly skipped: readonly string[]
}

/**
 * The module that registers a precompiled check for every schema the `modules` export.
 * `namespaces[i]` is `modules[i]` imported in Node; `schemaModule` is shared/codec/schema.ts.
 */
export function generateValidators(
  modules: readonly string[],
  namespaces: readonly Record<string, unknown>[],
  schemaModule: string,
  root: string,
): GeneratedValidators {
  const imports = new Map<string, string>()
  const checks = new Map<object, number>()
  const definitions: string[] = []
  const registrations: string[] = []
  const skipped: string[] = []
  for (const { schema, module, path } of findSchemas(namespaces)) {
    const where = `${relative(root, modules[module]!)}: ${path.join('.')}`
    let index = checks.get(schema)
    if (index === undefined) {
      const expression = checkExpression(schema, imports)
      if (expression === undefined) {
        skipped.push(where)
        continue
      }
      index = definitions.length
      checks.set(schema, index)
      definitions.push(`// ${where}\nconst check${index} = ${expression}`)
    }
    const reference = path.map((key) => `[${JSON.stringify(key)}]`).join('')
    registrations.push(`  [module${module}${reference}, check${index}],`)
  }
  const code = [
    '// Generated by client-web/build/precompiled-validators.ts at build time. Do not edit.',
    '// @ts-nocheck',
    ...[...imports].map(([name, from]) => `import { ${name} } from ${JSON.stringify(from)}`),
    `import { usePrecompiledChecks } from ${JSON.stringify(schemaModule)}`,
    ...modules.map((file, index) => `import * as module${index} from ${JSON.stringify(file)}`),
    '',
    ...definitions,
    '',
    'usePrecompiledChecks([',
    ...registrations,
    '])',
    '',
  ].join('\n')
  return { code, compiled: definitions.length, skipped }
}
