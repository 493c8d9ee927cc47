/**
 * The interactive client's state and behaviour, without React: commands from the input line, the
 * client core's events, prompts for passwords and confirmations, and the data the views show.
 * The Ink components render `getState()`; tests drive this class directly or through the App.
 *
 * State is replaced, never mutated, so `useSyncExternalStore` sees every change. Everything the
 * views show is re-read from the core after an event (one refresh at a time, coalesced), so the
 * screen always matches what is stored.
 */
import {
  type ChatClient,
  type ConnectionState,
  type ContactView,
  type LinkApproval,
  type MessageView,
  noticeText,
} from '../shared/client/chat-client.js'
import { ClientErrorCode, isClientError } from '../shared/client/errors.js'
import { isProtocolError } from '../shared/errors.js'
import { USER_SEARCH_MIN_LENGTH } from '../shared/limits.js'
import { normalizeUsername } from '../shared/username.js'
import { COMMAND_HELP, type Command, DEFAULT_HISTORY, parseCommand } from './commands.js'
import {
  accountDeletedWarning,
  blockedWarning,
  contactLine,
  deleteAccountWarning,
  deviceLine,
  formatTime,
  keyChangeWarning,
  reinstallWarning,
  safeText,
  safetyNumberRows,
} from './view.js'

/** What the controller needs from a signed-in client core (a ChatClient, or a fake in tests). */
export type ChatApi = Pick<
  ChatClient,
  | 'username'
  | 'events'
  | 'connection'
  | 'loggedIn'
  | 'login'
  | 'connect'
  | 'logout'
  | 'changePassword'
  | 'close'
  | 'contacts'
  | 'conversations'
  | 'contact'
  | 'addContact'
  | 'searchUsers'
  | 'history'
  | 'send'
  | 'safetyNumber'
  | 'confirmSafetyNumber'
  | 'acceptIdentityChange'
  | 'markRead'
  | 'deleteAccount'
  | 'blockContact'
  | 'unblockContact'
  | 'deviceId'
  | 'devices'
  | 'renameDevice'
  | 'removeDevice'
  | 'approveLink'
>

/** Local accounts and how to open them (backend.ts for real, a fake in tests). */
export interface AccountBackend {
  readonly serverUrl: string
  /** The account --user named, if any. */
  readonly defaultUser: string | undefined
  listAccounts(): string[]
  /** Creates the account here and on the server, logged in. */
  register(username: string, password: string): Promise<ChatApi>
  /**
   * Starts over on this device for an existing account whose keys were lost: new keys replace the
   * old ones on the server (the password proves the account), logged in.
   */
  reinstall(username: string, password: string): Promise<ChatApi>
  /** Opens the local database with the password and makes sure there is a valid login. */
  open(username: string, password: string): Promise<ChatApi>
  /** Removes the files of an account whose store was wiped and closed (after deleteAccount). */
  removeLocal(username: string): void
}

/** Notices kept (the view shows the last few). */
export const MAX_NOTICES = 100

export type NoticeLevel = 'info' | 'warning' | 'error'

export interface Notice {
  readonly id: number
  readonly level: NoticeLevel
  readonly text: string
}

export type Prompt =
  | { readonly kind: 'password'; readonly purpose: 'login' | 'relogin'; readonly username: string }
  | { readonly kind: 'password'; readonly purpose: 'register'; readonly username: string }
  | {
      readonly kind: 'password'
      readonly purpose: 'register-repeat'
      readonly username: string
      readonly first: string
    }
  | { readonly kind: 'confirm'; readonly purpose: 'reinstall'; readonly username: string }
  | { readonly kind: 'password'; readonly purpose: 'reinstall-password'; readonly username: string }
  | { readonly kind: 'confirm'; readonly purpose: 'delete-account'; readonly username: string }
  | {
      readonly kind: 'password'
      readonly purpose: 'delete-account-password'
      readonly username: string
      /** What the user typed to confirm (the core checks it again). */
      readonly typed: string
    }
  | { readonly kind: 'password'; readonly purpose: 'change-current'; readonly username: string }
  | {
      readonly kind: 'password'
      readonly purpose: 'change-new'
      readonly username: string
      readonly current: string
    }
  | {
      readonly kind: 'password'
      readonly purpose: 'change-repeat'
      readonly username: string
      readonly current: string
      readonly next: string
    }
  | {
      readonly kind: 'confirm'
      readonly purpose: 'change-sessions'
      readonly username: string
      readonly current: string
      readonly next: string
    }
  | {
      readonly kind: 'confirm'
      readonly purpose: 'link-device'
      readonly username: string
      /** The check shown: what the new device must show too. */
      readonly check: string
    }
  | {
      readonly kind: 'confirm'
      readonly purpose: 'verify'
      readonly username: string
      /** The safety number shown (digits): only the key it belongs to may be accepted. */
      readonly safetyNumber: string
    }

