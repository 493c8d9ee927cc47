/**
 * The service worker: keeps the app shell (index.html and the hashed files of this build) so the
 * app opens without a network, and nothing else. It never touches /api or /ws, requests with
 * credentials, or anything from another origin: messages and keys live in IndexedDB, sealed,
 * and API answers (tokens, prekey bundles) must never sit in a cache.
 *
 *   navigations      network first (a new build shows up at once), the cached shell when offline
 *   precached files  cache first (their names carry a content hash, or they are small and static)
 *   anything else    not handled: the browser goes to the network as if there were no worker
 *
 * A new build changes this file (the precache list below is written into it by vite.config.ts),
 * which installs a new worker that caches the new shell, then deletes the old caches.
 */

// The service worker's globals: only what this file uses (tsconfig's libs are the DOM's).
interface ExtendableEvent extends Event {
  waitUntil(promise: Promise<unknown>): void
}
interface FetchEvent extends ExtendableEvent {
  readonly request: Request
  respondWith(response: Response | Promise<Response>): void
}
interface NotificationEvent extends ExtendableEvent {
  readonly notification: Notification
}
interface WindowClient {
  readonly url: string
  focus(): Promise<WindowClient>
  postMessage(message: unknown): void
}
interface ServiceWorkerScope {
  readonly location: Location
  readonly registration: ServiceWorkerRegistration
  readonly clients: {
    claim(): Promise<void>
    matchAll(options: { type: 'window'; includeUncontrolled: boolean }): Promise<WindowClient[]>
    openWindow(url: string): Promise<WindowClient | null>
  }
  skipWaiting(): Promise<void>
  addEventListener(type: 'install' | 'activate', listener: (event: ExtendableEvent) => void): void
  addEventListener(type: 'fetch', listener: (event: FetchEvent) => void): void
  addEventListener(type: 'notificationclick', listener: (event: NotificationEvent) => void): void
}

declare const self: ServiceWorkerScope

interface Precache {
  readonly version: string
  readonly urls: readonly string[]
}

/** Replaced at build time by vite.config.ts (precacheManifest) with `{ version, urls }`. */
declare const __SECURE_CHAT_PRECACHE__: Precache
const precache: Precache = __SECURE_CHAT_PRECACHE__

const CACHE_PREFIX = 'secure-chat-shell-'
const CACHE_NAME = `${CACHE_PREFIX}${precache.version}`
const SHELL_URL = '/'
/** Paths the worker must never answer from a cache (the API, the relay). */
const NEVER_CACHED = ['/api/', '/ws']

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE_NAME)
      // `cache: 'reload'` skips the HTTP cache, so the shell is this build's, not a stale copy.
      await cache.addAll(precache.urls.map((url) => new Request(url, { cache: 'reload' })))
      await self.skipWaiting()
    })(),
  )
})

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      const names = await caches.keys()
      await Promise.all(
        names
          .filter((name) => name.startsWith(CACHE_PREFIX) && name !== CACHE_NAME)
          .map((name) => caches.delete(name)),
      )
      await self.clients.claim()
    })(),
  )
})

function handledHere(request: Request): URL | undefined {
  if (request.method !== 'GET') return undefined
  if (request.headers.has('authorization')) return undefined
  const url = new URL(request.url)
  if (url.origin !== self.location.origin) return undefined
  if (
    NEVER_CACHED.some(
      (prefix) => url.pathname === prefix.replace(/\/$/, '') || url.pathname.startsWith(prefix),
    )
  )
    return undefined
  return url
}

self.addEventListener('fetch', (event) => {
  const request = event.request
  const url = handledHere(request)
  if (!url) return
  if (request.mode === 'navigate') {
    event.respondWith(
      (async () => {
        try {
          return await fetch(request)
        } catch (error) {
          const cached = await caches.match(SHELL_URL, { cacheName: CACHE_NAME })
          if (cached) return cached
          throw error
        }
      })(),
    )
    return
  }
  if (!precache.urls.includes(url.pathname)) return
  event.respondWith(
    (async () => (await caches.match(url.pathname, { cacheName: CACHE_NAME })) ?? fetch(request))(),
  )
})

// A click on a new-message notification focuses the app and opens that conversation.
self.addEventListener('notificationclick', (event) => {
  event.notification.close()
  const peer = (event.notification.data as { peer?: unknown } | null)?.peer
  const target = typeof peer === 'string' ? `/#/chat/${encodeURIComponent(peer)}` : '/'
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true })
      const open = windows[0]
      if (open) {
        await open.focus()
        open.postMessage({ type: 'open-chat', peer })
      } else {
        await self.clients.openWindow(target)
      }
    })(),
  )
})
