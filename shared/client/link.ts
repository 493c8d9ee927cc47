/**
 * Linking a device of an account (docs/protocol.md §13.6–§13.8), both sides, over the provisioning
 * channel's calls (provisioning-channel.ts) and the devices routes:
 *
 *   new device                                   existing device
 *   startLink: channel, e_new, code shown  →     approveLink(code): posts E_existing
 *   waitForCheck: E_existing, keys, answer →     reads the answer (name), check shown
 *                      the user compares the two checks, approves on the existing device
 *   waitForProvisioning  ←                       approve: link token, sealed content posted
 *   completeLink: own login key and prekeys for the reserved id, POST /devices, first session,
 *   the account stored as device N, the channel closed
 *
 * Every wait takes an AbortSignal (ClientError Cancelled when it fires); every refusal is a
 * ClientError: the server's (serverCode E2E_ERR_LINK_EXPIRED, _USED, _UNKNOWN, _CLAIMED,
 * E2E_ERR_LINK_TOKEN_INVALID, E2E_ERR_TOO_MANY_DEVICES, …), LinkFailed when the other device's
 * message does not open or is not what linking expects, InvalidInput for a code that is none.
 *
 * What it does not know: the UI (QR codes, prompts), sockets, messages, the history.
 */
import { fromBase64Url, toBase64Url } from '../bytes.js'
import { AddDeviceResponse, LinkTokenResponse } from '../codec/api.js'
import { publicIdentityFromJson } from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import {
  generateX25519KeyPair,
  type KeyPair,
  rsaOaepDecrypt,
  X25519_KEY_BYTES,
} from '../crypto/primitives.js'
import { deviceNameKey, sealDeviceName } from '../device-name.js'
import { isProtocolError } from '../errors.js'
import {
  decodeLinkCode,
  deriveLinkKeys,
  encodeLinkCode,
  type LinkKeys,
  openProvisioning,
  sealProvisioning,
} from '../provisioning.js'
import {
  type DecodedProvisioningContent,
  decodeLinkAnswer,
  decodeProvisioningContent,
  encodeLinkAnswer,
  encodeProvisioningContent,
  type ProvisionedContact,
} from '../provisioning-content.js'
import type { AccountSession } from './account-session.js'
import { ClientError, ClientErrorCode } from './errors.js'
import { createLinkedAccount, type LocalAccount, type LocalAccountOptions } from './lifecycle.js'
import {
  closeProvisioningChannel,
  openProvisioningChannel,
  type ProvisioningCaller,
  type ProvisioningMessage,
  postProvisioningMessage,
  readProvisioningMessages,
} from './provisioning-channel.js'
import type { ContactRecord } from './records.js'
import type { SealedStore } from './sealed-store.js'
import { errorFromResponse, type HttpClient } from './transport.js'

/** What the new device learned from the provisioning message: what a UI shows, nothing secret. */
export interface ProvisionedAccount {
  readonly username: string
  readonly deviceId: number
  /** Contacts that came along. */
  readonly contacts: number
  /** Contacts the existing device had to leave out (the message's size bound). */
  readonly omittedContacts: number
}

function cancelled(): ClientError {
  return new ClientError(ClientErrorCode.Cancelled, 'expected to go on waiting, got told to stop')
}

/** `work`, or Cancelled as soon as `signal` fires (the work itself runs on, its outcome unused). */
async function unlessAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work
  if (signal.aborted) {
    work.catch(() => {})
    throw cancelled()
  }
  let stop = () => {}
  const aborted = new Promise<never>((_, reject) => {
    const listener = () => reject(cancelled())
    signal.addEventListener('abort', listener, { once: true })
    stop = () => signal.removeEventListener('abort', listener)
  })
  work.catch(() => {})
  try {
    return await Promise.race([work, aborted])
  } finally {
    stop()
  }
}

/**
 * The first message for `caller` after position `after`, asking again whenever the server's long
 * poll ends with none, until one comes, the channel is refused (expired, closed) or `signal` fires.
 */