export interface Panel {
  readonly title: string
  readonly lines: readonly string[]
  /** Something to read before answering the prompt below it (drawn in a yellow box). */
  readonly warning?: boolean
}

export interface UiState {
  readonly serverUrl: string
  /** Signed in as (undefined: signed out). */
  readonly username: string | undefined
  readonly connection: ConnectionState
  readonly contacts: readonly ContactView[]
  readonly openChat: string | undefined
  /** The open conversation's newest `historyLimit` messages, oldest first. */
  readonly messages: readonly MessageView[]
  readonly historyLimit: number
  /** Output of the last command that printed something (help, contacts, users, verify). */
  readonly panel: Panel | undefined
  readonly notices: readonly Notice[]
  readonly prompt: Prompt | undefined
  /** Something slow in progress ("registering…"). */
  readonly busy: string | undefined
  /** The app has closed everything and should exit. */
  readonly closed: boolean
}

export function promptLabel(prompt: Prompt): string {
  switch (prompt.purpose) {
    case 'login':
    case 'relogin':
      return `Password for ${prompt.username}: `
    case 'register':
      return `New password for ${prompt.username}: `
    case 'register-repeat':
      return 'Repeat the password: '
    case 'verify':
      return `Does ${prompt.username} see the same safety number? (yes/no) `
    case 'reinstall':
      return `Start over as ${prompt.username} on this device, with new keys? (yes/no) `
    case 'reinstall-password':
      return `Password of ${prompt.username} (the account's current one): `
    case 'delete-account':
      return `Type ${prompt.username} to delete this account for good (anything else cancels): `
    case 'delete-account-password':
      return `Password of ${prompt.username}, to delete it: `
    case 'change-current':
      return `Current password of ${prompt.username}: `
    case 'change-new':
      return 'New password: '
    case 'change-repeat':
      return 'Repeat the new password: '
    case 'change-sessions':
      return 'Also sign out your other sessions? (yes/no) '
    case 'link-device':
      return `Does the new device show check ${prompt.check}? Approve it as a device of ${prompt.username}? (yes/no) `
  }
}

/** Why a link code cannot be approved, in words, for the server's refusals of it (else undefined). */
function linkCodeRefusal(error: unknown): string | undefined {
  if (!isClientError(error)) return undefined
  if (error.code === ClientErrorCode.InvalidInput) return `not a link code: ${error.message}`
  switch (error.serverCode) {
    case 'E2E_ERR_LINK_UNKNOWN':
      return 'no such link code (mistyped, or expired long ago): start again on the new device'
    case 'E2E_ERR_LINK_EXPIRED':
      return 'this link code expired: start again on the new device'
    case 'E2E_ERR_LINK_USED':
      return 'this link code was used already, or given up on the new device: start again there'
    case 'E2E_ERR_LINK_CLAIMED':
      return "another account's device answered this code first: do not approve, start again on the new device"
  }
  return undefined
}

/** A user-facing sentence for a failure; never a stack or a secret (core messages carry neither). */
export function describeError(error: unknown): string {
  if (isClientError(error, ClientErrorCode.WrongPassword)) return 'wrong password'
  if (isClientError(error) || isProtocolError(error)) return error.message
  return error instanceof Error ? error.message : String(error)
}

export class Controller {
  private state: UiState
  private readonly listeners = new Set<() => void>()
  private api: ChatApi | undefined
  private detach: (() => void)[] = []
  private noticeId = 0
  private pending = 0
  private idleWaiters: (() => void)[] = []
  private refreshing = false
  private refreshAgain = false
  /** The link waiting for the answer to the 'link-device' prompt. */
  private linkApproval: LinkApproval | undefined

  constructor(private readonly backend: AccountBackend) {
    this.state = {
      serverUrl: backend.serverUrl,
      username: undefined,
      connection: 'offline',
      contacts: [],
      openChat: undefined,
      messages: [],
      historyLimit: DEFAULT_HISTORY,
      panel: undefined,
      notices: [],
      prompt: undefined,
      busy: undefined,
      closed: false,
    }
  }

  // --- Store for React ------------------------------------------------------------------------------

  readonly getState = (): UiState => this.state

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private update(change: Partial<UiState>): void {
    this.state = { ...this.state, ...change }
    for (const listener of this.listeners) listener()
  }

