/**
 * The login secret (shared/login-secret.ts, which runs on WebCrypto) against an independent
 * implementation of the same formula: node:crypto's SHA-256 and PBKDF2.
 */
import { createHash, pbkdf2Sync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { fromBase64Url } from '../shared/bytes.js'
import { deriveLoginSecret } from '../shared/login-secret.js'

describe('login secret', () => {
  it('agrees with an independent PBKDF2-HMAC-SHA256 (node:crypto)', async () => {
    for (const [password, username] of [
      ['correct horse battery staple', 'alice'],
      ['Grüße aus Köln, Åsa!', 'bob.smith'],
      ['🦊🐙🦉🐝🦀🐢🦎🐌🦑🐞🦋🐳', 'z-9'],
    ] as const) {
      const salt = createHash('sha256')
        .update(
          Buffer.concat([Buffer.from('secure-chat/v1/login-salt'), Buffer.from([0]), Buffer.from(username)]),
        )
        .digest()
      const expected = pbkdf2Sync(Buffer.from(password.normalize('NFKC')), salt, 1000, 32, 'sha256')
      const secret = await deriveLoginSecret(password, username, 1000)
      expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/)
      expect(Buffer.from(fromBase64Url(secret)).equals(expected)).toBe(true)
    }
  })
})