async function nextMessage(
  http: HttpClient,
  caller: ProvisioningCaller,
  after: number,
  signal: AbortSignal | undefined,
): Promise<ProvisioningMessage> {
  for (;;) {
    if (signal?.aborted) throw cancelled()
    // The long poll itself is given up too (its connection closed), not left to run out.
    const answer = await unlessAborted(readProvisioningMessages(http, caller, after, signal), signal)
    const first = answer.messages[0]
    if (first) return first
  }
}

function linkFailed(what: string, cause: unknown): ClientError {
  const reason = isProtocolError(cause) ? cause.message : 'it could not be read'
  return new ClientError(
    ClientErrorCode.LinkFailed,
    `${what}: expected a message of this link, got one that failed (${reason})`,
    {
      cause,
    },
  )
}

/** What only the new device's own calls may reach: the channel, the keys, the opened content. */
interface NewDeviceState {
  readonly http: HttpClient
  readonly caller: Extract<ProvisioningCaller, { device: 'new' }>
  readonly ephemeral: KeyPair
  readonly name: string | undefined
  /** The last position read on the new device's side. */
  position: number
  keys?: LinkKeys
  content?: DecodedProvisioningContent
}

const newDeviceStates = new WeakMap<PendingLink, NewDeviceState>()

/** A link the new device started: the code to show, and the waits for the existing device. */
export class PendingLink {
  /** The link code to show, as a QR code or as text to paste (docs/protocol.md §13.6). */
  readonly code: string
  /** When the server's channel, and so the code, expires (the server's clock). */
  readonly expiresAt: number

  constructor(code: string, expiresAt: number, state: NewDeviceState) {
    this.code = code
    this.expiresAt = expiresAt
    newDeviceStates.set(this, state)
  }

  private get state(): NewDeviceState {
    return newDeviceStates.get(this)!
  }

  /**
   * Waits for the existing device to read the code and answer with its key, then says this
   * device's name to it (sealed) and returns the check both screens show.
   */
  async waitForCheck(signal?: AbortSignal): Promise<string> {
    const state = this.state
    if (state.keys) return state.keys.check
    const first = await nextMessage(state.http, state.caller, state.position, signal)
    let keys: LinkKeys
    try {
      if (first.message.length !== X25519_KEY_BYTES) {
        throw new ClientError(
          ClientErrorCode.LinkFailed,
          `existing device's key: expected ${X25519_KEY_BYTES} bytes, got ${first.message.length}`,
        )
      }
      keys = await deriveLinkKeys(state.ephemeral.privateKey, 'new device', {
        newDevicePublicKey: state.ephemeral.publicKey,
        existingDevicePublicKey: first.message,
      })
    } catch (error) {
      await this.cancel()
      throw error instanceof ClientError ? error : linkFailed("existing device's key", error)
    }
    const answer = await sealProvisioning(
      keys,
      'to existing device',
      encodeLinkAnswer(state.name === undefined ? {} : { name: state.name }),
    )
    await unlessAborted(postProvisioningMessage(state.http, state.caller, answer), signal)
    state.position = first.position
    state.keys = keys
    return keys.check
  }

  /**
   * Waits until the user approved on the existing device and its provisioning message arrived;
   * opens and checks it. A message that does not open (altered, reflected) or does not decode ends
   * the link (LinkFailed, the channel closed); a refusal on the other device arrives as the
   * server's E2E_ERR_LINK_REFUSED (E2E_ERR_LINK_USED: the code was given up on this side).
   */
  async waitForProvisioning(signal?: AbortSignal): Promise<ProvisionedAccount> {
    const state = this.state
    if (!state.content) {
      await this.waitForCheck(signal)
      const keys = state.keys!
      const sealed = await nextMessage(state.http, state.caller, state.position, signal)
      state.position = sealed.position
      try {
        state.content = await decodeProvisioningContent(
          await openProvisioning(keys, 'to new device', sealed.message),
        )
      } catch (error) {
        await this.cancel()
        throw linkFailed('provisioning message', error)
      }
    }
    const { username, deviceId, contacts, omittedContacts } = state.content
    return { username, deviceId, contacts: contacts.length, omittedContacts }
  }

