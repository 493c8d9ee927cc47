/**
 * The local store as the client core reads and writes it: every value sealed under the account's
 * storage key, with a context that names its slot, so a sealed value moved to another record fails
 * to open:
 *
 *   sessions  key <address>  ("alice:1")       context "session:<address>"   a session record
 *             key <peer>     (format 1 only)    context "session:<peer>"      one session; migrated
 *   prekeys   key signed:<id> | one-time:<id>  context "prekey:<key>"
 *             key one-time-ledger              context "prekey:one-time-ledger"   (one-time-prekeys.ts)
 *   contacts  key <peer>                       context "contact:<peer>"
 *   messages  key <peer>/<id>                  context "message:<key>"
 *   outbox    key <id>                         context "outbox:<id>"
 *   sent      key <peer>/<id>                  context "sent:<key>"
 *   account   key "account"                    sealed by account.ts (context "account:<username>")
 *
 * Loads open and check what they read. Puts write nothing: they return the StoreOperation, so the
 * caller commits a session update, the message it produced and the prekey it consumed in one batch.
 * Crypto runs here, before the commit, never inside a store transaction.
 */

import type { AddressKey, ConversationId } from '../address.js'
import { open, seal } from '../at-rest.js'
import { equalBytes, utf8Decode, utf8Encode } from '../bytes.js'
import { matches, Type } from '../codec/schema.js'
import { exportPreKey, importPreKey, type PreKeyPair } from '../identity.js'
import { MAX_DEVICES_LIMIT } from '../limits.js'
import type { Session } from '../session.js'
import type { SessionRecord } from '../session-record.js'
import {
  deserializeSession,
  deserializeSessionRecord,
  serializeSessionRecord,
} from '../session-serialization.js'
import { ACCOUNT_KEY, type AccountSecrets, sealAccount, type UnlockedAccount } from './account.js'
import { ClientError, ClientErrorCode } from './errors.js'
import { ONE_TIME_PREKEY_LEDGER_KEY, OneTimePreKeyLedger } from './one-time-prekeys.js'
import {
  ContactRecord,
  conversationOf,
  type MessageRecord,
  messageKey,
  type OutboxRecord,
  type SentRecord,
} from './records.js'
import type { ClientStore, StoreOperation, StoreRecord, StoreTable } from './store.js'

/**
 * The store as the core commits to it: after a commit succeeds, `committed` learns what it held
 * (so the session records kept in memory follow the store exactly, and never run ahead of it).
 */
class ObservedStore implements ClientStore {
  constructor(
    private readonly inner: ClientStore,
    private readonly committed: (operations: readonly StoreOperation[]) => void,
    private readonly wiped: () => void,
    /**
     * Waits out a re-seal in progress, then gives the batch with every value sealed under the
     * current storage key (a batch sealed before a password change is sealed again).
     */
    private readonly current: (operations: readonly StoreOperation[]) => Promise<readonly StoreOperation[]>,
  ) {}

  get(table: StoreTable, key: string): Promise<StoreRecord | undefined> {
    return this.inner.get(table, key)
  }

  getMany(table: StoreTable, keys: readonly string[]): Promise<(StoreRecord | undefined)[]> {
    return this.inner.getMany(table, keys)
  }

  list(table: StoreTable): Promise<StoreRecord[]> {
    return this.inner.list(table)
  }

  listMessages(
    conversation: ConversationId,
    options: { limit: number; beforeOrder?: number },
  ): Promise<StoreRecord[]> {
    return this.inner.listMessages(conversation, options)
  }

  async commit(operations: readonly StoreOperation[]): Promise<void> {
    const current = await this.current(operations)
    await this.inner.commit(current)
    this.committed(current)
  }

