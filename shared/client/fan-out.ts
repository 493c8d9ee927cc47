/**
 * Which devices a send goes to, and its envelopes (docs/protocol.md §13.9): one for each device of
 * the recipient (the contact's device list) and a sent copy for each other device of this account
 * (the own device list), each encrypted on the session with that device, a device without one
 * starting one from its bundle. The server compares both lists with the accounts' devices and
 * answers `devices.mismatch` when they differ; `reconcile` then brings an outbox entry in line
 * (bundles for the missing devices, sessions of the extra and stale ones archived) so that it is
 * sent again, with the same id, without the user doing anything.
 *
 * Sessions with our own devices are touched by every send to anyone, so work on them runs in this
 * account's own queue, always taken last (inside a contact's, never the other way round), which
 * keeps the queues free of deadlocks.
 */
import { address, DEFAULT_DEVICE_ID } from '../address.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import type { PublicIdentityJson } from '../codec/api.js'
import type { DeviceListDifference } from '../codec/frames.js'
import { publicIdentityToJson } from '../codec/keys.js'
import type { PreKeyBundle } from '../identity.js'
import { MAX_DEVICE_SEND_FRAME_BYTES, MAX_DEVICES_LIMIT } from '../limits.js'
import type { Contacts } from './contacts.js'
import type { ClientContext } from './context.js'
import { ClientError, ClientErrorCode, isClientError } from './errors.js'
import type { ContactRecord, OutboxRecord } from './records.js'
import type { StoreOperation } from './store.js'

/** One device's envelope of a send (base64url), as `send.devices` carries it. */
export interface DeviceBody {
  readonly device: number
  readonly body: string
}

/**
 * A new session to start with one device for this send, from a bundle fetched (and checked) for
 * it: a retry request goes to the device whose message did not open on a session it can always
 * read (docs/protocol.md §8.6).
 */
export interface FreshSession {
  readonly device: number
  readonly bundle: PreKeyBundle
}

/** JSON around a `send.devices` frame and each of its envelopes, bounded from above. */
const FRAME_OVERHEAD_BYTES = 200
const ENVELOPE_OVERHEAD_BYTES = 32

/**
 * The devices a contact's record says we send to (device 1 for records from before devices), each
 * once: an earlier version could store a device twice (two answers to one send, both met), which
 * the server refuses in every send.
 */
export function contactDevices(contact: ContactRecord | undefined): number[] {
  return contact?.devices ? sortedUnique(contact.devices) : [DEFAULT_DEVICE_ID]
}

function sortedUnique(devices: Iterable<number>): number[] {
  return [...new Set(devices)].sort((a, b) => a - b)
}

/** The contact with `device` (one that wrote to us) on its device list, if it is new there. */
export function withDevice(contact: ContactRecord, device: number): ContactRecord {
  const devices = contactDevices(contact)
  if (devices.includes(device) || devices.length >= MAX_DEVICES_LIMIT) return contact
  return { ...contact, devices: sortedUnique([...devices, device]) }
}

export class FanOut {
  constructor(
    private readonly ctx: ClientContext,
    private readonly contacts: Contacts,
  ) {}

  /** This account's trusted identity, as a contact record would hold it (bundles of our devices are checked against it). */
  private ownIdentity(): PublicIdentityJson {
    return publicIdentityToJson(this.ctx.identity().public)
  }

  /**
   * Runs `work` in `peer`'s queue and then this account's (own sessions): the order every part
   * takes them in. A send to oneself takes the own queue alone.
   */
  runWithOwn<T>(peer: string, work: () => Promise<T>): Promise<T> {
    const own = this.ctx.username
    if (peer === own) return this.ctx.peerQueues.run(own, work)
    return this.ctx.peerQueues.run(peer, () => this.ctx.peerQueues.run(own, work))
  }

  /** Our other devices, as last learned (none stored: none known). */
  async ownDevices(): Promise<number[]> {
    return sortedUnique((await this.ctx.records.loadOwnDevices()) ?? [])
  }

