/**
 * The Ink application through ink-testing-library: keystrokes in, frames out, with the client core
 * replaced by FakeChat. Waits poll for what the frame should show (vi.waitFor), never for time.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { render } from 'ink-testing-library'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { MessageView } from '../../shared/client/chat-client.js'
import { ClientError, ClientErrorCode } from '../../shared/client/errors.js'
import { App } from '../app.js'
import { KeyChangeWarning } from '../components/key-change-warning.js'
import { LineInput } from '../components/line-input.js'
import { MessageList } from '../components/message-list.js'
import { PromptInput } from '../components/prompt-input.js'
import { Controller } from '../controller.js'
import { FAKE_SAFETY_GROUPS, FakeBackend, type FakeChat } from './fake-chat.js'

const NOW = Date.UTC(2027, 0, 15, 12, 0, 0)
const ENTER = '\r'
const UP = '\u001B[A'
const DOWN = '\u001B[B'
const ESCAPE = '\u001B'
const LEFT = '\u001B[D'
const HOME = '\u001B[H'
const END = '\u001B[F'
const BACKSPACE = '\u007F'
const CTRL_U = '\u0015'
const CTRL_K = '\u000B'
const CTRL_W = '\u0017'

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve))
}

let unmount: (() => void) | undefined
afterEach(() => {
  unmount?.()
  unmount = undefined
})

async function start(setup: (backend: FakeBackend) => void = () => {}) {
  const backend = new FakeBackend()
  setup(backend)
  const controller = new Controller(backend)
  controller.start()
  const app = render(<App controller={controller} now={() => NOW} timeZone="UTC" />)
  unmount = app.unmount
  await vi.waitFor(() => expect(app.lastFrame()).toContain('> '))
  // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the colours from the frame
  const frame = () => (app.lastFrame() ?? '').replace(/\u001b\[[0-9;]*m/g, '')
  const type = async (text: string) => {
    // React runs the input hooks' effects (which subscribe to keystrokes) on the next turns of the
    // event loop after a render: let them run before each keystroke.
    await settle()
    app.stdin.write(text)
    await settle()
  }
  const shows = (text: string) => vi.waitFor(() => expect(frame()).toContain(text))
  const enter = async (line: string) => {
    await type(line)
    await shows(`> ${line}`)
    await type(ENTER)
    await controller.idle()
  }
  return { backend, controller, app, frame, type, shows, enter }
}

async function signedIn(setup: (backend: FakeBackend, chat: FakeChat) => void = () => {}) {
  let chat: FakeChat | undefined
  const ui = await start((backend) => {
    chat = backend.addAccount('alice', 'correct horse battery')
    setup(backend, chat)
  })
  await ui.enter('/login')
  await ui.shows('Password for alice:')
  await ui.type('correct horse battery')
  await ui.type(ENTER)
  await ui.shows('alice @ https://chat.example:8443')
  await ui.controller.idle()
  return { ...ui, chat: chat as FakeChat }
}

function message(partial: Partial<MessageView> & Pick<MessageView, 'id' | 'text'>): MessageView {
  return {
    peer: 'bob',
    direction: 'out',
    sentAt: NOW - 60_000,
    serverAt: NOW - 60_000,
    state: 'accepted',
    order: 1,
    kind: 'text',
    ...partial,
  }
}

describe('MessageList', () => {
  it('shows time, author, text and a delivery mark for each state', () => {
    const messages: MessageView[] = [
      message({
        id: 'a',
        text: 'still sending',
        state: 'sending',
        serverAt: undefined,
        sentAt: NOW - 5 * 60_000,
      }),
      message({
        id: 'b',
        text: 'on the server',
        state: 'accepted',
        sentAt: Date.UTC(2027, 0, 15, 11, 1),
        serverAt: Date.UTC(2027, 0, 15, 12, 1),
      }),
      message({
        id: 'c',
        text: 'arrived',
        state: 'delivered',
        sentAt: Date.UTC(2027, 0, 15, 11, 2),
        serverAt: Date.UTC(2027, 0, 15, 12, 2),
      }),
      // Our own messages show when we wrote them (the core's rule), not when the server took them.
      message({
        id: 'd',
        text: 'refused',
        state: 'failed',
        sentAt: Date.UTC(2027, 0, 15, 11, 3),
        serverAt: Date.UTC(2027, 0, 15, 12, 3),
      }),
      message({
        id: 'e',
        text: 'hello alice',
        direction: 'in',
        state: 'received',
        serverAt: Date.UTC(2027, 0, 14, 9, 30),
      }),
    ]
    const { lastFrame, unmount: stop } = render(
      <MessageList
        peer="bob"
        verified={false}
        messages={messages}
        maxRows={10}
        width={80}
        now={NOW}
        timeZone="UTC"
      />,
    )
    const lines = (lastFrame() ?? '').split('\n')
    expect(lines[0]).toContain('Conversation with bob')
    expect(lines[0]).toContain('not verified')
    expect(lines).toContain('11:55 you: still sending …')
    expect(lines).toContain('11:01 you: on the server ✓')
    expect(lines).toContain('11:02 you: arrived ✓✓')
    expect(lines).toContain('11:03 you: refused ✗')
    // Another day gets its date; incoming messages carry no mark.
    expect(lines).toContain('2027-01-14 09:30 bob: hello alice')
    stop()
  })

  it('shows only the newest messages that fit, and says how many are hidden', () => {
    const messages = Array.from({ length: 8 }, (_, i) =>
      message({ id: `m${i}`, text: `number ${i}`, order: i }),
    )
    const { lastFrame, unmount: stop } = render(
      <MessageList peer="bob" verified messages={messages} maxRows={4} width={80} now={NOW} timeZone="UTC" />,
    )
    const frame = lastFrame() ?? ''
    expect(frame).toContain('✔ verified')
    expect(frame).toContain('5 earlier')
    expect(frame).not.toContain('number 4')
    expect(frame).toContain('number 5')
    expect(frame).toContain('number 7')
    stop()
  })

  it('shows a notice as its time and sentence after a ⚠, and wraps long lines beside the time and author', () => {
    const long = 'a long message '.repeat(8).trim()
    const messages: MessageView[] = [
      message({
        id: 'a',
        text: long,
        direction: 'in',
        state: 'received',
        serverAt: Date.UTC(2027, 0, 15, 11, 1),
      }),
      message({
        id: 'b',
        text: '',
        kind: 'lost',
        direction: 'in',
        state: 'received',
        serverAt: Date.UTC(2027, 0, 15, 11, 2),
      }),
      message({
        id: 'c',
        text: '',
        kind: 'unsupported',
        direction: 'in',
        state: 'received',
        serverAt: Date.UTC(2027, 0, 15, 11, 3),
      }),
    ]
    const { lastFrame, unmount: stop } = render(
      <MessageList
        peer="bob"
        verified
        messages={messages}
        maxRows={10}
        width={100}
        now={NOW}
        timeZone="UTC"
      />,
    )
    // ink-testing-library's terminal is 100 columns wide.
    const lines = (lastFrame() ?? '').split('\n').map((line) => line.trimEnd())
    const first = lines.findIndex((line) => line.startsWith('11:01 '))
    expect(lines[first]).toMatch(/^11:01 bob: a long message/)
    // The rest of the text continues under the text, not under the time.
    expect(lines[first + 1]).toMatch(/^ {11}a long message/)
    expect(`${lines[first]} ${lines[first + 1]?.trim()}`).toBe(`11:01 bob: ${long}`)
    expect(lines[first + 2]).toBe(
      "11:02 ⚠ A message from bob could not be decrypted, and bob's device no longer has it to send again.",
    )
    expect(lines[first + 3]).toBe(
      '11:03 ⚠ bob sent a kind of message this version cannot display. Update secure-chat to see it.',
    )
    stop()
  })

  it('neutralises terminal control sequences in message text', () => {
    const hostile = message({
      id: 'x',
      direction: 'in',
      state: 'received',
      text: 'hi\u001b[2J\u001b]0;owned\u0007 there',
    })
    const { lastFrame, unmount: stop } = render(
      <MessageList
        peer="bob"
        verified={false}
        messages={[hostile]}
        maxRows={5}
        width={80}
        now={NOW}
        timeZone="UTC"
      />,
    )
    const frame = lastFrame() ?? ''
    expect(frame).not.toContain('\u001b[2J')
    expect(frame).not.toContain('\u0007')
    expect(frame).toContain('hi\uFFFD[2J\uFFFD]0;owned\uFFFD there')
    stop()
  })
})

describe('KeyChangeWarning', () => {
  it('says what happened and which commands lift the block', () => {
    const { lastFrame, unmount: stop } = render(<KeyChangeWarning peer="bob" />)
    const frame = (lastFrame() ?? '').replace(/\s+/g, ' ')
    expect(frame).toContain('SAFETY NUMBER CHANGED')
    expect(frame).toContain("bob's identity key has changed")
    expect(frame).toContain('/verify bob')
    expect(frame).toContain('/accept-key bob')
    expect(frame).toContain('blocked')
    stop()
  })
})

describe('PromptInput', () => {
  it('masks a password: stars on screen, the real value on submit, Esc cancels', async () => {
    const submitted: string[] = []
    let cancelled = 0
    const {
      lastFrame,
      stdin,
      unmount: stop,
    } = render(
      <PromptInput
        label="Password for alice: "
        masked
        onSubmit={(value) => submitted.push(value)}
        onCancel={() => cancelled++}
      />,
    )
    stdin.write('hunter2-secret')
    await vi.waitFor(() => expect(lastFrame()).toContain('Password for alice: **************'))
    expect(lastFrame()).not.toContain('hunter2')
    stdin.write(ENTER)
    await vi.waitFor(() => expect(submitted).toEqual(['hunter2-secret']))
    stdin.write(ESCAPE)
    await vi.waitFor(() => expect(cancelled).toBe(1))
    stop()
  })
})

describe('App', () => {
  it('starts signed out and says how to begin', async () => {
    const ui = await start()
    await ui.shows('signed out')
    await ui.shows('No account on this device for this server yet: /register')
  })

  it('logs in through a masked password prompt; the password never reaches the screen', async () => {
    const ui = await signedIn()
    expect(ui.app.frames.join('\n')).not.toContain('correct horse battery')
    await ui.shows('● online')
    await ui.shows('signed in as alice')
    expect(ui.backend.passwordsSeen).toEqual(['correct horse battery'])
  })

  it('reports a wrong password and stays signed out', async () => {
    const ui = await start((backend) => backend.addAccount('alice', 'correct horse battery'))
    await ui.enter('/login alice')
    await ui.type('wrong')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('✗ wrong password')
    expect(ui.frame()).toContain('signed out')
  })

  it('registers with the password asked twice', async () => {
    const ui = await start()
    await ui.enter('/register Dave')
    await ui.shows('New password for dave:')
    await ui.type('a long passphrase')
    await ui.type(ENTER)
    await ui.shows('Repeat the password:')
    await ui.type('a long passphrase')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('dave @ https://chat.example:8443')
    expect(ui.backend.listAccounts()).toEqual(['dave'])
  })

  it('changes the password with /password: current, new twice, masked, then whether to end other sessions', async () => {
    const ui = await signedIn()
    await ui.enter('/password')
    await ui.shows('Current password of alice:')
    await ui.type('correct horse battery')
    await ui.type(ENTER)
    await ui.shows('New password:')
    await ui.type('a brand new passphrase')
    await ui.type(ENTER)
    await ui.shows('Repeat the new password:')
    await ui.type('a brand new passphrase')
    await ui.type(ENTER)
    await ui.shows('Also sign out your other sessions? (yes/no)')
    await ui.type('yes')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('password changed, here and on the server; 1 other session signed out')
    expect(ui.chat.passwordChanges).toEqual([
      { current: 'correct horse battery', next: 'a brand new passphrase', endOtherSessions: true },
    ])
    expect(ui.app.frames.join('\n')).not.toContain('a brand new passphrase')
  })

  it('changes nothing when the two new passwords differ', async () => {
    const ui = await signedIn()
    await ui.enter('/password')
    await ui.type('correct horse battery')
    await ui.type(ENTER)
    await ui.type('one new passphrase')
    await ui.type(ENTER)
    await ui.type('another new passphrase')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('the two new passwords differ: nothing was changed')
    expect(ui.chat.passwordChanges).toEqual([])
  })

  it('starts over with /reinstall only after a warning, a "yes" and the masked password', async () => {
    const ui = await start((backend) => {
      backend.elsewhere.set('bob', 'bobs real passphrase')
      backend.addAccount('alice', 'correct horse battery')
    })
    // The warning comes first, and nothing happens without a "yes".
    await ui.enter('/reinstall Bob')
    await ui.shows('⚠ Start over as bob on this device?')
    const warning = ui.frame().replace(/\s+/g, ' ')
    expect(warning).toContain("This replaces bob's keys with new ones made on this device")
    expect(warning).toContain('Your contacts will be told your safety number changed')
    expect(warning).toContain('Messages sent to the old keys cannot be read here')
    await ui.shows('Start over as bob on this device, with new keys? (yes/no)')
    await ui.type('no')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('did not start over as bob: nothing was changed')
    expect(ui.frame()).not.toContain('Start over as bob on this device?')
    expect(ui.backend.passwordsSeen).toEqual([])

    // "yes", then a password the server refuses: its reason is shown, and nothing is made here.
    await ui.enter('/reinstall bob')
    await ui.shows('(yes/no)')
    await ui.type('yes')
    await ui.type(ENTER)
    await ui.shows("Password of bob (the account's current one):")
    await ui.type('not it at all')
    await ui.shows("Password of bob (the account's current one): *************")
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('✗ the server refused this password for bob')
    expect(ui.frame().replace(/\s+/g, ' ')).toContain(
      'got a combination that does not match): nothing was changed. /reinstall bob to try again',
    )
    expect(ui.frame()).not.toContain('Start over as bob on this device?')
    expect(ui.frame()).toContain('signed out')
    expect(ui.backend.listAccounts()).toEqual(['alice'])

    // The right one: signed in with new keys, and told what that means for contacts.
    await ui.enter('/reinstall bob')
    await ui.type('y')
    await ui.type(ENTER)
    await ui.shows('Password of bob')
    await ui.type('bobs real passphrase')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('bob @ https://chat.example:8443')
    await ui.shows('started over as bob with new keys')
    expect(ui.frame()).not.toContain('Start over as bob on this device?')
    expect(ui.backend.listAccounts()).toEqual(['alice', 'bob'])
    expect(ui.backend.passwordsSeen).toEqual(['not it at all', 'bobs real passphrase'])
    expect(ui.app.frames.join('\n')).not.toContain('passphrase')
    expect(ui.app.frames.join('\n')).not.toContain('not it at all')
  })

  it('/delete-account warns, needs the typed name, then the masked password; a refusal deletes nothing', async () => {
    const ui = await signedIn()
    // The warning first; a name that is not the account's cancels.
    await ui.enter('/delete-account')
    await ui.shows('⚠ Delete the account alice?')
    const warning = ui.frame().replace(/\s+/g, ' ')
    expect(warning).toContain('This deletes alice on the server for good')
    expect(warning).toContain('Everything of alice on this device goes too')
    await ui.shows('Type alice to delete this account for good (anything else cancels):')
    await ui.type('bob')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('alice was not deleted: nothing was changed')
    expect(ui.chat.deleted).toBe(false)

    // The name, then a wrong password: the server's refusal, and still signed in.
    await ui.enter('/delete-account')
    await ui.type('Alice')
    await ui.type(ENTER)
    await ui.shows('Password of alice, to delete it:')
    await ui.type('not it at all')
    await ui.shows('Password of alice, to delete it: *************')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('✗ the server refused this password for alice: nothing was deleted')
    expect(ui.chat.deleted).toBe(false)
    expect(ui.backend.listAccounts()).toEqual(['alice'])
    expect(ui.frame()).toContain('alice @ https://chat.example:8443')

    // The right one: deleted there, its files removed here, signed out.
    await ui.enter('/delete-account')
    await ui.type('alice')
    await ui.type(ENTER)
    await ui.shows('Password of alice, to delete it:')
    await ui.type('correct horse battery')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('deleted alice: the server no longer has the account')
    expect(ui.chat.deleted).toBe(true)
    expect(ui.chat.closed).toBe(true)
    expect(ui.backend.removed).toEqual(['alice'])
    expect(ui.backend.listAccounts()).toEqual([])
    expect(ui.frame()).toContain('signed out')
    expect(ui.app.frames.join('\n')).not.toContain('correct horse battery')
  })

  it('marks a contact who deleted their account: a badge, a notice in the conversation, and no sending', async () => {
    const ui = await signedIn()
    await ui.enter('/chat bob')
    await ui.shows('Conversation with bob')
    ui.chat.contactsByName.get('bob')!.accountDeleted = true
    ui.chat.events.emit('account-deleted', { peer: 'bob' })
    await ui.controller.idle()
    await ui.shows('✕ ACCOUNT DELETED')
    await ui.shows('bob ✕')
    expect(ui.frame().replace(/\s+/g, ' ')).toContain(
      'bob deleted their account. This conversation stays here',
    )
    await ui.enter('still there?')
    expect(await ui.chat.history('bob')).toEqual([])
  })

  it('says when the server reports this account deleted (here or on another device), and how to erase its copy', async () => {
    const ui = await signedIn()
    ui.chat.events.emit('problem', {
      code: 'E2E_ERR_ACCOUNT_DELETED',
      message: 'expected a live session, got one of an account that was deleted (on this device or another)',
    })
    ui.chat.setConnection('logged-out')
    await ui.controller.idle()
    await ui.shows('this account was deleted, here or on another device')
    expect(ui.frame().replace(/\s+/g, ' ')).toContain('/delete-account erases them')
    // Not the usual "sign in again": a log-in could only fail.
    expect(ui.frame()).not.toContain('/login to sign in again')
  })

  it('says when another device removed this one, and that its conversations stay here', async () => {
    const ui = await signedIn()
    ui.chat.events.emit('problem', {
      code: 'E2E_ERR_DEVICE_REMOVED',
      message:
        'expected a live session, got one of a device removed from its account (from another of its devices)',
    })
    ui.chat.setConnection('logged-out')
    await ui.controller.idle()
    await ui.shows('this device was removed from the account on another of its devices')
    expect(ui.frame().replace(/\s+/g, ' ')).toContain('its conversations are still on this device')
    expect(ui.frame().replace(/\s+/g, ' ')).toContain('secure-chat erase-local')
    // Not the usual "sign in again": a log-in could only fail.
    expect(ui.frame()).not.toContain('/login to sign in again')
  })

  it('refuses /reinstall for an account this device holds, and while signed in', async () => {
    const ui = await start((backend) => backend.addAccount('alice', 'correct horse battery'))
    await ui.enter('/reinstall alice')
    await ui.shows('alice already has an account on this device, with its keys: /login alice')
    expect(ui.frame()).not.toContain('(yes/no)')
    await ui.enter('/login')
    await ui.type('correct horse battery')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.enter('/reinstall bob')
    await ui.shows('signed in as alice: /logout first')
  })

  it('opens a chat, sends, and follows the delivery marks', async () => {
    const ui = await signedIn()
    await ui.enter('/chat bob')
    await ui.shows('Conversation with bob')
    await ui.enter('hello bob')
    await ui.shows('08:00 you: hello bob …')
    const [sent] = await ui.chat.history('bob')
    ui.chat.setDelivery(sent?.id as string, 'accepted')
    await ui.shows('you: hello bob ✓')
    ui.chat.setDelivery(sent?.id as string, 'delivered')
    await ui.shows('you: hello bob ✓✓')
    ui.chat.receive('bob', 'hi alice')
    await ui.shows('08:00 bob: hi alice')
  })

  it('shows a notice with its ⚠ in place of a message, and the message once it takes its place', async () => {
    let gap: MessageView | undefined
    const ui = await signedIn((_backend, chat) => {
      chat.receive('bob', 'before the gap')
      gap = chat.receiveNotice('bob', 'undecryptable')
      chat.receive('bob', 'after the gap')
    })
    const undecryptable = 'A message from bob could not be decrypted. Asked bob to send it again.'
    const lost = "A message from bob could not be decrypted, and bob's device no longer has it to send again."
    // The conversation as one line of text, in order (the panel may wrap long lines).
    const conversation = () => {
      const flat = ui.frame().replace(/\s+/g, ' ')
      return flat.slice(flat.indexOf('Conversation with bob'))
    }
    await ui.enter('/chat bob')
    await ui.shows('bob: after the gap')
    expect(conversation()).toContain(
      `08:00 bob: before the gap 08:00 ⚠ ${undecryptable} 08:00 bob: after the gap`,
    )
    // The sentence names bob: no "bob:" before it, as if he had written it.
    expect(conversation()).not.toContain(`bob: ⚠`)

    // One arrives while the conversation is open.
    const gone = ui.chat.receiveNotice('bob', 'lost')
    await vi.waitFor(() => expect(conversation()).toContain(`08:00 bob: after the gap 08:00 ⚠ ${lost}`))

    // The message arrives after all, in the notice's place; the other notice is taken out.
    ui.chat.arriveInPlace(gap?.id as string, 'the message itself')
    await vi.waitFor(() =>
      expect(conversation()).toContain(
        '08:00 bob: before the gap 08:00 bob: the message itself 08:00 bob: after the gap',
      ),
    )
    expect(conversation()).not.toContain(undecryptable)
    ui.chat.remove('bob', gone.id)
    await vi.waitFor(() => expect(conversation()).not.toContain('⚠'))
    expect(ui.controller.getState().messages.map((shown) => [shown.kind, shown.text])).toEqual([
      ['text', 'before the gap'],
      ['text', 'the message itself'],
      ['text', 'after the gap'],
    ])
  })

  it('sends with /msg to the named user, opening that conversation instead of the current one', async () => {
    const ui = await signedIn()
    await ui.enter('/chat carol')
    await ui.shows('Conversation with carol')
    await ui.enter('/msg Bob hi bob, sent with /msg')
    await ui.shows('Conversation with bob')
    await ui.shows('08:00 you: hi bob, sent with /msg …')
    expect(ui.frame()).not.toContain('Conversation with carol')
    expect(ui.controller.getState().openChat).toBe('bob')
    expect((await ui.chat.history('bob')).map((sent) => sent.text)).toEqual(['hi bob, sent with /msg'])
    expect(await ui.chat.history('carol')).toEqual([])
    // Plain text now goes to bob too.
    await ui.enter('and a second line')
    expect((await ui.chat.history('bob')).map((sent) => sent.text)).toEqual([
      'hi bob, sent with /msg',
      'and a second line',
    ])
    await ui.enter('/msg carol')
    await ui.shows('/msg: expected /msg <user> <text>')
    expect(await ui.chat.history('carol')).toEqual([])
  })

  it('shows the last n messages with /history n, and the default number again without n', async () => {
    const ui = await signedIn((_backend, chat) => {
      for (let i = 1; i <= 6; i++) chat.receive('bob', `note number ${i}`)
    })
    await ui.enter('/history 2')
    await ui.shows('no open conversation: /chat <user> first')
    await ui.enter('/chat bob')
    await ui.shows('bob: note number 6')
    for (let i = 1; i <= 6; i++) expect(ui.frame()).toContain(`bob: note number ${i}`)
    await ui.enter('/history 2')
    await vi.waitFor(() => expect(ui.frame()).not.toContain('note number 4'))
    const shown = ui.frame()
    expect(shown).toContain('bob: note number 5')
    expect(shown).toContain('bob: note number 6')
    for (let i = 1; i <= 4; i++) expect(shown).not.toContain(`note number ${i}`)
    expect(ui.controller.getState().messages.map((shownMessage) => shownMessage.text)).toEqual([
      'note number 5',
      'note number 6',
    ])
    await ui.enter('/history')
    await ui.shows('bob: note number 1')
    expect(ui.controller.getState().messages).toHaveLength(6)
    await ui.enter('/history 0')
    await ui.shows('/history: expected a number of messages from 1 to 1000')
  })

  it('shows the connection state in the header with its own word', async () => {
    const ui = await signedIn()
    const header = () => ui.frame().split('\n')[0] ?? ''
    await vi.waitFor(() => expect(header()).toContain('alice @ https://chat.example:8443 · ● online'))
    ui.chat.setConnection('connecting')
    await vi.waitFor(() => expect(header()).toContain('· ● connecting…'))
    expect(header()).not.toContain('online')
    ui.chat.setConnection('offline')
    await vi.waitFor(() => expect(header()).toContain('· ● offline (reconnecting)'))
    expect(header()).not.toContain('connecting…')
    ui.chat.setConnection('online')
    await vi.waitFor(() => expect(header()).toContain('· ● online'))
    expect(header()).not.toContain('offline')
    ui.chat.setConnection('logged-out')
    await vi.waitFor(() => expect(header()).toContain('· ● signed out by the server: /login again'))
  })

  it('shows unread counts and presence in the contact list, and clears unread when opened', async () => {
    const ui = await signedIn((_backend, chat) => {
      chat.directory.push('carol')
    })
    await ui.enter('/chat bob')
    ui.chat.receive('carol', 'are you there?')
    ui.chat.receive('carol', 'hello?')
    await ui.shows('carol (2)')
    ui.chat.setOnline('carol', true)
    await ui.shows('● carol (2)')
    await ui.enter('/chat carol')
    await ui.shows('Conversation with carol')
    await vi.waitFor(() => expect(ui.frame()).not.toContain('(2)'))
    await ui.shows('carol: hello?')
  })

  it('prints what a hostile server sends (names, errors) with no control or bidi character taking effect', async () => {
    // A name the server made up: a hyperlink (OSC 8), a window title, a cursor move, an override.
    const hostile = 'mal\u001b]8;;https://evil.example\u0007lory\u001b]0;owned\u0007\u001b[2J\u202E'
    const ui = await signedIn((_backend, chat) => {
      chat.directory.push(hostile)
    })
    ui.chat.receive(hostile, 'hi \u001b[1A\rthere \u2066x\u2069')
    await ui.enter('/users mal')
    await ui.shows('Users starting with "mal"')
    await ui.shows('mal\uFFFD]8;;https://evil.example\uFFFDlory\uFFFD]0;owned\uFFFD\uFFFD[2J\uFFFD')
    await ui.enter('/contacts')
    await ui.shows('● mal\uFFFD]8;;https://evil.example\uFFFDlory')
    ui.chat.searchUsers = async () => {
      throw new ClientError(
        ClientErrorCode.Server,
        'GET /users: \u001b[31mrefused\u001b]0;title\u0007 \u202Eevil',
      )
    }
    await ui.enter('/users xyz')
    await ui.shows('GET /users: \uFFFD[31mrefused\uFFFD]0;title\uFFFD \uFFFDevil')
    // Only Ink's own colours remain (frame() strips them): nothing from the server acts on the terminal.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the controls are what must be absent
    expect(ui.frame()).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/)
  })

  it('renders every text through the safe Text: no component takes Text from ink directly', () => {
    const root = join(import.meta.dirname, '..')
    const sources = [
      ...readdirSync(root).map((name) => join(root, name)),
      ...readdirSync(join(root, 'components')).map((name) => join(root, 'components', name)),
    ].filter((file) => file.endsWith('.tsx') && !file.endsWith(join('components', 'text.tsx')))
    expect(sources.length).toBeGreaterThan(5)
    for (const file of sources) {
      const imports = readFileSync(file, 'utf8').match(/import \{[^}]*\} from 'ink'/g) ?? []
      for (const line of imports) expect(line, file).not.toMatch(/\bText\b/)
    }
  })

  it('blocks sending after a key change until the user accepts the new key', async () => {
    const ui = await signedIn()
    await ui.enter('/chat bob')
    ui.chat.changeIdentity('bob')
    await ui.shows('SAFETY NUMBER CHANGED')
    await ui.shows('bob ⚠')
    await ui.enter('are you still you?')
    expect(await ui.chat.history('bob')).toEqual([])
    await ui.enter('/accept-key bob')
    await vi.waitFor(() => expect(ui.frame()).not.toContain('SAFETY NUMBER CHANGED'))
    await ui.shows("accepted bob's new identity key")
    await ui.enter('and now?')
    await ui.shows('you: and now? …')
  })

  it('shows the safety number in twelve groups and marks the contact verified on "yes"', async () => {
    const ui = await signedIn()
    await ui.enter('/chat bob')
    await ui.enter('/verify bob')
    await ui.shows('Safety number with bob')
    await ui.shows(FAKE_SAFETY_GROUPS.slice(0, 4).join(' '))
    await ui.shows(FAKE_SAFETY_GROUPS.slice(4, 8).join(' '))
    await ui.shows(FAKE_SAFETY_GROUPS.slice(8, 12).join(' '))
    await ui.shows('Does bob see the same safety number? (yes/no)')
    await ui.type('yes')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('bob is verified ✔')
    expect((await ui.chat.contact('bob'))?.verified).toBe(true)
  })

  it('recalls earlier input with the arrow keys', async () => {
    const ui = await signedIn()
    await ui.enter('/chat bob')
    await ui.enter('first line')
    await ui.enter('second line')
    await ui.type(UP)
    await ui.shows('> second line')
    await ui.type(UP)
    await ui.shows('> first line')
    await ui.type(DOWN)
    await ui.shows('> second line')
    await ui.type(ENTER)
    await ui.controller.idle()
    expect((await ui.chat.history('bob')).map((sent) => sent.text)).toEqual([
      'first line',
      'second line',
      'second line',
    ])
  })

  it('lists commands, users and contacts, and reports unknown commands', async () => {
    const ui = await signedIn()
    await ui.enter('/help')
    await ui.shows('/verify <user>')
    await ui.shows('/reinstall <user>    start over here after losing your keys (warns first)')
    await ui.enter('/users bo')
    await ui.shows('type at least 3 characters of a username to search the server')
    await ui.enter('/users bob')
    await ui.shows('Users starting with "bob"')
    await ui.shows('bobby')
    await ui.enter('/chat bob')
    await ui.enter('/contacts')
    await ui.shows('○ bob: offline, not verified')
    await ui.enter('/frobnicate')
    await ui.shows('unknown command /frobnicate')
  })

  it('lists, renames and removes devices with /devices, /rename-device and /remove-device', async () => {
    const ui = await signedIn((_backend, chat) => {
      chat.deviceList = [
        {
          id: 1,
          name: undefined,
          createdAt: 1_799_000_000_000,
          lastSeenAt: 1_800_000_000_000,
          current: true,
        },
        {
          id: 2,
          name: 'Work laptop',
          createdAt: 1_799_500_000_000,
          lastSeenAt: 1_799_900_000_000,
          current: false,
        },
      ]
    })
    await ui.enter('/devices')
    await ui.shows('Devices of alice')
    await ui.shows('1  (no name) (this device)  added')
    await ui.shows('2  Work laptop  added')
    await ui.enter('/rename-device Terminal at home')
    await ui.shows('this device (1) is now named "Terminal at home"')
    expect(ui.chat.deviceList[0]?.name).toBe('Terminal at home')
    await ui.enter('/remove-device 1')
    await ui.shows('that is this device: remove it from another of your devices')
    await ui.enter('/remove-device 2')
    await ui.shows('removed device 2 ("Work laptop")')
    expect(ui.chat.deviceList.map((device) => device.id)).toEqual([1])
    await ui.enter('/remove-device 7')
    await ui.shows('no device 7')
    await ui.enter('/help')
    await ui.shows('/remove-device <id>')
  })

  it('approves a new device with /link-device: its name and the check, then yes; refuses on no and Esc', async () => {
    const ui = await signedIn((_backend, chat) => {
      chat.linkRequests.set('sc1laptop', { deviceName: 'Work laptop', check: '123 456' })
      chat.linkRequests.set('sc1tablet', { deviceName: undefined, check: '654 321' })
      chat.linkRequests.set('sc1phone', { deviceName: 'Phone', check: '111 222' })
    })
    await ui.enter('/link-device sc1laptop')
    await ui.shows('"Work laptop" asks to be linked to alice')
    await ui.shows('check 123 456')
    await ui.shows('Does the new device show check 123 456?')
    await ui.type('yes')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('approved: the new device becomes device 2')
    expect(ui.chat.deviceList.map((device) => device.id)).toEqual([1, 2])

    await ui.enter('/link-device sc1tablet')
    await ui.shows('A device without a name asks to be linked to alice')
    await ui.type('no')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('refused: nothing was linked (the new device is told)')

    await ui.enter('/link-device sc1phone')
    await ui.shows('check 111 222')
    await ui.type(ESCAPE)
    await ui.controller.idle()
    await ui.shows('refused: nothing was linked')
    expect(ui.chat.linkDecisions).toEqual([
      ['sc1laptop', 'approved'],
      ['sc1tablet', 'refused'],
      ['sc1phone', 'refused'],
    ])
    expect(ui.chat.deviceList.map((device) => device.id)).toEqual([1, 2])

    await ui.enter('/link-device sc1nobody')
    await ui.shows('no such link code (mistyped, or expired long ago)')
    await ui.enter('/link-device nonsense')
    await ui.shows('not a link code')
    await ui.enter('/link-device')
    await ui.shows('/link-device: expected /link-device <code>')
  })

  it('blocks and unblocks with /block and /unblock; the conversation stays, marked, and sending is refused', async () => {
    const ui = await signedIn()
    await ui.enter('/chat bob')
    await ui.enter('/block bob')
    await ui.shows('blocked bob: their messages are dropped (they are not told)')
    await ui.enter('/contacts')
    await ui.shows('○ bob: blocked, offline, not verified')
    await ui.enter('are you there?')
    await ui.shows('you blocked bob: nothing is sent to them. /unblock bob to write again.')
    expect(ui.chat.messagesByPeer.get('bob') ?? []).toEqual([])
    await ui.enter('/unblock bob')
    await ui.shows('unblocked bob')
    await ui.enter('/contacts')
    await ui.shows('○ bob: offline, not verified')
    await ui.enter('/block')
    await ui.shows('/block: expected /block <user>')
  })

  it('asks for the password again when the server ends the session', async () => {
    const ui = await signedIn()
    ui.chat.setConnection('logged-out')
    await ui.shows('the server ended this session: /login to sign in again')
    await ui.enter('/login')
    await ui.shows('Password for alice:')
    await ui.type('correct horse battery')
    await ui.type(ENTER)
    await ui.controller.idle()
    await ui.shows('signed in again as alice')
    await ui.shows('● online')
  })

  it('signs out with /logout and closes everything with /quit', async () => {
    const ui = await signedIn()
    await ui.enter('/logout')
    await ui.shows('signed out of alice')
    expect(ui.chat.closed).toBe(true)
    await ui.enter('/quit')
    await vi.waitFor(() => expect(ui.controller.getState().closed).toBe(true))
  })
})

describe('LineInput', () => {
  async function editor(options: { remember?: boolean } = {}) {
    const submitted: string[] = []
    const app = render(
      <LineInput
        prompt="> "
        remember={options.remember ?? false}
        onSubmit={(line) => submitted.push(line)}
      />,
    )
    unmount = app.unmount
    await vi.waitFor(() => expect(app.lastFrame()).toMatch(/^>/))
    const type = async (text: string) => {
      await settle()
      app.stdin.write(text)
      await settle()
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the colours from the frame
    const line = () => (app.lastFrame() ?? '').replace(/\u001b\[[0-9;]*m/g, '').trimEnd()
    return { submitted, type, line }
  }

  it('submits the first line of keys that arrive together and keeps the rest unsent', async () => {
    const { submitted, type, line } = await editor()
    await type('/login\rmy secret')
    expect(submitted).toEqual(['/login'])
    await vi.waitFor(() => expect(line()).toBe('> my secret'))
  })

  it('edits: cursor keys, Home/End, Backspace, Ctrl+U/K/W, emoji as one character', async () => {
    const { submitted, type } = await editor()
    await type('hello wrld')
    await type(LEFT.repeat(3))
    await type('o')
    await type(ENTER)
    await type('one two three')
    await type(CTRL_W)
    await type(ENTER)
    await type('a😀b')
    await type(LEFT)
    await type(BACKSPACE)
    await type(ENTER)
    await type('keep this')
    await type(HOME)
    await type(CTRL_K)
    await type('start ')
    await type(END)
    await type('!')
    await type(ENTER)
    await type('gone')
    await type(CTRL_U)
    await type('x')
    await type(ENTER)
    expect(submitted).toEqual(['hello world', 'one two ', 'ab', 'start !', 'x'])
  })

  it('recalls earlier lines and gives back the unsent draft', async () => {
    const { submitted, type, line } = await editor({ remember: true })
    await type('first\r')
    await type('second\r')
    await type('draft')
    await type(UP)
    await vi.waitFor(() => expect(line()).toBe('> second'))
    await type(UP)
    await vi.waitFor(() => expect(line()).toBe('> first'))
    await type(UP)
    await vi.waitFor(() => expect(line()).toBe('> first'))
    await type(DOWN)
    await type(DOWN)
    await vi.waitFor(() => expect(line()).toBe('> draft'))
    expect(submitted).toEqual(['first', 'second'])
  })
})
