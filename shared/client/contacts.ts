/**
 * Contacts and trust: whom we talk to, which identity key we trust for each (on first use, then
 * only what the user accepts), verification by safety number, key-change warnings, presence, and
 * unread counts. The one place that decides whether an identity seen in a message, a bundle or the
 * directory is the trusted one, a change to warn about, or the first one seen.
 *
 * What it does not know: sessions beyond dropping those of a replaced key, sockets, messages.
 */
import { address, DEFAULT_DEVICE_ID } from '../address.js'
import {
  IdentityResponse,
  PreKeyBundleResponse,
  type PublicIdentityJson,
  UserSearchResponse,
} from '../codec/api.js'
import { FRAME_VERSION } from '../codec/frames.js'
import { preKeyBundleFromJson, publicIdentityFromJson, publicIdentityToJson } from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import type { PreKeyBundle } from '../identity.js'
import { MAX_PRESENCE_NAMES_PER_FRAME, USER_SEARCH_MIN_LENGTH } from '../limits.js'
import { type SafetyNumber, safetyNumber } from '../safety-number.js'
import type { ClientContext } from './context.js'
import { ClientError, ClientErrorCode, isClientError } from './errors.js'
import { contactDevices } from './fan-out.js'
import { type ContactRecord, contactView, identitiesEqual } from './records.js'
import type { ContactView } from './views.js'

/** What a message, bundle or directory answer proved about a contact's identity. */
export interface ContactSeen {
  readonly contact: ContactRecord
  readonly identityChanged: boolean
  readonly newContact: boolean
}

/** The contact after `seen` was proved to be `peer`'s identity (trust on first use). */
export function contactSeen(
  contact: ContactRecord | undefined,
  peer: string,
  seen: PublicIdentityJson,
): ContactSeen {
  if (!contact) {
    return {
      contact: { username: peer, identity: seen, verified: false, unread: 0 },
      identityChanged: false,
      newContact: true,
    }
  }
  if (!contact.identity)
    return { contact: { ...contact, identity: seen }, identityChanged: false, newContact: false }
  if (identitiesEqual(contact.identity, seen) || identitiesEqual(contact.pendingIdentity, seen)) {
    return { contact, identityChanged: false, newContact: false }
  }
  return {
    contact: { ...contact, pendingIdentity: seen, verified: false },
    identityChanged: true,
    newContact: false,
  }
}

export class Contacts {
  private readonly ctx: ClientContext
  /** Who is online, from the connection's presence updates (never stored). */
  private readonly online = new Set<string>()
  /**
   * Called, in the contact's queue, once the user accepted a changed key, with the retry requests
   * that came from that key meanwhile (the retries part answers them).
   */
  onIdentityAccepted: (peer: string, retryRequests: readonly string[]) => Promise<void> = async () => {}

  constructor(ctx: ClientContext) {
    this.ctx = ctx
  }

  async list(): Promise<ContactView[]> {
    return (await this.ctx.records.listContacts())
      .map((contact) => this.view(contact))
      .sort((a, b) => (b.lastMessageAt ?? 0) - (a.lastMessageAt ?? 0) || a.username.localeCompare(b.username))
  }

  async get(peer: string): Promise<ContactView | undefined> {
    const contact = await this.ctx.records.loadContact(peer)
    return contact && this.view(contact)
  }

  view(contact: ContactRecord): ContactView {
    return contactView(contact, this.online.has(contact.username))
  }

  presenceChanged(username: string, online: boolean): void {
    if (online) this.online.add(username)
    else this.online.delete(username)
    this.ctx.events.emit('presence', { username, online })
  }

  /** The connection closed: nobody's presence is known any more. */
  forgetPresence(): void {
    this.online.clear()
  }

  isOnline(username: string): boolean {
    return this.online.has(username)
  }