  /**
   * Envelopes of each of `plaintexts` for each device of `account` (a contact, or ourselves: our
   * other devices), and of its sent copy in `copies` for each of our other devices, one item after
   * another on each session, with the operations that store the sessions they advanced (and
   * started): one put per session. A device with no session gets its bundle first; one the server
   * no longer has is left out (the server's answer says so, and it goes from the list). Run inside
   * `runWithOwn(account)`.
   */
  async encryptSend(
    account: string,
    contact: ContactRecord | undefined,
    plaintexts: readonly Uint8Array[],
    copies: readonly Uint8Array[],
    options: { fresh?: FreshSession } = {},
  ): Promise<{
    items: { messages: DeviceBody[]; own: DeviceBody[] }[]
    operations: StoreOperation[]
    contact: ContactRecord | undefined
  }> {
    const toSelf = account === this.ctx.username
    const ownDevices = await this.ownDevices()
    const listed = toSelf ? ownDevices : contactDevices(contact)
    // The device a fresh session is for gets the send even if no message of its ever opened here.
    const recipients =
      options.fresh && !listed.includes(options.fresh.device)
        ? sortedUnique([...listed, options.fresh.device])
        : listed
    const operations: StoreOperation[] = []
    const forRecipient = await this.encryptTo(
      account,
      contact,
      recipients,
      plaintexts,
      operations,
      options.fresh,
    )
    const forOwn = toSelf
      ? { bodies: plaintexts.map(() => []), contact: undefined }
      : await this.encryptTo(this.ctx.username, undefined, ownDevices, copies, operations)
    const items = plaintexts.map((_, index) => ({
      messages: forRecipient.bodies[index]!,
      own: forOwn.bodies[index]!,
    }))
    for (const { messages, own } of items) {
      const sendSize =
        FRAME_OVERHEAD_BYTES +
        [...messages, ...own].reduce((sum, entry) => sum + entry.body.length + ENVELOPE_OVERHEAD_BYTES, 0)
      if (sendSize > MAX_DEVICE_SEND_FRAME_BYTES) {
        throw new ClientError(
          ClientErrorCode.InvalidInput,
          `expected a message that fits one send to ${messages.length + own.length} devices (${MAX_DEVICE_SEND_FRAME_BYTES} bytes), got a longer one: send a shorter message`,
        )
      }
    }
    return { items, operations, contact: forRecipient.contact }
  }

  /**
   * Encrypts `plaintexts` in turn for each of `devices` of `account`, pushing the session puts onto
   * `operations`: per plaintext, its envelope for each device; the contact as a bundle fetch left
   * it (trust on first use).
   */
  private async encryptTo(
    account: string,
    contact: ContactRecord | undefined,
    devices: readonly number[],
    plaintexts: readonly Uint8Array[],
    operations: StoreOperation[],
    fresh?: FreshSession,
  ): Promise<{ bodies: DeviceBody[][]; contact: ContactRecord | undefined }> {
    const bodies: DeviceBody[][] = plaintexts.map(() => [])
    let trusted = contact
    for (const device of devices) {
      const target = address(account, device)
      if (fresh?.device === device) {
        const encrypted = await this.ctx.sessions.encryptMany(target, plaintexts, {
          bundle: fresh.bundle,
          fresh: true,
        })
        operations.push(encrypted.operation)
        encrypted.envelopes.forEach((envelope, index) => {
          bodies[index]!.push({ device, body: toBase64Url(envelope) })
        })
        continue
      }
      let bundle: PreKeyBundle | undefined
      // A contact we have never written to has no trusted key yet: the first bundle sets it.
      if (!(await this.ctx.sessions.currentSession(target)) || (account !== this.ctx.username && !trusted)) {
        try {
          const fetched = await this.bundleOf(account, trusted, device)
          bundle = fetched.bundle
          if (account !== this.ctx.username) trusted = fetched.contact
        } catch (error) {
          // Removed since we learned of it: the server's answer takes it off the list.
          if (
            device !== DEFAULT_DEVICE_ID &&
            isClientError(error) &&
            error.serverCode === 'E2E_ERR_DEVICE_NOT_FOUND'
          )
            continue
          throw error
        }
      }
      const encrypted = await this.ctx.sessions.encryptMany(target, plaintexts, bundle ? { bundle } : {})
      operations.push(encrypted.operation)
      encrypted.envelopes.forEach((envelope, index) => {
        bodies[index]!.push({ device, body: toBase64Url(envelope) })
      })
    }
    return { bodies, contact: trusted }
  }

  /** A bundle of one device of `account`, checked against the identity we trust for it. */
  private bundleOf(account: string, contact: ContactRecord | undefined, device: number) {
    if (account === this.ctx.username) {
      return this.contacts.fetchBundle(
        account,
        { username: account, identity: this.ownIdentity(), verified: true, unread: 0 },
        device,
      )
    }
    return this.contacts.fetchBundle(account, contact, device)
  }

