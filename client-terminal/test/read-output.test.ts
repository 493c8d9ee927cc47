/**
 * What `read` and `history` print for each entry (the commands themselves, against the real server,
 * are in e2e.test.ts and history.test.ts): with --json a line carrying the entry's kind and, for a
 * notice, its sentence as the text; in plain text the time, the sender and the text or sentence,
 * safe to print.
 */
import { describe, expect, it } from 'vitest'
import { type MessageKind, type MessageView, noticeText } from '../../shared/client/chat-client.js'
import { historyLine, historyRecord, readLine, readRecord } from '../cli.js'

const AT = Date.UTC(2027, 0, 15, 9, 5, 7)

function entry(kind: MessageKind, overrides: Partial<MessageView> = {}): MessageView {
  return {
    id: 'id-1',
    peer: 'bob',
    direction: 'in',
    text: kind === 'text' ? 'hello alice' : '',
    sentAt: AT - 1000,
    serverAt: AT,
    state: 'received',
    order: 7,
    kind,
    ...overrides,
  }
}

const NOTICE_KINDS: readonly Exclude<MessageKind, 'text'>[] = [
  'undecryptable',
  'unreadable',
  'unsupported',
  'lost',
  'outdated',
]

describe('read --json', () => {
  it.each(NOTICE_KINDS)('prints a %s notice with its kind and its sentence as the text', (kind) => {
    const printed = JSON.parse(
      JSON.stringify(readRecord(entry(kind), { verified: true, identityChanged: false })),
    )
    expect(printed).toEqual({
      from: 'bob',
      id: 'id-1',
      kind,
      text: noticeText({ kind, peer: 'bob' }),
      sentAt: AT - 1000,
      receivedAt: AT,
      verified: true,
      identityChanged: false,
      device: 1,
    })
  })

  it('prints a message with kind "text" and its own text', () => {
    expect(readRecord(entry('text'), { verified: false, identityChanged: true })).toMatchObject({
      kind: 'text',
      text: 'hello alice',
      verified: false,
      identityChanged: true,
    })
  })

  it('escapes what a hostile sender put in the name: JSON carries no raw control character', () => {
    const line = JSON.stringify(
      readRecord(entry('lost', { peer: 'mal\u001b[2Jlory' }), { verified: false, identityChanged: false }),
    )
    expect(line).not.toContain('\u001b')
    expect(JSON.parse(line).text).toContain('mal\u001b[2Jlory')
  })
})

describe('read', () => {
  it('prints a notice as its sentence, after the time and the sender', () => {
    expect(readLine(entry('undecryptable'), 'UTC')).toBe(
      '2027-01-15 09:05:07 bob: A message from bob could not be decrypted. Asked bob to send it again.\n',
    )
    expect(readLine(entry('lost'), 'UTC')).toBe(
      "2027-01-15 09:05:07 bob: A message from bob could not be decrypted, and bob's device no longer has it to send again.\n",
    )
  })

  it('prints a message as its text, later lines indented', () => {
    expect(readLine(entry('text', { text: 'two\nlines' }), 'UTC')).toBe(
      '2027-01-15 09:05:07 bob: two\n    lines\n',
    )
  })

  it("strips control characters from a hostile sender's name, as the sender and in the sentence", () => {
    const line = readLine(entry('unreadable', { peer: 'mal\u001b]0;owned\u0007lory' }), 'UTC')
    const safe = 'mal\uFFFD]0;owned\uFFFDlory'
    expect(line).toBe(
      `2027-01-15 09:05:07 ${safe}: A message from ${safe} could not be read: it decrypted, but its content was damaged.\n`,
    )
  })
})

describe('history --json', () => {
  it('prints an incoming entry with the fields `read --json` gives it, its direction, and no state', () => {
    expect(JSON.parse(JSON.stringify(historyRecord(entry('text'), 'alice')))).toEqual({
      direction: 'in',
      from: 'bob',
      to: 'alice',
      id: 'id-1',
      kind: 'text',
      text: 'hello alice',
      sentAt: AT - 1000,
      receivedAt: AT,
      device: 1,
    })
  })

  it('prints an outgoing entry from this account, with its delivery state', () => {
    const sent = entry('text', { direction: 'out', text: 'hi bob', state: 'delivered' })
    expect(JSON.parse(JSON.stringify(historyRecord(sent, 'alice')))).toEqual({
      direction: 'out',
      from: 'alice',
      to: 'bob',
      id: 'id-1',
      kind: 'text',
      text: 'hi bob',
      sentAt: AT - 1000,
      receivedAt: AT,
      state: 'delivered',
      device: 1,
    })
    // Sent from another of this account's devices: that device's id.
    expect(historyRecord({ ...sent, device: 3 }, 'alice').device).toBe(3)
    // Not yet accepted: no server time, as `read --json` leaves out one it does not know.
    const sending = entry('text', { direction: 'out', state: 'sending', serverAt: undefined })
    expect(JSON.parse(JSON.stringify(historyRecord(sending, 'alice')))).not.toHaveProperty('receivedAt')
    expect(historyRecord(sending, 'alice').state).toBe('sending')
  })

  it('prints a notice with its kind and its sentence as the text, as `read --json` does', () => {
    expect(historyRecord(entry('lost'), 'alice')).toMatchObject({
      direction: 'in',
      kind: 'lost',
      text: noticeText({ kind: 'lost', peer: 'bob' }),
    })
  })
})

describe('history', () => {
  it('prints what arrived as `read` does, and what this account sent under its name, with the delivery mark', () => {
    expect(historyLine(entry('text', { text: 'two\nlines' }), 'alice', 'UTC')).toBe(
      '2027-01-15 09:05:07 bob: two\n    lines\n',
    )
    // Ours at our own clock's time of writing (sentAt), as both UIs show it.
    const sent = entry('text', { direction: 'out', text: 'hi bob', state: 'accepted' })
    expect(historyLine(sent, 'alice', 'UTC')).toBe('2027-01-15 09:05:06 alice: hi bob ✓\n')
    expect(historyLine({ ...sent, state: 'delivered' }, 'alice', 'UTC')).toBe(
      '2027-01-15 09:05:06 alice: hi bob ✓✓\n',
    )
    expect(historyLine({ ...sent, state: 'failed' }, 'alice', 'UTC')).toBe(
      '2027-01-15 09:05:06 alice: hi bob ✗\n',
    )
  })

  it('prints a notice as its sentence and strips control characters from a hostile name', () => {
    const line = historyLine(entry('unreadable', { peer: 'mal\u001b]0;owned\u0007lory' }), 'alice', 'UTC')
    const safe = 'mal\uFFFD]0;owned\uFFFDlory'
    expect(line).toBe(
      `2027-01-15 09:05:07 ${safe}: A message from ${safe} could not be read: it decrypted, but its content was damaged.\n`,
    )
  })
})
