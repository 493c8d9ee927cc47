/**
 * The client's sessions: one session record per remote address (shared/session-record.ts), kept
 * sealed in the store. It decrypts with whichever session of the record a message belongs to,
 * accepts prekey messages (looking up and consuming our prekeys), encrypts on the current session,
 * starts new sessions from bundles, and archives or drops sessions when told to.
 *
 * Like the rest of the core, it returns store operations instead of writing: the caller commits a
 * record update together with the message it produced and the prekey it consumed, or none of them.
 * Callers serialise work per address (PeerQueues), so two jobs never advance one record at once.
 *
 * What it does not know: sockets, the server's API, contacts and whom to trust (the caller checks a
 * session's remote identity against the contact), retry requests' policy (inbox and outbox).
 */
import { type Address, type AddressKey, addressKey, parseAddressKey } from '../address.js'
import type { Envelope } from '../codec/envelope.js'
import { ProtocolError, ProtocolErrorCode } from '../errors.js'
import type { Identity, PreKeyBundle, PublicIdentity } from '../identity.js'
import type { KeyGeneration } from '../key-generation.js'
import type { MessageOpener } from '../ratchet/double-ratchet.js'
import {
  acceptSession,
  encryptMessage,
  refuseUnboundPreKeyMessage,
  type Session,
  startSession,
} from '../session.js'
import {
  archiveCurrentSession,
  decryptWithRecord,
  EMPTY_SESSION_RECORD,
  filterSessions,
  promoteSession,
  type RecordDecryption,
  type SessionRecord,
} from '../session-record.js'
import { ClientError, ClientErrorCode } from './errors.js'
import type { SealedStore } from './sealed-store.js'
import type { ClientStore, StoreOperation } from './store.js'

export interface SessionDecryption {
  readonly plaintext: Uint8Array
  /** Who the message is from, as the session that opened it knows them. */
  readonly remoteIdentity: PublicIdentity
  /** The record update, and the one-time prekey's deletion when the message started a session. */
  readonly operations: StoreOperation[]
  /** The message started a new session (the previous current one was archived). */
  readonly newSession: boolean
}

export interface SessionEncryption {
  readonly envelope: Uint8Array
  readonly operation: StoreOperation
}

/**
 * False for a session made before usernames were bound that has not been answered yet: it would
 * keep sending version-1 prekey messages, which an up-to-date peer refuses (session.ts), so the
 * next send starts a new session instead. Answered sessions of version 1 keep working both ways.
 */
function canSendOn(session: Session | null): session is Session {
  return session !== null && !(session.version === 1 && session.pendingPreKey !== null)
}

export class SessionManager {
  private readonly store: ClientStore
  private readonly records: SealedStore
  private readonly identity: () => Identity
  /** Our own canonical username: bound into every session's key agreement with the peer's. */
  private readonly username: string
  private readonly keys: KeyGeneration

  constructor(
    store: ClientStore,
    records: SealedStore,
    identity: () => Identity,
    username: string,
    keys: KeyGeneration,
  ) {
    this.store = store
    this.records = records
    this.identity = identity
    this.username = username
    this.keys = keys
  }

  async record(target: Address): Promise<SessionRecord> {
    return (await this.records.loadSessionRecord(addressKey(target))) ?? EMPTY_SESSION_RECORD
  }

  /** Every address we hold a record for. */
  async addresses(): Promise<Address[]> {
    return (await this.store.list('sessions')).map((entry) => parseAddressKey(entry.key))
  }

  /** The session we would send to `target` on now, if any (none: a bundle is needed). */
  async currentSession(target: Address): Promise<Session | null> {
    const current = (await this.record(target)).current
    return canSendOn(current) ? current : null
  }

  /**
   * Decrypts an envelope from `target` against `record` rather than the stored one (a batch of
   * deliveries from one address runs each on the record the previous one left): the record after,
   * and what the message used.
   */
  decryptWith(
    target: Address,
    record: SessionRecord,
    envelope: Envelope,
    opener?: MessageOpener,
  ): Promise<RecordDecryption> {
    return decryptWithRecord(record, envelope, (prekeyMessage) => this.accept(target, prekeyMessage), opener)
  }

  /** The operation that stores `record` as `target`'s. */
  recordPut(target: Address, record: SessionRecord): Promise<StoreOperation> {
    return this.records.sessionRecordPut(addressKey(target), record)
  }

