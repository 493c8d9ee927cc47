/**
 * Getting the user's attention: unread counts in the tab title, and a system notification for a new
 * message while the page is hidden (only once the user has allowed notifications). Notifications
 * name the sender only: message text would end up in the operating system's notification history,
 * outside the encrypted store.
 */

export const APP_TITLE = 'secure-chat'

export function titleFor(unread: number): string {
  return unread > 0 ? `(${unread > 99 ? '99+' : unread}) ${APP_TITLE}` : APP_TITLE
}

export async function notifyNewMessage(peer: string): Promise<void> {
  // Visibility first: it is cheap, and the permission is a question to the browser.
  if (document.visibilityState === 'visible') return
  if (!('Notification' in window) || Notification.permission !== 'granted') return
  const options: NotificationOptions = {
    body: 'New message',
    tag: `message:${peer}`,
    icon: '/icons/icon-192.png',
    badge: '/icons/icon-192.png',
    data: { peer },
  }
  const title = `${peer}`
  // Through the service worker where there is one: it works on every platform (Android refuses
  // `new Notification`) and its click handler opens the conversation. A worker that is still
  // installing (the first minutes after the first visit) cannot show one yet: wait for it to become
  // active, for a while, rather than lose the notification.
  const registration = await activeRegistration()
  if (registration) {
    // The browser fetches the icons before it shows anything, and its promise can stay pending for
    // long: say so, rather than let a notification that never appears go unexplained.
    const slow = setTimeout(
      () =>
        console.warn(
          `secure-chat: the browser has not shown a notification after ${NOTIFICATION_SLOW_MS} ms`,
        ),
      NOTIFICATION_SLOW_MS,
    )
    try {
      await registration.showNotification(title, options)
    } finally {
      clearTimeout(slow)
    }
    return
  }
  const notification = new Notification(title, options)
  notification.onclick = () => {
    window.focus()
    location.hash = `#/chat/${encodeURIComponent(peer)}`
    notification.close()
  }
}

/** After how long a notification the browser has not shown yet is reported as a warning. */
const NOTIFICATION_SLOW_MS = 10_000

/** How long a new message's notification waits for an installing service worker to activate. */
const WORKER_ACTIVATION_WAIT_MS = 15_000

async function activeRegistration(): Promise<ServiceWorkerRegistration | undefined> {
  const container = navigator.serviceWorker
  const registration = await container?.getRegistration().catch(() => undefined)
  if (!container || !registration || registration.active) return registration
  let timer: ReturnType<typeof setTimeout> | undefined
  const gaveUp = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), WORKER_ACTIVATION_WAIT_MS)
  })
  const ready = await Promise.race([container.ready, gaveUp])
  clearTimeout(timer)
  return ready?.active ? ready : undefined
}
