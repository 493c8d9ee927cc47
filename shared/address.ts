/**
 * Who a session is with, and which conversation a message belongs to, as types rather than bare
 * strings: an `Address` names one device of one account (libsignal's ProtocolAddress), and a
 * `ConversationId` names a conversation in the history. Sessions are per address; history, contacts
 * and trust are per account.
 *
 * Until several devices per account arrive, every account has one device, DEFAULT_DEVICE_ID, and a
 * direct conversation's id is the other account's username.
 *
 *   address key      = username ":" device id (decimal)   e.g. "alice:1"
 *   conversation id  = username                           (direct conversations)
 *
 * ":" cannot occur in a username (shared/username.ts), so an address key parses back unambiguously.
 */
import { ProtocolError, ProtocolErrorCode } from './errors.js'
import { USERNAME_PATTERN } from './username.js'

/** The device every account has; the one that registered it. */
export const DEFAULT_DEVICE_ID = 1

export interface Address {
  readonly user: string
  readonly device: number
}

/** An address as a store key or map key ("alice:1"). */
export type AddressKey = string & { readonly __brand: 'AddressKey' }

/** The conversation a message belongs to (for now: the other account's username). */
export type ConversationId = string & { readonly __brand: 'ConversationId' }

export function address(user: string, device = DEFAULT_DEVICE_ID): Address {
  return { user, device }
}

export function addressKey(target: Address): AddressKey {
  return `${target.user}:${target.device}` as AddressKey
}

export function parseAddressKey(key: string): Address {
  const separator = key.lastIndexOf(':')
  const user = key.slice(0, separator)
  const device = Number(key.slice(separator + 1))
  if (separator < 0 || !USERNAME_PATTERN.test(user) || !Number.isInteger(device) || device < 1) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      'address: expected "<username>:<device id>", got something else',
    )
  }
  return { user, device }
}

/** The direct conversation with `user`. */
export function directConversation(user: string): ConversationId {
  return user as ConversationId
}
