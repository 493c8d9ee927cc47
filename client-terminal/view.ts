/**
 * View models: how messages, contacts, delivery states and safety numbers look as text, shared by the
 * Ink components and the script output. Pure functions of their arguments (the clock and time zone
 * come in), so they are tested without a terminal.
 */
import {
  accountDeletedText,
  type ConnectionState,
  type ContactView,
  type DeliveryState,
  type DeviceView,
  type MessageView,
  messageTime,
  noticeText,
} from '../shared/client/chat-client.js'
import { safeText } from './safe-text.js'

export { safeText, terminalJson } from './safe-text.js'

export const DELIVERY_MARKS: Readonly<Record<DeliveryState, string>> = {
  sending: '…',
  accepted: '✓',
  delivered: '✓✓',
  failed: '✗',
  received: '',
}

export const DELIVERY_WORDS: Readonly<Record<DeliveryState, string>> = {
  sending: 'sending',
  accepted: 'accepted by the server',
  delivered: 'delivered',
  failed: 'failed',
  received: 'received',
}

export const CONNECTION_WORDS: Readonly<Record<ConnectionState, string>> = {
  online: 'online',
  connecting: 'connecting…',
  offline: 'offline (reconnecting)',
  'logged-out': 'signed out by the server: /login again',
}

function twoDigits(value: number): string {
  return String(value).padStart(2, '0')
}

interface DateParts {
  year: number
  month: number
  day: number
  hour: number
  minute: number
  second: number
}

function partsOf(ms: number, timeZone: string | undefined): DateParts {
  if (timeZone === undefined) {
    const date = new Date(ms)
    return {
      year: date.getFullYear(),
      month: date.getMonth() + 1,
      day: date.getDate(),
      hour: date.getHours(),
      minute: date.getMinutes(),
      second: date.getSeconds(),
    }
  }
  const formatted = new Intl.DateTimeFormat('en-CA', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  }).formatToParts(new Date(ms))
  const get = (type: string) => Number(formatted.find((part) => part.type === type)?.value ?? 0)
  return {
    year: get('year'),
    month: get('month'),
    day: get('day'),
    hour: get('hour'),
    minute: get('minute'),
    second: get('second'),
  }
}

/** "14:05" for today, "2026-11-25 14:05" for other days (in `timeZone`, default the local one). */
export function formatTime(ms: number, now: number, timeZone?: string): string {
  const at = partsOf(ms, timeZone)
  const today = partsOf(now, timeZone)
  const clock = `${twoDigits(at.hour)}:${twoDigits(at.minute)}`
  const sameDay = at.year === today.year && at.month === today.month && at.day === today.day
  return sameDay ? clock : `${at.year}-${twoDigits(at.month)}-${twoDigits(at.day)} ${clock}`
}

/** "2026-11-25 14:05:09": the full form the scripts print. */
export function formatTimestamp(ms: number, timeZone?: string): string {
  const at = partsOf(ms, timeZone)
  return `${at.year}-${twoDigits(at.month)}-${twoDigits(at.day)} ${twoDigits(at.hour)}:${twoDigits(at.minute)}:${twoDigits(at.second)}`
}

/** What a device without a name (or with one no device of ours sealed) is called. */
export const NO_DEVICE_NAME = '(no name)'

/**
 * A device as `secure-chat devices` and /devices list it:
 * "1  Work laptop (this device)  added 2026-12-01 09:30:00, last seen 2026-12-03 11:02:10" (which one
 * this is beside the name, where a narrow terminal does not cut it off).
 */
export function deviceLine(device: DeviceView, timeZone?: string): string {
  const name = device.name === undefined ? NO_DEVICE_NAME : safeText(device.name)
  const seen = `added ${formatTimestamp(device.createdAt, timeZone)}, last seen ${formatTimestamp(device.lastSeenAt, timeZone)}`
  return `${device.id}  ${name}${device.current ? ' (this device)' : ''}  ${seen}`
}

/** When to show a message at: when the server took it, else (still sending) when it was written. */
/** The time shown for a message: the core's rule, the same as the PWA's. */
export { messageTime }

/** What marks a notice, in the conversation, where a message would be. */
export const NOTICE_MARK = '⚠'

export interface MessageLine {
  readonly key: string
  readonly time: string
  /** 'you', or the peer's name made safe to print. */
  readonly author: string
  readonly outgoing: boolean
  readonly text: string
  /** Delivery mark for our own messages ('' for incoming ones). */
  readonly mark: string
  readonly failed: boolean
  /** A notice in place of a message (could not be decrypted, read or displayed). */
  readonly notice: boolean
}

