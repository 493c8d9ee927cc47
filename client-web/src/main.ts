/**
 * Entry point: the app's global styles and root element, and the service worker that keeps the
 * app shell for offline use.
 */
import './styles/global.css'
import './ui/app-shell.js'

if ('serviceWorker' in navigator && window.isSecureContext) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {
      // Without a worker the app still runs; it just will not open offline.
    })
  })
}
