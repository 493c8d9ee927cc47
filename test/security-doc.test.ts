/**
 * docs/security.md says which files, tests and named limits hold each adversary back. This test
 * keeps it from drifting as the code moves: every repository path it names (in a code span or a
 * link) exists, every constant and error code it cites is defined in the sources, and every
 * function or field it cites by name still appears in them. A rename then fails here, naming the
 * document's line, instead of leaving the threat model quietly wrong.
 *
 * Paragraphs that begin with `<!-- pending: itemN -->` describe changes of issue 10 that are still
 * being merged: they are exempt until the mark is removed, and the marks must keep that one form so
 * they can be found.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..')
const DOC = 'docs/security.md'
const doc = readFileSync(join(root, DOC), 'utf8')

/** The form of a pending mark; N is an item of issue 10 (1–12). */
const PENDING_MARK = /^<!-- pending: item(\d+) -->$/
const ISSUE_ITEMS = 12

/** Where the code lives; tests are left out, so a constant must be defined by the code itself. */
const SOURCE_DIRS = ['shared', 'server', 'client-terminal', 'client-web', 'scripts', 'bench', 'test']
const SOURCE_EXTENSIONS = ['.ts', '.tsx', '.mjs', '.cjs']

/** What a named path may end with: a file of the repository, or a directory (trailing slash). */
const PATH_SPAN = /^[A-Za-z0-9_.-]+(?:\/[A-Za-z0-9_.-]+)+(?:\.(?:ts|tsx|mjs|cjs|md|json|sqlite|svg|png)|\/)$/
const TEST_FILE = /\.test\.tsx?$/
/** SCREAMING_CASE with at least one underscore: a named constant, an error code or a variable. */
const CONSTANT_SPAN = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$/
/** camelCase (a function, method or field) or snake_case (a database table or column). */
const IDENTIFIER_SPAN = /^[a-z][a-z0-9]*(?:[A-Z][A-Za-z0-9]*|(?:_[a-z0-9]+)+)$/

interface Block {
  readonly text: string
  /** 1-based line of the block's first line in the document. */
  readonly line: number
}

/** The document's blocks (paragraphs, list items run together, tables), split at blank lines. */
function blocks(markdown: string): Block[] {
  const out: Block[] = []
  let current: string[] = []
  let start = 1
  markdown.split('\n').forEach((text, index) => {
    if (text.trim() === '') {
      if (current.length > 0) out.push({ text: current.join('\n'), line: start })
      current = []
      return
    }
    if (current.length === 0) start = index + 1
    current.push(text)
  })
  if (current.length > 0) out.push({ text: current.join('\n'), line: start })
  return out
}

const allBlocks = blocks(doc)
const isPending = (block: Block) => PENDING_MARK.test(block.text.split('\n', 1)[0]!)
const settled = allBlocks.filter((block) => !isPending(block))

interface Mention {
  readonly name: string
  readonly line: number
}

/** Every code span of the settled blocks, with the line it is on. */
function codeSpans(): Mention[] {
  return settled.flatMap((block) =>
    block.text
      .split('\n')
      .flatMap((text, offset) =>
        [...text.matchAll(/`([^`\n]+)`/g)].map((match) => ({ name: match[1]!, line: block.line + offset })),
      ),
  )
}

/** Targets of relative Markdown links in the settled blocks, as repository paths. */
function linkTargets(): Mention[] {
  return settled.flatMap((block) =>
    block.text.split('\n').flatMap((text, offset) =>
      [...text.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)]
        .map((match) => match[1]!)
        .filter((target) => !/^[a-z]+:/.test(target))
        .map((target) => ({ name: join(dirname(DOC), target), line: block.line + offset })),
    ),
  )
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name.startsWith('.') || entry.name === 'node_modules') return []
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    const isSource = SOURCE_EXTENSIONS.some((extension) => entry.name.endsWith(extension))
    return isSource && !TEST_FILE.test(entry.name) ? [path] : []
  })
}

const sources = SOURCE_DIRS.flatMap((dir) => sourceFiles(join(root, dir))).map((file) =>
  readFileSync(file, 'utf8'),
)
const inSources = (pattern: RegExp) => sources.some((source) => pattern.test(source))

/** A constant is declared (`const NAME`), or, for error codes and variable names, spelled as a string. */
function constantDefined(name: string): boolean {
  return (
    inSources(new RegExp(`\\b(?:const|let|var)\\s+${name}\\b`)) ||
    inSources(new RegExp(`['"\`]${name}['"\`]`))
  )
}

/** An identifier is declared, called, assigned or used as a key somewhere in the code. */
function identifierPresent(name: string): boolean {
  return inSources(new RegExp(`(?:function\\s+${name}\\b|\\b${name}\\s*\\??\\s*[(:=<])`))
}

const where = (mention: Mention) => `${DOC}:${mention.line} \`${mention.name}\``

const spans = codeSpans()
const paths = [...spans.filter((span) => PATH_SPAN.test(span.name)), ...linkTargets()]
const testFiles = paths.filter((path) => TEST_FILE.test(path.name))
const constants = spans.filter((span) => CONSTANT_SPAN.test(span.name))
const identifiers = spans.filter((span) => IDENTIFIER_SPAN.test(span.name))

describe(`${DOC}: what it names exists`, () => {
  it('marks pending paragraphs in one form, at their start, naming an item of issue 10', () => {
    const misplaced = allBlocks.flatMap((block) =>
      block.text.split('\n').flatMap((text, offset) => {
        if (!/<!--[^>]*pending/i.test(text)) return []
        const mark = PENDING_MARK.exec(text)
        const item = Number(mark?.[1])
        const wellFormed = mark !== null && item >= 1 && item <= ISSUE_ITEMS && offset === 0
        return wellFormed ? [] : [`${DOC}:${block.line + offset} ${text.trim()}`]
      }),
    )
    expect(misplaced, 'expected `<!-- pending: itemN -->` alone on the first line of a paragraph').toEqual([])
  })

  it('names only files of the repository (sources, tests, linked documents)', () => {
    expect(paths.length).toBeGreaterThan(40)
    const missing = paths.filter((path) => !existsSync(join(root, path.name))).map(where)
    expect(missing, 'paths the document names that do not exist').toEqual([])
  })

  it('names only test files that exist', () => {
    // The document says how each adversary is tested: most mechanisms name their tests.
    expect(new Set(testFiles.map((file) => file.name)).size).toBeGreaterThan(30)
    const missing = testFiles.filter((file) => !existsSync(join(root, file.name))).map(where)
    expect(missing, 'test files the document names that do not exist').toEqual([])
  })

  it('cites only constants and error codes the code defines', () => {
    expect(new Set(constants.map((constant) => constant.name)).size).toBeGreaterThan(50)
    const missing = constants.filter((constant) => !constantDefined(constant.name)).map(where)
    expect(missing, 'constants the document cites that no source defines').toEqual([])
  })

  it('cites only functions and fields the code still has', () => {
    expect(identifiers.length).toBeGreaterThan(5)
    const missing = identifiers.filter((identifier) => !identifierPresent(identifier.name)).map(where)
    expect(missing, 'identifiers the document cites that no source contains').toEqual([])
  })

  it('is linked from the README', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8')
    expect(readme.includes('](docs/security.md)'), 'README.md links docs/security.md').toBe(true)
  })
})