export function messageLine(message: MessageView, now: number, timeZone?: string): MessageLine {
  const outgoing = message.direction === 'out'
  return {
    key: message.id,
    time: formatTime(messageTime(message), now, timeZone),
    author: outgoing ? 'you' : safeText(message.peer),
    outgoing,
    text: safeText(noticeText(message) ?? message.text),
    mark: outgoing ? DELIVERY_MARKS[message.state] : '',
    failed: message.state === 'failed',
    notice: message.kind !== 'text',
  }
}

export interface ContactLine {
  readonly username: string
  /** ● online, ○ offline. */
  readonly presence: string
  readonly online: boolean
  /** "(3)" for three unread messages, '' for none. */
  readonly unread: string
  /** ✕ account deleted, ⊘ blocked, ✔ verified, ⚠ identity key changed, '' otherwise. */
  readonly badge: string
  readonly warning: boolean
}

export function contactLine(contact: ContactView): ContactLine {
  return {
    username: safeText(contact.username),
    presence: contact.online ? '●' : '○',
    online: contact.online,
    unread: contact.unread > 0 ? `(${contact.unread})` : '',
    badge: contact.accountDeleted
      ? '✕'
      : contact.blocked
        ? '⊘'
        : contact.identityChanged
          ? '⚠'
          : contact.verified
            ? '✔'
            : '',
    warning: contact.accountDeleted || contact.identityChanged,
  }
}

/** The 60 digits as three rows of four five-digit groups, as they are read aloud. */
export function safetyNumberRows(groups: readonly string[]): string[] {
  const rows: string[] = []
  for (let i = 0; i < groups.length; i += 4) rows.push(groups.slice(i, i + 4).join(' '))
  return rows
}

/** What the terminal says when the user writes to someone they blocked. */
export function blockedWarning(peer: string): string {
  return `you blocked ${peer}: nothing is sent to them. /unblock ${peer} to write again.`
}

export function keyChangeWarning(peer: string): string {
  return `${peer}'s identity key has changed. This can mean ${peer} reinstalled, or that someone is intercepting. Compare safety numbers (/verify ${peer}), or accept the new key with /accept-key ${peer}. Sending to ${peer} is blocked until then.`
}

/**
 * What starting over (`reinstall`) does, said before it is done: the interactive client shows these
 * lines and asks for confirmation, and the script command repeats the gist once it is done.
 */
export function reinstallWarning(username: string): string[] {
  return [
    `This replaces ${username}'s keys with new ones made on this device. Do it only if the device that held them is lost or wiped.`,
    `Your contacts will be told your safety number changed: each must accept the new one before writing to you again.`,
    'Messages sent to the old keys cannot be read here: this device asks their senders to send them again, which their app does once they accept the new key (for messages up to a week old).',
    `The old device, if it still exists, can no longer sign in as ${username}; its history stays there.`,
  ]
}

/** What the terminal says where a contact deleted their account (the core's sentence, made safe). */
export function accountDeletedWarning(peer: string): string {
  return safeText(accountDeletedText(peer))
}

/**
 * What deleting one's own account does, said before it is done: the interactive client shows these
 * lines and asks for the name and the password.
 */
export function deleteAccountWarning(username: string): string[] {
  return [
    `This deletes ${username} on the server for good: its keys, its session, and the messages waiting for it or sent by it and not yet delivered.`,
    `Everything of ${username} on this device goes too: conversations, contacts and keys. It cannot be undone.`,
    `Your contacts will see that the account was deleted. The server holds the name ${username} so that nobody else can register it for a while (90 days by default).`,
  ]
}

/** Terminal rows a text takes at this width (a rough count: one column per code point). */
export function rowsFor(text: string, width: number): number {
  return Math.max(1, Math.ceil(Array.from(text).length / Math.max(1, width)))
}

/**
 * A message line as it is rendered, "time author: text mark", or for a notice "time ⚠ sentence"
 * (the sentence names the sender; an author before it would read as if they had written it).
 */
export function messageLineText(line: MessageLine): string {
  if (line.notice) return `${line.time} ${NOTICE_MARK} ${line.text}`
  return `${line.time} ${line.author}: ${line.text}${line.mark ? ` ${line.mark}` : ''}`
}

/** How many of the newest lines fit in `rows` rows of `width` columns (at least one). */
export function newestThatFit(texts: readonly string[], rows: number, width: number): number {
  let used = 0
  let count = 0
  for (let i = texts.length - 1; i >= 0; i--) {
    used += rowsFor(texts[i] as string, width)
    if (used > rows && count > 0) break
    count++
  }
  return count
}
