/**
 * No module of server/ imports itself through others (type-only imports included): each piece
 * depends on interfaces of what it needs (a connection on ConnectionHost, the hub on RelayBus), so
 * any of them can be replaced or tested without the rest. Reads every source file's relative
 * imports and looks for a cycle.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const root = import.meta.dirname

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [resolve(path)] : []
  })
}

const IMPORT = /^\s*(?:import|export)\b[^'"]*?\bfrom\s+'(\.{1,2}\/[^']+)'/gm

function importGraph(files: readonly string[]): Map<string, string[]> {
  const known = new Set(files)
  return new Map(
    files.map((file) => {
      const source = readFileSync(file, 'utf8')
      const targets = [...source.matchAll(IMPORT)]
        .map((match) => resolve(dirname(file), match[1]!.replace(/\.js$/, '.ts')))
        .filter((target) => known.has(target))
      return [file, targets]
    }),
  )
}

/** Every cycle found by a depth-first walk, each as the files along it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = []
  const done = new Set<string>()
  const path: string[] = []
  const visit = (file: string) => {
    path.push(file)
    for (const target of graph.get(file) ?? []) {
      const start = path.indexOf(target)
      if (start >= 0) found.push([...path.slice(start), target])
      else if (!done.has(target)) visit(target)
    }
    path.pop()
    done.add(file)
  }
  for (const file of graph.keys()) if (!done.has(file)) visit(file)
  return found
}

describe('server/ imports', () => {
  const graph = importGraph(sourceFiles(root))

  it('finds the sources and imports it checks', () => {
    const hub = graph.get(join(root, 'ws', 'hub.ts'))
    expect(hub).toContain(join(root, 'ws', 'connection.ts'))
  })

  it('has no import cycle', () => {
    const named = cycles(graph).map((cycle) => cycle.map((file) => relative(root, file)).join(' → '))
    expect(named).toEqual([])
  })
})