  notify(level: NoticeLevel, text: string): void {
    const notice: Notice = { id: ++this.noticeId, level, text }
    this.update({ notices: [...this.state.notices, notice].slice(-MAX_NOTICES) })
  }

  /** Resolves when no command and no refresh is running (tests wait on it). */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private track(work: Promise<void>): void {
    this.pending++
    void work
      .catch((error: unknown) => this.notify('error', describeError(error)))
      .finally(() => {
        this.pending--
        if (this.pending === 0) {
          const waiters = this.idleWaiters
          this.idleWaiters = []
          for (const resolve of waiters) resolve()
        }
      })
  }

  // --- Start ---------------------------------------------------------------------------------------

  start(): void {
    const accounts = this.backend.listAccounts()
    const hint =
      accounts.length === 0
        ? 'No account on this device for this server yet: /register <name> to create one (or /reinstall <name> if your keys were on a device you lost).'
        : `Accounts here: ${accounts.join(', ')}. /login${accounts.length === 1 ? '' : ' <name>'} to open one, /register <name> for a new one.`
    this.notify('info', `secure-chat on ${this.backend.serverUrl}. ${hint} /help lists the commands.`)
  }

  // --- Input ---------------------------------------------------------------------------------------

  /** A line from the command input. */
  submit(line: string): void {
    const command = parseCommand(line)
    if (command.kind === 'empty') return
    this.track(this.run(command))
  }

  /** The answer to the current prompt (a password or yes/no). */
  answerPrompt(value: string): void {
    const prompt = this.state.prompt
    if (!prompt) return
    this.update({ prompt: undefined })
    this.track(this.answer(prompt, value))
  }

  cancelPrompt(): void {
    const prompt = this.state.prompt
    if (!prompt) return
    this.update({ prompt: undefined })
    if (prompt.purpose === 'link-device') {
      this.track(this.finishLinkDevice(false))
      return
    }
    this.notify('info', 'cancelled')
  }

  private requireSignedIn(): ChatApi {
    if (!this.api) throw new Error('sign in first: /login, or /register <name>')
    return this.api
  }

  private normalize(name: string): string {
    try {
      return normalizeUsername(name)
    } catch (error) {
      throw new Error(describeError(error))
    }
  }

  private async run(command: Command): Promise<void> {
    if (command.kind !== 'text') this.update({ panel: undefined })
    switch (command.kind) {
      case 'empty':
        return
      case 'invalid':
        this.notify('error', command.message)
        return
      case 'help':
        this.update({
          panel: {
            title: 'Commands (plain text goes to the open conversation; ↑/↓ recall earlier input)',
            lines: COMMAND_HELP.map((help) => `${help.usage.padEnd(20)} ${help.description}`),
          },
        })
        return
      case 'quit':
        await this.quit()
        return
      case 'register':
        return this.startRegister(command.username)
      case 'reinstall':
        return this.startReinstall(command.username)
      case 'login':
        return this.startLogin(command.username)
      case 'logout':
        return this.logout()
      case 'delete-account':
        return this.startDeleteAccount()
      case 'password':
        this.update({
          prompt: { kind: 'password', purpose: 'change-current', username: this.requireSignedIn().username },
        })
        return
      case 'users':
        return this.users(command.query)
      case 'contacts':
        return this.showContacts()
      case 'chat':
        return this.openChat(command.username)
      case 'msg':
        await this.openChat(command.username)
        return this.sendText(command.text)
      case 'text':
        return this.sendText(command.text)
      case 'history':
        return this.history(command.count)
      case 'verify':
        return this.startVerify(command.username)
      case 'accept-key':
        return this.acceptKey(command.username)
      case 'block':
        return this.setBlocked(command.username, true)
      case 'unblock':
        return this.setBlocked(command.username, false)
      case 'devices':
        return this.showDevices()
      case 'rename-device':
        return this.renameDevice(command.name)
      case 'remove-device':
        return this.removeDevice(command.deviceId)
      case 'link-device':
        return this.startLinkDevice(command.code)
    }
  }