  /** Gives up: the channel is closed, and the code is used (a closed channel refuses both devices). */
  async cancel(): Promise<void> {
    await closeProvisioningChannel(this.state.http, this.state.caller).catch(() => undefined)
  }

  toJSON(): { expiresAt: number } {
    return { expiresAt: this.expiresAt }
  }
}

/**
 * The new device starts a link: opens a provisioning channel (no account needed) and makes its
 * ephemeral key. `name` is what the existing device will show, and what this device is called
 * in the account's list of devices.
 */
export async function startLink(http: HttpClient, options: { name?: string } = {}): Promise<PendingLink> {
  // Checked now, not after the other device has answered.
  encodeLinkAnswer(options.name === undefined ? {} : { name: options.name })
  const [channel, ephemeral] = await Promise.all([openProvisioningChannel(http), generateX25519KeyPair()])
  const code = encodeLinkCode({ channelId: channel.channelId, ephemeralPublicKey: ephemeral.publicKey })
  return new PendingLink(code, channel.expiresAt, {
    http,
    caller: { device: 'new', channelId: channel.channelId, channelSecret: channel.channelSecret },
    ephemeral,
    name: options.name?.trim(),
    position: 0,
  })
}

/**
 * The new device, once the provisioning message arrived, becomes one of the account's devices:
 * its account is stored (sealed under `password`, which must be the account's: later log-ins
 * derive the login secret from it), it adds itself with POST /devices, and keeps the first
 * session. A refusal leaves nothing stored. The channel is closed either way.
 */
export async function completeLink(
  options: LocalAccountOptions & { readonly http: HttpClient },
  pending: PendingLink,
  password: string,
): Promise<LocalAccount> {
  const state = newDeviceStates.get(pending)
  const content = state?.content
  if (!state || !content) {
    throw new ClientError(
      ClientErrorCode.InvalidState,
      'expected a link whose provisioning message arrived (waitForProvisioning), got one still waiting',
    )
  }
  try {
    const { account, addDevice } = await createLinkedAccount(options, content, password)
    const name =
      state.name === undefined
        ? undefined
        : toBase64Url(
            await sealDeviceName(deviceNameKey(content.identityExport), content.deviceId, state.name),
          )
    let added: AddDeviceResponse
    try {
      const response = await options.http.request('POST', '/devices', {
        body: { ...addDevice, ...(name ? { name } : {}) },
      })
      if (response.status !== 201) throw errorFromResponse(response, 'POST /devices')
      added = decode(AddDeviceResponse, response.body, 'add device response')
      if (added.username !== content.username || added.deviceId !== content.deviceId) {
        throw new ClientError(
          ClientErrorCode.LinkFailed,
          `POST /devices: expected device ${content.deviceId} of ${content.username}, got another`,
        )
      }
      const token = await rsaOaepDecrypt(account.loginKey, fromBase64Url(added.encryptedToken)).catch(
        (cause: unknown) => {
          throw new ClientError(
            ClientErrorCode.LinkFailed,
            "POST /devices: expected a session token for this device's login key, got one it cannot read",
            { cause },
          )
        },
      )
      await account.records.saveSecrets({
        ...account.records.account.secrets,
        registered: true,
        token: toBase64Url(token),
        tokenExpiresAt: added.expiresAt,
      })
      token.fill(0)
    } catch (error) {
      // Nothing of a refused link stays on this device.
      await options.store.wipe()
      throw error
    }
    return account
  } finally {
    await pending.cancel()
  }
}

/** What the existing device needs of its account to approve: its session and its records. */
export interface ApprovingAccount {
  readonly http: HttpClient
  readonly session: AccountSession
  readonly records: SealedStore
}

