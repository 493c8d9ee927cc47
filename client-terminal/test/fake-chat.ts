/**
 * An in-memory stand-in for the client core (the ChatApi part the UI uses) and for the local
 * accounts, so the controller and the Ink components are tested without a server or crypto. The
 * test plays the other side: `receive`, `receiveNotice`, `arriveInPlace`, `remove`, `setDelivery`,
 * `changeIdentity`, `setOnline`.
 */
import {
  type ClientEvents,
  type ConnectionState,
  type ContactView,
  type ConversationView,
  type DeliveryState,
  type DeviceView,
  type LinkApproval,
  type MessageKind,
  type MessageView,
  messageTime,
  noticeText,
} from '../../shared/client/chat-client.js'
import { ClientError, ClientErrorCode } from '../../shared/client/errors.js'
import { Emitter } from '../../shared/client/events.js'
import type { SafetyNumber } from '../../shared/safety-number.js'
import type { AccountBackend, ChatApi } from '../controller.js'

export const FAKE_SAFETY_GROUPS = [
  '11111',
  '22222',
  '33333',
  '44444',
  '55555',
  '66666',
  '77777',
  '88888',
  '99999',
  '12345',
  '67890',
  '24680',
]

interface FakeContact {
  username: string
  verified: boolean
  identityChanged: boolean
  accountDeleted: boolean
  unread: number
  lastMessageAt: number | undefined
  online: boolean
  blocked: boolean
}

export class FakeChat implements ChatApi {
  readonly events = new Emitter<ClientEvents>()
  readonly contactsByName = new Map<string, FakeContact>()
  readonly messagesByPeer = new Map<string, MessageView[]>()
  /** Users the server directory knows. */
  directory: string[] = ['bob', 'bobby', 'carol']
  private state: ConnectionState = 'offline'
  private order = 0
  private idCounter = 0
  closed = false
  loggedOut = false
  /** The account's password, which deleteAccount checks as the server would. */
  password: string | undefined
  /** Set by a successful deleteAccount. */
  deleted = false
  /** The account's devices as the server lists them; this one is device 1. */
  deviceList: DeviceView[] = [
    { id: 1, name: undefined, createdAt: 1_799_000_000_000, lastSeenAt: 1_800_000_000_000, current: true },
  ]

  constructor(
    readonly username: string,
    /** 2027-01-15 08:00 UTC. */
    private readonly clock: () => number = () => 1_800_000_000_000,
  ) {}

  get connection(): ConnectionState {
    return this.state
  }

  get loggedIn(): boolean {
    return !this.loggedOut
  }

  setConnection(state: ConnectionState): void {
    this.state = state
    this.events.emit('connection', { state })
  }

  async login(): Promise<void> {
    this.loggedOut = false
    if (this.state === 'logged-out') this.setConnection('offline')
  }

  connect(): void {
    this.setConnection('online')
  }

  async logout(): Promise<void> {
    this.loggedOut = true
    this.setConnection('logged-out')
  }

  /** The password changes asked for, in order (a fake keeps no keys). */
  readonly passwordChanges: { current: string; next: string; endOtherSessions: boolean }[] = []

