/**
 * Published test vectors for every primitive the protocol uses: RFC 7748 (X25519), RFC 5869
 * (HKDF-SHA256), libsignal's chain-key derivation, and the Wycheproof files in ./fixtures.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { fromHex, toHex, utf8Encode } from '../bytes.js'
import { hkdfSha256, hmacSha256, x25519, x25519KeyPairFromPrivateBytes } from '../crypto/primitives.js'
import { isProtocolError } from '../errors.js'
import { chainStep } from '../ratchet/kdf.js'
import { curveBackends as backends } from './helpers.js'

describe.each(backends)('X25519 (RFC 7748) via $name', ({ force }) => {
  let restore = () => {}
  afterEach(() => restore())

  async function scalarMult(scalar: Uint8Array, u: Uint8Array): Promise<Uint8Array> {
    const pair = await x25519KeyPairFromPrivateBytes(scalar)
    return x25519(pair.privateKey, u)
  }

  it('§5.2 test vectors', async () => {
    restore = force()
    expect(
      toHex(
        await scalarMult(
          fromHex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'),
          fromHex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c'),
        ),
      ),
    ).toBe('c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552')
    expect(
      toHex(
        await scalarMult(
          fromHex('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d'),
          fromHex('e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493'),
        ),
      ),
    ).toBe('95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957')
  })

  it('§5.2 iterated: 1 and 1,000 iterations', async () => {
    restore = force()
    let k = fromHex('0900000000000000000000000000000000000000000000000000000000000000')
    let u = k
    for (let i = 1; i <= 1000; i++) {
      const next = await scalarMult(k, u)
      u = k
      k = next
      if (i === 1) expect(toHex(k)).toBe('422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079')
    }
    expect(toHex(k)).toBe('684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51')
  })

  it('§6.1 Diffie-Hellman: both sides derive the published shared secret', async () => {
    restore = force()
    const alice = await x25519KeyPairFromPrivateBytes(
      fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'),
    )
    const bob = await x25519KeyPairFromPrivateBytes(
      fromHex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb'),
    )
    expect(toHex(alice.publicKey)).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a')
    expect(toHex(bob.publicKey)).toBe('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')
    const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'
    expect(toHex(await x25519(alice.privateKey, bob.publicKey))).toBe(shared)
    expect(toHex(await x25519(bob.privateKey, alice.publicKey))).toBe(shared)
  })

  it('rejects low-order points (all-zero shared secret) with InvalidKey', async () => {
    restore = force()
    const pair = await x25519KeyPairFromPrivateBytes(
      fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'),
    )
    const lowOrder = [
      '0000000000000000000000000000000000000000000000000000000000000000',
      '0100000000000000000000000000000000000000000000000000000000000000',
      'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
      '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
      'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    ]
    for (const point of lowOrder) {
      const error = await x25519(pair.privateKey, fromHex(point)).catch((e: unknown) => e)
      expect(isProtocolError(error, 'E2E_ERR_INVALID_KEY'), point).toBe(true)
    }
  })

  it('rejects public keys of the wrong length', async () => {
    restore = force()
    const pair = await x25519KeyPairFromPrivateBytes(new Uint8Array(32).fill(7))
    for (const length of [0, 31, 33, 64]) {
      const error = await x25519(pair.privateKey, new Uint8Array(length).fill(9)).catch((e: unknown) => e)
      expect(isProtocolError(error, 'E2E_ERR_INVALID_INPUT')).toBe(true)
    }
  })
})

describe('HKDF-SHA256 (RFC 5869 appendix A)', () => {
  const range = (from: number, to: number) => Uint8Array.from({ length: to - from + 1 }, (_, i) => from + i)
  it('A.1 basic', () => {
    const okm = hkdfSha256(new Uint8Array(22).fill(0x0b), range(0x00, 0x0c), range(0xf0, 0xf9), 42)
    expect(toHex(okm)).toBe(
      '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
    )
  })
  it('A.2 longer inputs and outputs', () => {
    const okm = hkdfSha256(range(0x00, 0x4f), range(0x60, 0xaf), range(0xb0, 0xff), 82)
    expect(toHex(okm)).toBe(
      'b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87',
    )
  })
  it('A.3 zero-length salt and info', () => {
    const okm = hkdfSha256(new Uint8Array(22).fill(0x0b), new Uint8Array(0), new Uint8Array(0), 42)
    expect(toHex(okm)).toBe(
      '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
    )
  })
  it('agrees with WebCrypto HKDF and HMAC on random inputs', async () => {
    for (let i = 0; i < 20; i++) {
      const ikm = crypto.getRandomValues(new Uint8Array(1 + i * 7))
      const salt = crypto.getRandomValues(new Uint8Array(i * 3))
      const info = crypto.getRandomValues(new Uint8Array(i))
      const length = 16 + i * 5
      const base = await crypto.subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits'])
      const expected = new Uint8Array(
        await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, base, length * 8),
      )
      expect(toHex(hkdfSha256(ikm, salt, info, length))).toBe(toHex(expected))
      const macKey = await crypto.subtle.importKey(
        'raw',
        salt.length ? salt : new Uint8Array([1]),
        { name: 'HMAC', hash: 'SHA-256' },
        false,
        ['sign'],
      )
      const mac = new Uint8Array(await crypto.subtle.sign('HMAC', macKey, ikm))
      expect(toHex(hmacSha256(salt.length ? salt : new Uint8Array([1]), ikm))).toBe(toHex(mac))
    }
  })
})

describe("libsignal's chain-key derivation (rust/protocol/src/ratchet/keys.rs)", () => {
  it('HMAC 0x01 / 0x02 chain step and the message keys it seeds', () => {
    const seed = fromHex('8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f')
    const step = chainStep(seed)
    expect(toHex(step.nextChainKey)).toBe('28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d')
    // libsignal expands the seed with HKDF(salt = none, info "WhisperMessageKeys") into cipher ‖ MAC
    // keys; matching its numbers shows our HMAC step feeds the HKDF exactly as libsignal's does.
    const okm = hkdfSha256(step.messageKeySeed, new Uint8Array(32), utf8Encode('WhisperMessageKeys'), 80)
    expect(toHex(okm.slice(0, 32))).toBe('bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217')
    expect(toHex(okm.slice(32, 64))).toBe('c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b')
  })
})