  private async answer(prompt: Prompt, value: string): Promise<void> {
    switch (prompt.purpose) {
      case 'login':
        return this.login(prompt.username, value)
      case 'relogin': {
        const api = this.requireSignedIn()
        await api.login(value)
        api.connect()
        this.notify('info', `signed in again as ${api.username}`)
        return
      }
      case 'register':
        if (value.length === 0) {
          this.notify('error', 'the password may not be empty')
          return
        }
        this.update({
          prompt: { kind: 'password', purpose: 'register-repeat', username: prompt.username, first: value },
        })
        return
      case 'register-repeat':
        if (value !== prompt.first) {
          this.notify('error', 'the two passwords differ: /register again')
          return
        }
        return this.register(prompt.username, value)
      case 'verify':
        return this.finishVerify(prompt.username, prompt.safetyNumber, /^(y|yes)$/i.test(value.trim()))
      case 'link-device':
        return this.finishLinkDevice(/^(y|yes)$/i.test(value.trim()))
      case 'reinstall':
        if (!/^(y|yes)$/i.test(value.trim())) {
          this.update({ panel: undefined })
          this.notify('info', `did not start over as ${prompt.username}: nothing was changed`)
          return
        }
        this.update({
          prompt: { kind: 'password', purpose: 'reinstall-password', username: prompt.username },
        })
        return
      case 'reinstall-password':
        if (value.length === 0) {
          this.notify('error', 'the password may not be empty: /reinstall again')
          return
        }
        return this.reinstall(prompt.username, value)
      case 'delete-account':
        this.update({ panel: undefined })
        if (value.trim() === '' || this.normalizeOrUndefined(value) !== prompt.username) {
          this.notify('info', `${prompt.username} was not deleted: nothing was changed`)
          return
        }
        this.update({
          prompt: {
            kind: 'password',
            purpose: 'delete-account-password',
            username: prompt.username,
            typed: value,
          },
        })
        return
      case 'delete-account-password':
        if (value.length === 0) {
          this.notify('error', 'the password may not be empty: /delete-account again')
          return
        }
        return this.deleteAccount(prompt.typed, value)
      case 'change-current':
        if (value.length === 0) {
          this.notify('info', 'password not changed')
          return
        }
        this.update({ prompt: { ...prompt, purpose: 'change-new', current: value } })
        return
      case 'change-new':
        if (value.length === 0) {
          this.notify('info', 'password not changed')
          return
        }
        this.update({ prompt: { ...prompt, purpose: 'change-repeat', next: value } })
        return
      case 'change-repeat':
        if (value !== prompt.next) {
          this.notify('error', 'the two new passwords differ: nothing was changed. /password to try again')
          return
        }
        this.update({ prompt: { ...prompt, kind: 'confirm', purpose: 'change-sessions' } })
        return
      case 'change-sessions':
        return this.changePassword(prompt.current, prompt.next, /^(y|yes)$/i.test(value.trim()))
    }
  }

  private normalizeOrUndefined(name: string): string | undefined {
    try {
      return normalizeUsername(name)
    } catch {
      return undefined
    }
  }

  /** Re-seals this device's store and moves the server to the new password, with progress. */
  private async changePassword(current: string, next: string, endOtherSessions: boolean): Promise<void> {
    const api = this.requireSignedIn()
    this.update({ busy: 'changing the password (deriving keys)…' })
    try {
      const { endedSessions } = await api.changePassword(current, next, {
        endOtherSessions,
        onProgress: (done, total) =>
          this.update({ busy: `changing the password: re-sealing this device's data ${done}/${total}…` }),
      })
      this.notify(
        'info',
        `password changed, here and on the server${endOtherSessions ? `; ${endedSessions} other session${endedSessions === 1 ? '' : 's'} signed out` : ''}. Use the new one from now on.`,
      )
    } finally {
      this.update({ busy: undefined })
    }
  }

  // --- Accounts ------------------------------------------------------------------------------------

  private async startRegister(username: string): Promise<void> {
    if (this.api) throw new Error(`signed in as ${this.api.username}: /logout first`)
    const name = this.normalize(username)
    if (this.backend.listAccounts().includes(name)) {
      throw new Error(`${name} already has an account on this device: /login ${name}`)
    }
    this.update({ prompt: { kind: 'password', purpose: 'register', username: name } })
  }

  private async register(username: string, password: string): Promise<void> {
    this.update({ busy: `registering ${username} (making keys)…` })
    try {
      this.attach(await this.backend.register(username, password))
      this.notify(
        'info',
        `registered and signed in as ${username}. /users <name> finds people, /chat <name> opens a conversation.`,
      )
    } finally {
      this.update({ busy: undefined })
    }
  }

  /** Shows what starting over does and asks for confirmation; the password is asked after a "yes". */
  private async startReinstall(username: string): Promise<void> {
    if (this.api) throw new Error(`signed in as ${this.api.username}: /logout first`)
    const name = this.normalize(username)
    if (this.backend.listAccounts().includes(name)) {
      throw new Error(
        `${name} already has an account on this device, with its keys: /login ${name} (there is nothing to start over)`,
      )
    }
    this.update({
      panel: {
        title: `⚠ Start over as ${name} on this device?`,
        lines: reinstallWarning(name),
        warning: true,
      },
      prompt: { kind: 'confirm', purpose: 'reinstall', username: name },
    })
  }