/** A link waiting for the user's decision on the existing device. */
export interface LinkApproval {
  /** The check to show beside the new device's: approve only when the two match. */
  readonly check: string
  /** The name the new device gave itself, if any (to show: "Work laptop asks to be linked"). */
  readonly deviceName: string | undefined
  /**
   * The user approved: a link token (reserving the new device's id), the provisioning content
   * sealed for the new device and posted. Returns the new device's id and how many contacts did
   * not fit.
   */
  approve(signal?: AbortSignal): Promise<{ deviceId: number; omittedContacts: number }>
  /** The user refused (or the checks differ): the channel is closed and nothing is linked. */
  refuse(): Promise<void>
}

/** The contacts as the provisioning content carries them, newest conversation first. */
function provisionedContacts(contacts: readonly ContactRecord[]): ProvisionedContact[] {
  return [...contacts]
    .sort(
      (a, b) =>
        (b.lastMessageAt ?? Number.NEGATIVE_INFINITY) - (a.lastMessageAt ?? Number.NEGATIVE_INFINITY) ||
        a.username.localeCompare(b.username),
    )
    .map((contact) => ({
      username: contact.username,
      ...(contact.identity ? { identity: publicIdentityFromJson(contact.identity) } : {}),
      verified: contact.verified && contact.identity !== undefined,
      blocked: contact.blocked === true,
      presenceShared: contact.presenceShared !== false,
    }))
}

/**
 * The existing device reads a link code (as a camera read it or the user pasted it), answers with
 * its ephemeral key (which claims the channel for this account), and waits for the new device's
 * answer: then the check and the name are there to show, and the user decides.
 */
export async function approveLink(
  account: ApprovingAccount,
  code: string,
  signal?: AbortSignal,
): Promise<LinkApproval> {
  let scanned: ReturnType<typeof decodeLinkCode>
  try {
    scanned = decodeLinkCode(code)
  } catch (cause) {
    throw new ClientError(ClientErrorCode.InvalidInput, (cause as Error).message, { cause })
  }
  const { http, session, records } = account
  const caller: ProvisioningCaller = {
    device: 'existing',
    channelId: scanned.channelId,
    token: session.token(),
  }
  const ephemeral = await generateX25519KeyPair()
  await unlessAborted(postProvisioningMessage(http, caller, ephemeral.publicKey), signal)
  const close = () => closeProvisioningChannel(http, caller).catch(() => undefined)
  let keys: LinkKeys
  let deviceName: string | undefined
  try {
    keys = await deriveLinkKeys(ephemeral.privateKey, 'existing device', {
      newDevicePublicKey: scanned.ephemeralPublicKey,
      existingDevicePublicKey: ephemeral.publicKey,
    })
  } catch (error) {
    await close()
    throw linkFailed('link code key', error)
  }
  // Given up while waiting: there is no approval to refuse later, so the channel closes now.
  const answer = await nextMessage(http, caller, 0, signal).catch(async (error: unknown) => {
    if (error instanceof ClientError && error.code === ClientErrorCode.Cancelled) await close()
    throw error
  })
  try {
    deviceName = decodeLinkAnswer(await openProvisioning(keys, 'to existing device', answer.message)).name
  } catch (error) {
    await close()
    throw linkFailed("new device's answer", error)
  }
  let settled = false
  const once = () => {
    if (settled) {
      throw new ClientError(ClientErrorCode.InvalidState, 'expected a link still to decide, got one decided')
    }
    settled = true
  }
  return {
    check: keys.check,
    deviceName,
    async approve(approveSignal?: AbortSignal) {
      once()
      const reserved = decode(
        LinkTokenResponse,
        await unlessAborted(session.api('POST', '/devices/link-token'), approveSignal),
        'link token response',
      )
      const { bytes, omittedContacts } = encodeProvisioningContent({
        username: records.account.username,
        identityExport: fromBase64Url(records.account.secrets.identity),
        linkToken: fromBase64Url(reserved.linkToken),
        deviceId: reserved.deviceId,
        contacts: provisionedContacts(await records.listContacts()),
      })
      const sealed = await sealProvisioning(keys, 'to new device', bytes)
      bytes.fill(0)
      await unlessAborted(postProvisioningMessage(http, caller, sealed), approveSignal)
      return { deviceId: reserved.deviceId, omittedContacts }
    },
    async refuse() {
      once()
      await close()
    },
  }
}
