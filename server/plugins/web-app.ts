/**
 * Serves the PWA that Vite builds into dist/client-web/ at `/`:
 *
 *   /assets/*   content-hashed files: cached for a year, immutable (Brotli or gzip copies from the
 *               build are sent to browsers that accept them)
 *   everything else (index.html, sw.js, the manifest, icons): `no-cache`, so a new build shows up
 *               on the next load (revalidated by ETag, so unchanged files cost a 304)
 *   any other GET outside /api and /assets whose last segment has no file extension: index.html
 *               (the app routes on the client)
 *
 * It knows nothing of the API or the relay: /api/* and unknown files fall through to the server's
 * JSON 404. When the build is missing (tests of the API, a checkout without `vite build`) the
 * server starts without the app and says so in the log.
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'
import { API_PREFIX } from '../../shared/codec/api.js'
import { METRICS_PATH } from './metrics.js'

export const WEB_APP_DEFAULT_DIR = fileURLToPath(new URL('../../dist/client-web/', import.meta.url))

/** Vite puts every content-hashed file here (build.assetsDir). */
const HASHED_ASSETS_PREFIX = '/assets/'
const IMMUTABLE = 'public, max-age=31536000, immutable'
const REVALIDATE = 'no-cache'

export interface WebAppOptions {
  /** The built app; default dist/client-web/ (tests point it elsewhere). */
  readonly root?: string
}

export async function webApp(app: FastifyInstance, options: WebAppOptions = {}): Promise<void> {
  const root = resolve(options.root ?? WEB_APP_DEFAULT_DIR)
  if (!existsSync(join(root, 'index.html'))) {
    app.log.warn({ event: 'web-app', root }, 'web app not built (run `npx vite build`): serving the API only')
    return
  }

  await app.register(fastifyStatic, {
    root,
    // Routes for the files present at startup, so unknown paths reach the SPA fallback below.
    wildcard: false,
    // The build writes .br and .gz copies of its text files (vite.config.ts): sent when accepted.
    preCompressed: true,
    cacheControl: false,
    dotfiles: 'ignore',
    setHeaders: (reply, path) => {
      const relative = path.slice(root.length).replaceAll('\\', '/')
      reply.header('cache-control', relative.startsWith(HASHED_ASSETS_PREFIX) ? IMMUTABLE : REVALIDATE)
    },
  })

  app.get('/*', (request, reply) => {
    const path = request.url.split('?', 1)[0] ?? '/'
    const lastSegment = path.slice(path.lastIndexOf('/') + 1)
    if (
      path.startsWith(`${API_PREFIX}/`) ||
      path === API_PREFIX ||
      path === '/ws' ||
      // Served only when configured (plugins/metrics.ts); otherwise a 404, never the app's page.
      path === METRICS_PATH ||
      path.startsWith(HASHED_ASSETS_PREFIX) ||
      lastSegment.includes('.')
    ) {
      return reply.callNotFound()
    }
    return reply.sendFile('index.html')
  })
  app.log.info({ event: 'web-app', root }, 'serving the web app')
}
