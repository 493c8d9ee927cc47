/** Dates and times as the conversation shows them, in the user's locale. */

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' })
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long' })
const dateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' })
const shortDateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' })
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' })

const DAY_MS = 24 * 60 * 60 * 1000

/** Local midnight of the day `time` falls on: the key of a day separator. */
export function dayStart(time: number): number {
  const date = new Date(time)
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime()
}

export function formatTime(time: number): string {
  return timeFormat.format(time)
}

export function formatFull(time: number): string {
  return fullFormat.format(time)
}

/** "Today", "Yesterday", a weekday within the last week, else the date. */
export function formatDay(time: number, now = Date.now()): string {
  const days = Math.round((dayStart(now) - dayStart(time)) / DAY_MS)
  if (days === 0) return 'Today'
  if (days === 1) return 'Yesterday'
  if (days > 1 && days < 7) return weekdayFormat.format(time)
  return dateFormat.format(time)
}

/** The contact list's short form: a time today, else "Yesterday" or a short date. */
export function formatListTime(time: number, now = Date.now()): string {
  const days = Math.round((dayStart(now) - dayStart(time)) / DAY_MS)
  if (days === 0) return formatTime(time)
  if (days === 1) return 'Yesterday'
  return shortDateFormat.format(time)
}

/** Avatar colours: white text on each keeps at least 4.5:1. */
const AVATAR_COLOURS = [
  '#2f55d4',
  '#7a3fc4',
  '#b0306a',
  '#b3421f',
  '#8a5a00',
  '#2b7a3d',
  '#0f7285',
  '#5b4bc4',
]

export function avatarColour(username: string): string {
  let hash = 0
  for (const char of username) hash = (hash * 31 + (char.codePointAt(0) ?? 0)) >>> 0
  return AVATAR_COLOURS[hash % AVATAR_COLOURS.length] as string
}