  async wipe(): Promise<void> {
    this.wiped()
    await this.inner.wipe()
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

/**
 * Messages kept opened in memory after their commit, at most: the newest this many, and this many
 * bytes of sealed value. Reading back what just arrived (the terminal's `read` prints the backlog it
 * stored; the PWA shows the conversation) then opens nothing again.
 */
export const RECENT_MESSAGES_KEPT = 20_000
export const RECENT_MESSAGE_BYTES_KEPT = 16 * 1024 * 1024
interface RecentMessage {
  readonly message: MessageRecord
  /** What was stored: a read of any other bytes under the key is opened as usual. */
  readonly sealed: Uint8Array
}

/** The key, in the prekeys table, of our other devices' ids (which no prekey key can be). */
export const OWN_DEVICES_KEY = 'own-devices'
const OwnDevices = Type.Array(Type.Integer({ minimum: 1, maximum: 0xffff_ffff }), {
  maxItems: MAX_DEVICES_LIMIT,
})

/** The context prefix of each table's sealed values (the table above). */
const CONTEXT_PREFIX = {
  prekeys: 'prekey',
  sessions: 'session',
  contacts: 'contact',
  messages: 'message',
  outbox: 'outbox',
  sent: 'sent',
} as const satisfies Readonly<Record<Exclude<StoreTable, 'account'>, string>>
const SEALED_TABLES = Object.keys(CONTEXT_PREFIX) as (keyof typeof CONTEXT_PREFIX)[]

/** Records opened and sealed again at once while re-sealing (bounds the crypto in flight). */
const RESEAL_BATCH = 256

/** How a value put by this store was sealed: enough to seal it again under a new key. */
type SealedWith =
  | { readonly key: CryptoKey; readonly context: string }
  | { readonly key: CryptoKey; readonly secrets: AccountSecrets }

export class SealedStore {
  /**
   * The store to read and commit through (every part of the core does): it keeps the live session
   * records below in step with what is committed.
   */
  readonly store: ClientStore
  private readonly raw: ClientStore
  private unlocked: UnlockedAccount
  /**
   * After a password change, the storage key before it: a record read just before the switch is
   * still opened (in memory only, until the store closes).
   */
  private previousKey: CryptoKey | undefined
  /** A re-seal under way (commits wait for it). */
  private resealing: Promise<void> | undefined
  /** The key and context each value put by this store was sealed with. */
  private readonly sealedWith = new WeakMap<Uint8Array, SealedWith>()
  /**
   * Session records as last committed, by address: decrypting a backlog reuses the record (and its
   * imported keys) instead of reading, opening and rebuilding it for every message.
   */
  private readonly liveSessions = new Map<string, SessionRecord>()
  /** The record each pending session put will store, once its commit succeeds. */
  private readonly pendingSessions = new WeakMap<StoreOperation, SessionRecord>()
  /** Messages as last committed, oldest first (RECENT_MESSAGES_KEPT), by store key. */
  private readonly recentMessages = new Map<string, RecentMessage>()
  private recentMessageBytes = 0
  /** The message each pending message put will store. */
  private readonly pendingMessages = new WeakMap<StoreOperation, MessageRecord>()

  constructor(store: ClientStore, account: UnlockedAccount) {
    this.raw = store
    this.store = new ObservedStore(
      store,
      (operations) => this.committed(operations),
      () => {
        this.liveSessions.clear()
        this.recentMessages.clear()
        this.recentMessageBytes = 0
      },
      (operations) => this.current(operations),
    )
    this.unlocked = account
  }

  /**
   * Seals every record of the store again under a new storage key (a password change), with the
   * account's secrets as given, in one commit: the store opens with the old password until it
   * lands and with the new one after, never with neither. Commits from the rest of the core wait
   * meanwhile, and a batch they sealed under the old key is sealed again before it is written.
   */
  async reseal(
    next: Pick<UnlockedAccount, 'storageKey' | 'parameters'>,
    secrets: AccountSecrets,
    onProgress: (done: number, total: number) => void = () => {},
  ): Promise<void> {
    while (this.resealing) await this.resealing
    let finished = () => {}
    this.resealing = new Promise<void>((resolve) => {
      finished = resolve
    })
    try {
      const listed = await Promise.all(SEALED_TABLES.map((table) => this.raw.list(table)))
      const work = SEALED_TABLES.flatMap((table, i) => listed[i]!.map((record) => ({ table, record })))
      const operations: StoreOperation[] = []
      onProgress(0, work.length)
      for (let start = 0; start < work.length; start += RESEAL_BATCH) {
        const batch = work.slice(start, start + RESEAL_BATCH)
        operations.push(
          ...(await Promise.all(
            batch.map(async ({ table, record }): Promise<StoreOperation> => {
              const context = `${CONTEXT_PREFIX[table]}:${record.key}`
              const value = await seal(next.storageKey, await this.openBytes(record.value, context), context)
              return { op: 'put', table, record: { ...record, value } }
            }),
          )),
        )
        onProgress(Math.min(work.length, start + batch.length), work.length)
      }
      const unlocked: UnlockedAccount = { ...this.unlocked, ...next, secrets }
      operations.push({
        op: 'put',
        table: 'account',
        record: { key: ACCOUNT_KEY, value: await sealAccount(unlocked, secrets) },
      })
      await this.raw.commit(operations)
      this.previousKey = this.unlocked.storageKey
      this.unlocked = unlocked
      // Their sealed bytes are no longer what the store holds.
      this.recentMessages.clear()
      this.recentMessageBytes = 0
    } finally {
      this.resealing = undefined
      finished()
    }
  }

  /** The batch to commit now: after any re-seal, with every value sealed under today's key. */
  private async current(operations: readonly StoreOperation[]): Promise<readonly StoreOperation[]> {
    while (this.resealing) await this.resealing
    const key = this.unlocked.storageKey
    const stale = (operation: StoreOperation) =>
      operation.op === 'put' && (this.sealedWith.get(operation.record.value)?.key ?? key) !== key
    if (!operations.some(stale)) return operations
    return Promise.all(
      operations.map(async (operation) => {
        if (operation.op !== 'put') return operation
        const how = this.sealedWith.get(operation.record.value)
        if (!how || how.key === key) return operation
        const value =
          'secrets' in how
            ? await sealAccount(this.unlocked, how.secrets)
            : await seal(key, await open(how.key, operation.record.value, how.context), how.context)
        this.sealedWith.set(
          value,
          'secrets' in how ? { key, secrets: how.secrets } : { key, context: how.context },
        )
        const fresh: StoreOperation = { ...operation, record: { ...operation.record, value } }
        const session = this.pendingSessions.get(operation)
        if (session) this.pendingSessions.set(fresh, session)
        const message = this.pendingMessages.get(operation)
        if (message) this.pendingMessages.set(fresh, message)
        return fresh
      }),
    )
  }

  /** Seals under the current storage key, remembering how (see `current`). */
  private async sealBytes(plaintext: Uint8Array, context: string): Promise<Uint8Array> {
    const key = this.unlocked.storageKey
    const value = await seal(key, plaintext, context)
    this.sealedWith.set(value, { key, context })
    return value
  }

  /** Opens under the current storage key, or the one before a password change made in this run. */
  private async openBytes(sealed: Uint8Array, context: string): Promise<Uint8Array> {
    try {
      return await open(this.unlocked.storageKey, sealed, context)
    } catch (error) {
      if (!this.previousKey) throw error
      return open(this.previousKey, sealed, context)
    }
  }

  private committed(operations: readonly StoreOperation[]): void {
    for (const operation of operations) {
      if (operation.table === 'messages') {
        this.messageCommitted(operation)
        continue
      }
      if (operation.table !== 'sessions') continue
      if (operation.op === 'delete') {
        this.liveSessions.delete(operation.key)
        continue
      }
      const record = this.pendingSessions.get(operation)
      if (record) this.liveSessions.set(operation.record.key, record)
      // A session put that did not come from sessionRecordPut: the store is the truth.
      else this.liveSessions.delete(operation.record.key)
    }
  }

  private messageCommitted(operation: StoreOperation): void {
    const key = operation.op === 'put' ? operation.record.key : operation.key
    const previous = this.recentMessages.get(key)
    if (previous) {
      this.recentMessages.delete(key)
      this.recentMessageBytes -= previous.sealed.length
    }
    const message = operation.op === 'put' ? this.pendingMessages.get(operation) : undefined
    if (operation.op !== 'put' || !message) return
    const sealed = operation.record.value.slice()
    this.recentMessages.set(key, { message, sealed })
    this.recentMessageBytes += sealed.length
    for (const [oldest, entry] of this.recentMessages) {
      if (
        this.recentMessages.size <= RECENT_MESSAGES_KEPT &&
        this.recentMessageBytes <= RECENT_MESSAGE_BYTES_KEPT
      ) {
        break
      }
      this.recentMessages.delete(oldest)
      this.recentMessageBytes -= entry.sealed.length
    }
  }

  /** The account with its current secrets (as last put, whether or not that batch was committed yet). */
  get account(): UnlockedAccount {
    return this.unlocked
  }

  async saveSecrets(secrets: AccountSecrets): Promise<void> {
    await this.store.commit([await this.accountPut(secrets)])
  }

  /** The operation that stores the account with new secrets; the in-memory copy follows at once. */
  async accountPut(secrets: AccountSecrets): Promise<StoreOperation> {
    this.unlocked = { ...this.unlocked, secrets }
    const value = await sealAccount(this.unlocked, secrets)
    this.sealedWith.set(value, { key: this.unlocked.storageKey, secrets })
    return { op: 'put', table: 'account', record: { key: ACCOUNT_KEY, value } }
  }

  async loadSessionRecord(address: AddressKey): Promise<SessionRecord | undefined> {
    const live = this.liveSessions.get(address)
    if (live) return live
    const record = await this.store.get('sessions', address)
    if (!record) return undefined
    const opened = await this.openSessionRecord(address, record.value)
    // (Work on one address is serialised, so nothing newer can have been committed meanwhile.)
    if (!this.liveSessions.has(address)) this.liveSessions.set(address, opened)
    return this.liveSessions.get(address)!
  }

  async openSessionRecord(address: AddressKey, sealed: Uint8Array): Promise<SessionRecord> {
    try {
      return await deserializeSessionRecord(await this.openBytes(sealed, `session:${address}`))
    } catch (cause) {
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        'expected a readable session record, got a damaged one',
        { cause },
      )
    }
  }

  async sessionRecordPut(address: AddressKey, record: SessionRecord): Promise<StoreOperation> {
    const value = await this.sealBytes(await serializeSessionRecord(record), `session:${address}`)
    const operation: StoreOperation = { op: 'put', table: 'sessions', record: { key: address, value } }
    this.pendingSessions.set(operation, record)
    return operation
  }

  /** A session as records format 1 stored it: one per contact, keyed by username. */
  async openLegacySession(peer: string, sealed: Uint8Array): Promise<Session> {
    try {
      return await deserializeSession(await this.openBytes(sealed, `session:${peer}`))
    } catch (cause) {
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        'expected a readable session record, got a damaged one',
        { cause },
      )
    }
  }

