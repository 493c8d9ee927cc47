/**
 * The provisioning message's content (provisioning-content.ts, docs/protocol.md §13.8): what the
 * existing device seals for the new one, and the new device's answer. Round trips, the documented
 * layout byte by byte, the size bound (contacts left out and counted), and a table of hostile
 * inputs that decoding must refuse with a clear ProtocolError.
 */
import { describe, expect, it } from 'vitest'
import { ByteWriter, concatBytes, toHex, utf8Encode } from '../bytes.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import { exportIdentity, type PublicIdentity } from '../identity.js'
import { MAX_PROVISIONING_PLAINTEXT_BYTES } from '../limits.js'
import { MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES } from '../provisioning.js'
import {
  decodeLinkAnswer,
  decodeProvisioningContent,
  encodeLinkAnswer,
  encodeProvisioningContent,
  type ProvisionedContact,
} from '../provisioning-content.js'
import { deterministicBytes, deterministicIdentity } from './helpers.js'

const TOKEN = deterministicBytes('link token', 32)

async function codeOf(action: () => unknown): Promise<string | undefined> {
  try {
    await action()
    return undefined
  } catch (error) {
    return isProtocolError(error) ? error.code : `not a ProtocolError: ${String(error)}`
  }
}

async function fixture() {
  const alice = await deterministicIdentity('alice')
  const bob = (await deterministicIdentity('bob')).public
  const carol = (await deterministicIdentity('carol')).public
  const contacts: ProvisionedContact[] = [
    { username: 'bob', identity: bob, verified: true, blocked: false, presenceShared: true },
    { username: 'carol', identity: carol, verified: false, blocked: false, presenceShared: false },
    // Blocked before we ever had their keys: a contact without an identity.
    { username: 'spammer', verified: false, blocked: true, presenceShared: false },
  ]
  return {
    alice,
    bob,
    carol,
    contacts,
    content: {
      username: 'alice',
      identityExport: await exportIdentity(alice),
      linkToken: TOKEN,
      deviceId: 2,
      contacts,
    },
  }
}

const identityBytes = (identity: PublicIdentity) =>
  concatBytes(identity.identityKey, identity.signingKey, identity.identitySignature)

