/**
 * The provisioning cipher (provisioning.ts, docs/protocol.md §13.6): link codes, the keys and
 * check both devices derive, and the sealed provisioning message. Known answers of our own (fixed
 * keys and nonce), checked against an independent computation of the documented formula with the
 * underlying primitives (noble's X25519 and HKDF, WebCrypto's AES-GCM), plus properties: any two
 * key pairs agree, any altered byte, other link's keys, swapped roles or the other direction fail.
 */
import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { concatBytes, fromBase64Url, fromHex, toBase64Url, toHex, utf8Encode } from '../bytes.js'
import { generateX25519KeyPair, x25519KeyPairFromPrivateBytes } from '../crypto/primitives.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import { MAX_PROVISIONING_ANSWER_BYTES, MAX_PROVISIONING_PLAINTEXT_BYTES } from '../limits.js'
import {
  decodeLinkCode,
  deriveLinkKeys,
  encodeLinkCode,
  LINK_CODE_PREFIX,
  MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES,
  MAX_PROVISIONING_SEALED_BYTES,
  openProvisioning,
  sealProvisioning,
} from '../provisioning.js'

const NEW_PRIVATE = fromHex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4')
const EXISTING_PRIVATE = fromHex('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d')
const CHANNEL = fromHex('000102030405060708090a0b0c0d0e0f')
const NONCE = fromHex('101112131415161718191a1b')
const PLAINTEXT = utf8Encode('{"v":1,"username":"alice"}')
const ANSWER = utf8Encode('laptop')
/** WebCrypto's types want an ArrayBuffer-backed view, which these all are. */
const buffer = (bytes: Uint8Array) => bytes as Uint8Array<ArrayBuffer>

async function codeOf(error: Promise<unknown>): Promise<string | undefined> {
  const caught = await error.then(
    () => undefined,
    (e: unknown) => e,
  )
  return isProtocolError(caught) ? caught.code : `not a ProtocolError: ${String(caught)}`
}

function syncCodeOf(action: () => unknown): string | undefined {
  try {
    action()
    return undefined
  } catch (error) {
    return isProtocolError(error) ? error.code : `not a ProtocolError: ${String(error)}`
  }
}

async function fixedLink() {
  const newDevice = await x25519KeyPairFromPrivateBytes(NEW_PRIVATE)
  const existing = await x25519KeyPairFromPrivateBytes(EXISTING_PRIVATE)
  const publicKeys = {
    newDevicePublicKey: newDevice.publicKey,
    existingDevicePublicKey: existing.publicKey,
  }
  return {
    newDevice,
    existing,
    publicKeys,
    onNew: await deriveLinkKeys(newDevice.privateKey, 'new device', publicKeys),
    onExisting: await deriveLinkKeys(existing.privateKey, 'existing device', publicKeys),
  }
}

describe('link codes', () => {
  it('carry the channel and the new device’s key, in a pasteable text that ignores whitespace', async () => {
    const { newDevice } = await fixedLink()
    const code = encodeLinkCode({ channelId: CHANNEL, ephemeralPublicKey: newDevice.publicKey })
    expect(code).toMatch(new RegExp(`^${LINK_CODE_PREFIX}[A-Za-z0-9_-]{66}$`))
    expect(code).toBe(`${LINK_CODE_PREFIX}AQABAgMEBQYHCAkKCwwNDg8cn9iPRWBtkyqAxxgkrhUdFdc-d9446OAAhS5hT65wGQ`)
    const decoded = decodeLinkCode(code)
    expect(toHex(decoded.channelId)).toBe(toHex(CHANNEL))
    expect(toHex(decoded.ephemeralPublicKey)).toBe(toHex(newDevice.publicKey))
    // Wrapped by a terminal, with the spaces and line breaks a copy brings along.
    const wrapped = ` ${code.slice(0, 30)}\n  ${code.slice(30)}\r\n`
    expect(toHex(decodeLinkCode(wrapped).ephemeralPublicKey)).toBe(toHex(newDevice.publicKey))
  })

  it('refuse what is not a whole code of this version, saying what was wrong', async () => {
    const { newDevice } = await fixedLink()
    const code = encodeLinkCode({ channelId: CHANNEL, ephemeralPublicKey: newDevice.publicKey })
    expect(syncCodeOf(() => decodeLinkCode('https://example.org/link'))).toBe(
      ProtocolErrorCode.MalformedMessage,
    )
    expect(syncCodeOf(() => decodeLinkCode(code.slice(0, -4)))).toBe(ProtocolErrorCode.MalformedMessage)
    expect(syncCodeOf(() => decodeLinkCode(`${code}AAAA`))).toBe(ProtocolErrorCode.MalformedMessage)
    expect(syncCodeOf(() => decodeLinkCode(`${code.slice(0, -1)}*`))).toBe(ProtocolErrorCode.MalformedMessage)
    // Version 2, otherwise the same bytes: from an app that speaks a newer link protocol.
    const newer = `${LINK_CODE_PREFIX}Ag${code.slice(LINK_CODE_PREFIX.length + 2)}`
    expect(syncCodeOf(() => decodeLinkCode(newer))).toBe(ProtocolErrorCode.UnsupportedVersion)
    expect(syncCodeOf(() => decodeLinkCode(42 as unknown as string))).toBe(ProtocolErrorCode.InvalidInput)
    const payload = fromBase64Url(code.slice(LINK_CODE_PREFIX.length))
    expect(() => decodeLinkCode(`${LINK_CODE_PREFIX}${toBase64Url(payload.slice(0, 46))}`)).toThrow(
      'link code: expected 49 bytes, got 46 (cut short, or not a whole code)',
    )
  })
})