  /** Decrypts an envelope from `target` with the session it belongs to (see decryptWithRecord). */
  async decrypt(target: Address, envelope: Envelope): Promise<SessionDecryption> {
    const record = await this.record(target)
    const result = await this.decryptWith(target, record, envelope)
    const operations = [await this.records.sessionRecordPut(addressKey(target), result.record)]
    if (result.usedOneTimePreKeyId !== undefined) {
      operations.push({ op: 'delete', table: 'prekeys', key: `one-time:${result.usedOneTimePreKeyId}` })
    }
    return {
      plaintext: result.plaintext,
      remoteIdentity: result.session.remoteIdentity,
      operations,
      newSession: result.newSession,
    }
  }

  /**
   * A prekey message from `target` that starts a new session: find our prekeys and run X3DH, with
   * the sender's name as the server stamped the delivery and ours bound into it.
   */
  private async accept(target: Address, envelope: Envelope) {
    // Before the prekey lookup: an outdated sender is the reason, whatever prekeys it names.
    refuseUnboundPreKeyMessage(envelope)
    const header = envelope.preKey!
    const signedPreKey = await this.records.loadPreKey(`signed:${header.signedPreKeyId}`)
    const oneTimePreKey =
      header.oneTimePreKeyId === undefined
        ? undefined
        : await this.records.loadPreKey(`one-time:${header.oneTimePreKeyId}`)
    if (!signedPreKey || (header.oneTimePreKeyId !== undefined && !oneTimePreKey)) {
      throw new ClientError(
        ClientErrorCode.InvalidState,
        'expected prekeys this device still holds, got ids it does not know',
      )
    }
    return acceptSession(
      this.identity(),
      envelope,
      { signedPreKey, oneTimePreKey },
      { initiator: target.user, responder: this.username },
    )
  }

  /**
   * Encrypts on the current session, or on a new one from `bundle` when there is none (or when
   * `bundle` is given and `fresh` asks for a new session regardless, as a retry request does).
   */
  async encrypt(
    target: Address,
    plaintext: Uint8Array,
    options: { bundle?: PreKeyBundle; fresh?: boolean } = {},
  ): Promise<SessionEncryption> {
    const { envelopes, operation } = await this.encryptMany(target, [plaintext], options)
    return { envelope: envelopes[0]!, operation }
  }

  /**
   * Encrypts several plaintexts to `target` one after another (each on the state the previous one
   * left), for one commit: one record put, the state after the last. `bundle` as for `encrypt`.
   */
  async encryptMany(
    target: Address,
    plaintexts: readonly Uint8Array[],
    options: { bundle?: PreKeyBundle; fresh?: boolean } = {},
  ): Promise<{ envelopes: Uint8Array[]; operation: StoreOperation }> {
    // A bundle of another device would start, under this address, a session with that device.
    if (options.bundle && options.bundle.deviceId !== target.device) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `expected a prekey bundle of ${target.user}'s device ${target.device}, got one of device ${options.bundle.deviceId}`,
      )
    }
    let record = await this.record(target)
    if (options.bundle && (options.fresh || !canSendOn(record.current))) {
      const names = { initiator: this.username, responder: target.user }
      record = promoteSession(record, await startSession(this.identity(), options.bundle, names, this.keys))
    }
    let session = record.current
    if (!canSendOn(session)) {
      throw new ClientError(
        ClientErrorCode.InvalidState,
        `expected a session with ${target.user}, got none (a prekey bundle is needed)`,
      )
    }
    const envelopes: Uint8Array[] = []
    for (const plaintext of plaintexts) {
      const encrypted = await encryptMessage(session, plaintext, this.keys)
      envelopes.push(encrypted.envelope)
      session = encrypted.session
    }
    return {
      envelopes,
      operation: await this.records.sessionRecordPut(addressKey(target), { ...record, current: session }),
    }
  }

  /** The operation that archives the current session: the next send starts a new one. */
  async archiveCurrent(target: Address): Promise<StoreOperation> {
    return this.records.sessionRecordPut(addressKey(target), archiveCurrentSession(await this.record(target)))
  }

  /** The operation that keeps only the sessions `keep` accepts (none left: the record is deleted). */
  async retain(target: Address, keep: (session: Session) => boolean): Promise<StoreOperation> {
    const key: AddressKey = addressKey(target)
    const kept = filterSessions(await this.record(target), keep)
    if (!kept.current && kept.archived.length === 0) return { op: 'delete', table: 'sessions', key }
    return this.records.sessionRecordPut(key, kept)
  }
}
