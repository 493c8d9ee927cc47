import bcrypt from 'bcrypt'
import { describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { addressKey } from '../plugins/client-address.js'
import { LoginLimiter } from './login-limiter.js'
import {
  dummyPasswordHash,
  hashPassword,
  passwordHashCost,
  prehashPassword,
  verifyPassword,
} from './password.js'
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

describe('login limiter', () => {
  const limits = {
    failuresPerAddress: 5,
    failuresPerAccountAddress: 3,
    failuresPerAccount: 3,
    accountDelayAfter: 6,
    accountDelayBaseMs: 10,
    accountDelayMaxMs: 40,
    failuresPerDevice: 2,
    windowMs: 1_000,
    maxEntries: 100,
  }
  const login = (account: string, address: string, knownDevice = false) =>
    ({ account, address, kind: 'login', knownDevice }) as const

  it('refuses an (account, address) pair after N failures, and only that pair', () => {
    let now = 0
    const limiter = new LoginLimiter(limits, () => now)
    for (let i = 0; i < 3; i++) expect(limiter.attempt(login('alice', '10.0.0.1')).allowed).toBe(true)
    expect(limiter.attempt(login('alice', '10.0.0.1'))).toEqual({
      allowed: false,
      retryAfterMs: 1_000,
      scope: 'account-address',
    })
    expect(limiter.attempt(login('alice', '10.0.0.2')).allowed).toBe(true)
    expect(limiter.attempt(login('bob', '10.0.0.1')).allowed).toBe(true)
    now = 1_000
    expect(limiter.attempt(login('alice', '10.0.0.1')).allowed).toBe(true)
  })

  it('slows an account attacked from many addresses with doubling waits, capped; a known device never waits', () => {
    let now = 0
    const limiter = new LoginLimiter(limits, () => now)
    for (let i = 0; i < 6; i++) expect(limiter.attempt(login('alice', `10.0.${i}.1`)).allowed).toBe(true)
    const waits: number[] = []
    for (let i = 0; i < 5; i++) {
      const decision = limiter.attempt(login('alice', `10.1.${i}.1`))
      expect(decision).toMatchObject({ allowed: false, scope: 'account' })
      if (decision.allowed) throw new Error('unreachable')
      waits.push(decision.retryAfterMs)
      now += decision.retryAfterMs
      expect(limiter.attempt(login('alice', `10.2.${i}.1`)).allowed).toBe(true)
    }
    expect(waits).toEqual([10, 20, 40, 40, 40])
    expect(limiter.attempt(login('alice', '10.3.0.1', true)).allowed).toBe(true)
  })

  it('refuses reinstall beyond the per-account limit from any address', () => {
    const limiter = new LoginLimiter(limits, () => 0)
    for (let i = 0; i < 3; i++) limiter.attempt(login('alice', `10.0.${i}.1`))
    expect(limiter.attempt({ ...login('alice', '10.9.0.1'), kind: 'reinstall' })).toMatchObject({
      allowed: false,
      scope: 'account',
    })
    expect(limiter.attempt(login('alice', '10.9.0.1')).allowed).toBe(true)
  })

  it("counts a known device's failures on their own; its success clears them", () => {
    const limiter = new LoginLimiter(limits, () => 0)
    for (let i = 0; i < 3; i++) limiter.attempt(login('alice', '10.0.0.1'))
    expect(limiter.attempt(login('alice', '10.0.0.1', true)).allowed).toBe(true)
    expect(limiter.attempt(login('alice', '10.0.0.1', true)).allowed).toBe(true)
    expect(limiter.attempt(login('alice', '10.0.0.1', true))).toMatchObject({
      allowed: false,
      scope: 'device',
    })
    limiter.succeeded(login('alice', '10.0.0.1', true))
    expect(limiter.attempt(login('alice', '10.0.0.1', true)).allowed).toBe(true)
  })

  it('counts attempts before their outcome, so a parallel burst cannot exceed the limit', () => {
    const limiter = new LoginLimiter(limits, () => 0)
    const decisions = Array.from({ length: 10 }, () => limiter.attempt(login('alice', '10.0.0.1')))
    expect(decisions.filter((decision) => decision.allowed)).toHaveLength(3)
  })

  it('limits an address across accounts; successes do not use up its allowance', () => {
    const limiter = new LoginLimiter(limits, () => 0)
    for (let i = 0; i < 10; i++) {
      expect(limiter.attempt(login(`good${i}`, '10.0.0.2')).allowed).toBe(true)
      limiter.succeeded(login(`good${i}`, '10.0.0.2'))
    }
    for (let i = 0; i < 5; i++) limiter.attempt(login(`user${i}`, '10.0.0.1'))
    expect(limiter.attempt(login('fresh', '10.0.0.1'))).toMatchObject({ allowed: false, scope: 'address' })
    expect(limiter.attempt(login('fresh', '10.0.0.2')).allowed).toBe(true)
  })

  it('never holds more than maxEntries counters', () => {
    let now = 0
    const limiter = new LoginLimiter({ ...limits, maxEntries: 10 }, () => now)
    for (let i = 0; i < 100; i++) {
      now = i
      limiter.attempt(login(`user${i}`, '10.0.0.1'))
    }
    expect(limiter.size).toBeLessThanOrEqual(10)
  })
})

describe('client address keys', () => {
  it.each([
    ['203.0.113.7', '203.0.113.7'],
    ['::ffff:203.0.113.7', '203.0.113.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::99', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2:ffff::1', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
  ])('%s counts as %s', (address, key) => {
    expect(addressKey(address)).toBe(key)
  })

  it('puts every address of one /64 under one key, and the next /64 apart', () => {
    expect(addressKey('2001:db8:0:1::a')).toBe(addressKey('2001:db8:0:1:ffff:ffff:ffff:ffff'))
    expect(addressKey('2001:db8:0:1::a')).not.toBe(addressKey('2001:db8:0:2::a'))
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