describe('link keys and the provisioning message', () => {
  it('known answers: both devices derive the same key and check, as the documented formula gives', async () => {
    const { newDevice, existing, onNew, onExisting } = await fixedLink()
    expect(toHex(onNew.messageKey)).toBe(toHex(onExisting.messageKey))
    expect(onNew.check).toBe(onExisting.check)

    // The formula of docs/protocol.md §13.6, computed here with the primitives themselves.
    const shared = nobleX25519.getSharedSecret(NEW_PRIVATE, existing.publicKey)
    const info = concatBytes(
      utf8Encode('secure-chat/v1/link'),
      new Uint8Array([0]),
      newDevice.publicKey,
      existing.publicKey,
    )
    const keys = hkdf(sha256, shared, new Uint8Array(32), info, 36)
    const digits = String(new DataView(keys.buffer, 32, 4).getUint32(0) % 1_000_000).padStart(6, '0')
    expect(toHex(onNew.messageKey)).toBe(toHex(keys.slice(0, 32)))
    expect(onNew.check).toBe(`${digits.slice(0, 3)} ${digits.slice(3)}`)
    expect(onNew.check).toMatch(/^\d{3} \d{3}$/)

    // Each direction has its own associated data: 0x01 to the new device, 0x02 to the existing one.
    const sealWithPrimitives = async (direction: number, plaintext: Uint8Array) => {
      const aesKey = await crypto.subtle.importKey(
        'raw',
        keys.slice(0, 32) as Uint8Array<ArrayBuffer>,
        'AES-GCM',
        false,
        ['encrypt'],
      )
      const ciphertext = new Uint8Array(
        await crypto.subtle.encrypt(
          {
            name: 'AES-GCM',
            iv: buffer(NONCE),
            additionalData: buffer(concatBytes(new Uint8Array([1, direction]), info)),
            tagLength: 128,
          },
          aesKey,
          buffer(plaintext),
        ),
      )
      return concatBytes(new Uint8Array([1]), NONCE, ciphertext)
    }
    const sealed = await sealProvisioning(onExisting, 'to new device', PLAINTEXT, NONCE)
    expect(toHex(sealed)).toBe(toHex(await sealWithPrimitives(1, PLAINTEXT)))
    expect(new TextDecoder().decode(await openProvisioning(onNew, 'to new device', sealed))).toBe(
      '{"v":1,"username":"alice"}',
    )
    const answer = await sealProvisioning(onNew, 'to existing device', ANSWER, NONCE)
    expect(toHex(answer)).toBe(toHex(await sealWithPrimitives(2, ANSWER)))
    expect(new TextDecoder().decode(await openProvisioning(onExisting, 'to existing device', answer))).toBe(
      'laptop',
    )

    // Pinned, so that any change to a label, the layout or the derivation shows here. The sealed
    // bytes changed deliberately when the direction byte entered the associated data (the check,
    // derived before it, did not).
    expect(onNew.check).toBe('118 886')
    expect(toHex(sealed)).toBe(
      '01101112131415161718191a1b9888269c61676d8d16d741e79eccf12be52c11c60e30fae433afc64006c3360437e93ead4ec358396f85',
    )
    expect(toHex(answer)).toBe('01101112131415161718191a1b8fcb20ca3426fb740c7f73c7b622978c46d99a2de14f')
  })

  it('any two fresh key pairs agree on key and check, and the message opens only with them', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (plaintext) => {
        const [newDevice, existing, stranger] = await Promise.all([
          generateX25519KeyPair(),
          generateX25519KeyPair(),
          generateX25519KeyPair(),
        ])
        const publicKeys = {
          newDevicePublicKey: newDevice.publicKey,
          existingDevicePublicKey: existing.publicKey,
        }
        const onNew = await deriveLinkKeys(newDevice.privateKey, 'new device', publicKeys)
        const onExisting = await deriveLinkKeys(existing.privateKey, 'existing device', publicKeys)
        expect(onNew.check).toBe(onExisting.check)
        const sealed = await sealProvisioning(onExisting, 'to new device', plaintext)
        expect(toHex(await openProvisioning(onNew, 'to new device', sealed))).toBe(toHex(plaintext))
        // A server that put its own key in place of the existing device's: the new device derives
        // other keys (and, but for one chance in a million, another check), and cannot open it.
        const swapped = { ...publicKeys, existingDevicePublicKey: stranger.publicKey }
        const fooled = await deriveLinkKeys(newDevice.privateKey, 'new device', swapped)
        expect(toHex(fooled.messageKey)).not.toBe(toHex(onNew.messageKey))
        expect(await codeOf(openProvisioning(fooled, 'to new device', sealed))).toBe(
          ProtocolErrorCode.DecryptionFailed,
        )
      }),
      { numRuns: 20 },
    )
  })

  it('any altered byte, roles swapped, or another version fails; nothing is returned', async () => {
    const { newDevice, publicKeys, onNew, onExisting } = await fixedLink()
    const sealed = await sealProvisioning(onExisting, 'to new device', PLAINTEXT)
    for (let index = 0; index < sealed.length; index++) {
      const altered = sealed.slice()
      altered[index]! ^= 0x01
      const expected = index === 0 ? ProtocolErrorCode.UnsupportedVersion : ProtocolErrorCode.DecryptionFailed
      expect(await codeOf(openProvisioning(onNew, 'to new device', altered)), `byte ${index}`).toBe(expected)
    }
    expect(await codeOf(openProvisioning(onNew, 'to new device', sealed.slice(0, 20)))).toBe(
      ProtocolErrorCode.DecryptionFailed,
    )
    // The new device taking the existing device's part: the key order in the info differs.
    const confused = await deriveLinkKeys(newDevice.privateKey, 'new device', {
      newDevicePublicKey: publicKeys.existingDevicePublicKey,
      existingDevicePublicKey: publicKeys.newDevicePublicKey,
    })
    expect(await codeOf(openProvisioning(confused, 'to new device', sealed))).toBe(
      ProtocolErrorCode.DecryptionFailed,
    )
  })

  it('a message sealed for one direction never opens as the other: a server cannot reflect one as the other', async () => {
    const { onNew, onExisting } = await fixedLink()
    // The new device's answer, posted back to the new device as if it were the provisioning message.
    const answer = await sealProvisioning(onNew, 'to existing device', ANSWER)
    expect(await codeOf(openProvisioning(onNew, 'to new device', answer))).toBe(
      ProtocolErrorCode.DecryptionFailed,
    )
    // And the existing device's message, posted back to the existing device as an answer.
    const message = await sealProvisioning(onExisting, 'to new device', ANSWER)
    expect(await codeOf(openProvisioning(onExisting, 'to existing device', message))).toBe(
      ProtocolErrorCode.DecryptionFailed,
    )
    expect(await openProvisioning(onExisting, 'to existing device', answer)).toEqual(ANSWER)
    expect(await codeOf(sealProvisioning(onNew, 'sideways' as 'to new device', ANSWER))).toBe(
      ProtocolErrorCode.InvalidInput,
    )
  })

  it('refuses a low-order public key and messages over the limit', async () => {
    const { newDevice, publicKeys, onExisting } = await fixedLink()
    // The all-zero point: every shared secret with it is zero.
    expect(
      await codeOf(
        deriveLinkKeys(newDevice.privateKey, 'new device', {
          ...publicKeys,
          existingDevicePublicKey: new Uint8Array(32),
        }),
      ),
    ).toBe(ProtocolErrorCode.InvalidKey)
    const tooLarge = (direction: 'to new device' | 'to existing device', bytes: number) =>
      codeOf(sealProvisioning(onExisting, direction, new Uint8Array(bytes)))
    expect(await tooLarge('to new device', MAX_PROVISIONING_PLAINTEXT_BYTES + 1)).toBe(
      ProtocolErrorCode.TooLarge,
    )
    const largest = await sealProvisioning(
      onExisting,
      'to new device',
      new Uint8Array(MAX_PROVISIONING_PLAINTEXT_BYTES),
    )
    expect(largest.length).toBe(MAX_PROVISIONING_SEALED_BYTES)
    expect(
      await codeOf(
        openProvisioning(onExisting, 'to new device', new Uint8Array(MAX_PROVISIONING_SEALED_BYTES + 1)),
      ),
    ).toBe(ProtocolErrorCode.TooLarge)
    // The new device's answers are small: what the channel carries from it (MAX_PROVISIONING_ANSWER_BYTES).
    expect(await tooLarge('to existing device', MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES + 1)).toBe(
      ProtocolErrorCode.TooLarge,
    )
    const largestAnswer = await sealProvisioning(
      onExisting,
      'to existing device',
      new Uint8Array(MAX_PROVISIONING_ANSWER_PLAINTEXT_BYTES),
    )
    expect(largestAnswer.length).toBe(MAX_PROVISIONING_ANSWER_BYTES)
    expect(
      await codeOf(
        openProvisioning(onExisting, 'to existing device', new Uint8Array(MAX_PROVISIONING_ANSWER_BYTES + 1)),
      ),
    ).toBe(ProtocolErrorCode.TooLarge)
  })
})