  /** `key` is "signed:<id>" or "one-time:<id>". */
  async loadPreKey(key: string): Promise<PreKeyPair | undefined> {
    const record = await this.store.get('prekeys', key)
    if (!record) return undefined
    return importPreKey(await this.openBytes(record.value, `prekey:${key}`))
  }

  async preKeyPut(preKey: PreKeyPair, signed: boolean): Promise<StoreOperation> {
    const key = `${signed ? 'signed' : 'one-time'}:${preKey.keyId}`
    const value = await this.sealBytes(await exportPreKey(preKey), `prekey:${key}`)
    return { op: 'put', table: 'prekeys', record: { key, value } }
  }

  /** The one-time prekey ledger; undefined when none is stored yet (stores written before it). */
  async loadOneTimePreKeyLedger(): Promise<OneTimePreKeyLedger | undefined> {
    const record = await this.store.get('prekeys', ONE_TIME_PREKEY_LEDGER_KEY)
    if (!record) return undefined
    const ledger = await this.openJson<unknown>(record.value, `prekey:${ONE_TIME_PREKEY_LEDGER_KEY}`)
    if (!matches(OneTimePreKeyLedger, ledger)) {
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        'expected a one-time prekey ledger, got a damaged one',
      )
    }
    return ledger
  }

  async oneTimePreKeyLedgerPut(ledger: OneTimePreKeyLedger): Promise<StoreOperation> {
    const key = ONE_TIME_PREKEY_LEDGER_KEY
    return {
      op: 'put',
      table: 'prekeys',
      record: { key, value: await this.sealJson(ledger, `prekey:${key}`) },
    }
  }

  /**
   * Our other devices as last learned (docs/protocol.md §13.9), kept beside the prekeys under
   * OWN_DEVICES_KEY (re-sealed with them); undefined when none was stored.
   */
  async loadOwnDevices(): Promise<number[] | undefined> {
    const record = await this.store.get('prekeys', OWN_DEVICES_KEY)
    if (!record) return undefined
    const devices = await this.openJson<unknown>(record.value, `prekey:${OWN_DEVICES_KEY}`)
    if (!matches(OwnDevices, devices)) {
      throw new ClientError(ClientErrorCode.CorruptStore, 'expected a list of our devices, got a damaged one')
    }
    return devices
  }

  async ownDevicesPut(devices: readonly number[]): Promise<StoreOperation> {
    const key = OWN_DEVICES_KEY
    return {
      op: 'put',
      table: 'prekeys',
      record: { key, value: await this.sealJson(devices, `prekey:${key}`) },
    }
  }

  async loadContact(peer: string): Promise<ContactRecord | undefined> {
    const record = await this.store.get('contacts', peer)
    return record && this.openContact(peer, record.value)
  }

  async listContacts(): Promise<ContactRecord[]> {
    const stored = await this.store.list('contacts')
    return Promise.all(stored.map((record) => this.openContact(record.key, record.value)))
  }

  async openContact(peer: string, sealed: Uint8Array): Promise<ContactRecord> {
    const contact = await this.openJson<ContactRecord>(sealed, `contact:${peer}`)
    if (!matches(ContactRecord, contact)) {
      throw new ClientError(ClientErrorCode.CorruptStore, 'expected a contact record, got something else')
    }
    return contact
  }

  async contactPut(contact: ContactRecord): Promise<StoreOperation> {
    const { pendingIdentity, ...rest } = contact
    const value = await this.sealJson(pendingIdentity ? contact : rest, `contact:${contact.username}`)
    return { op: 'put', table: 'contacts', record: { key: contact.username, value } }
  }

  async loadMessage(conversation: ConversationId, id: string): Promise<MessageRecord | undefined> {
    const key = messageKey(conversation, id)
    const record = await this.store.get('messages', key)
    return record && this.openMessage(key, record.value)
  }

  /** `key` is the message's store key, "<peer>/<id>". */
  async openMessage(key: string, sealed: Uint8Array): Promise<MessageRecord> {
    const recent = this.recentMessages.get(key)
    if (recent && equalBytes(recent.sealed, sealed)) {
      return recent.message
    }
    return this.openJson<MessageRecord>(sealed, `message:${key}`)
  }

  async messagePut(message: MessageRecord): Promise<StoreOperation> {
    const key = messageKey(conversationOf(message), message.id)
    const operation: StoreOperation = {
      op: 'put',
      table: 'messages',
      record: {
        key,
        peer: message.peer,
        order: message.order,
        value: await this.sealJson(message, `message:${key}`),
      },
    }
    this.pendingMessages.set(operation, message)
    return operation
  }

  async loadOutbox(id: string): Promise<OutboxRecord | undefined> {
    const record = await this.store.get('outbox', id)
    return record && this.openOutbox(id, record.value)
  }

  async openOutbox(id: string, sealed: Uint8Array): Promise<OutboxRecord> {
    return this.openJson<OutboxRecord>(sealed, `outbox:${id}`)
  }

  async outboxPut(entry: OutboxRecord, order: number): Promise<StoreOperation> {
    return {
      op: 'put',
      table: 'outbox',
      record: {
        key: entry.id,
        peer: entry.peer,
        order,
        value: await this.sealJson(entry, `outbox:${entry.id}`),
      },
    }
  }

  async loadSent(conversation: ConversationId, id: string): Promise<SentRecord | undefined> {
    const key = messageKey(conversation, id)
    const record = await this.store.get('sent', key)
    return record && this.openJson<SentRecord>(record.value, `sent:${key}`)
  }

  async sentPut(entry: SentRecord): Promise<StoreOperation> {
    const key = messageKey(conversationOf(entry), entry.id)
    return {
      op: 'put',
      table: 'sent',
      record: {
        key,
        peer: entry.peer,
        order: entry.sentAt,
        value: await this.sealJson(entry, `sent:${key}`),
      },
    }
  }

  private async sealJson(value: unknown, context: string): Promise<Uint8Array> {
    return this.sealBytes(utf8Encode(JSON.stringify(value)), context)
  }

  private async openJson<T>(sealed: Uint8Array, context: string): Promise<T> {
    try {
      return JSON.parse(utf8Decode(await this.openBytes(sealed, context))) as T
    } catch (cause) {
      throw new ClientError(
        ClientErrorCode.CorruptStore,
        `expected a readable ${context.split(':')[0]} record, got a damaged one`,
        { cause },
      )
    }
  }
}