  /** Users whose names start with `query` (the server's directory). */
  async search(query: string): Promise<string[]> {
    const prefix = query.normalize('NFKC').toLowerCase().trim()
    if (prefix.length < USER_SEARCH_MIN_LENGTH) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        `search: expected at least ${USER_SEARCH_MIN_LENGTH} characters of a username, got ${prefix.length}`,
      )
    }
    const response = decode(
      UserSearchResponse,
      await this.ctx.api('GET', `/users?query=${encodeURIComponent(query)}`),
      'user search response',
    )
    return response.users.map((user) => user.username).filter((name) => name !== this.ctx.username)
  }

  /**
   * Adds a contact by fetching their identity (trust on first use), and shares our presence with
   * them; an existing one is left as it is, except that adding someone who only wrote to us shares
   * our presence with them.
   */
  async add(peer: string): Promise<ContactView> {
    return this.ctx.peerQueues.run(peer, async () => {
      const existing = await this.ctx.records.loadContact(peer)
      if (existing) {
        if (existing.presenceShared !== false || existing.blocked) return this.view(existing)
        const shared = { ...existing, presenceShared: true }
        await this.ctx.store.commit([await this.ctx.records.contactPut(shared)])
        this.share([peer])
        return this.view(shared)
      }
      const identity = await this.fetchIdentity(peer)
      const contact: ContactRecord = {
        username: peer,
        identity,
        verified: false,
        unread: 0,
        presenceShared: true,
      }
      await this.ctx.store.commit([await this.ctx.records.contactPut(contact)])
      this.share([peer])
      this.subscribe([peer])
      return this.view(contact)
    })
  }

  /** Lets these users see our presence (the server stores it), in frames the schema allows. */
  share(peers: readonly string[]): void {
    for (let start = 0; start < peers.length; start += MAX_PRESENCE_NAMES_PER_FRAME) {
      const users = peers.slice(start, start + MAX_PRESENCE_NAMES_PER_FRAME)
      this.ctx.sendFrame({ v: FRAME_VERSION, type: 'presence.share', users })
    }
  }

  /** Asks for these users' presence (answered only by those who share it with us). */
  subscribe(peers: readonly string[]): void {
    for (let start = 0; start < peers.length; start += MAX_PRESENCE_NAMES_PER_FRAME) {
      const users = peers.slice(start, start + MAX_PRESENCE_NAMES_PER_FRAME)
      this.ctx.sendFrame({ v: FRAME_VERSION, type: 'presence.subscribe', users })
    }
  }

  /**
   * After connecting: share our presence with every contact it is shared with, ask for every
   * unblocked contact's, and repeat our blocks (the server may have lost them with its relations
   * key; each is idempotent). Blocks are repeated in the background, failures reported.
   */
  async connected(): Promise<void> {
    const contacts = await this.ctx.records.listContacts()
    const unblocked = contacts.filter((contact) => !contact.blocked)
    this.share(
      unblocked.filter((contact) => contact.presenceShared !== false).map((contact) => contact.username),
    )
    this.subscribe(unblocked.map((contact) => contact.username))
    const blocked = contacts.filter((contact) => contact.blocked).map((contact) => contact.username)
    if (blocked.length === 0) return
    void (async () => {
      for (const peer of blocked) {
        if (this.ctx.connection() !== 'online') return
        await this.ctx
          .api('PUT', `/blocks/${encodeURIComponent(peer)}`)
          .catch((error: unknown) => this.ctx.report(error))
      }
    })()
  }

  /**
   * Blocks `peer` (the server first, so a refusal changes nothing here): their messages are no
   * longer delivered to us, our presence is hidden from them, and we neither send to them nor store
   * what still arrives from them. The conversation stays, marked; someone not yet a contact becomes
   * one, blocked.
   */
  async block(peer: string): Promise<ContactView> {
    if (peer === this.ctx.username)
      throw new ClientError(ClientErrorCode.InvalidInput, 'expected another user, got yourself')
    await this.ctx.api('PUT', `/blocks/${encodeURIComponent(peer)}`)
    const blocked = await this.ctx.peerQueues.run(peer, async () => {
      const contact: ContactRecord = (await this.ctx.records.loadContact(peer)) ?? {
        username: peer,
        verified: false,
        unread: 0,
        presenceShared: false,
      }
      const blocked = { ...contact, blocked: true }
      await this.ctx.store.commit([await this.ctx.records.contactPut(blocked)])
      return blocked
    })
    if (this.online.delete(peer)) this.ctx.events.emit('presence', { username: peer, online: false })
    this.ctx.events.emit('blocked', { peer, blocked: true })
    return this.view(blocked)
  }

  /** Unblocks `peer`: messages flow again, and our presence is shared again if it was before. */
  async unblock(peer: string): Promise<ContactView | undefined> {
    await this.ctx.api('DELETE', `/blocks/${encodeURIComponent(peer)}`)
    const unblocked = await this.ctx.peerQueues.run(peer, async () => {
      const contact = await this.ctx.records.loadContact(peer)
      if (!contact?.blocked) return contact
      const { blocked: _blocked, ...rest } = contact
      await this.ctx.store.commit([await this.ctx.records.contactPut(rest)])
      return rest
    })
    if (!unblocked) return undefined
    if (unblocked.presenceShared !== false) this.share([peer])
    this.subscribe([peer])
    this.ctx.events.emit('blocked', { peer, blocked: false })
    return this.view(unblocked)
  }

  /** The safety number to compare with `peer` (the identity we trust, or the new one if it changed). */
  async safetyNumber(peer: string): Promise<SafetyNumber> {
    const contact = await this.ctx.records.loadContact(peer)
    const identity = contact?.pendingIdentity ?? contact?.identity
    if (!identity) {
      throw new ClientError(
        ClientErrorCode.InvalidState,
        `expected a known contact, got ${peer} without keys`,
      )
    }
    return this.safetyNumberWith(peer, identity)
  }

  private safetyNumberWith(peer: string, identity: PublicIdentityJson): SafetyNumber {
    return safetyNumber(
      { username: this.ctx.username, identity: this.ctx.identity().public },
      { username: peer, identity: publicIdentityFromJson(identity) },
    )
  }

  /** Throws IdentityChanged unless `shown` is the safety number of `identity` (spaces ignored). */
  private checkShown(
    peer: string,
    identity: PublicIdentityJson,
    shown: string | undefined,
    what: string,
  ): void {
    if (shown === undefined) return
    if (this.safetyNumberWith(peer, identity).digits !== shown.replace(/\s+/g, '')) {
      throw new ClientError(
        ClientErrorCode.IdentityChanged,
        `expected the key that was shown for ${peer}, got ${what}`,
      )
    }
  }

  /**
   * The user compared `shown` with `peer`'s own screen and they matched: the one rule both UIs
   * follow. If `peer`'s key had changed, the new key is accepted (the user has just compared it)
   * and marked verified; otherwise the trusted key is marked verified. If the key is no longer the
   * one `shown` was computed from, nothing changes and IdentityChanged is thrown.
   */
  async confirmSafetyNumber(peer: string, shown: string): Promise<void> {
    await this.ctx.peerQueues.run(peer, async () => {
      const contact = await this.ctx.records.loadContact(peer)
      const identity = contact?.pendingIdentity ?? contact?.identity
      if (!contact || !identity) {
        throw new ClientError(ClientErrorCode.InvalidState, `expected a contact named ${peer}, got none`)
      }
      this.checkShown(peer, identity, shown, 'another')
      if (contact.pendingIdentity) await this.accept(contact, true)
      else await this.ctx.store.commit([await this.ctx.records.contactPut({ ...contact, verified: true })])
    })
  }

  /**
   * Records whether the user compared safety numbers with `peer` and they matched. Refused while a
   * key change waits to be accepted (confirmSafetyNumber does both). With `shown`, nothing changes
   * if the trusted key is no longer the one it was computed from.
   */
  async markVerified(peer: string, verified: boolean, shown?: string): Promise<void> {
    await this.update(peer, (contact) => {
      if (contact.pendingIdentity) {
        throw new ClientError(
          ClientErrorCode.IdentityChanged,
          `expected a settled identity for ${contact.username}, got a change to acknowledge first`,
        )
      }
      if (contact.identity) this.checkShown(peer, contact.identity, shown, 'another')
      return { ...contact, verified }
    })
  }

  /**
   * The user has seen the warning that `peer`'s key changed: trust the new key from now on (not
   * verified). Sessions on the old key are dropped. With `shown`, nothing is accepted if the key
   * changed again meanwhile (IdentityChanged is thrown).
   */
  async acceptIdentityChange(peer: string, shown?: string): Promise<void> {
    await this.ctx.peerQueues.run(peer, async () => {
      const contact = await this.ctx.records.loadContact(peer)
      if (!contact?.pendingIdentity) return
      this.checkShown(peer, contact.pendingIdentity, shown, 'a newer one')
      await this.accept(contact, false)
    })
  }

  /** In the contact's queue: the pending identity becomes the trusted one. */
  private async accept(contact: ContactRecord, verified: boolean): Promise<void> {
    const accepted = contact.pendingIdentity!
    const { retryRequests, ...settled } = contact
    await this.ctx.store.commit([
      await this.ctx.records.contactPut({
        ...settled,
        identity: accepted,
        pendingIdentity: undefined,
        verified,
      }),
      // Sessions with the old key are of no use now (with any of the contact's devices); those
      // already on the new key stay.
      ...(await Promise.all(
        contactDevices(contact).map((device) =>
          this.ctx.sessions.retain(address(contact.username, device), (session) =>
            identitiesEqual(publicIdentityToJson(session.remoteIdentity), accepted),
          ),
        ),
      )),
    ])
    if (retryRequests && retryRequests.length > 0)
      await this.onIdentityAccepted(contact.username, retryRequests)
  }

  /**
   * Marks the conversation read up to the entry at `upToOrder` (default: everything). Entries that
   * arrive meanwhile, after that position, stay unread.
   */
  async markRead(
    peer: string,
    upToOrder: number,
    unreadAfter: (contact: ContactRecord) => Promise<number>,
  ): Promise<void> {
    await this.ctx.peerQueues.run(peer, async () => {
      const contact = await this.ctx.records.loadContact(peer)
      if (!contact)
        throw new ClientError(ClientErrorCode.InvalidState, `expected a contact named ${peer}, got none`)
      const unread = Number.isFinite(upToOrder) && contact.unread > 0 ? await unreadAfter(contact) : 0
      const readUpTo = Number.isFinite(upToOrder) ? upToOrder : Math.max(this.ctx.now(), this.ctx.lastOrder())
      await this.ctx.store.commit([await this.ctx.records.contactPut({ ...contact, unread, readUpTo })])
    })
  }

  private async update(peer: string, change: (contact: ContactRecord) => ContactRecord): Promise<void> {
    await this.ctx.peerQueues.run(peer, async () => {
      const contact = await this.ctx.records.loadContact(peer)
      if (!contact)
        throw new ClientError(ClientErrorCode.InvalidState, `expected a contact named ${peer}, got none`)
      await this.ctx.store.commit([await this.ctx.records.contactPut(change(contact))])
    })
  }

  /**
   * Asks the server for `peer`'s current identity and raises a warning if it is not the one we
   * trust. A deleted account is marked as such; a name that answers again after it was deleted
   * (someone registered it once the server's hold ended) loses the mark, and its key is a change
   * to warn about like any other: never trusted silently.
   */
  async checkIdentity(peer: string): Promise<void> {
    const contact = await this.ctx.records.loadContact(peer)
    if (!contact) return
    let current: PublicIdentityJson
    try {
      current = await this.fetchIdentity(peer)
    } catch (error) {
      if (isClientError(error, ClientErrorCode.AccountDeleted)) {
        await this.markDeleted(peer)
        return
      }
      throw error
    }
    await this.ctx.peerQueues.run(peer, async () => {
      const loaded = await this.ctx.records.loadContact(peer)
      if (!loaded?.identity) return
      const { deletedAt, ...latest } = loaded
      const same =
        identitiesEqual(latest.identity, current) || identitiesEqual(latest.pendingIdentity, current)
      if (same && deletedAt === undefined) return
      await this.ctx.store.commit([
        await this.ctx.records.contactPut(
          same ? latest : { ...latest, pendingIdentity: current, verified: false },
        ),
      ])
      if (!same) this.ctx.events.emit('identity-changed', { peer })
    })
  }

  /**
   * The server said that `peer` deleted their account: the contact is marked (once) and the UIs
   * are told. The conversation and its history stay.
   */
  async markDeleted(peer: string): Promise<void> {
    await this.ctx.peerQueues.run(peer, () => this.recordDeleted(peer))
  }

  /** markDeleted for a caller already in `peer`'s queue. */
  private async recordDeleted(peer: string): Promise<void> {
    const contact = await this.ctx.records.loadContact(peer)
    if (!contact || contact.deletedAt !== undefined) return
    await this.ctx.store.commit([
      await this.ctx.records.contactPut({ ...contact, deletedAt: this.ctx.now() }),
    ])
    this.ctx.events.emit('account-deleted', { peer })
  }

  /**
   * While we were offline a contact may have started over with new keys; the server tells only
   * those online at the time. Asked once per connection for every contact we have a session with.
   */
  async checkAll(): Promise<void> {
    try {
      const users = new Set((await this.ctx.sessions.addresses()).map((peer) => peer.user))
      for (const user of users) {
        if (this.ctx.connection() !== 'online') return
        await this.checkIdentity(user)
      }
    } catch (error) {
      this.ctx.report(error)
    }
  }

  /**
   * The contact to send to; refuses one whose account was deleted, one we blocked, and one whose
   * identity key changed and is not yet accepted.
   */
  async forSending(peer: string): Promise<ContactRecord | undefined> {
    const contact = await this.ctx.records.loadContact(peer)
    if (contact?.deletedAt !== undefined) {
      throw new ClientError(
        ClientErrorCode.AccountDeleted,
        `expected an account to send to, got ${peer}'s, which was deleted`,
      )
    }
    if (contact?.blocked) {
      throw new ClientError(
        ClientErrorCode.Blocked,
        `expected an unblocked contact, got ${peer}, blocked: unblock first`,
      )
    }
    if (contact?.pendingIdentity) {
      throw new ClientError(
        ClientErrorCode.IdentityChanged,
        `expected a trusted identity for ${peer}, got a changed key to acknowledge first`,
      )
    }
    return contact
  }

  /**
   * A fresh prekey bundle of `peer`, with the contact that trusts its identity (on first use). A
   * bundle whose identity is not the one we trust is recorded as a change and refused; a deleted
   * account is marked (AccountDeleted is thrown). Called in `peer`'s queue.
   */
  async fetchBundle(
    peer: string,
    contact: ContactRecord | undefined,
    device = DEFAULT_DEVICE_ID,
  ): Promise<{ bundle: PreKeyBundle; contact: ContactRecord }> {
    let answer: unknown
    try {
      const query = device === DEFAULT_DEVICE_ID ? '' : `?device=${device}`
      answer = await this.ctx.api('GET', `/users/${encodeURIComponent(peer)}/bundle${query}`)
    } catch (error) {
      // The caller runs in the peer's queue already.
      if (isClientError(error, ClientErrorCode.AccountDeleted)) await this.recordDeleted(peer)
      throw error
    }
    const bundleJson = decode(PreKeyBundleResponse, answer, 'prekey bundle')
    if (contact?.identity && !identitiesEqual(contact.identity, bundleJson.identity)) {
      // Our own account's (a bundle of another of our devices) is no contact to warn about: refused.
      if (peer !== this.ctx.username && !identitiesEqual(contact.pendingIdentity, bundleJson.identity)) {
        await this.ctx.store.commit([
          await this.ctx.records.contactPut({
            ...contact,
            pendingIdentity: bundleJson.identity,
            verified: false,
          }),
        ])
        this.ctx.events.emit('identity-changed', { peer })
      }
      throw new ClientError(
        ClientErrorCode.IdentityChanged,
        `expected ${peer}'s known identity key, got a new one`,
      )
    }
    return {
      bundle: preKeyBundleFromJson(bundleJson),
      contact: contact?.identity
        ? contact
        : { ...(contact ?? { username: peer, verified: false, unread: 0 }), identity: bundleJson.identity },
    }
  }

  private async fetchIdentity(peer: string): Promise<PublicIdentityJson> {
    const response = decode(
      IdentityResponse,
      await this.ctx.api('GET', `/users/${encodeURIComponent(peer)}/identity`),
      'identity response',
    )
    return response.identity
  }
}
