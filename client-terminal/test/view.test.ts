import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  type ContactView,
  type MessageKind,
  type MessageView,
  noticeText,
} from '../../shared/client/chat-client.js'
import {
  contactLine,
  DELIVERY_MARKS,
  formatTime,
  formatTimestamp,
  messageLine,
  messageLineText,
  newestThatFit,
  rowsFor,
  safeText,
  safetyNumberRows,
  terminalJson,
} from '../view.js'

const NOW = Date.UTC(2027, 0, 15, 12, 0, 0)

/** C0 and C1 controls, DEL, the explicit bidirectional controls, line separators and lone surrogates. */
function actsOnTerminal(char: string): boolean {
  const code = char.codePointAt(0) as number
  return (
    code < 0x20 ||
    (code >= 0x7f && code <= 0x9f) ||
    (code >= 0x202a && code <= 0x202e) ||
    (code >= 0x2066 && code <= 0x2069) ||
    code === 0x2028 ||
    code === 0x2029 ||
    (code >= 0xd800 && code <= 0xdfff)
  )
}

/** Any code point, and often the ones a hostile sender would use. */
const hostileCharacter = fc.oneof(
  fc.integer({ min: 0, max: 0x9f }).map((code) => String.fromCharCode(code)),
  fc.constantFrom('\u202A', '\u202E', '\u2066', '\u2069', '\u200F', '\u2028', '\uD800', '\uDC00', '😀', 'ש'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
)

describe('view models', () => {
  it('marks each delivery state', () => {
    expect(DELIVERY_MARKS).toEqual({
      sending: '…',
      accepted: '✓',
      delivered: '✓✓',
      failed: '✗',
      received: '',
    })
  })

  it('shows the time for today and the date for other days', () => {
    expect(formatTime(Date.UTC(2027, 0, 15, 9, 5), NOW, 'UTC')).toBe('09:05')
    expect(formatTime(Date.UTC(2027, 0, 14, 23, 59), NOW, 'UTC')).toBe('2027-01-14 23:59')
    // The same instant is "today" or not depending on the zone.
    expect(formatTime(Date.UTC(2027, 0, 15, 1, 0), NOW, 'America/New_York')).toBe('2027-01-14 20:00')
    expect(formatTimestamp(Date.UTC(2027, 0, 15, 9, 5, 7), 'UTC')).toBe('2027-01-15 09:05:07')
  })

  it('neutralises control characters, keeping ordinary text and emoji', () => {
    expect(safeText('plain 😀 ünïcödé')).toBe('plain 😀 ünïcödé')
    expect(safeText('a\u001b[31mred\u001b[0m')).toBe('a\uFFFD[31mred\uFFFD[0m')
    expect(safeText('bell\u0007 c1\u009b del\u007f')).toBe('bell\uFFFD c1\uFFFD del\uFFFD')
    expect(safeText('two\nlines\r\nhere')).toBe('two lines here')
    expect(safeText('two\nlines\r\nhere', { keepNewlines: true })).toBe('two\nlines\nhere')
    expect(safeText('tab\there')).toBe('tab    here')
  })

  it('shows explicit bidirectional controls and lone surrogates as U+FFFD, keeping the implicit marks', () => {
    expect(safeText('invoice\u202Efdp.exe')).toBe('invoice\uFFFDfdp.exe')
    expect(safeText('\u2066isolated\u2069')).toBe('\uFFFDisolated\uFFFD')
    expect(safeText('שלום\u200F, 123')).toBe('שלום\u200F, 123')
    expect(safeText('half \uD800 pair')).toBe('half \uFFFD pair')
  })

  it('never lets a line be overwritten: a carriage return alone ends up a space (or a line break)', () => {
    expect(safeText('pay alice\rpay mallory')).toBe('pay alice pay mallory')
    expect(safeText('pay alice\rpay mallory', { keepNewlines: true })).toBe('pay alice\npay mallory')
  })

  it('leaves nothing a terminal acts on in any string: no C0 or C1 control, no DEL, no bidi control', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: hostileCharacter, maxLength: 120 }),
        fc.boolean(),
        (text, keepNewlines) => {
          const shown = safeText(text, { keepNewlines })
          return Array.from(shown).every((char) => !actsOnTerminal(char) || (keepNewlines && char === '\n'))
        },
      ),
    )
  })

  it('prints JSON that carries the exact text, with every such character escaped', () => {
    const text = 'a\u001b[2J b\u009b31m c\u202Ed \u2028 e\u007f \uD800'
    const line = terminalJson({ text })
    expect(JSON.parse(line)).toEqual({ text })
    expect(Array.from(line).some(actsOnTerminal)).toBe(false)
    fc.assert(
      fc.property(fc.string({ unit: hostileCharacter, maxLength: 120 }), (value) => {
        const printed = terminalJson({ value })
        return JSON.parse(printed).value === value && !Array.from(printed).some(actsOnTerminal)
      }),
    )
  })

  it('describes a contact in one line', () => {
    const base: ContactView = {
      username: 'bob',
      verified: false,
      identityChanged: false,
      accountDeleted: false,
      unread: 0,
      lastMessageAt: undefined,
      online: false,
      blocked: false,
    }
    expect(contactLine(base)).toMatchObject({ presence: '○', unread: '', badge: '' })
    expect(contactLine({ ...base, online: true, unread: 3, verified: true })).toMatchObject({
      presence: '●',
      unread: '(3)',
      badge: '✔',
    })
    expect(contactLine({ ...base, verified: true, identityChanged: true })).toMatchObject({
      badge: '⚠',
      warning: true,
    })
  })

  it('lays out the 60 digits as three rows of four groups', () => {
    const groups = Array.from({ length: 12 }, (_, i) => String(i).repeat(5))
    expect(safetyNumberRows(groups)).toEqual([
      '00000 11111 22222 33333',
      '44444 55555 66666 77777',
      '88888 99999 1010101010 1111111111',
    ])
  })

  it('counts wrapped rows and keeps the newest lines that fit', () => {
    expect(rowsFor('', 10)).toBe(1)
    expect(rowsFor('x'.repeat(10), 10)).toBe(1)
    expect(rowsFor('x'.repeat(11), 10)).toBe(2)
    const lines = ['a'.repeat(25), 'b', 'c'.repeat(15), 'd']
    expect(newestThatFit(lines, 10, 10)).toBe(4)
    expect(newestThatFit(lines, 4, 10)).toBe(3)
    expect(newestThatFit(lines, 3, 10)).toBe(2)
    // The newest line is shown even when it alone is too tall.
    expect(newestThatFit(['x'.repeat(100)], 2, 10)).toBe(1)
  })

  describe('a notice in place of a message', () => {
    const KINDS: readonly Exclude<MessageKind, 'text'>[] = [
      'undecryptable',
      'unreadable',
      'unsupported',
      'lost',
      'outdated',
    ]
    const entry = (peer: string, kind: MessageKind): MessageView => ({
      id: 'n1',
      peer,
      direction: 'in',
      text: kind === 'text' ? 'hello' : '',
      sentAt: Date.UTC(2027, 0, 15, 9, 5),
      serverAt: Date.UTC(2027, 0, 15, 9, 5),
      state: 'received',
      order: 1,
      kind,
    })

    it.each(KINDS)('%s: a line marked as a notice, whose text is the sentence', (kind) => {
      const line = messageLine(entry('bob', kind), NOW, 'UTC')
      expect(line).toMatchObject({ notice: true, outgoing: false, mark: '', failed: false, time: '09:05' })
      expect(line.text).toBe(noticeText({ kind, peer: 'bob' }))
      expect(line.text).toContain('bob')
      // As rendered: the time and the sentence after the ⚠, with no author before it.
      expect(messageLineText(line)).toBe(`09:05 ⚠ ${line.text}`)
    })

    it('a text message is not one', () => {
      const line = messageLine(entry('bob', 'text'), NOW, 'UTC')
      expect(line).toMatchObject({ notice: false, text: 'hello', author: 'bob' })
      expect(messageLineText(line)).toBe('09:05 bob: hello')
    })

    it("strips control characters from a hostile sender's name, in the sentence and as the author", () => {
      const peer = 'mal\u001b]0;owned\u0007lory\u001b[2J'
      const safe = 'mal\uFFFD]0;owned\uFFFDlory\uFFFD[2J'
      const line = messageLine(entry(peer, 'lost'), NOW, 'UTC')
      expect(line.notice).toBe(true)
      expect(line.text).toBe(
        `A message from ${safe} could not be decrypted, and ${safe}'s device no longer has it to send again.`,
      )
      expect(line.author).toBe(safe)
      // biome-ignore lint/suspicious/noControlCharactersInRegex: looks for what must not be there
      expect(messageLineText(line)).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/)
    })
  })
})
