/**
 * Entry point: the app's global styles and root element, the schema checks compiled at build
 * time, and the service worker that keeps the app shell for offline use.
 */
import './styles/global.css'
import './ui/app-shell.js'

// Loaded beside the first screen rather than in it (about 5 kB compressed): until it arrives,
// values are checked by interpreting their schemas, as correctly and more slowly.
import('virtual:secure-chat/validators').catch(() => {
  // A chunk that did not arrive: everything is still checked, the slower way.
})

if ('serviceWorker' in navigator && window.isSecureContext) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {
      // Without a worker the app still runs; it just will not open offline.
    })
  })
}
