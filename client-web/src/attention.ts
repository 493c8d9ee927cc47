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
  if (!('Notification' in window) || Notification.permission !== 'granted') return
  if (document.visibilityState === 'visible') return
  const options: NotificationOptions = {
    body: 'New message',
    tag: `message:${peer}`,
    icon: '/icons/icon-192.png',
    badge: '/icons/icon-192.png',
    data: { peer },
  }
  const title = `${peer}`
  // Through the service worker where there is one: it works on every platform (Android refuses
  // `new Notification`) and its click handler opens the conversation.
  const registration = await navigator.serviceWorker?.getRegistration().catch(() => undefined)
  if (registration) {
    await registration.showNotification(title, options)
    return
  }
  const notification = new Notification(title, options)
  notification.onclick = () => {
    window.focus()
    location.hash = `#/chat/${encodeURIComponent(peer)}`
    notification.close()
  }
}
