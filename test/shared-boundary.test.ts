/**
 * shared/ runs unchanged in Node and in browsers: it may not import Node built-ins or reach for
 * DOM or Node globals. The linter enforces this while editing; this test enforces it in CI, by
 * reading every source file, so a lint suppression cannot sneak one in.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..', 'shared')

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return entry.name === 'fixtures' ? [] : sourceFiles(path)
    return entry.name.endsWith('.ts') ? [path] : []
  })
}

const NODE_BUILTINS = [
  'fs',
  'path',
  'crypto',
  'os',
  'buffer',
  'child_process',
  'net',
  'tls',
  'http',
  'https',
  'url',
  'util',
  'stream',
  'worker_threads',
]
const FORBIDDEN_GLOBALS = [
  'window',
  'document',
  'navigator',
  'localStorage',
  'sessionStorage',
  'indexedDB',
  'Buffer',
  'process',
  'require',
  '__dirname',
  '__filename',
]

function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
}

describe('shared/ is runtime-neutral', () => {
  const files = sourceFiles(root)

  it('finds the sources it checks', () => {
    expect(files.length).toBeGreaterThan(10)
  })

  it.each(files.map((file) => [relative(root, file), file]))(
    '%s imports no Node built-ins and uses no DOM or Node globals',
    (_name, file) => {
      const source = stripComments(readFileSync(file, 'utf8'))
      const imports = [
        ...source.matchAll(
          /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g,
        ),
      ].map((match) => match[1] ?? match[2] ?? '')
      for (const specifier of imports) {
        expect(specifier.startsWith('node:'), specifier).toBe(false)
        expect(NODE_BUILTINS.includes(specifier), specifier).toBe(false)
        const allowed =
          specifier.startsWith('.') ||
          specifier.startsWith('@noble/') ||
          specifier.startsWith('typebox') ||
          // The password policy's estimator: plain JavaScript with its dictionaries, no I/O.
          specifier.startsWith('@zxcvbn-ts/') ||
          ['vitest', 'fast-check'].includes(specifier)
        expect(allowed, `unexpected dependency ${specifier}`).toBe(true)
      }
      for (const name of FORBIDDEN_GLOBALS) {
        expect(new RegExp(`(?<![.\\w$'"])${name}\\s*[.([]`).test(source), `uses ${name}`).toBe(false)
      }
    },
  )
})