  /**
   * The server's answer that `entry` named other devices than the accounts have: the entry with
   * envelopes for the missing devices and without the extra and stale ones, the lists updated and
   * the sessions of devices that are gone archived, as operations to commit with it. Run inside
   * `runWithOwn(entry.peer)`. Throws when the entry cannot be brought in line (an entry from
   * before devices, which keeps no content; a device whose keys are not signed by its account).
   */
  async reconcile(
    entry: OutboxRecord,
    order: number,
    recipient: DeviceListDifference,
    own: DeviceListDifference,
  ): Promise<StoreOperation[]> {
    if (entry.content === undefined || entry.messages === undefined) {
      throw new ClientError(
        ClientErrorCode.InvalidState,
        `expected an outbox entry that keeps its content, got one from before devices (message ${entry.id})`,
      )
    }
    const self = this.ctx.username
    const toSelf = entry.peer === self
    const operations: StoreOperation[] = []
    const contact = toSelf ? undefined : await this.ctx.records.loadContact(entry.peer)
    const ownBefore = await this.ownDevices()
    const gone = (difference: DeviceListDifference) => new Set([...difference.extra, ...difference.stale])

    // An answer to the entry as it was before an earlier answer was met may name devices it has
    // now: each device keeps one envelope.
    const lacking = (missing: readonly number[], bodies: readonly DeviceBody[]) =>
      missing.filter((device) => !bodies.some((body) => body.device === device))

    // The recipient's side (our own other devices, on a note to oneself).
    const recipientGone = gone(recipient)
    for (const device of recipientGone)
      operations.push(await this.ctx.sessions.archiveCurrent(address(entry.peer, device)))
    const added = await this.encryptTo(
      entry.peer,
      contact,
      lacking(recipient.missing, entry.messages),
      [fromBase64Url(entry.content)],
      operations,
    )
    const messages = [
      ...entry.messages.filter((body) => !recipientGone.has(body.device)),
      ...added.bodies[0]!,
    ].sort((a, b) => a.device - b.device)
    const recipientDevices = messages.map((body) => body.device)

    // Our side: sent copies for our other devices.
    const ownGone = gone(own)
    for (const device of ownGone)
      operations.push(await this.ctx.sessions.archiveCurrent(address(self, device)))
    const ownMissing = lacking(own.missing, entry.own ?? [])
    const copies =
      ownMissing.length > 0 && entry.copy !== undefined
        ? await this.encryptTo(self, undefined, ownMissing, [fromBase64Url(entry.copy)], operations)
        : { bodies: [[]] }
    if (ownMissing.length > 0 && entry.copy === undefined) {
      throw new ClientError(
        ClientErrorCode.InvalidState,
        `expected a sent copy to encrypt, got none (message ${entry.id})`,
      )
    }
    const ownBodies = [
      ...(entry.own ?? []).filter((body) => !ownGone.has(body.device)),
      ...copies.bodies[0]!,
    ].sort((a, b) => a.device - b.device)

    const ownAfter = toSelf
      ? recipientDevices
      : sortedUnique([
          ...ownBefore.filter((device) => !ownGone.has(device)),
          ...ownBodies.map((body) => body.device),
        ])
    operations.push(await this.ctx.records.ownDevicesPut(ownAfter.slice(0, MAX_DEVICES_LIMIT)))
    if (!toSelf) {
      const known = added.contact ?? contact ?? { username: entry.peer, verified: false, unread: 0 }
      // No live device at all cannot be (an account keeps its last one): the list stays as it was.
      const devices = recipientDevices.length > 0 ? { devices: recipientDevices } : {}
      operations.push(await this.ctx.records.contactPut({ ...known, ...devices }))
    }
    operations.push(
      await this.ctx.records.outboxPut(
        { ...entry, messages, own: ownBodies, mismatches: (entry.mismatches ?? 0) + 1 },
        order,
      ),
    )
    return operations
  }

  /**
   * Our other devices as the server lists them now: stored if they differ from what we knew (the
   * sessions of those gone are archived). Takes the own queue.
   */
  async setOwnDevices(listed: readonly number[]): Promise<void> {
    const self = this.ctx.username
    await this.ctx.peerQueues.run(self, async () => {
      const known = await this.ownDevices()
      const devices = sortedUnique(listed.filter((device) => device !== this.ctx.deviceId)).slice(
        0,
        MAX_DEVICES_LIMIT,
      )
      if (known.length === devices.length && known.every((device, index) => device === devices[index])) return
      const gone = known.filter((device) => !devices.includes(device))
      await this.ctx.store.commit([
        await this.ctx.records.ownDevicesPut(devices),
        ...(await Promise.all(gone.map((device) => this.ctx.sessions.archiveCurrent(address(self, device))))),
      ])
    })
  }

  /** Our own device `device` wrote to us: it goes on the own list if it is new. */
  async learnOwnDevice(device: number): Promise<StoreOperation | undefined> {
    if (device === this.ctx.deviceId) return undefined
    const devices = await this.ownDevices()
    if (devices.includes(device)) return undefined
    return this.ctx.records.ownDevicesPut(sortedUnique([...devices, device]))
  }
}
