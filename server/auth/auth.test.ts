import bcrypt from 'bcrypt'
import { describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { LoginLimiter } from './login-limiter.js'
import {
  checkPasswordPolicy,
  dummyPasswordHash,
  hashPassword,
  passwordHashCost,
  prehashPassword,
  verifyPassword,
} from './password.js'
import { passwordScore } from './password-strength.js'
import { hashSessionToken, newSessionToken, parseBearerToken } from './tokens.js'

describe('password storage', () => {
  it('pre-hashes to 44 base64 characters with no NUL, so bcrypt sees every password byte', () => {
    const long = 'a'.repeat(72)
    const a = prehashPassword(`${long}one`)
    const b = prehashPassword(`${long}two`)
    expect(a).toHaveLength(44)
    expect(a).not.toContain('\0')
    expect(a).not.toBe(b)
    // bcrypt itself would not tell these apart.
    expect(bcrypt.compareSync(`${long}two`, bcrypt.hashSync(`${long}one`, 4))).toBe(true)
  })

  it('verifies what it hashed, treating NFC and NFD spellings alike', async () => {
    const composed = 'Grüße aus Köln, Åsa!'
    const decomposed = composed.normalize('NFD')
    expect(decomposed).not.toBe(composed)
    const hash = await hashPassword(composed, 4)
    expect(passwordHashCost(hash)).toBe(4)
    expect(await verifyPassword(decomposed, hash)).toBe(true)
    expect(await verifyPassword(`${composed}.`, hash)).toBe(false)
  })

  it('keeps one dummy hash per cost, against which any password fails', async () => {
    const dummy = await dummyPasswordHash(4)
    expect(await dummyPasswordHash(4)).toBe(dummy)
    expect(passwordHashCost(dummy)).toBe(4)
    expect(await verifyPassword('anything at all', dummy)).toBe(false)
  })
})

describe('password policy', () => {
  it('accepts long random passphrases and refuses guessable ones', async () => {
    await expect(checkPasswordPolicy('correct horse battery staple', [])).resolves.toBeUndefined()
    await expect(checkPasswordPolicy('p4ssw0rd1234', [])).rejects.toMatchObject({
      code: 'E2E_ERR_WEAK_PASSWORD',
    })
    await expect(checkPasswordPolicy('1234567890123', [])).rejects.toMatchObject({
      code: 'E2E_ERR_WEAK_PASSWORD',
    })
  })

  it('counts the username as a known word', async () => {
    const password = 'zanzibarquokka1'
    expect(await passwordScore(password, [])).toBeGreaterThanOrEqual(3)
    expect(await passwordScore(password, ['zanzibarquokka'])).toBeLessThan(3)
  })

  it('scores many passwords concurrently off the event loop', async () => {
    const scores = await Promise.all(
      Array.from({ length: 20 }, (_, i) => passwordScore(i % 2 ? 'password' : 'x7#Kq!v9$Lm2@Wp4', [])),
    )
    expect(scores.filter((score) => score >= 3)).toHaveLength(10)
  })
})

describe('login limiter', () => {
  const limits = { failuresPerAccount: 3, failuresPerAddress: 5, windowMs: 1_000, maxEntries: 100 }

  it('locks an account after N failed attempts until the window ends; a success clears it', () => {
    let now = 0
    const limiter = new LoginLimiter(limits, () => now)
    for (let i = 0; i < 3; i++) expect(limiter.attempt('alice', `10.0.0.${i}`).allowed).toBe(true)
    expect(limiter.attempt('alice', '10.0.0.9')).toEqual({
      allowed: false,
      retryAfterMs: 1_000,
      scope: 'account',
    })
    expect(limiter.attempt('bob', '10.0.0.9').allowed).toBe(true)
    now = 1_000
    expect(limiter.attempt('alice', '10.0.0.9').allowed).toBe(true)
    limiter.succeeded('alice', '10.0.0.9')
    expect(limiter.attempt('alice', '10.0.0.1').allowed).toBe(true)
    expect(limiter.attempt('alice', '10.0.0.1').allowed).toBe(true)
    expect(limiter.attempt('alice', '10.0.0.1').allowed).toBe(true)
    expect(limiter.attempt('alice', '10.0.0.1').allowed).toBe(false)
  })

  it('counts attempts before their outcome, so a parallel burst cannot exceed the limit', () => {
    const limiter = new LoginLimiter(limits, () => 0)
    const decisions = Array.from({ length: 10 }, () => limiter.attempt('alice', '10.0.0.1'))
    expect(decisions.filter((decision) => decision.allowed)).toHaveLength(3)
  })

  it('limits an address across accounts; successes do not use up its allowance', () => {
    const limiter = new LoginLimiter(limits, () => 0)
    for (let i = 0; i < 10; i++) {
      expect(limiter.attempt(`good${i}`, '10.0.0.2').allowed).toBe(true)
      limiter.succeeded(`good${i}`, '10.0.0.2')
    }
    for (let i = 0; i < 5; i++) limiter.attempt(`user${i}`, '10.0.0.1')
    expect(limiter.attempt('fresh', '10.0.0.1')).toMatchObject({ allowed: false, scope: 'address' })
    expect(limiter.attempt('fresh', '10.0.0.2').allowed).toBe(true)
  })

  it('never holds more than maxEntries counters', () => {
    let now = 0
    const limiter = new LoginLimiter({ ...limits, maxEntries: 10 }, () => now)
    for (let i = 0; i < 100; i++) {
      now = i
      limiter.attempt(`user${i}`, '10.0.0.1')
    }
    expect(limiter.size).toBeLessThanOrEqual(10)
  })
})

describe('session tokens', () => {
  it('are 32 random bytes, stored as their SHA-256', () => {
    const token = newSessionToken()
    expect(token).toHaveLength(32)
    expect(hashSessionToken(token)).toHaveLength(32)
    expect(toBase64Url(hashSessionToken(token))).not.toBe(toBase64Url(token))
  })

  it('are read only from a well-formed Bearer header', () => {
    const token = newSessionToken()
    const text = toBase64Url(token)
    expect(parseBearerToken(`Bearer ${text}`)).toEqual(token)
    expect(parseBearerToken(`bearer ${text}`)).toEqual(token)
    for (const header of [
      undefined,
      '',
      text,
      `Basic ${text}`,
      `Bearer ${text}=`,
      `Bearer ${text.slice(1)}`,
      `Bearer ${text} extra`,
      `Bearer ${toBase64Url(new Uint8Array(31))}`,
      `Bearer ${text.slice(0, -1)}/`,
    ]) {
      expect(parseBearerToken(header)).toBeUndefined()
    }
  })
})
