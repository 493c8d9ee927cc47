/**
 * Serving and installing the PWA: what the server sends for the app (caching, CSP, the SPA
 * fallback), the production build (no source maps, the service worker's precache list), the
 * manifest and its icons, the service worker taking control, and the app opening with the server
 * stopped.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WEB_APP_DEFAULT_DIR, webApp } from '../../server/plugins/web-app.js'
import { startServer, type TestServer } from '../../server/test/harness.js'
import { Device, waitFor } from './browser.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server?.close()
})

/** Width and height from a PNG's IHDR chunk. */
function pngSize(bytes: Buffer): { width: number; height: number } {
  expect(bytes.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a')
  expect(bytes.subarray(12, 16).toString('latin1')).toBe('IHDR')
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) }
}

async function builtFiles(): Promise<string[]> {
  const entries = await readdir(WEB_APP_DEFAULT_DIR, { recursive: true, withFileTypes: true })
  return entries
    .filter((entry) => entry.isFile())
    .map(
      (entry) =>
        `/${join(entry.parentPath, entry.name).slice(WEB_APP_DEFAULT_DIR.length).replace(/^\/+/, '')}`,
    )
}

describe('the server serves the app', () => {
  it('serves index.html at / with the CSP and no-cache, and hashed assets as immutable', async () => {
    const index = await server.request('/')
    expect(index.status).toBe(200)
    expect(index.headers['content-type']).toMatch(/^text\/html/)
    expect(index.headers['cache-control']).toBe('no-cache')
    const csp = String(index.headers['content-security-policy'])
    for (const directive of [
      "default-src 'self'",
      "script-src 'self'",
      "connect-src 'self'",
      "worker-src 'self'",
      "manifest-src 'self'",
      "img-src 'self' data: blob:",
      "object-src 'none'",
      "frame-ancestors 'none'",
    ]) {
      expect(csp).toContain(directive)
    }
    expect(csp).not.toContain('unsafe')
    expect(index.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/)

    const scripts = [...index.text.matchAll(/src="(\/assets\/[^"]+\.js)"/g)].map(
      (match) => match[1] as string,
    )
    expect(scripts.length).toBeGreaterThan(0)
    for (const script of scripts) {
      const asset = await server.request(script)
      expect(asset.status).toBe(200)
      expect(asset.headers['content-type']).toMatch(/javascript/)
      expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable')
    }
    const worker = await server.request('/sw.js')
    expect(worker.status).toBe(200)
    expect(worker.headers['cache-control']).toBe('no-cache')

    // Compressed copies from the build, for browsers that accept them.
    const script = scripts[0] as string
    const plain = await server.request(script)
    for (const encoding of ['br', 'gzip']) {
      const compressed = await server.request(script, { headers: { 'accept-encoding': encoding } })
      expect(compressed.headers['content-encoding']).toBe(encoding)
      expect(compressed.headers.vary).toMatch(/accept-encoding/i)
      expect(compressed.headers['cache-control']).toBe('public, max-age=31536000, immutable')
      expect(Number(compressed.headers['content-length'])).toBeLessThan(
        Number(plain.headers['content-length']) / 2,
      )
    }
  })

  it('falls back to index.html for app paths, and to the JSON 404 for the API and missing files', async () => {
    const route = await server.request('/chat/alice')
    expect(route.status).toBe(200)
    expect(route.text).toContain('<sc-app>')
    expect(route.headers['cache-control']).toBe('no-cache')

    const api = await server.request('/api/v1/nothing-here')
    expect(api.status).toBe(404)
    expect(api.body.error.code).toBe('E2E_ERR_NOT_FOUND')
    expect(api.headers['cache-control']).toBe('no-store')

    for (const path of ['/assets/missing-abc123.js', '/missing.png']) {
      const missing = await server.request(path)
      expect(missing.status).toBe(404)
      expect(missing.body.error.code).toBe('E2E_ERR_NOT_FOUND')
    }
  })

  it('has a valid manifest whose icons exist at their stated sizes', async () => {
    const response = await server.request('/manifest.webmanifest')
    expect(response.status).toBe(200)
    expect(response.headers['content-type']).toMatch(/^application\/manifest\+json/)
    const manifest = JSON.parse(response.text)
    expect(manifest).toMatchObject({
      name: 'secure-chat',
      short_name: 'secure-chat',
      start_url: '/',
      scope: '/',
      display: 'standalone',
    })
    expect(manifest.theme_color).toMatch(/^#[0-9a-f]{6}$/i)
    expect(manifest.background_color).toMatch(/^#[0-9a-f]{6}$/i)
    const pngs = manifest.icons.filter((icon: { type: string }) => icon.type === 'image/png')
    const purposes = new Set(
      pngs.map((icon: { sizes: string; purpose: string }) => `${icon.sizes} ${icon.purpose}`),
    )
    expect(purposes).toEqual(new Set(['192x192 any', '512x512 any', '512x512 maskable']))
    for (const icon of pngs as { src: string; sizes: string }[]) {
      const file = await new Promise<Buffer>((resolve, reject) => {
        // The harness reads bodies as text; fetch the PNG's bytes through Node's https directly.
        import('node:https').then(({ get }) =>
          get(new URL(icon.src, server.origin), { ca: server.ca }, (res) => {
            const chunks: Buffer[] = []
            res.on('data', (chunk: Buffer) => chunks.push(chunk))
            res.on('end', () => resolve(Buffer.concat(chunks)))
            res.on('error', reject)
          }).on('error', reject),
        )
      })
      const [width, height] = icon.sizes.split('x').map(Number)
      expect(pngSize(file)).toEqual({ width, height })
    }
  })
})

describe('without a build', () => {
  it('the server still starts, serves no app, and logs that the web app is not built', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'secure-chat-no-build-'))
    const lines: string[] = []
    const stream = new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk))
        done()
      },
    })
    const app = Fastify({ logger: { level: 'info', stream } })
    try {
      await app.register(webApp, { root: empty })
      await app.ready()
      expect((await app.inject({ url: '/' })).statusCode).toBe(404)
      expect(lines.join('')).toContain('web app not built')
    } finally {
      await app.close()
      await rm(empty, { recursive: true, force: true })
    }
  })
})

