/**
 * The routes a built Fastify application really serves, read from `printRoutes` (Fastify offers no
 * list, and an onRoute hook would have to be installed inside `build()` before the routes exist).
 * Read-only: it inspects the application and changes nothing.
 */
import type { FastifyInstance } from 'fastify'

export interface RegisteredRoute {
  readonly method: string
  /** The full path as Fastify matches it, parameters as `:name`. */
  readonly path: string
}

/** One line of the tree: indentation (4 characters per level), branch, path segment, methods. */
const TREE_LINE = /^((?:│ {3}| {4})*)(?:├── |└── )(\S+)(?: \(([A-Z, ]+)\))?$/

/**
 * Every (method, path) of `app`. Parses `printRoutes({ commonPrefix: false })`, whose lines hold a
 * path segment that continues its parent's, then checks each result with `hasRoute`, so a change in
 * the tree's format fails here instead of yielding a wrong list.
 */
export function registeredRoutes(app: FastifyInstance): RegisteredRoute[] {
  const tree = app.printRoutes({ commonPrefix: false })
  const parents: string[] = []
  const routes: RegisteredRoute[] = []
  for (const line of tree.split('\n')) {
    if (line.trim() === '') continue
    const match = TREE_LINE.exec(line)
    if (!match) throw new Error(`printRoutes: expected a tree line, got ${JSON.stringify(line)}`)
    const depth = (match[1] ?? '').length / 4
    const path = `${depth === 0 ? '' : (parents[depth - 1] ?? '')}${match[2]}`
    parents.length = depth
    parents.push(path)
    for (const method of (match[3] ?? '').split(',').map((name) => name.trim())) {
      if (method === '') continue
      if (!app.hasRoute({ method, url: path })) {
        throw new Error(`printRoutes: parsed ${method} ${path}, which the application does not have`)
      }
      routes.push({ method, path })
    }
  }
  return routes
}