  async changePassword(
    current: string,
    next: string,
    options: { endOtherSessions?: boolean; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<{ endedSessions: number }> {
    options.onProgress?.(1, 1)
    this.passwordChanges.push({ current, next, endOtherSessions: options.endOtherSessions === true })
    return { endedSessions: options.endOtherSessions ? 1 : 0 }
  }

  async close(): Promise<void> {
    this.closed = true
  }

  async deleteAccount(password: string, typedUsername: string): Promise<void> {
    if (typedUsername.trim().toLowerCase() !== this.username) {
      throw new ClientError(ClientErrorCode.InvalidInput, `expected ${this.username} typed to confirm`)
    }
    if (password !== this.password) {
      const serverMessage =
        'expected a registered username and its password, got a combination that does not match'
      throw new ClientError(ClientErrorCode.Server, `POST /account/delete: ${serverMessage}`, {
        serverCode: 'E2E_ERR_INVALID_CREDENTIALS',
        serverMessage,
        status: 401,
      })
    }
    this.deleted = true
    this.setConnection('logged-out')
  }

  private view(contact: FakeContact): ContactView {
    return { ...contact }
  }

  async contacts(): Promise<ContactView[]> {
    return [...this.contactsByName.values()].map((contact) => this.view(contact))
  }

  /** The conversation list, with each conversation's newest entry (as the core keeps it). */
  async conversations(): Promise<ConversationView[]> {
    return (await this.contacts()).map((contact) => {
      const newest = (this.messagesByPeer.get(contact.username) ?? []).at(-1)
      return {
        ...contact,
        preview: newest && {
          id: newest.id,
          text: noticeText(newest) ?? newest.text,
          direction: newest.direction,
          kind: newest.kind,
          time: messageTime(newest),
        },
      }
    })
  }

  async contact(peer: string): Promise<ContactView | undefined> {
    const contact = this.contactsByName.get(peer)
    return contact && this.view(contact)
  }

  async addContact(peer: string): Promise<ContactView> {
    if (!this.directory.includes(peer)) {
      throw new ClientError(ClientErrorCode.UnknownUser, `GET /users/${peer}/identity: user not found`)
    }
    let contact = this.contactsByName.get(peer)
    if (!contact) {
      contact = {
        username: peer,
        verified: false,
        identityChanged: false,
        accountDeleted: false,
        unread: 0,
        lastMessageAt: undefined,
        online: false,
        blocked: false,
      }
      this.contactsByName.set(peer, contact)
    }
    return this.view(contact)
  }

  async blockContact(peer: string): Promise<ContactView> {
    const contact = this.contactsByName.get(peer) ?? {
      username: peer,
      verified: false,
      identityChanged: false,
      unread: 0,
      lastMessageAt: undefined,
      online: false,
      blocked: false,
      accountDeleted: false,
    }
    contact.blocked = true
    contact.online = false
    this.contactsByName.set(peer, contact)
    return this.view(contact)
  }

  async unblockContact(peer: string): Promise<ContactView | undefined> {
    const contact = this.contactsByName.get(peer)
    if (!contact) return undefined
    contact.blocked = false
    return this.view(contact)
  }

  get deviceId(): number {
    return this.deviceList.find((device) => device.current)?.id ?? 1
  }

  async devices(): Promise<DeviceView[]> {
    return this.deviceList.map((device) => ({ ...device }))
  }

  async renameDevice(name: string | undefined): Promise<void> {
    if (name !== undefined && (name.trim() === '' || name.length > 64)) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        `device name: expected 1 to 64 characters, got ${name.length}`,
      )
    }
    this.deviceList = this.deviceList.map((device) =>
      device.current ? { ...device, name: name?.trim() } : device,
    )
  }

  async removeDevice(deviceId: number): Promise<void> {
    if (!this.deviceList.some((device) => device.id === deviceId)) {
      throw new ClientError(ClientErrorCode.Server, `DELETE /devices/${deviceId}: no such device`, {
        serverCode: 'E2E_ERR_DEVICE_NOT_FOUND',
        status: 404,
      })
    }
    if (this.deviceList.length === 1) {
      throw new ClientError(ClientErrorCode.Server, `DELETE /devices/${deviceId}: the last device`, {
        serverCode: 'E2E_ERR_LAST_DEVICE',
        status: 409,
      })
    }
    this.deviceList = this.deviceList.filter((device) => device.id !== deviceId)
  }

  /**
   * New devices waiting with a code, as the server and the new device would answer it: the name
   * it gave and the check. A code not listed is refused as the server refuses an unknown one.
   */
  readonly linkRequests = new Map<string, { deviceName: string | undefined; check: string }>()
  /** How each approval ended: the code, and 'approved' or 'refused'. */
  readonly linkDecisions: [string, 'approved' | 'refused'][] = []