describe('the production build', () => {
  it('ships no source maps, and its service worker precaches exactly the app shell', async () => {
    const files = (await builtFiles()).filter((file) => !/\.(br|gz)$/.test(file))
    expect(files.filter((file) => file.endsWith('.map'))).toEqual([])
    const worker = await readFile(join(WEB_APP_DEFAULT_DIR, 'sw.js'), 'utf8')
    const match = /"urls":(\[[^\]]*\])/.exec(worker)
    expect(match).not.toBeNull()
    const urls = JSON.parse(match?.[1] ?? '[]') as string[]
    const expected = ['/', ...files.filter((file) => file !== '/sw.js' && file !== '/index.html')].sort()
    expect([...urls].sort()).toEqual(expected)
    // Never the API or the relay.
    expect(urls.some((url) => url.startsWith('/api') || url.startsWith('/ws'))).toBe(false)
  })
})

describe('installable and offline', () => {
  it('registers a service worker that controls the page, and opens with the server stopped', async () => {
    const device = await Device.open('offline-shell', server)
    try {
      const page = device.page
      await device.goto('/')
      await page.getByRole('button', { name: 'Register', exact: true }).waitFor()
      await page.evaluate(() => navigator.serviceWorker.ready)
      // clients.claim() hands the open page to the worker as soon as it activates.
      await waitFor(() => page.evaluate(() => navigator.serviceWorker.controller !== null))
      const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope)
      expect(scope).toBe(`${server.origin}/`)

      // What the worker cached: the shell only.
      const cached = await page.evaluate(async () => {
        const names = await caches.keys()
        const urls: string[] = []
        for (const name of names) {
          for (const request of await (await caches.open(name)).keys())
            urls.push(new URL(request.url).pathname)
        }
        return urls
      })
      expect(cached).toContain('/')
      expect(cached.some((url) => url.startsWith('/api') || url.startsWith('/ws'))).toBe(false)

      await server.stop()
      await page.reload()
      await page.getByRole('button', { name: 'Register', exact: true }).waitFor()
      await page.getByLabel('Username').waitFor()
      expect(await page.title()).toBe('secure-chat')
      expect(device.errors).toEqual([])
    } finally {
      await device.dispose()
    }
  })
})