  private async reinstall(username: string, password: string): Promise<void> {
    this.update({ busy: `starting over as ${username} (making new keys)…` })
    try {
      this.attach(await this.backend.reinstall(username, password))
      this.update({ panel: undefined })
      this.notify(
        'warning',
        `started over as ${username} with new keys: your contacts are told your safety number changed. /verify <name> compares the new one.`,
      )
    } catch (error) {
      this.update({ panel: undefined })
      if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_CREDENTIALS') {
        throw new Error(
          `the server refused this password for ${username} (${error.serverMessage ?? error.serverCode}): nothing was changed. /reinstall ${username} to try again`,
        )
      }
      throw error
    } finally {
      this.update({ busy: undefined })
    }
  }

  private async startLogin(username: string | undefined): Promise<void> {
    if (this.api) {
      if (
        this.api.connection === 'logged-out' &&
        (username === undefined || this.normalize(username) === this.api.username)
      ) {
        this.update({ prompt: { kind: 'password', purpose: 'relogin', username: this.api.username } })
        return
      }
      throw new Error(`signed in as ${this.api.username}: /logout first`)
    }
    const accounts = this.backend.listAccounts()
    const chosen =
      username !== undefined
        ? this.normalize(username)
        : (this.backend.defaultUser ?? (accounts.length === 1 ? accounts[0] : undefined))
    if (chosen === undefined) {
      throw new Error(
        accounts.length === 0
          ? 'no account on this device for this server: /register <name>'
          : `which account? /login <name> (${accounts.join(', ')})`,
      )
    }
    if (!accounts.includes(chosen))
      throw new Error(
        `no account ${chosen} on this device: /register ${chosen} for a new one, or /reinstall ${chosen} if it is yours and its keys were on a device you lost`,
      )
    this.update({ prompt: { kind: 'password', purpose: 'login', username: chosen } })
  }

  private async login(username: string, password: string): Promise<void> {
    this.update({ busy: `opening ${username}…` })
    try {
      this.attach(await this.backend.open(username, password))
      this.notify('info', `signed in as ${username}`)
    } finally {
      this.update({ busy: undefined })
    }
  }

  private attach(api: ChatApi): void {
    this.api = api
    const refresh = () => this.requestRefresh()
    /**
     * The server said this account was deleted (this device's answer lost, or another device's
     * deletion), or this device removed from it: signing in again could only fail.
     */
    let accountGone = false
    this.detach = [
      api.events.on('message', refresh),
      api.events.on('delivery', refresh),
      api.events.on('presence', refresh),
      api.events.on('identity-changed', ({ peer }) => {
        this.notify('warning', keyChangeWarning(peer))
        refresh()
      }),
      api.events.on('account-deleted', ({ peer }) => {
        this.notify('warning', accountDeletedWarning(peer))
        refresh()
      }),
      api.events.on('connection', ({ state }) => {
        this.update({ connection: state })
        // After "account deleted" (below) a log-in could only fail: that notice says what to do.
        if (state === 'logged-out' && !accountGone)
          this.notify('warning', `the server ended this session: /login to sign in again`)
        if (state === 'online') refresh()
      }),
      api.events.on('problem', ({ code, id, message }) => {
        // Without an id the server speaks of this account's own session (docs/protocol.md §13.4).
        if (code === 'E2E_ERR_ACCOUNT_DELETED' && id === undefined) {
          accountGone = true
          this.notify(
            'warning',
            'this account was deleted, here or on another device; its conversations are still on this device: /delete-account erases them',
          )
          return
        }
        if (code === 'E2E_ERR_DEVICE_REMOVED' && id === undefined) {
          accountGone = true
          this.notify(
            'warning',
            `this device was removed from the account on another of its devices: it can no longer sign in; its conversations are still on this device, to read (after /quit, secure-chat erase-local ${api.username} erases them)`,
          )
          return
        }
        this.notify('error', safeText(message))
      }),
      api.events.on('undecryptable', ({ peer, kind }) =>
        this.notify('warning', safeText(noticeText({ kind, peer }) ?? '')),
      ),
      api.events.on('removed', refresh),
      // Another of this account's devices read a conversation or verified a contact.
      api.events.on('contact-updated', refresh),
    ]
    this.update({ username: api.username, connection: api.connection, openChat: undefined, messages: [] })
    api.connect()
    this.requestRefresh()
  }

  private async release(): Promise<void> {
    for (const stop of this.detach) stop()
    this.detach = []
    const api = this.api
    this.api = undefined
    await api?.close()
  }

  private async logout(): Promise<void> {
    const api = this.requireSignedIn()
    await api.logout()
    await this.release()
    this.update({
      username: undefined,
      connection: 'offline',
      contacts: [],
      openChat: undefined,
      messages: [],
    })
    this.notify('info', `signed out of ${api.username} (the history stays on this device)`)
  }

  /** Says what deleting does and asks for the account's name; the password is asked after it. */
  private async startDeleteAccount(): Promise<void> {
    const api = this.requireSignedIn()
    this.update({
      panel: {
        title: `⚠ Delete the account ${api.username}?`,
        lines: deleteAccountWarning(api.username),
        warning: true,
      },
      prompt: { kind: 'confirm', purpose: 'delete-account', username: api.username },
    })
  }

  private async deleteAccount(typed: string, password: string): Promise<void> {
    const api = this.requireSignedIn()
    const username = api.username
    this.update({ busy: `deleting ${username}…` })
    try {
      await api.deleteAccount(password, typed)
    } catch (error) {
      if (isClientError(error) && error.serverCode === 'E2E_ERR_INVALID_CREDENTIALS') {
        throw new Error(
          `the server refused this password for ${username}: nothing was deleted. /delete-account to try again`,
        )
      }
      throw error
    } finally {
      this.update({ busy: undefined })
    }
    await this.release()
    this.backend.removeLocal(username)
    this.update({
      username: undefined,
      connection: 'offline',
      contacts: [],
      openChat: undefined,
      messages: [],
    })
    this.notify(
      'info',
      `deleted ${username}: the server no longer has the account, and this device no longer has its data`,
    )
  }

  async quit(): Promise<void> {
    if (this.state.closed) return
    this.update({ busy: 'closing…' })
    try {
      await this.release()
    } finally {
      this.update({ busy: undefined, closed: true })
    }
  }

  // --- People --------------------------------------------------------------------------------------

  private async users(query: string | undefined): Promise<void> {
    const api = this.requireSignedIn()
    const contacts = await api.contacts()
    if (query === undefined) {
      const online = contacts.filter((contact) => contact.online).map((contact) => contact.username)
      this.update({
        panel: {
          title: 'Contacts online',
          lines: online.length > 0 ? online.map((name) => `● ${name}`) : ['nobody you know is online'],
        },
      })
      return
    }
    if (query.normalize('NFKC').trim().length < USER_SEARCH_MIN_LENGTH) {
      this.update({
        panel: {
          title: `Users starting with "${safeText(query)}"`,
          lines: [`type at least ${USER_SEARCH_MIN_LENGTH} characters of a username to search the server`],
        },
      })
      return
    }
    const found = await api.searchUsers(query)
    const known = new Map(contacts.map((contact) => [contact.username, contact]))
    this.update({
      panel: {
        title: `Users starting with "${safeText(query)}"`,
        lines:
          found.length > 0
            ? found.map((name) => {
                const contact = known.get(name)
                return contact ? `${contact.online ? '●' : '○'} ${name} (contact)` : `  ${name}`
              })
            : ['nobody found'],
      },
    })
  }

  private async showContacts(): Promise<void> {
    const api = this.requireSignedIn()
    // The same conversation list as the PWA's, from the core: with each conversation's newest entry.
    const contacts = await api.conversations()
    this.update({
      contacts,
      panel: {
        title: 'Contacts',
        lines:
          contacts.length > 0
            ? contacts.map((contact) => {
                const line = contactLine(contact)
                const facts = [
                  contact.blocked ? 'blocked' : undefined,
                  contact.online ? 'online' : 'offline',
                  contact.unread > 0 ? `${contact.unread} unread` : undefined,
                  contact.accountDeleted
                    ? '✕ account deleted'
                    : contact.identityChanged
                      ? '⚠ identity key changed'
                      : contact.verified
                        ? '✔ verified'
                        : 'not verified',
                ].filter((fact) => fact !== undefined)
                const preview = contact.preview
                  ? ` · ${formatTime(contact.preview.time, Date.now())} ${contact.preview.direction === 'out' ? 'you: ' : ''}${safeText(contact.preview.text)}`
                  : ''
                return `${line.presence} ${contact.username}: ${facts.join(', ')}${preview}`
              })
            : ['no contacts yet: /users <name> to find someone, /chat <name> to write'],
      },
    })
  }

  // --- Conversation --------------------------------------------------------------------------------

  private async openChat(username: string): Promise<void> {
    const api = this.requireSignedIn()
    const name = this.normalize(username)
    if (name === api.username) throw new Error('that is you: /chat <someone else>')
    await api.addContact(name)
    this.update({ openChat: name, historyLimit: DEFAULT_HISTORY, messages: [] })
    await this.load()
  }

  private async sendText(text: string): Promise<void> {
    const api = this.requireSignedIn()
    const peer = this.state.openChat
    if (!peer) throw new Error('no open conversation: /chat <user> first, or /msg <user> <text>')
    const contact = this.state.contacts.find((candidate) => candidate.username === peer)
    if (contact?.accountDeleted) {
      this.notify('warning', accountDeletedWarning(peer))
      return
    }
    if (contact?.blocked) {
      this.notify('warning', blockedWarning(peer))
      return
    }
    if (contact?.identityChanged) {
      this.notify('warning', keyChangeWarning(peer))
      return
    }
    try {
      await api.send(peer, text)
    } catch (error) {
      if (isClientError(error, ClientErrorCode.IdentityChanged)) {
        this.notify('warning', keyChangeWarning(peer))
        this.requestRefresh()
        return
      }
      if (isClientError(error, ClientErrorCode.AccountDeleted)) {
        this.notify('warning', accountDeletedWarning(peer))
        this.requestRefresh()
        return
      }
      if (isClientError(error, ClientErrorCode.Blocked)) {
        this.notify('warning', blockedWarning(peer))
        return
      }
      throw error
    }
  }

  private async history(count: number | undefined): Promise<void> {
    this.requireSignedIn()
    if (!this.state.openChat) throw new Error('no open conversation: /chat <user> first')
    this.update({ historyLimit: count ?? DEFAULT_HISTORY })
    await this.load()
  }

  // --- Safety numbers ------------------------------------------------------------------------------

  private async startVerify(username: string): Promise<void> {
    const api = this.requireSignedIn()
    const name = this.normalize(username)
    const contact = (await api.contact(name)) ?? (await api.addContact(name))
    const safetyNumber = await api.safetyNumber(name)
    this.update({
      panel: {
        title: `Safety number with ${name}${contact.identityChanged ? ' (their NEW identity key)' : ''}`,
        lines: [
          ...safetyNumberRows(safetyNumber.groups).map((row) => `   ${row}`),
          '',
          `Compare it with the number ${name} sees for you, in person or over a channel you trust.`,
        ],
      },
      prompt: { kind: 'confirm', purpose: 'verify', username: name, safetyNumber: safetyNumber.digits },
    })
  }

  private async finishVerify(username: string, shown: string, matches: boolean): Promise<void> {
    const api = this.requireSignedIn()
    if (!matches) {
      this.notify(
        'warning',
        `${username} not marked as verified. If the numbers differ, someone may be intercepting: do not trust this conversation.`,
      )
      return
    }
    // One rule with the PWA: a changed key whose number matched is accepted and verified; refused
    // if the key changed again after the number was shown.
    await api.confirmSafetyNumber(username, shown)
    this.update({ panel: undefined })
    this.notify('info', `${username} is verified ✔`)
    this.requestRefresh()
  }

  private async acceptKey(username: string): Promise<void> {
    const api = this.requireSignedIn()
    const name = this.normalize(username)
    const contact = await api.contact(name)
    if (!contact?.identityChanged) {
      this.notify('info', `${name}'s identity key has not changed`)
      return
    }
    await api.acceptIdentityChange(name)
    this.notify(
      'info',
      `accepted ${name}'s new identity key (not verified: /verify ${name} to compare safety numbers)`,
    )
    this.requestRefresh()
  }

  // --- Blocking ------------------------------------------------------------------------------------

  private async setBlocked(username: string, blocked: boolean): Promise<void> {
    const api = this.requireSignedIn()
    const name = this.normalize(username)
    if (name === api.username)
      throw new Error(`that is you: /${blocked ? 'block' : 'unblock'} <someone else>`)
    if (blocked) {
      await api.blockContact(name)
      this.notify(
        'info',
        `blocked ${name}: their messages are dropped (they are not told), your presence is hidden from them, and the conversation stays. /unblock ${name} to undo.`,
      )
    } else if (await api.unblockContact(name)) {
      this.notify('info', `unblocked ${name}`)
    } else {
      this.notify('info', `${name} is not a contact`)
    }
    this.requestRefresh()
  }

  // --- Devices -------------------------------------------------------------------------------------

  private async showDevices(): Promise<void> {
    const api = this.requireSignedIn()
    const devices = await api.devices()
    this.update({
      panel: {
        title: `Devices of ${api.username} (/rename-device <name> names this one, /remove-device <id> removes another)`,
        lines: devices.map((device) => deviceLine(device)),
      },
    })
  }

  private async renameDevice(name: string): Promise<void> {
    const api = this.requireSignedIn()
    await api.renameDevice(name)
    this.notify('info', `this device (${api.deviceId}) is now named "${safeText(name)}"`)
  }

  /**
   * Removes another device. This one is refused while others remain, as `secure-chat remove-device`
   * refuses it: it would end this session and strand its data; an unknown id is said plainly.
   */
  private async removeDevice(deviceId: number): Promise<void> {
    const api = this.requireSignedIn()
    const devices = await api.devices()
    const device = devices.find((candidate) => candidate.id === deviceId)
    if (!device) {
      throw new Error(
        `no device ${deviceId} on this account (${devices.map((known) => known.id).join(', ')}): /devices lists them`,
      )
    }
    if (device.current && devices.length > 1) {
      throw new Error('that is this device: remove it from another of your devices')
    }
    await api.removeDevice(deviceId)
    const name = device.name === undefined ? '' : ` ("${safeText(device.name)}")`
    this.notify('info', `removed device ${deviceId}${name}: its sessions ended, its queue and keys are gone`)
  }

  /**
   * Approving a new device (`secure-chat link` shows the code there): reads the code, waits for the
   * new device's answer, then shows its name and the check and asks. The account's keys go only
   * after a "yes"; anything else, or Esc, refuses, and the new device is told.
   */
  private async startLinkDevice(code: string): Promise<void> {
    const api = this.requireSignedIn()
    if (this.linkApproval) throw new Error('a link is waiting for your answer already')
    this.update({ busy: 'waiting for the new device…' })
    let approval: LinkApproval
    try {
      approval = await api.approveLink(code)
    } catch (error) {
      throw new Error(linkCodeRefusal(error) ?? describeError(error))
    } finally {
      this.update({ busy: undefined })
    }
    this.linkApproval = approval
    const who =
      approval.deviceName === undefined ? 'A device without a name' : `"${safeText(approval.deviceName)}"`
    this.update({
      panel: {
        title: `Link a device to ${api.username}`,
        lines: [
          `${who} asks to be linked to ${api.username}.`,
          '',
          `   check ${approval.check}`,
          '',
          'Approve only if the new device shows the same check: it gets your identity keys and contacts.',
        ],
        warning: true,
      },
      prompt: { kind: 'confirm', purpose: 'link-device', username: api.username, check: approval.check },
    })
  }

  private async finishLinkDevice(approved: boolean): Promise<void> {
    const approval = this.linkApproval
    this.linkApproval = undefined
    if (!approval) return
    this.update({ panel: undefined })
    if (!approved) {
      await approval.refuse()
      this.notify('info', 'refused: nothing was linked (the new device is told)')
      return
    }
    try {
      const { deviceId, omittedContacts } = await approval.approve()
      const omitted =
        omittedContacts > 0 ? `; ${omittedContacts} contact(s) did not fit and were left out` : ''
      this.notify('info', `approved: the new device becomes device ${deviceId}${omitted}`)
    } catch (error) {
      throw new Error(linkCodeRefusal(error) ?? describeError(error))
    }
  }

  // --- Refresh -------------------------------------------------------------------------------------

  private requestRefresh(): void {
    if (this.refreshing) {
      this.refreshAgain = true
      return
    }
    this.refreshing = true
    this.track(
      (async () => {
        try {
          do {
            this.refreshAgain = false
            await this.load()
          } while (this.refreshAgain)
        } finally {
          this.refreshing = false
        }
      })(),
    )
  }

  /** Re-reads contacts and the open conversation; what is on screen counts as read. */
  private async load(): Promise<void> {
    const api = this.api
    if (!api) return
    const peer = this.state.openChat
    let contacts = await api.contacts()
    let messages: readonly MessageView[] = []
    if (peer !== undefined) {
      messages = await api.history(peer, { limit: this.state.historyLimit })
      const newest = messages.at(-1)
      if (newest && (contacts.find((contact) => contact.username === peer)?.unread ?? 0) > 0) {
        // Up to the newest message on screen: one arriving meanwhile stays unread until shown.
        await api.markRead(peer, newest.order)
        contacts = await api.contacts()
      }
    }
    // The user may have switched conversation or signed out meanwhile.
    if (this.api !== api) return
    if (this.state.openChat !== peer) {
      this.update({ contacts })
      return
    }
    this.update({ contacts, messages, connection: api.connection })
  }
}
