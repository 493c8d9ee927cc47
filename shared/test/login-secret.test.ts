/**
 * The login secret (shared/login-secret.ts, docs/protocol.md §12.2): known answers pinned (so the
 * format cannot drift), checked against Node's own PBKDF2 as an independent implementation, and
 * the properties the design rests on: per-account, NFKC-insensitive, and independent of the store.
 */
import { describe, expect, it } from 'vitest'
import { deriveStorageKey, newStorageKeyParameters, open, seal } from '../at-rest.js'
import { fromBase64Url, toHex, utf8Encode } from '../bytes.js'
import { deriveLoginSecret, LOGIN_SECRET_ITERATIONS, loginSecretSalt } from '../login-secret.js'

describe('login secret', () => {
  it('salt = SHA-256("secure-chat/v1/login-salt" ‖ 0x00 ‖ username)', async () => {
    expect(toHex(await loginSecretSalt('alice'))).toBe(
      'b211379c3c752ec8fb529706f268f8e965d2e9d60159c9caf31cf0a71670f45c',
    )
  })

  it('matches its known answer at the production cost (600,000 iterations)', async () => {
    expect(LOGIN_SECRET_ITERATIONS).toBe(600_000)
    expect(await deriveLoginSecret('correct horse battery staple', 'alice')).toBe(
      'FyKPSrW-3O0xtOestPAaTidBqfuQBM_ijuL_I4Iljw0',
    )
  })

  it('is the same for NFC and NFD spellings, and differs per account and per password', async () => {
    const composed = 'Grüße aus Köln, Åsa!'
    const a = await deriveLoginSecret(composed, 'alice', 1000)
    expect(await deriveLoginSecret(composed.normalize('NFD'), 'alice', 1000)).toBe(a)
    expect(await deriveLoginSecret(composed, 'alicf', 1000)).not.toBe(a)
    expect(await deriveLoginSecret(`${composed}.`, 'alice', 1000)).not.toBe(a)
  })

  it('does not open the store: the store key derives under another salt', async () => {
    const password = 'correct horse battery staple'
    const parameters = newStorageKeyParameters(1000)
    const storageKey = await deriveStorageKey(password, parameters, 1000)
    const sealed = await seal(storageKey, utf8Encode('secret history'), 'message:bob/1')
    const secret = await deriveLoginSecret(password, 'alice', 1000)
    // Neither the secret as a password nor its bytes as the salt's output open what was sealed.
    const fromSecret = await deriveStorageKey(secret, parameters, 1000)
    await expect(open(fromSecret, sealed, 'message:bob/1')).rejects.toMatchObject({
      code: 'E2E_ERR_DECRYPTION_FAILED',
    })
    const rawKey = await crypto.subtle.importKey(
      'raw',
      fromBase64Url(secret) as Uint8Array<ArrayBuffer>,
      'AES-GCM',
      false,
      ['decrypt'],
    )
    await expect(open(rawKey, sealed, 'message:bob/1')).rejects.toMatchObject({
      code: 'E2E_ERR_DECRYPTION_FAILED',
    })
  })

  it('refuses an empty password or a bad iteration count', async () => {
    await expect(deriveLoginSecret('', 'alice')).rejects.toMatchObject({ code: 'E2E_ERR_INVALID_INPUT' })
    await expect(deriveLoginSecret('pw', 'alice', 0)).rejects.toMatchObject({ code: 'E2E_ERR_INVALID_INPUT' })
  })
})
