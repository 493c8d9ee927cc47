/**
 * What travels inside the link's sealed messages (provisioning.ts seals them; docs/protocol.md
 * §13.8): the provisioning content the existing device gives the new one, and the new device's
 * answer. Pure bytes in, bytes out; decoding reads every field in a fixed order, checks it, and
 * refuses anything else with a ProtocolError saying what was expected.
 *
 *   content v1 = 0x01
 *              ‖ u8(n) ‖ account name (n bytes: a canonical username)
 *              ‖ identity export v1 (129 bytes, §2.5: the identity private keys and signature)
 *              ‖ link token (32) ‖ u32(reserved device id, ≥ 2)
 *              ‖ u32(contacts left out) ‖ u32(count) ‖ contact × count
 *   contact    = u8(flags) ‖ u8(n) ‖ username (n bytes) ‖ [identity key (32) ‖ signing key (32)
 *                ‖ identity signature (64), when flags has 0x08]
 *   flags      = 0x01 verified ‖ 0x02 blocked ‖ 0x04 our presence not shared with them
 *                ‖ 0x08 the trusted identity follows; other bits are refused
 *
 *   answer v1  = 0x01 ‖ u32(n) ‖ the new device's name (n ≤ 256 bytes of UTF-8; 0: none)
 *
 * The content is bounded by MAX_PROVISIONING_PLAINTEXT_BYTES: contacts that do not fit are left
 * out, in the order given (the caller puts the most recent conversations first), and counted, so
 * both devices can say so. A contact's identity is the one the existing device trusts; a key
 * change it had not accepted yet is not carried: the new device meets it again at its first use.
 */
import { assertBytes, ByteReader, ByteWriter, utf8Decode, utf8Encode } from './bytes.js'
import { checkDeviceName } from './device-name.js'
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { type Identity, importIdentity, type PublicIdentity, verifyPublicIdentity } from './identity.js'
import { MAX_DEVICE_NAME_LENGTH, MAX_PROVISIONING_PLAINTEXT_BYTES } from './limits.js'
import { USERNAME_PATTERN } from './username.js'

export const PROVISIONING_CONTENT_VERSION = 1
export const LINK_ANSWER_VERSION = 1

const IDENTITY_EXPORT_BYTES = 129
/** The most UTF-8 a device name can take: MAX_DEVICE_NAME_LENGTH code points of four bytes. */
const MAX_DEVICE_NAME_BYTES = MAX_DEVICE_NAME_LENGTH * 4
const LINK_TOKEN_BYTES = 32
const PUBLIC_IDENTITY_BYTES = 32 + 32 + 64
/** The fewest bytes a contact takes: flags, length, a name of the shortest length (3). */
const MIN_CONTACT_BYTES = 1 + 1 + 3

const FLAG_VERIFIED = 0x01
const FLAG_BLOCKED = 0x02
const FLAG_PRESENCE_HIDDEN = 0x04
const FLAG_IDENTITY = 0x08
const KNOWN_FLAGS = FLAG_VERIFIED | FLAG_BLOCKED | FLAG_PRESENCE_HIDDEN | FLAG_IDENTITY

/** A contact as the new device gets it: whom the account talks to, and how far it trusts them. */
export interface ProvisionedContact {
  readonly username: string
  /** The identity the existing device trusts; absent for someone blocked before any key was seen. */
  readonly identity?: PublicIdentity
  readonly verified: boolean
  readonly blocked: boolean
  readonly presenceShared: boolean
}

export interface ProvisioningContent {
  /** The account's name, canonical. */
  readonly username: string
  /** The account's identity, as identity export v1 (private keys: seal it before storing it). */
  readonly identityExport: Uint8Array
  /** Single use: the new device adds itself with it (POST /devices). */
  readonly linkToken: Uint8Array
  /** The id the link token reserved; the new device signs its prekeys for it. */
  readonly deviceId: number
  readonly contacts: readonly ProvisionedContact[]
  /** Contacts that did not fit and were left out. */
  readonly omittedContacts: number
}

/** The decoded content, with the identity imported (and its signature checked). */
export interface DecodedProvisioningContent extends ProvisioningContent {
  readonly identity: Identity
}

function invalid(message: string): ProtocolError {
  return new ProtocolError(ProtocolErrorCode.InvalidInput, `provisioning content: ${message}`)
}

function malformed(message: string): ProtocolError {
  return new ProtocolError(ProtocolErrorCode.MalformedMessage, `provisioning content: ${message}`)
}

