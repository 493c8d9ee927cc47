/**
 * Project Wycheproof vectors (C2SP/wycheproof, trimmed copies in ./fixtures, see its README) run
 * through the project's own primitive layer: valid cases must give the expected output, invalid
 * ones must be refused, "acceptable" ones may go either way but never give a wrong answer.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { concatBytes, equalBytes, fromHex, isAllZero, toHex } from '../bytes.js'
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  ed25519Verify,
  hkdfSha256,
  hmacSha256,
  importRsaPrivateKeyPkcs8,
  rsaOaepDecrypt,
  x25519,
  x25519KeyPairFromPrivateBytes,
} from '../crypto/primitives.js'
import { isProtocolError } from '../errors.js'
import aesGcm from './fixtures/wycheproof-aes-gcm.json' with { type: 'json' }
import ed25519 from './fixtures/wycheproof-ed25519.json' with { type: 'json' }
import hkdf from './fixtures/wycheproof-hkdf-sha256.json' with { type: 'json' }
import hmac from './fixtures/wycheproof-hmac-sha256.json' with { type: 'json' }
import rsa2048 from './fixtures/wycheproof-rsa-oaep-2048-sha256.json' with { type: 'json' }
import rsa3072 from './fixtures/wycheproof-rsa-oaep-3072-sha256.json' with { type: 'json' }
import x25519Vectors from './fixtures/wycheproof-x25519.json' with { type: 'json' }
import { curveBackends as backends } from './helpers.js'

interface Case {
  tcId: number
  result: string
  flags: string[]
}

function tests<T extends Case>(file: { testGroups: { tests: T[] }[] }): T[] {
  return file.testGroups.flatMap((group) => group.tests)
}

async function outcome<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  try {
    return { value: await promise }
  } catch (error) {
    return { error }
  }
}

describe('Wycheproof AES-GCM (96-bit IV, 128-bit tag)', () => {
  const cases = tests(aesGcm as unknown as { testGroups: { tests: (Case & Record<string, string>)[] }[] })
  it(`${cases.length} cases`, async () => {
    expect(cases.length).toBeGreaterThan(100)
    for (const t of cases) {
      const key = fromHex(t.key!)
      const iv = fromHex(t.iv!)
      const aad = fromHex(t.aad!)
      const sealed = concatBytes(fromHex(t.ct!), fromHex(t.tag!))
      const opened = await outcome(aesGcmDecrypt(key, iv, sealed, aad))
      if (t.result === 'valid') {
        expect(toHex(opened.value!), `tcId ${t.tcId}`).toBe(t.msg)
        expect(toHex(await aesGcmEncrypt(key, iv, fromHex(t.msg!), aad)), `tcId ${t.tcId}`).toBe(
          toHex(sealed),
        )
      } else {
        expect(isProtocolError(opened.error, 'E2E_ERR_DECRYPTION_FAILED'), `tcId ${t.tcId}`).toBe(true)
      }
    }
  })
})

describe('Wycheproof HKDF-SHA256', () => {
  const cases = tests(
    hkdf as unknown as {
      testGroups: {
        tests: (Case & { ikm: string; salt: string; info: string; size: number; okm: string })[]
      }[]
    },
  )
  it(`${cases.length} cases`, () => {
    for (const t of cases) {
      if (t.result === 'valid') {
        expect(
          toHex(hkdfSha256(fromHex(t.ikm), fromHex(t.salt), fromHex(t.info), t.size)),
          `tcId ${t.tcId}`,
        ).toBe(t.okm)
      } else {
        expect(
          () => hkdfSha256(fromHex(t.ikm), fromHex(t.salt), fromHex(t.info), t.size),
          `tcId ${t.tcId}`,
        ).toThrow()
      }
    }
  })
})

describe('Wycheproof HMAC-SHA256 (full-length tags)', () => {
  const cases = tests(
    hmac as unknown as { testGroups: { tests: (Case & { key: string; msg: string; tag: string })[] }[] },
  )
  it(`${cases.length} cases`, () => {
    for (const t of cases) {
      const matches = equalBytes(hmacSha256(fromHex(t.key), fromHex(t.msg)), fromHex(t.tag))
      expect(matches, `tcId ${t.tcId}`).toBe(t.result === 'valid')
    }
  })
})

describe.each([
  ['2048', rsa2048],
  ['3072', rsa3072],
])('Wycheproof RSA-OAEP-%s SHA-256 / MGF1-SHA-256', (_bits, file) => {
  const groups = (
    file as unknown as {
      testGroups: { privateKeyPkcs8: string; tests: (Case & { msg: string; ct: string; label: string })[] }[]
    }
  ).testGroups
  it('decrypts the valid ciphertexts and refuses the invalid ones', async () => {
    let count = 0
    for (const group of groups) {
      const privateKey = await importRsaPrivateKeyPkcs8(fromHex(group.privateKeyPkcs8))
      for (const t of group.tests) {
        count++
        // Our protocol never uses an OAEP label; labelled cases go to WebCrypto directly.
        const result = t.label
          ? await outcome(
              crypto.subtle
                .decrypt(
                  { name: 'RSA-OAEP', label: fromHex(t.label) as Uint8Array<ArrayBuffer> },
                  privateKey,
                  fromHex(t.ct) as Uint8Array<ArrayBuffer>,
                )
                .then((buffer) => new Uint8Array(buffer)),
            )
          : await outcome(rsaOaepDecrypt(privateKey, fromHex(t.ct)))
        if (t.result === 'valid') expect(toHex(result.value!), `tcId ${t.tcId}`).toBe(t.msg)
        else expect(result.error, `tcId ${t.tcId}`).toBeDefined()
        if (t.result !== 'valid' && !t.label)
          expect(isProtocolError(result.error, 'E2E_ERR_DECRYPTION_FAILED')).toBe(true)
      }
    }
    expect(count).toBeGreaterThan(30)
  })
})

describe.each(backends)('Wycheproof X25519 via $name', ({ force }) => {
  let restore = () => {}
  afterEach(() => restore())
  const cases = tests(
    x25519Vectors as unknown as {
      testGroups: { tests: (Case & { public: string; private: string; shared: string })[] }[]
    },
  )

  it(`${cases.length} cases: valid ones agree, zero shared secrets (low-order points) are refused`, async () => {
    restore = force()
    let refusedLowOrder = 0
    for (const t of cases) {
      const pair = await x25519KeyPairFromPrivateBytes(fromHex(t.private))
      const result = await outcome(x25519(pair.privateKey, fromHex(t.public)))
      if (isAllZero(fromHex(t.shared))) {
        expect(isProtocolError(result.error, 'E2E_ERR_INVALID_KEY'), `tcId ${t.tcId} must be refused`).toBe(
          true,
        )
        refusedLowOrder++
      } else if (t.result === 'valid') {
        expect(toHex(result.value!), `tcId ${t.tcId}`).toBe(t.shared)
      } else if (result.value) {
        // "acceptable" (twist points, non-canonical encodings): refusing is fine, a wrong answer is not.
        expect(toHex(result.value), `tcId ${t.tcId}`).toBe(t.shared)
      }
    }
    expect(refusedLowOrder).toBeGreaterThan(20)
  })
})

describe.each(backends)('Wycheproof Ed25519 via $name', ({ force }) => {
  let restore = () => {}
  afterEach(() => restore())
  const groups = (
    ed25519 as unknown as {
      testGroups: { publicKey: { pk: string }; tests: (Case & { msg: string; sig: string })[] }[]
    }
  ).testGroups

  it('accepts exactly the valid signatures', async () => {
    restore = force()
    let count = 0
    for (const group of groups) {
      for (const t of group.tests) {
        count++
        const ok = await ed25519Verify(fromHex(group.publicKey.pk), fromHex(t.msg), fromHex(t.sig))
        expect(ok, `tcId ${t.tcId} (${t.flags.join(',')})`).toBe(t.result === 'valid')
      }
    }
    expect(count).toBeGreaterThan(100)
  })
})
