/**
 * Device names sealed under a key only the account's devices hold (device-name.ts,
 * docs/protocol.md §13.8): a known answer checked against the documented formula computed with the
 * primitives themselves, names bound to their device, and hostile names refused.
 */
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { describe, expect, it } from 'vitest'
import { concatBytes, fromHex, toHex, utf8Encode } from '../bytes.js'
import { checkDeviceName, deviceNameKey, openDeviceName, sealDeviceName } from '../device-name.js'
import { isProtocolError, ProtocolErrorCode } from '../errors.js'
import { exportIdentity } from '../identity.js'
import { MAX_DEVICE_NAME_LENGTH, MAX_SEALED_DEVICE_NAME_BYTES } from '../limits.js'
import { deterministicIdentity } from './helpers.js'

const NONCE = fromHex('202122232425262728292a2b')
const buffer = (bytes: Uint8Array) => bytes as Uint8Array<ArrayBuffer>

async function codeOf(action: () => unknown): Promise<string | undefined> {
  try {
    await action()
    return undefined
  } catch (error) {
    return isProtocolError(error) ? error.code : `not a ProtocolError: ${String(error)}`
  }
}

describe('device names', () => {
  it('known answer: the key and the sealed name are what the documented formula gives', async () => {
    const exported = await exportIdentity(await deterministicIdentity('alice'))
    const key = deviceNameKey(exported)
    const label = utf8Encode('secure-chat/v1/device-name')
    const expectedKey = hkdf(sha256, exported.slice(1, 65), new Uint8Array(32), label, 32)
    expect(toHex(key)).toBe(toHex(expectedKey))

    const sealed = await sealDeviceName(key, 2, 'Laptop', NONCE)
    const aesKey = await crypto.subtle.importKey('raw', buffer(expectedKey), 'AES-GCM', false, ['encrypt'])
    const ad = concatBytes(new Uint8Array([1]), label, new Uint8Array([0, 0, 0, 2]))
    const ciphertext = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: 'AES-GCM', iv: buffer(NONCE), additionalData: buffer(ad), tagLength: 128 },
        aesKey,
        buffer(utf8Encode('Laptop')),
      ),
    )
    expect(toHex(sealed)).toBe(toHex(concatBytes(new Uint8Array([1]), NONCE, ciphertext)))
    expect(await openDeviceName(key, 2, sealed)).toBe('Laptop')
    // Pinned, so that a change to the label or the layout shows here.
    expect(toHex(sealed)).toBe('01202122232425262728292a2be3465ca6d80e44f82c4c4f4225063934866bf8897376')
  })

  it('a name opens only for its own device and with the account’s key', async () => {
    const key = deviceNameKey(await exportIdentity(await deterministicIdentity('alice')))
    const other = deviceNameKey(await exportIdentity(await deterministicIdentity('mallory')))
    const sealed = await sealDeviceName(key, 3, 'phone')
    // A server that moved device 3's name onto device 4, so the user removes the wrong one.
    expect(await codeOf(() => openDeviceName(key, 4, sealed))).toBe(ProtocolErrorCode.DecryptionFailed)
    expect(await codeOf(() => openDeviceName(other, 3, sealed))).toBe(ProtocolErrorCode.DecryptionFailed)
    const altered = sealed.slice()
    altered[0] = 2
    expect(await codeOf(() => openDeviceName(key, 3, altered))).toBe(ProtocolErrorCode.UnsupportedVersion)
    expect(await codeOf(() => openDeviceName(key, 3, new Uint8Array(MAX_SEALED_DEVICE_NAME_BYTES + 1)))).toBe(
      ProtocolErrorCode.TooLarge,
    )
  })

  it('the longest name fits what the server stores; hostile names are refused', async () => {
    const key = deviceNameKey(await exportIdentity(await deterministicIdentity('alice')))
    // 64 characters of four bytes each: the largest name there is.
    const longest = '😀'.repeat(MAX_DEVICE_NAME_LENGTH)
    const sealed = await sealDeviceName(key, 2, longest)
    expect(sealed.length).toBeLessThanOrEqual(MAX_SEALED_DEVICE_NAME_BYTES)
    expect(await openDeviceName(key, 2, sealed)).toBe(longest)
    expect(checkDeviceName('  Work laptop \n')).toBe('Work laptop')
    for (const hostile of [
      '',
      '   ',
      'x'.repeat(MAX_DEVICE_NAME_LENGTH + 1),
      'line\nbreak',
      'bell\u0007',
      'esc\u001b[31m',
      'invoice\u202Efdp.exe',
      'para\u2029graph',
      42,
    ]) {
      expect(await codeOf(() => checkDeviceName(hostile)), JSON.stringify(hostile)).toBe(
        ProtocolErrorCode.InvalidInput,
      )
    }
    expect(await codeOf(() => deviceNameKey(new Uint8Array(128)))).toBe(ProtocolErrorCode.InvalidInput)
    expect(await codeOf(() => sealDeviceName(key, 0, 'phone'))).toBe(ProtocolErrorCode.InvalidInput)
  })
})
