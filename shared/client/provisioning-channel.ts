/**
 * The server's provisioning channel as the clients use it (docs/protocol.md §13.7): typed calls
 * over the HttpClient both UIs fill in, for the new device (which has no account and holds the
 * channel secret) and for the existing device (which holds its session token). Bytes in, bytes
 * out: what travels is made and opened by shared/provisioning.ts, and the server sees none of it.
 *
 * What it does not know: the link's keys, the UI, retries. A refusal is a ClientError whose
 * `serverCode` names it (E2E_ERR_LINK_EXPIRED, E2E_ERR_LINK_USED, E2E_ERR_LINK_UNKNOWN,
 * E2E_ERR_LINK_CLAIMED, E2E_ERR_TOO_MANY_LINK_MESSAGES, E2E_ERR_TOO_MANY_LINKS, …).
 */
import { fromBase64Url, toBase64Url } from '../bytes.js'
import {
  ProvisioningChannelResponse,
  ProvisioningMessagesResponse,
  ProvisioningPostResponse,
} from '../codec/api.js'
import { decode } from '../codec/schema.js'
import { MAX_PROVISIONING_ANSWER_BYTES } from '../limits.js'
import { MAX_PROVISIONING_SEALED_BYTES, PROVISIONING_CHANNEL_ID_BYTES } from '../provisioning.js'
import { ClientError, ClientErrorCode } from './errors.js'
import { errorFromResponse, type HttpClient, type HttpMethod } from './transport.js'

/** A channel the new device opened: the id goes into the link code, the secret stays with it. */
export interface ProvisioningChannel {
  readonly channelId: Uint8Array
  readonly channelSecret: Uint8Array
  /** The server's time at which the channel and its link code expire. */
  readonly expiresAt: number
}

/** Who uses a channel, and what proves it: the new device its secret, the existing one its token. */
export type ProvisioningCaller =
  | { readonly device: 'new'; readonly channelId: Uint8Array; readonly channelSecret: Uint8Array }
  | { readonly device: 'existing'; readonly channelId: Uint8Array; readonly token: string }

export interface ProvisioningMessage {
  /** Its position in the channel (both sides count together): read on after the last one seen. */
  readonly position: number
  readonly message: Uint8Array
}

export interface ProvisioningMessages {
  /** Oldest first; empty when the server's wait ended with nothing new (ask again). */
  readonly messages: readonly ProvisioningMessage[]
  readonly expiresAt: number
}

const path = (channelId: Uint8Array) => {
  if (!(channelId instanceof Uint8Array) || channelId.length !== PROVISIONING_CHANNEL_ID_BYTES) {
    throw new ClientError(
      ClientErrorCode.InvalidInput,
      `provisioning channel id: expected ${PROVISIONING_CHANNEL_ID_BYTES} bytes, got ${channelId instanceof Uint8Array ? channelId.length : typeof channelId}`,
    )
  }
  return `/provisioning/${toBase64Url(channelId)}`
}

const credential = (caller: ProvisioningCaller) =>
  caller.device === 'new' ? toBase64Url(caller.channelSecret) : caller.token

/** The other device's side: where a caller posts. */
const otherSide = (caller: ProvisioningCaller) => (caller.device === 'new' ? 'existing' : 'new')

async function call(
  http: HttpClient,
  method: HttpMethod,
  route: string,
  options: { body?: unknown; token?: string; signal?: AbortSignal },
): Promise<unknown> {
  const response = await http.request(method, route, options)
  if (response.status >= 200 && response.status < 300) return response.body
  throw errorFromResponse(
    response,
    `${method} ${route.replace(/^\/provisioning\/[^/]+/, '/provisioning/{channelId}')}`,
  )
}

/** The new device opens a channel (no account needed). */
export async function openProvisioningChannel(http: HttpClient): Promise<ProvisioningChannel> {
  const answer = decode(
    ProvisioningChannelResponse,
    await call(http, 'POST', '/provisioning', {}),
    'provisioning channel answer',
  )
  return {
    channelId: fromBase64Url(answer.channelId),
    channelSecret: fromBase64Url(answer.channelSecret),
    expiresAt: answer.expiresAt,
  }
}

/**
 * Posts bytes for the other device: the existing device's ephemeral key and sealed provisioning
 * message (at most MAX_PROVISIONING_SEALED_BYTES), the new device's sealed answer (at most
 * MAX_PROVISIONING_ANSWER_BYTES). The existing device's first post claims the channel for its
 * account. Returns the message's position.
 */
export async function postProvisioningMessage(
  http: HttpClient,
  caller: ProvisioningCaller,
  message: Uint8Array,
): Promise<number> {
  const maxBytes = caller.device === 'new' ? MAX_PROVISIONING_ANSWER_BYTES : MAX_PROVISIONING_SEALED_BYTES
  if (!(message instanceof Uint8Array) || message.length < 1 || message.length > maxBytes) {
    throw new ClientError(
      ClientErrorCode.InvalidInput,
      `provisioning message of the ${caller.device} device: expected 1 to ${maxBytes} bytes, got ${message instanceof Uint8Array ? message.length : typeof message}`,
    )
  }
  const answer = decode(
    ProvisioningPostResponse,
    await call(http, 'POST', `${path(caller.channelId)}/${otherSide(caller)}`, {
      token: credential(caller),
      body: { message: toBase64Url(message) },
    }),
    'provisioning post answer',
  )
  return answer.position
}

/**
 * Reads the messages for this device after position `after` (0 for all). The server waits up to
 * PROVISIONING_POLL_WAIT_MS for one to arrive; an answer with none means ask again.
 */
export async function readProvisioningMessages(
  http: HttpClient,
  caller: ProvisioningCaller,
  after = 0,
  signal?: AbortSignal,
): Promise<ProvisioningMessages> {
  if (!Number.isSafeInteger(after) || after < 0) {
    throw new ClientError(ClientErrorCode.InvalidInput, `after: expected a position ≥ 0, got ${after}`)
  }
  const answer = decode(
    ProvisioningMessagesResponse,
    await call(http, 'GET', `${path(caller.channelId)}/${caller.device}?after=${after}`, {
      token: credential(caller),
      ...(signal ? { signal } : {}),
    }),
    'provisioning messages answer',
  )
  return {
    messages: answer.messages.map((item) => ({
      position: item.position,
      message: fromBase64Url(item.message),
    })),
    expiresAt: answer.expiresAt,
  }
}

/** Closes the channel; either device may, and closing a closed one is harmless. */
export async function closeProvisioningChannel(http: HttpClient, caller: ProvisioningCaller): Promise<void> {
  await call(http, 'DELETE', path(caller.channelId), { token: credential(caller) })
}