function checkDeviceId(deviceId: number, fail: (message: string) => ProtocolError): void {
  if (!Number.isInteger(deviceId) || deviceId < 2 || deviceId > 0xffff_ffff) {
    throw fail(`expected a device id from 2 to 4294967295 (1 is the registering device), got ${deviceId}`)
  }
}

function contactFlags(contact: ProvisionedContact): number {
  return (
    (contact.verified ? FLAG_VERIFIED : 0) |
    (contact.blocked ? FLAG_BLOCKED : 0) |
    (contact.presenceShared ? 0 : FLAG_PRESENCE_HIDDEN) |
    (contact.identity ? FLAG_IDENTITY : 0)
  )
}

function contactBytes(contact: ProvisionedContact, own: string, seen: Set<string>): Uint8Array {
  if (typeof contact.username !== 'string' || !USERNAME_PATTERN.test(contact.username)) {
    throw invalid('expected canonical contact usernames, got another string')
  }
  if (contact.username === own) throw invalid('expected contacts other than the account, got the account')
  if (seen.has(contact.username)) throw invalid('expected each contact once, got one twice')
  seen.add(contact.username)
  if (contact.verified && !contact.identity) {
    throw invalid('expected an identity for every verified contact, got a verified contact without one')
  }
  const writer = new ByteWriter(2 + contact.username.length + PUBLIC_IDENTITY_BYTES)
    .u8(contactFlags(contact))
    .u8(contact.username.length)
    .fixed(utf8Encode(contact.username))
  if (contact.identity) {
    assertBytes(contact.identity.identityKey, 32, 'contact identity key')
    assertBytes(contact.identity.signingKey, 32, 'contact signing key')
    assertBytes(contact.identity.identitySignature, 64, 'contact identity signature')
    writer.fixed(contact.identity.identityKey).fixed(contact.identity.signingKey)
    writer.fixed(contact.identity.identitySignature)
  }
  return writer.finish()
}

/**
 * Encodes the content, with as many of `contacts` as fit MAX_PROVISIONING_PLAINTEXT_BYTES (in the
 * order given); returns the bytes and how many contacts were left out. Input it could not decode
 * is refused with InvalidInput.
 */
export function encodeProvisioningContent(content: Omit<ProvisioningContent, 'omittedContacts'>): {
  bytes: Uint8Array
  omittedContacts: number
} {
  if (typeof content.username !== 'string' || !USERNAME_PATTERN.test(content.username)) {
    throw invalid('expected a canonical account name, got another string')
  }
  assertBytes(content.identityExport, IDENTITY_EXPORT_BYTES, 'identity export')
  if (content.identityExport[0] !== 1) throw invalid('expected an identity export of version 1, got another')
  assertBytes(content.linkToken, LINK_TOKEN_BYTES, 'link token')
  checkDeviceId(content.deviceId, invalid)
  const headerBytes = 1 + 1 + content.username.length + IDENTITY_EXPORT_BYTES + LINK_TOKEN_BYTES + 4 + 4 + 4
  const seen = new Set<string>()
  const entries: Uint8Array[] = []
  let size = headerBytes
  let full = false
  for (const contact of content.contacts) {
    // Every contact is checked, those left out too: a bad record is a bug to hear about.
    const entry = contactBytes(contact, content.username, seen)
    // The first that does not fit ends the list: what comes along is a prefix of what was given.
    full ||= size + entry.length > MAX_PROVISIONING_PLAINTEXT_BYTES
    if (full) continue
    entries.push(entry)
    size += entry.length
  }
  const omittedContacts = content.contacts.length - entries.length
  const writer = new ByteWriter(size)
    .u8(PROVISIONING_CONTENT_VERSION)
    .u8(content.username.length)
    .fixed(utf8Encode(content.username))
    .fixed(content.identityExport)
    .fixed(content.linkToken)
    .u32(content.deviceId)
    .u32(omittedContacts)
    .u32(entries.length)
  for (const entry of entries) writer.fixed(entry)
  return { bytes: writer.finish(), omittedContacts }
}

function readUsername(reader: ByteReader, what: string): string {
  const length = reader.u8()
  const name = utf8Decode(reader.fixed(length))
  if (!USERNAME_PATTERN.test(name))
    throw malformed(`expected ${what} to be a canonical username, got another`)
  return name
}

