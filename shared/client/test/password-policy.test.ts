/** The password policy the client core runs for both UIs (docs/protocol.md §12.2). */
import { describe, expect, it } from 'vitest'
import { checkPasswordPolicy, passwordScore } from '../password-policy.js'

describe('password policy', () => {
  it('accepts long random passphrases and refuses guessable ones', async () => {
    await expect(checkPasswordPolicy('correct horse battery staple', [])).resolves.toBeUndefined()
    for (const weak of [
      'p4ssw0rd1234',
      '1234567890123',
      'password1234',
      'qwertyuiopasdf',
      'abcabcabcabcabcabc',
    ]) {
      await expect(checkPasswordPolicy(weak, []), weak).rejects.toMatchObject({
        code: 'E2E_ERR_WEAK_PASSWORD',
      })
    }
  })

  it('counts the username as a known word', async () => {
    const password = 'zanzibarquokka1'
    expect(await passwordScore(password, [])).toBeGreaterThanOrEqual(3)
    expect(await passwordScore(password, ['zanzibarquokka'])).toBeLessThan(3)
    await expect(
      checkPasswordPolicy('zanzibarquokkazanzibarquokka', ['zanzibarquokka']),
    ).rejects.toMatchObject({
      code: 'E2E_ERR_WEAK_PASSWORD',
    })
  })

  it('counts length in code points after NFKC, not UTF-16 units or bytes', async () => {
    // 11 emoji are 22 UTF-16 units and 44 bytes, but 11 characters: too short.
    await expect(checkPasswordPolicy('🦊🐙🦉🐝🦀🐢🦎🐌🦑🐞🦋', [])).rejects.toThrow(
      /at least 12 characters, got 11/,
    )
    await expect(checkPasswordPolicy('correct horse battery staple '.repeat(10), [])).rejects.toThrow(
      /at most 256 characters, got 290/,
    )
  })
})
