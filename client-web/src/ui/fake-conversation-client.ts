/**
 * For browser tests only: the part of the client core that <sc-conversation> uses (events,
 * history, markRead, send, deviceId and devices) over an in-memory conversation, so the view's own logic (placing
 * entries by order, removing them, rendering notices) is tested without a server or crypto. The
 * test plays the core: `emit` sends the events the core would.
 */
import type { ChatClient, ClientEvents, DeviceView, MessageView } from '../../../shared/client/chat-client.js'
import { Emitter } from '../../../shared/client/events.js'

export class FakeConversationClient {
  readonly events = new Emitter<ClientEvents>()
  /** Conversations as the store would list them, oldest first. */
  readonly conversations = new Map<string, MessageView[]>()
  readonly readUpTo = new Map<string, number | undefined>()
  /** Which of the account's devices this is, and the account's devices (for "from Laptop"). */
  deviceId = 1
  ownDevices: DeviceView[] = []
  /** How many times the view asked for the device list. */
  devicesAsked = 0

  constructor(readonly username = 'maya') {}

  /** What the conversation view accepts as its `client`: it calls nothing else. */
  get asClient(): ChatClient {
    return this as unknown as ChatClient
  }

  setHistory(peer: string, messages: readonly MessageView[]): void {
    this.conversations.set(peer, [...messages])
  }

  async history(
    peer: string,
    options: { limit?: number; beforeOrder?: number } = {},
  ): Promise<MessageView[]> {
    const all = this.conversations.get(peer) ?? []
    const before = options.beforeOrder
    const older = before === undefined ? all : all.filter((message) => message.order < before)
    return older.slice(-(options.limit ?? 50))
  }

  async devices(): Promise<DeviceView[]> {
    this.devicesAsked++
    return this.ownDevices
  }

  async markRead(peer: string, upToOrder?: number): Promise<void> {
    this.readUpTo.set(peer, upToOrder)
  }

  async send(): Promise<MessageView> {
    throw new Error('expected no sending in this test')
  }
}