  async approveLink(code: string): Promise<LinkApproval> {
    if (!code.startsWith('sc1')) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        'link code: expected text starting with "sc1", got one starting otherwise',
      )
    }
    const request = this.linkRequests.get(code)
    if (!request) {
      throw new ClientError(ClientErrorCode.Server, 'POST /provisioning: no such channel', {
        serverCode: 'E2E_ERR_LINK_UNKNOWN',
        status: 404,
      })
    }
    this.linkRequests.delete(code)
    return {
      check: request.check,
      deviceName: request.deviceName,
      approve: async () => {
        this.linkDecisions.push([code, 'approved'])
        const deviceId = Math.max(...this.deviceList.map((device) => device.id)) + 1
        this.deviceList = [
          ...this.deviceList,
          {
            id: deviceId,
            name: request.deviceName,
            createdAt: this.clock(),
            lastSeenAt: this.clock(),
            current: false,
          },
        ]
        return { deviceId, omittedContacts: 0 }
      },
      refuse: async () => {
        this.linkDecisions.push([code, 'refused'])
      },
    }
  }

  async searchUsers(query: string): Promise<string[]> {
    return this.directory.filter((name) => name.startsWith(query))
  }

  async history(peer: string, options: { limit?: number } = {}): Promise<MessageView[]> {
    return (this.messagesByPeer.get(peer) ?? []).slice(-(options.limit ?? 50))
  }

  private add(message: MessageView): void {
    const list = this.messagesByPeer.get(message.peer) ?? []
    list.push(message)
    this.messagesByPeer.set(message.peer, list)
    this.events.emit('message', message)
  }

  async send(peer: string, text: string): Promise<MessageView> {
    const contact = await this.addContact(peer)
    if (contact.identityChanged) {
      throw new ClientError(ClientErrorCode.IdentityChanged, `expected a trusted identity for ${peer}`)
    }
    const message: MessageView = {
      id: `m${++this.idCounter}`,
      peer,
      direction: 'out',
      text,
      sentAt: this.clock(),
      serverAt: undefined,
      state: 'sending',
      order: ++this.order,
      kind: 'text',
    }
    this.add(message)
    return message
  }

  /** The other side writes to us. */
  receive(peer: string, text: string, at = this.clock()): MessageView {
    const message = this.arrive(peer, text, 'text', at)
    this.events.emit('message', message)
    return message
  }

  /**
   * Something from `peer` arrives that cannot be shown: a notice takes its place, as the core
   * stores one (unread, with no text), after telling of an undecryptable one.
   */
  receiveNotice(peer: string, kind: Exclude<MessageKind, 'text'>, at = this.clock()): MessageView {
    const notice = this.arrive(peer, '', kind, at)
    if (kind === 'undecryptable' || kind === 'outdated')
      this.events.emit('undecryptable', { peer, id: notice.id, reason: 'ERR_TEST', kind })
    this.events.emit('message', notice)
    return notice
  }

  /** The message a notice stood for arrives after all (sent again): it takes the notice's place. */
  arriveInPlace(id: string, text: string): MessageView {
    for (const list of this.messagesByPeer.values()) {
      const index = list.findIndex((message) => message.id === id)
      const notice = list[index]
      if (notice) {
        const message: MessageView = { ...notice, text, kind: 'text' }
        list[index] = message
        this.events.emit('message', message)
        return message
      }
    }
    throw new Error(`no entry ${id}`)
  }

  /** An entry leaves the conversation (a notice whose message turned out to be a resent receipt). */
  remove(peer: string, id: string): void {
    const list = this.messagesByPeer.get(peer) ?? []
    this.messagesByPeer.set(
      peer,
      list.filter((message) => message.id !== id),
    )
    this.events.emit('removed', { peer, id })
  }

  /** Stores an incoming entry, unread, as the core would (the caller emits the events). */
  private arrive(peer: string, text: string, kind: MessageKind, at: number): MessageView {
    const contact = this.contactsByName.get(peer) ?? {
      username: peer,
      verified: false,
      identityChanged: false,
      accountDeleted: false,
      unread: 0,
      lastMessageAt: undefined,
      online: true,
      blocked: false,
    }
    contact.unread++
    contact.lastMessageAt = at
    this.contactsByName.set(peer, contact)
    const message: MessageView = {
      id: `r${++this.idCounter}`,
      peer,
      direction: 'in',
      text,
      sentAt: at,
      serverAt: at,
      state: 'received',
      order: ++this.order,
      kind,
    }
    const list = this.messagesByPeer.get(peer) ?? []
    list.push(message)
    this.messagesByPeer.set(peer, list)
    return message
  }

  setDelivery(id: string, state: DeliveryState): void {
    for (const [peer, list] of this.messagesByPeer) {
      const index = list.findIndex((message) => message.id === id)
      if (index >= 0) {
        const message = list[index] as MessageView
        list[index] = { ...message, state, serverAt: message.serverAt ?? this.clock() }
        this.events.emit('delivery', { peer, id, state })
      }
    }
  }

  changeIdentity(peer: string): void {
    const contact = this.contactsByName.get(peer)
    if (!contact) throw new Error(`no contact ${peer}`)
    contact.identityChanged = true
    contact.verified = false
    this.events.emit('identity-changed', { peer })
  }

  setOnline(peer: string, online: boolean): void {
    const contact = this.contactsByName.get(peer)
    if (contact) contact.online = online
    this.events.emit('presence', { username: peer, online })
  }

  async safetyNumber(): Promise<SafetyNumber> {
    return { digits: FAKE_SAFETY_GROUPS.join(''), groups: FAKE_SAFETY_GROUPS, qrPayload: new Uint8Array(65) }
  }

  /** As the core: a pending change whose number matched is accepted, then the contact verified. */
  async confirmSafetyNumber(peer: string, shown: string): Promise<void> {
    const contact = this.contactsByName.get(peer)
    if (!contact) throw new Error(`no contact ${peer}`)
    if (shown.replace(/\s+/g, '') !== FAKE_SAFETY_GROUPS.join('')) {
      throw new ClientError(ClientErrorCode.IdentityChanged, `expected the key that was shown for ${peer}`)
    }
    contact.identityChanged = false
    contact.verified = true
  }

  async acceptIdentityChange(peer: string, shownSafetyNumber?: string): Promise<void> {
    const contact = this.contactsByName.get(peer)
    if (!contact?.identityChanged) return
    if (shownSafetyNumber !== undefined && shownSafetyNumber !== FAKE_SAFETY_GROUPS.join('')) {
      throw new ClientError(ClientErrorCode.IdentityChanged, `expected the key that was shown for ${peer}`)
    }
    contact.identityChanged = false
  }

  async markRead(peer: string, upToOrder = Number.POSITIVE_INFINITY): Promise<void> {
    const contact = this.contactsByName.get(peer)
    if (!contact) return
    const later = (this.messagesByPeer.get(peer) ?? []).filter(
      (message) => message.direction === 'in' && message.order > upToOrder,
    )
    contact.unread = Math.min(contact.unread, later.length)
  }
}