describe('the provisioning content', () => {
  it('round trips: the same identity, token, device id and contacts with their states', async () => {
    const { alice, content, contacts } = await fixture()
    const { bytes, omittedContacts } = encodeProvisioningContent(content)
    expect(omittedContacts).toBe(0)
    const decoded = await decodeProvisioningContent(bytes)
    expect(decoded.username).toBe('alice')
    expect(toHex(decoded.identityExport)).toBe(toHex(content.identityExport))
    expect(toHex(decoded.identity.public.identityKey)).toBe(toHex(alice.public.identityKey))
    expect(toHex(decoded.identity.public.signingKey)).toBe(toHex(alice.public.signingKey))
    expect(toHex(decoded.linkToken)).toBe(toHex(TOKEN))
    expect(decoded.deviceId).toBe(2)
    expect(decoded.omittedContacts).toBe(0)
    expect(decoded.contacts).toEqual(contacts)
  })

  it('is laid out as documented', async () => {
    const { content, bob, carol } = await fixture()
    const { bytes } = encodeProvisioningContent(content)
    const expected = new ByteWriter()
      .u8(1)
      .u8(5)
      .fixed(utf8Encode('alice'))
      .fixed(content.identityExport)
      .fixed(TOKEN)
      .u32(2)
      .u32(0)
      .u32(3)
      .u8(0x01 | 0x08)
      .u8(3)
      .fixed(utf8Encode('bob'))
      .fixed(identityBytes(bob))
      .u8(0x04 | 0x08)
      .u8(5)
      .fixed(utf8Encode('carol'))
      .fixed(identityBytes(carol))
      .u8(0x02 | 0x04)
      .u8(7)
      .fixed(utf8Encode('spammer'))
      .finish()
    expect(toHex(bytes)).toBe(toHex(expected))
    expect(bytes.length).toBe(1 + 6 + 129 + 32 + 12 + (1 + 4 + 128) + (1 + 6 + 128) + (1 + 8))
  })

  it('leaves out the contacts beyond its bound, in order, and says how many', async () => {
    const { content, bob } = await fixture()
    // 2,000 contacts of the longest name: more than fit.
    const many: ProvisionedContact[] = Array.from({ length: 2000 }, (_, i) => ({
      username: `contact-${String(i).padStart(5, '0')}-${'x'.repeat(18)}`,
      identity: bob,
      verified: i % 2 === 0,
      blocked: false,
      presenceShared: true,
    }))
    expect(many[0]!.username).toHaveLength(32)
    const { bytes, omittedContacts } = encodeProvisioningContent({ ...content, contacts: many })
    expect(bytes.length).toBeLessThanOrEqual(MAX_PROVISIONING_PLAINTEXT_BYTES)
    const perContact = 1 + 1 + 32 + 128
    const fitting = Math.floor((MAX_PROVISIONING_PLAINTEXT_BYTES - (1 + 6 + 129 + 32 + 12)) / perContact)
    expect(omittedContacts).toBe(2000 - fitting)
    expect(fitting).toBeGreaterThan(1500)
    const decoded = await decodeProvisioningContent(bytes)
    expect(decoded.omittedContacts).toBe(omittedContacts)
    expect(decoded.contacts.map((c) => c.username)).toEqual(many.slice(0, fitting).map((c) => c.username))
  })

  it('refuses to encode what it could not decode', async () => {
    const { content, bob } = await fixture()
    const bad = [
      { ...content, username: 'Alice' },
      { ...content, deviceId: 1 },
      { ...content, linkToken: new Uint8Array(31) },
      { ...content, identityExport: new Uint8Array(129) },
      { ...content, contacts: [{ username: 'bob', verified: true, blocked: false, presenceShared: true }] },
      {
        ...content,
        contacts: [
          { username: 'bob', identity: bob, verified: false, blocked: false, presenceShared: true },
          { username: 'bob', identity: bob, verified: false, blocked: false, presenceShared: true },
        ],
      },
      {
        ...content,
        contacts: [
          { username: 'alice', identity: bob, verified: false, blocked: false, presenceShared: true },
        ],
      },
    ]
    for (const [i, input] of bad.entries()) {
      expect(await codeOf(() => encodeProvisioningContent(input)), `case ${i}`).toBe(
        ProtocolErrorCode.InvalidInput,
      )
    }
  })

  it('refuses hostile input, saying what was wrong', async () => {
    const { content } = await fixture()
    const { bytes } = encodeProvisioningContent(content)
    const header = 1 + 6 + 129 + 32 + 4 + 4
    const countAt = header
    const firstContact = header + 4
    const withByte = (index: number, value: number) => {
      const copy = bytes.slice()
      copy[index] = value
      return copy
    }
    const withCount = (count: number) => {
      const copy = bytes.slice()
      new DataView(copy.buffer).setUint32(countAt, count)
      return copy
    }
    const hostile: [string, Uint8Array, string][] = [
      ['another version', withByte(0, 2), ProtocolErrorCode.UnsupportedVersion],
      ['empty', new Uint8Array(0), ProtocolErrorCode.MalformedMessage],
      ['cut short', bytes.slice(0, bytes.length - 1), ProtocolErrorCode.MalformedMessage],
      ['trailing bytes', concatBytes(bytes, new Uint8Array(1)), ProtocolErrorCode.MalformedMessage],
      ['an account name that is no username', withByte(2, 0x41), ProtocolErrorCode.MalformedMessage],
      ['an account name of length 0', withByte(1, 0), ProtocolErrorCode.MalformedMessage],
      ['device id 1', withByte(1 + 6 + 129 + 32 + 3, 1), ProtocolErrorCode.MalformedMessage],
      ['more contacts than bytes', withCount(100_000), ProtocolErrorCode.MalformedMessage],
      ['fewer contacts than bytes', withCount(2), ProtocolErrorCode.MalformedMessage],
      ['an unknown flag', withByte(firstContact, 0x01 | 0x08 | 0x80), ProtocolErrorCode.MalformedMessage],
      ['verified without an identity', withByte(bytes.length - 9, 0x01), ProtocolErrorCode.MalformedMessage],
      [
        'a contact name that is no username',
        withByte(firstContact + 2, 0x2e),
        ProtocolErrorCode.MalformedMessage,
      ],
      [
        'a contact identity whose signature fails',
        withByte(firstContact + 5 + 100, bytes[firstContact + 5 + 100]! ^ 1),
        ProtocolErrorCode.BadSignature,
      ],
      [
        'an account identity whose signature fails',
        withByte(7 + 100, bytes[7 + 100]! ^ 1),
        ProtocolErrorCode.BadSignature,
      ],
      ['over the bound', new Uint8Array(MAX_PROVISIONING_PLAINTEXT_BYTES + 1), ProtocolErrorCode.TooLarge],
    ]
    for (const [what, input, code] of hostile) {
      expect(await codeOf(() => decodeProvisioningContent(input)), what).toBe(code)
    }
    expect(await codeOf(() => decodeProvisioningContent('bytes' as unknown as Uint8Array))).toBe(
      ProtocolErrorCode.InvalidInput,
    )
    // Messages say what was expected, never what the keys are.
    const error = await decodeProvisioningContent(withCount(100_000)).then(
      () => undefined,
      (e: unknown) => e as Error,
    )
    expect(error?.message).toMatch(/^provisioning content: expected at most \d+ contacts/)
  })

  it('refuses a contact listed twice, and the account itself as a contact', async () => {
    const { content, bob } = await fixture()
    const { bytes } = encodeProvisioningContent({
      ...content,
      contacts: [{ username: 'bob', identity: bob, verified: false, blocked: false, presenceShared: true }],
    })
    const entry = bytes.slice(bytes.length - (1 + 4 + 128))
    const twice = concatBytes(bytes, entry)
    new DataView(twice.buffer).setUint32(1 + 6 + 129 + 32 + 8, 2)
    expect(await codeOf(() => decodeProvisioningContent(twice))).toBe(ProtocolErrorCode.MalformedMessage)
    // A contact "alicf" turned into "alice", the account's own name.
    const self = encodeProvisioningContent({
      ...content,
      contacts: [{ username: 'alicf', verified: false, blocked: false, presenceShared: true }],
    }).bytes
    self[self.length - 1] = 0x65
    expect(await codeOf(() => decodeProvisioningContent(self))).toBe(ProtocolErrorCode.MalformedMessage)
  })
})