/**
 * Decodes and checks the content: every field in order, the account identity imported (its
 * signature checked), every contact's identity signature checked. Anything else is refused:
 * another version (UnsupportedVersion), bad or trailing bytes (MalformedMessage), a signature that
 * does not verify (BadSignature), more than the bound (TooLarge).
 */
export async function decodeProvisioningContent(bytes: Uint8Array): Promise<DecodedProvisioningContent> {
  assertBytes(bytes, undefined, 'provisioning content')
  if (bytes.length > MAX_PROVISIONING_PLAINTEXT_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `provisioning content: expected at most ${MAX_PROVISIONING_PLAINTEXT_BYTES} bytes, got ${bytes.length}`,
    )
  }
  const reader = new ByteReader(bytes, 'provisioning content')
  const version = reader.u8()
  if (version !== PROVISIONING_CONTENT_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `provisioning content: expected version ${PROVISIONING_CONTENT_VERSION}, got ${version} (the other device's app is newer or older)`,
    )
  }
  const username = readUsername(reader, 'the account name')
  const identityExport = reader.fixed(IDENTITY_EXPORT_BYTES)
  const linkToken = reader.fixed(LINK_TOKEN_BYTES)
  const deviceId = reader.u32()
  checkDeviceId(deviceId, malformed)
  const omittedContacts = reader.u32()
  const count = reader.u32()
  // Checked before anything is read: a count cannot make this loop longer than the bytes allow.
  if (count * MIN_CONTACT_BYTES > reader.remaining) {
    throw malformed(
      `expected at most ${Math.floor(reader.remaining / MIN_CONTACT_BYTES)} contacts in what is left, got a count of ${count}`,
    )
  }
  const contacts: ProvisionedContact[] = []
  const seen = new Set<string>([username])
  for (let i = 0; i < count; i++) {
    const flags = reader.u8()
    if ((flags & ~KNOWN_FLAGS) !== 0) {
      throw malformed(
        `expected contact flags among 0x${KNOWN_FLAGS.toString(16)}, got 0x${flags.toString(16)}`,
      )
    }
    const name = readUsername(reader, 'a contact name')
    if (seen.has(name))
      throw malformed('expected each contact once and never the account itself, got a repeat')
    seen.add(name)
    let identity: PublicIdentity | undefined
    if (flags & FLAG_IDENTITY) {
      identity = {
        identityKey: reader.fixed(32),
        signingKey: reader.fixed(32),
        identitySignature: reader.fixed(64),
      }
    } else if (flags & FLAG_VERIFIED) {
      throw malformed('expected an identity with every verified contact, got a verified contact without one')
    }
    contacts.push({
      username: name,
      ...(identity ? { identity } : {}),
      verified: (flags & FLAG_VERIFIED) !== 0,
      blocked: (flags & FLAG_BLOCKED) !== 0,
      presenceShared: (flags & FLAG_PRESENCE_HIDDEN) === 0,
    })
  }
  reader.end()
  // Signatures last, once the layout is known to be whole (the cheap checks first).
  const [identity] = await Promise.all([
    importIdentity(identityExport),
    ...contacts.flatMap((contact) => (contact.identity ? [verifyPublicIdentity(contact.identity)] : [])),
  ])
  return { username, identityExport, identity, linkToken, deviceId, contacts, omittedContacts }
}

/** What the new device tells the existing one before the user approves: its name, if it has one. */
export interface LinkAnswer {
  readonly name?: string
}

export function encodeLinkAnswer(answer: LinkAnswer): Uint8Array {
  const name = answer.name === undefined ? new Uint8Array(0) : utf8Encode(checkDeviceName(answer.name))
  return new ByteWriter(5 + name.length).u8(LINK_ANSWER_VERSION).bytes(name).finish()
}

export function decodeLinkAnswer(bytes: Uint8Array): LinkAnswer {
  assertBytes(bytes, undefined, 'link answer')
  const reader = new ByteReader(bytes, 'link answer')
  const version = reader.u8()
  if (version !== LINK_ANSWER_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `link answer: expected version ${LINK_ANSWER_VERSION}, got ${version} (the new device's app is newer or older)`,
    )
  }
  const text = utf8Decode(reader.bytes(MAX_DEVICE_NAME_BYTES))
  reader.end()
  if (text.length === 0) return {}
  try {
    return { name: checkDeviceName(text) }
  } catch (cause) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `link answer: ${(cause as Error).message} (${describeValue(text)})`,
      { cause },
    )
  }
}
