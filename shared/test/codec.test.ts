/**
 * Codecs: base64url, the binary reader, envelopes and the JSON frame and API schemas, against
 * valid values (round trips, property-tested) and a table of hostile inputs that must be refused.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ByteReader, ByteWriter, equalBytes, fromBase64Url, toBase64Url } from '../bytes.js'
import { RegisterRequest, UserSearchResponse } from '../codec/api.js'
import { decodeEnvelope, ENVELOPE_VERSION, encodeEnvelope, encodeEnvelopeHeader } from '../codec/envelope.js'
import { decodeClientFrame, decodeServerFrame } from '../codec/frames.js'
import { decode } from '../codec/schema.js'
import { isProtocolError } from '../errors.js'
import { MAX_ENVELOPE_BYTES, MAX_PLAINTEXT_BYTES, PADDING_BLOCK_BYTES } from '../limits.js'
import { pad, unpad } from '../ratchet/padding.js'
import { normalizeUsername } from '../username.js'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (error) {
    return isProtocolError(error) ? error.code : 'not a ProtocolError'
  }
}

describe('base64url', () => {
  it('round-trips any bytes and agrees with the platform encoder', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const text = toBase64Url(bytes)
        expect(text).toMatch(/^[A-Za-z0-9_-]*$/)
        expect(equalBytes(fromBase64Url(text), bytes)).toBe(true)
        const standard = btoa(String.fromCharCode(...bytes))
        expect(text).toBe(standard.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''))
      }),
    )
  })

  it.each([
    ['padding', 'AA=='],
    ['standard alphabet', 'ab+/'],
    ['whitespace', 'AAAA AAAA'],
    ['impossible length', 'AAAAA'],
    ['non-canonical trailing bits', 'AB'],
    ['non-ASCII', 'AAAé'],
  ])('rejects %s', (_name, text) => {
    expect(codeOf(() => fromBase64Url(text))).toBe('E2E_ERR_MALFORMED_MESSAGE')
  })
})

describe('binary reader', () => {
  it('refuses truncated input, oversized length prefixes and trailing bytes', () => {
    const bytes = new ByteWriter().u32(7).bytes(new Uint8Array(3)).finish()
    expect(
      codeOf(
        () => new ByteReader(bytes.slice(0, 5), 'x').u32() && new ByteReader(bytes.slice(0, 5), 'x').fixed(9),
      ),
    ).toBe('E2E_ERR_MALFORMED_MESSAGE')
    const reader = new ByteReader(bytes, 'x')
    reader.u32()
    expect(codeOf(() => reader.bytes(2))).toBe('E2E_ERR_TOO_LARGE')
    const whole = new ByteReader(bytes, 'x')
    whole.u32()
    expect(codeOf(() => whole.end())).toBe('E2E_ERR_MALFORMED_MESSAGE')
  })
})

describe('envelope', () => {
  const identity = {
    identityKey: new Uint8Array(32).fill(1),
    signingKey: new Uint8Array(32).fill(2),
    identitySignature: new Uint8Array(64).fill(3),
  }
  const header = { ratchetKey: new Uint8Array(32).fill(4), previousChainLength: 5, index: 6 }
  const ciphertext = new Uint8Array(160 + 16).fill(7)

  it('round-trips both types; every byte before the ciphertext is the header', () => {
    for (const oneTimePreKeyId of [undefined, 0, 0xffffffff]) {
      const preKey = {
        initiator: identity,
        ephemeralKey: new Uint8Array(32).fill(8),
        signedPreKeyId: 9,
        oneTimePreKeyId,
      }
      const headerBytes = encodeEnvelopeHeader(ENVELOPE_VERSION, preKey, header)
      const decoded = decodeEnvelope(encodeEnvelope(headerBytes, ciphertext))
      expect(decoded.type).toBe(2)
      expect(decoded.preKey?.oneTimePreKeyId).toBe(oneTimePreKeyId)
      expect(decoded.preKey?.signedPreKeyId).toBe(9)
      expect(equalBytes(decoded.headerBytes, headerBytes)).toBe(true)
      expect(decoded.header.index).toBe(6)
    }
    const plain = decodeEnvelope(
      encodeEnvelope(encodeEnvelopeHeader(ENVELOPE_VERSION, undefined, header), ciphertext),
    )
    expect(plain.type).toBe(1)
    expect(plain.preKey).toBeUndefined()
    expect(plain.headerBytes).toHaveLength(42)
  })

  it.each([
    ['not bytes', 'hello', 'E2E_ERR_MALFORMED_MESSAGE'],
    ['empty', new Uint8Array(0), 'E2E_ERR_MALFORMED_MESSAGE'],
    ['unknown version', Uint8Array.from([3, 1]), 'E2E_ERR_UNSUPPORTED_VERSION'],
    ['unknown type', Uint8Array.from([1, 3, ...new Uint8Array(240)]), 'E2E_ERR_MALFORMED_MESSAGE'],
    ['truncated header', Uint8Array.from([1, 1, ...new Uint8Array(30)]), 'E2E_ERR_MALFORMED_MESSAGE'],
    [
      'ciphertext not 160k + 16',
      Uint8Array.from([1, 1, ...new Uint8Array(40), ...new Uint8Array(100)]),
      'E2E_ERR_MALFORMED_MESSAGE',
    ],
    ['no ciphertext', Uint8Array.from([1, 1, ...new Uint8Array(40)]), 'E2E_ERR_MALFORMED_MESSAGE'],
    ['oversized', new Uint8Array(MAX_ENVELOPE_BYTES + 1), 'E2E_ERR_TOO_LARGE'],
  ])('rejects %s', (_name, input, code) => {
    expect(codeOf(() => decodeEnvelope(input))).toBe(code)
  })

  it('rejects a one-time prekey flag other than 0/1 and an id without its flag', () => {
    const preKey = {
      initiator: identity,
      ephemeralKey: new Uint8Array(32),
      signedPreKeyId: 1,
      oneTimePreKeyId: 5,
    }
    const bytes = encodeEnvelope(encodeEnvelopeHeader(ENVELOPE_VERSION, preKey, header), ciphertext)
    const flagOffset = 2 + 128 + 32 + 4
    const badFlag = bytes.slice()
    badFlag[flagOffset] = 2
    expect(codeOf(() => decodeEnvelope(badFlag))).toBe('E2E_ERR_MALFORMED_MESSAGE')
    const idWithoutFlag = bytes.slice()
    idWithoutFlag[flagOffset] = 0
    expect(codeOf(() => decodeEnvelope(idWithoutFlag))).toBe('E2E_ERR_MALFORMED_MESSAGE')
  })

  it('never throws anything but ProtocolError on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const code = codeOf(() => decodeEnvelope(bytes))
        expect(code === undefined || code.startsWith('E2E_ERR_')).toBe(true)
      }),
      { numRuns: 500 },
    )
  })
})

describe('padding', () => {
  it('refuses a padded plaintext longer than any conforming sender makes', () => {
    // MAX_PLAINTEXT_BYTES + 1 bytes of plaintext, then 0x80 and zeros to the end of its block.
    const padded = new Uint8Array(
      Math.ceil((MAX_PLAINTEXT_BYTES + 2) / PADDING_BLOCK_BYTES) * PADDING_BLOCK_BYTES,
    )
    padded[MAX_PLAINTEXT_BYTES + 1] = 0x80
    expect(codeOf(() => unpad(padded))).toBe('E2E_ERR_TOO_LARGE')
    expect(codeOf(() => pad(new Uint8Array(MAX_PLAINTEXT_BYTES + 1)))).toBe('E2E_ERR_TOO_LARGE')
    expect(unpad(pad(new Uint8Array(MAX_PLAINTEXT_BYTES)))).toHaveLength(MAX_PLAINTEXT_BYTES)
  })

  it('the largest conforming prekey envelope is exactly MAX_ENVELOPE_BYTES', () => {
    const headerBytes = encodeEnvelopeHeader(
      ENVELOPE_VERSION,
      {
        initiator: {
          identityKey: new Uint8Array(32),
          signingKey: new Uint8Array(32),
          identitySignature: new Uint8Array(64),
        },
        ephemeralKey: new Uint8Array(32),
        signedPreKeyId: 1,
        oneTimePreKeyId: 2,
      },
      { ratchetKey: new Uint8Array(32), previousChainLength: 0, index: 0 },
    )
    expect(headerBytes.length + pad(new Uint8Array(MAX_PLAINTEXT_BYTES)).length + 16).toBe(MAX_ENVELOPE_BYTES)
  })
})

describe('WebSocket frames', () => {
  const id = toBase64Url(new Uint8Array(16).fill(1))
  const body = toBase64Url(new Uint8Array(200).fill(2))

  it('accepts each valid client and server frame', () => {
    expect(decodeClientFrame({ v: 1, type: 'auth', token: toBase64Url(new Uint8Array(32)) }).type).toBe(
      'auth',
    )
    expect(decodeClientFrame({ v: 1, type: 'send', id, to: 'bob', body }).type).toBe('send')
    expect(decodeClientFrame({ v: 1, type: 'ack', upTo: 12 }).type).toBe('ack')
    expect(decodeClientFrame({ v: 1, type: 'presence.subscribe', users: ['a', 'b'] }).type).toBe(
      'presence.subscribe',
    )
    expect(decodeServerFrame({ v: 1, type: 'deliver', seq: 1, id, from: 'alice', body, ts: 1 }).type).toBe(
      'deliver',
    )
    expect(decodeServerFrame({ v: 1, type: 'error', code: 'X', message: 'y' }).type).toBe('error')
  })

  it.each([
    ['null', null],
    ['an array', []],
    ['a string', 'send'],
    ['no version', { type: 'ack', upTo: 1 }],
    ['a future version', { v: 2, type: 'ack', upTo: 1 }],
    ['an unknown type', { v: 1, type: 'hack' }],
    ['a prototype-looking type', { v: 1, type: '__proto__' }],
    ['an extra field (claimed sender)', { v: 1, type: 'send', id, to: 'bob', body, from: 'mallory' }],
    ['a wrong id length', { v: 1, type: 'send', id: 'AAAA', to: 'bob', body }],
    ['a non-base64url body', { v: 1, type: 'send', id, to: 'bob', body: 'a+b/' }],
    ['a zero ack', { v: 1, type: 'ack', upTo: 0 }],
    ['a fractional ack', { v: 1, type: 'ack', upTo: 1.5 }],
    ['an oversized body', { v: 1, type: 'send', id, to: 'bob', body: 'A'.repeat(MAX_ENVELOPE_BYTES * 2) }],
  ])('rejects %s with MalformedMessage', (_name, frame) => {
    expect(codeOf(() => decodeClientFrame(frame))).toBe('E2E_ERR_MALFORMED_MESSAGE')
  })

  it.each([
    ['an escape sequence', '\u001b[2Jbob'],
    ['a bidirectional override', 'bob\u202ekcilc'],
    ['a line break', 'bob\nalice: hi'],
    ['upper case (never sent normalised)', 'Bob'],
    ['a name shorter than any account', 'bo'],
  ])('rejects a server-sent username with %s, in every frame and answer that names one', (_name, name) => {
    const frames = [
      { v: 1, type: 'deliver', seq: 1, id, from: name, body, ts: 1 },
      { v: 1, type: 'presence', username: name, online: true },
      { v: 1, type: 'ready', username: name, queued: 0 },
      { v: 1, type: 'identity.changed', username: name },
    ]
    for (const frame of frames)
      expect(codeOf(() => decodeServerFrame(frame))).toBe('E2E_ERR_MALFORMED_MESSAGE')
    expect(codeOf(() => decode(UserSearchResponse, { users: [{ username: name }] }, 'search'))).toBe(
      'E2E_ERR_MALFORMED_MESSAGE',
    )
    expect(decode(UserSearchResponse, { users: [{ username: 'bob.smith-2' }] }, 'search').users).toHaveLength(
      1,
    )
  })

  it('names the failing field without echoing its value', () => {
    try {
      decodeClientFrame({ v: 1, type: 'send', id, to: 'bob', body: 'secret+value' })
      expect.unreachable()
    } catch (error) {
      expect(String((error as Error).message)).toContain('/body')
      expect(String((error as Error).message)).not.toContain('secret+value')
    }
  })
})

describe('API schemas', () => {
  it('a registration body must carry every key with the right lengths', () => {
    const key = (n: number) => toBase64Url(new Uint8Array(n))
    const valid = {
      username: 'alice',
      password: 'correct horse battery staple',
      loginKey: key(422),
      identity: { identityKey: key(32), signingKey: key(32), identitySignature: key(64) },
      signedPreKey: { keyId: 1, publicKey: key(32), signature: key(64) },
      oneTimePreKeys: [{ keyId: 2, publicKey: key(32), signature: key(64) }],
    }
    expect(decode(RegisterRequest, valid, 'register request').username).toBe('alice')
    const invalid = [
      { ...valid, identity: { ...valid.identity, identityKey: key(31) } },
      { ...valid, oneTimePreKeys: [] },
      { ...valid, oneTimePreKeys: Array.from({ length: 101 }, () => valid.oneTimePreKeys[0]) },
      { ...valid, signedPreKey: { ...valid.signedPreKey, keyId: -1 } },
      { ...valid, isAdmin: true },
    ]
    for (const body of invalid)
      expect(codeOf(() => decode(RegisterRequest, body, 'register request'))).toBe(
        'E2E_ERR_MALFORMED_MESSAGE',
      )
  })
})

describe('usernames', () => {
  it('normalises case and compatibility forms', () => {
    expect(normalizeUsername('Alice')).toBe('alice')
    expect(normalizeUsername('ＡＬＩＣＥ')).toBe('alice')
    expect(normalizeUsername(' bob.smith_2 ')).toBe('bob.smith_2')
  })
  it.each(['ab', 'a'.repeat(33), '-alice', 'alice-', 'al ice', 'аlice', 'alice!', '', 'al\u0000ice'])(
    'rejects %j',
    (name) => {
      expect(codeOf(() => normalizeUsername(name))).toBe('E2E_ERR_INVALID_INPUT')
    },
  )
})