describe('the new device’s answer', () => {
  it('carries its name, or none', () => {
    expect(decodeLinkAnswer(encodeLinkAnswer({ name: 'Work laptop' }))).toEqual({ name: 'Work laptop' })
    expect(decodeLinkAnswer(encodeLinkAnswer({}))).toEqual({})
    expect(toHex(encodeLinkAnswer({ name: 'pc1' }))).toBe('0100000003706331')
    expect(toHex(encodeLinkAnswer({}))).toBe('0100000000')
    expect(encodeLinkAnswer({ name: '😀'.repeat(64) }).length).toBeLessThanOrEqual(
      MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES,
    )
  })

  it('refuses what is not an answer of this version', async () => {
    for (const [what, input, code] of [
      ['another version', new Uint8Array([2, 0, 0, 0, 0]), ProtocolErrorCode.UnsupportedVersion],
      ['cut short', new Uint8Array([1, 0, 0, 0, 3, 0x70]), ProtocolErrorCode.MalformedMessage],
      ['trailing bytes', new Uint8Array([1, 0, 0, 0, 0, 0]), ProtocolErrorCode.MalformedMessage],
      [
        'a control character',
        new Uint8Array([1, 0, 0, 0, 2, 0x70, 0x07]),
        ProtocolErrorCode.MalformedMessage,
      ],
      ['not UTF-8', new Uint8Array([1, 0, 0, 0, 1, 0xff]), ProtocolErrorCode.MalformedMessage],
      ['too long', new Uint8Array([1, 0, 0, 1, 1]), ProtocolErrorCode.TooLarge],
    ] as const) {
      expect(await codeOf(() => decodeLinkAnswer(input)), what).toBe(code)
    }
    expect(await codeOf(() => encodeLinkAnswer({ name: 'a\u202Eb' }))).toBe(ProtocolErrorCode.InvalidInput)
  })
})
