import { describe, expect, it } from 'vitest'
import {
  decodeStorageKeyParameters,
  deriveStorageKey,
  encodeStorageKeyParameters,
  newStorageKeyParameters,
  open,
  STORAGE_KEY_MIN_ITERATIONS,
  seal,
} from '../at-rest.js'
import { utf8Decode, utf8Encode } from '../bytes.js'
import { isProtocolError } from '../errors.js'

// Tests use fewer PBKDF2 iterations than production; the floor check is tested separately.
const TEST_ITERATIONS = 1_000

describe('sealing state at rest', () => {
  it('opens with the same password and context; fails with another password, context or an altered byte', async () => {
    const parameters = newStorageKeyParameters(TEST_ITERATIONS)
    const key = await deriveStorageKey('a long passphrase here', parameters, TEST_ITERATIONS)
    const sealed = await seal(key, utf8Encode('session bytes'), 'session:bob')
    expect(utf8Decode(await open(key, sealed, 'session:bob'))).toBe('session bytes')
    expect(
      utf8Decode(
        await open(
          await deriveStorageKey('a long passphrase here', parameters, TEST_ITERATIONS),
          sealed,
          'session:bob',
        ),
      ),
    ).toBe('session bytes')

    const wrongPassword = await deriveStorageKey('a long passphrase HERE', parameters, TEST_ITERATIONS)
    const failures = [
      open(wrongPassword, sealed, 'session:bob'),
      open(key, sealed, 'session:carol'),
      open(
        key,
        Uint8Array.from(sealed, (byte, i) => (i === sealed.length - 1 ? byte ^ 1 : byte)),
        'session:bob',
      ),
    ]
    // Settled together: awaiting them one by one left a later rejection unhandled for a moment,
    // which vitest reports as an error of the whole run.
    for (const outcome of await Promise.allSettled(failures)) {
      expect(outcome.status).toBe('rejected')
      const reason = outcome.status === 'rejected' ? outcome.reason : undefined
      expect(isProtocolError(reason, 'E2E_ERR_DECRYPTION_FAILED')).toBe(true)
    }
  })

  it('the storage key cannot be exported, and weak parameters are refused', async () => {
    const key = await deriveStorageKey('pw', newStorageKeyParameters(TEST_ITERATIONS), TEST_ITERATIONS)
    expect(key.extractable).toBe(false)
    await expect(deriveStorageKey('pw', newStorageKeyParameters(10_000))).rejects.toMatchObject({
      code: 'E2E_ERR_INVALID_INPUT',
    })
    expect(STORAGE_KEY_MIN_ITERATIONS).toBeGreaterThanOrEqual(600_000)
  })

  it('two seals of the same bytes differ (fresh nonce each time)', async () => {
    const key = await deriveStorageKey('pw', newStorageKeyParameters(TEST_ITERATIONS), TEST_ITERATIONS)
    const [a, b] = await Promise.all([seal(key, utf8Encode('x'), 'c'), seal(key, utf8Encode('x'), 'c')])
    expect(a).not.toEqual(b)
  })

  it('stores its key parameters in a versioned form that derives the same key', async () => {
    const parameters = newStorageKeyParameters(TEST_ITERATIONS)
    const stored = encodeStorageKeyParameters(parameters)
    expect(stored).toHaveLength(21)
    const restored = decodeStorageKeyParameters(stored)
    expect(restored.iterations).toBe(TEST_ITERATIONS)
    const sealed = await seal(await deriveStorageKey('pw', parameters, TEST_ITERATIONS), utf8Encode('x'), 'c')
    expect(utf8Decode(await open(await deriveStorageKey('pw', restored, TEST_ITERATIONS), sealed, 'c'))).toBe(
      'x',
    )
    const future = stored.slice()
    future[0] = 2
    expect(() => decodeStorageKeyParameters(future)).toThrow(/version/)
  })

  it('authenticates the version byte: a record relabelled as another version does not open', async () => {
    const key = await deriveStorageKey('pw', newStorageKeyParameters(TEST_ITERATIONS), TEST_ITERATIONS)
    const sealed = await seal(key, utf8Encode('x'), 'c')
    const relabelled = sealed.slice()
    relabelled[0] = 2
    await expect(open(key, relabelled, 'c')).rejects.toMatchObject({ code: 'E2E_ERR_UNSUPPORTED_VERSION' })
  })
})