export class FakeBackend implements AccountBackend {
  readonly serverUrl = 'https://chat.example:8443'
  readonly accounts = new Map<string, { password: string; chat: FakeChat }>()
  defaultUser: string | undefined = undefined
  readonly passwordsSeen: string[] = []
  /** Accounts the server knows that have no database here (their keys were on a lost device). */
  readonly elsewhere = new Map<string, string>()

  addAccount(username: string, password: string): FakeChat {
    const chat = new FakeChat(username)
    chat.password = password
    this.accounts.set(username, { password, chat })
    return chat
  }

  /** Accounts whose files were removed (after deleteAccount). */
  readonly removed: string[] = []

  removeLocal(username: string): void {
    this.accounts.delete(username)
    this.removed.push(username)
  }

  listAccounts(): string[] {
    return [...this.accounts.keys()].sort()
  }

  async register(username: string, password: string): Promise<ChatApi> {
    this.passwordsSeen.push(password)
    return this.addAccount(username, password)
  }

  async reinstall(username: string, password: string): Promise<ChatApi> {
    this.passwordsSeen.push(password)
    if (this.accounts.has(username)) {
      throw new ClientError(ClientErrorCode.AccountMismatch, `expected no local account ${username}`)
    }
    if (this.elsewhere.get(username) !== password) {
      const serverMessage =
        'expected a registered username and its password, got a combination that does not match'
      throw new ClientError(ClientErrorCode.Server, `POST /reinstall: ${serverMessage}`, {
        serverCode: 'E2E_ERR_INVALID_CREDENTIALS',
        serverMessage,
        status: 401,
      })
    }
    this.elsewhere.delete(username)
    return this.addAccount(username, password)
  }

  async open(username: string, password: string): Promise<ChatApi> {
    this.passwordsSeen.push(password)
    const account = this.accounts.get(username)
    if (!account) throw new ClientError(ClientErrorCode.NoAccount, `no account ${username}`)
    if (account.password !== password) {
      throw new ClientError(
        ClientErrorCode.WrongPassword,
        'expected the password of this account, got another',
      )
    }
    return account.chat
  }
}
