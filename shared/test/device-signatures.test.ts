/**
 * Prekey signatures bound to the device (issue 12, docs/protocol.md §2.2): device 1 signs exactly as
 * every account always has, devices 2 and up sign `label ‖ u32(deviceId) ‖ u32(keyId) ‖ publicKey`
 * under labels of their own. A server, which has no signing key, can therefore neither present one
 * device's keys as another device of the account nor add a device of its own making.
 */
import { ed25519 } from '@noble/curves/ed25519.js'
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { fromHex, toHex, utf8Decode } from '../bytes.js'
import { PreKeyBundleResponse } from '../codec/api.js'
import { preKeyBundleFromJson, preKeyToJson, publicIdentityToJson } from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import { isProtocolError, ProtocolError } from '../errors.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyBundle,
  type PreKeyPair,
  type PublicPreKey,
  publicPreKey,
  verifyOneTimePreKey,
  verifyPreKeyBundle,
  verifySignedPreKey,
} from '../identity.js'
import {
  DEVICE_ONE_TIME_PREKEY_SIGNATURE_LABEL,
  DEVICE_SIGNED_PREKEY_SIGNATURE_LABEL,
  ONE_TIME_PREKEY_SIGNATURE_LABEL,
  SIGNED_PREKEY_SIGNATURE_LABEL,
} from '../labels.js'
import { startSession } from '../session.js'
import {
  ALICE_TO_BOB,
  curveBackends,
  deterministicBytes,
  deterministicIdentity,
  deterministicKeys,
} from './helpers.js'

/** Bob's fixed keys (helpers.ts): his Ed25519 seed, and the two prekeys `deterministicKeys` makes first. */
const BOB_SIGNING_SEED = '84f55d655cab5e720e40a3af335085b8ae88d3fe9407ae218d20987e0c89799d'
const BOB_SIGNING_KEY = '435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef165'
const SIGNED_PREKEY = {
  keyId: 7,
  publicKey: 'bfe02ab83766b964af80d677cafc484f4596ce913444eb365147d8c6cc47b828',
}
const ONE_TIME_PREKEY = {
  keyId: 8,
  publicKey: 'ec724e3a941ad3a693e27ceecd4d862444921e41979e1e402291dd6991b3b97f',
}

/** Device 1: the signatures the code made before devices were bound (and still makes), byte for byte. */
const DEVICE_1 = {
  signedPreKeyBytes:
    '7365637572652d636861742f76312f7369676e65642d7072656b6579' + // "secure-chat/v1/signed-prekey"
    '00000007' + // keyId
    SIGNED_PREKEY.publicKey,
  signedPreKeySignature:
    '655211269d81e29f351e6633d73375c4bcff361888d1ebce0b088e6537681be3' +
    'a4ab5708465ac8cabac1b08dc6ed986c07a19480afc467744a34eb2d97c4a204',
  oneTimePreKeyBytes:
    '7365637572652d636861742f76312f6f6e652d74696d652d7072656b6579' + // "secure-chat/v1/one-time-prekey"
    '00000008' + // keyId
    ONE_TIME_PREKEY.publicKey,
  oneTimePreKeySignature:
    '4ffcdacf579b56ca09bef40d7db4d8237d8c8124d05c689d4cf249dfcdd9bc09' +
    'a3987150c8b0412c1701afb7f66adb882f86b0082ea47d38a26d87de106f7c0e',
}

/** Device 2: the device-bound form (75 and 77 bytes), and noble's signatures over it from Bob's seed. */
const DEVICE_2 = {
  signedPreKeyBytes:
    '7365637572652d636861742f76312f6465766963652d7369676e65642d7072656b6579' + // "secure-chat/v1/device-signed-prekey"
    '00000002' + // deviceId
    '00000007' + // keyId
    SIGNED_PREKEY.publicKey,
  signedPreKeySignature:
    'c842006dde8e09312aa15a7b23b57cd3d28996f15ac4811e0e60e904c8e34b4e' +
    '2813ab93abb307cb90179a258ce649b4aeaa2c5eefd70be438bc6af1b630b306',
  oneTimePreKeyBytes:
    '7365637572652d636861742f76312f6465766963652d6f6e652d74696d652d7072656b6579' + // "secure-chat/v1/device-one-time-prekey"
    '00000002' + // deviceId
    '00000008' + // keyId
    ONE_TIME_PREKEY.publicKey,
  oneTimePreKeySignature:
    '524908cba31407b0b4f62eb48f3b10b9ef242d0bff5a4cc8fe4a7ff63c14449a' +
    '6a40d5c7d2dfab093d68f887b97717d942042435a06c86c1503166191982040b',
}

type Kind = 'signed' | 'one-time'

const BAD_SIGNATURE = { code: 'E2E_ERR_BAD_SIGNATURE' }

async function bobsPreKeys(deviceId: number): Promise<{ signed: PreKeyPair; oneTime: PreKeyPair }> {
  const bob = await deterministicIdentity('bob')
  const keys = deterministicKeys('device-signatures')
  const signed = await generateSignedPreKey(bob, deviceId, SIGNED_PREKEY.keyId, { extractable: true }, keys)
  const [oneTime] = await generateOneTimePreKeys(
    bob,
    deviceId,
    ONE_TIME_PREKEY.keyId,
    1,
    { extractable: true },
    keys,
  )
  return { signed, oneTime: oneTime! }
}

function fixedPreKey(fixed: { keyId: number; publicKey: string }, signature: string): PublicPreKey {
  return { keyId: fixed.keyId, publicKey: fromHex(fixed.publicKey), signature: fromHex(signature) }
}

function verifyAs(kind: Kind, signingKey: Uint8Array, deviceId: number, preKey: PublicPreKey) {
  return kind === 'signed'
    ? verifySignedPreKey(signingKey, deviceId, preKey)
    : verifyOneTimePreKey(signingKey, deviceId, preKey)
}

async function makePreKey(identity: Identity, kind: Kind, deviceId: number, keyId: number) {
  if (kind === 'signed') return generateSignedPreKey(identity, deviceId, keyId)
  const [preKey] = await generateOneTimePreKeys(identity, deviceId, keyId, 1)
  return preKey!
}

async function rejection(promise: Promise<unknown>): Promise<ProtocolError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(ProtocolError)
  return error as ProtocolError
}

describe('device-bound prekey signatures: known answers', () => {
  it('pins the labels', () => {
    expect(utf8Decode(SIGNED_PREKEY_SIGNATURE_LABEL)).toBe('secure-chat/v1/signed-prekey')
    expect(utf8Decode(ONE_TIME_PREKEY_SIGNATURE_LABEL)).toBe('secure-chat/v1/one-time-prekey')
    expect(utf8Decode(DEVICE_SIGNED_PREKEY_SIGNATURE_LABEL)).toBe('secure-chat/v1/device-signed-prekey')
    expect(utf8Decode(DEVICE_ONE_TIME_PREKEY_SIGNATURE_LABEL)).toBe('secure-chat/v1/device-one-time-prekey')
  })

  it('the fixed seed is Bob’s signing key', () => {
    expect(toHex(ed25519.getPublicKey(fromHex(BOB_SIGNING_SEED)))).toBe(BOB_SIGNING_KEY)
    expect(toHex(deterministicBytes('bob/ed25519', 32))).toBe(BOB_SIGNING_SEED)
  })

  it('device 1: a signature made before devices were bound still verifies as device 1, and only as it', async () => {
    const signingKey = fromHex(BOB_SIGNING_KEY)
    const signed = fixedPreKey(SIGNED_PREKEY, DEVICE_1.signedPreKeySignature)
    const oneTime = fixedPreKey(ONE_TIME_PREKEY, DEVICE_1.oneTimePreKeySignature)
    await verifySignedPreKey(signingKey, 1, signed)
    await verifyOneTimePreKey(signingKey, 1, oneTime)
    for (const deviceId of [2, 3]) {
      await expect(verifySignedPreKey(signingKey, deviceId, signed)).rejects.toMatchObject(BAD_SIGNATURE)
      await expect(verifyOneTimePreKey(signingKey, deviceId, oneTime)).rejects.toMatchObject(BAD_SIGNATURE)
    }
  })

  it('device 2: its signatures fail as device 1 or 3, and neither kind passes as the other', async () => {
    const signingKey = fromHex(BOB_SIGNING_KEY)
    const signed = fixedPreKey(SIGNED_PREKEY, DEVICE_2.signedPreKeySignature)
    const oneTime = fixedPreKey(ONE_TIME_PREKEY, DEVICE_2.oneTimePreKeySignature)
    for (const deviceId of [1, 3]) {
      await expect(verifySignedPreKey(signingKey, deviceId, signed)).rejects.toMatchObject(BAD_SIGNATURE)
      await expect(verifyOneTimePreKey(signingKey, deviceId, oneTime)).rejects.toMatchObject(BAD_SIGNATURE)
    }
    for (const deviceId of [1, 2]) {
      const answers = deviceId === 1 ? DEVICE_1 : DEVICE_2
      const asOneTime = fixedPreKey(SIGNED_PREKEY, answers.signedPreKeySignature)
      const asSigned = fixedPreKey(ONE_TIME_PREKEY, answers.oneTimePreKeySignature)
      await expect(verifyOneTimePreKey(signingKey, deviceId, asOneTime)).rejects.toMatchObject(BAD_SIGNATURE)
      await expect(verifySignedPreKey(signingKey, deviceId, asSigned)).rejects.toMatchObject(BAD_SIGNATURE)
    }
  })
})

describe.each(curveBackends)('device-bound prekey signatures: signed bytes via $name', ({ force }) => {
  let restore = () => {}
  afterEach(() => restore())

  for (const [deviceId, answers] of [
    [1, DEVICE_1],
    [2, DEVICE_2],
  ] as const) {
    it(`device ${deviceId}: signs exactly the pinned bytes, checked with noble`, async () => {
      restore = force()
      const seed = fromHex(BOB_SIGNING_SEED)
      const signingKey = fromHex(BOB_SIGNING_KEY)
      const { signed, oneTime } = await bobsPreKeys(deviceId)
      expect(toHex(signed.keyPair.publicKey)).toBe(SIGNED_PREKEY.publicKey)
      expect(toHex(oneTime.keyPair.publicKey)).toBe(ONE_TIME_PREKEY.publicKey)
      for (const [preKey, bytes, signature] of [
        [signed, answers.signedPreKeyBytes, answers.signedPreKeySignature],
        [oneTime, answers.oneTimePreKeyBytes, answers.oneTimePreKeySignature],
      ] as const) {
        // Ed25519 is deterministic: the same seed over the same bytes gives the same signature.
        expect(toHex(ed25519.sign(fromHex(bytes), seed))).toBe(signature)
        expect(toHex(preKey.signature)).toBe(signature)
        expect(ed25519.verify(preKey.signature, fromHex(bytes), signingKey)).toBe(true)
      }
      await verifySignedPreKey(
        signingKey,
        deviceId,
        fixedPreKey(SIGNED_PREKEY, answers.signedPreKeySignature),
      )
      await verifyOneTimePreKey(
        signingKey,
        deviceId,
        fixedPreKey(ONE_TIME_PREKEY, answers.oneTimePreKeySignature),
      )
    })
  }
})

describe('device-bound prekey signatures: properties', () => {
  const deviceIds = fc.oneof(fc.constantFrom(1, 2, 3, 0xffff_ffff), fc.integer({ min: 1, max: 0xffff_ffff }))
  const keyIds = fc.oneof(fc.constantFrom(0, 1, 0xffff_ffff), fc.integer({ min: 0, max: 0xffff_ffff }))
  const kinds = fc.constantFrom<Kind>('signed', 'one-time')
  const targets = fc.record({ deviceId: deviceIds, keyId: keyIds, kind: kinds })
  // One field changed at a time (sometimes to the same value), so each binding is tested on its own.
  const changes = fc.oneof(
    deviceIds.map((deviceId) => ({ deviceId })),
    keyIds.map((keyId) => ({ keyId })),
    kinds.map((kind) => ({ kind })),
  )

  it('a prekey signature verifies for its own device, kind and key id, and for no other', async () => {
    const bob = await generateIdentity()
    await fc.assert(
      fc.asyncProperty(targets, changes, async (made, change) => {
        const preKey = publicPreKey(await makePreKey(bob, made.kind, made.deviceId, made.keyId))
        await verifyAs(made.kind, bob.public.signingKey, made.deviceId, preKey)
        const claimed = { ...made, ...change }
        const same =
          claimed.deviceId === made.deviceId && claimed.keyId === made.keyId && claimed.kind === made.kind
        const outcome = await verifyAs(claimed.kind, bob.public.signingKey, claimed.deviceId, {
          ...preKey,
          keyId: claimed.keyId,
        }).then(
          () => 'verified',
          (error: unknown) => (isProtocolError(error, 'E2E_ERR_BAD_SIGNATURE') ? 'refused' : error),
        )
        expect(outcome).toBe(same ? 'verified' : 'refused')
      }),
      { numRuns: 60 },
    )
  })

  it('refuses a device id that is not a positive uint32, on signing and on verifying', async () => {
    const bob = await generateIdentity()
    const preKey = publicPreKey(await generateSignedPreKey(bob, 1, 1))
    for (const deviceId of [0, -1, 1.5, 2 ** 32, Number.NaN, '2' as unknown as number]) {
      const errors = [
        await rejection(generateSignedPreKey(bob, deviceId, 1)),
        await rejection(Promise.resolve().then(() => generateOneTimePreKeys(bob, deviceId, 1, 1))),
        await rejection(verifySignedPreKey(bob.public.signingKey, deviceId, preKey)),
        await rejection(verifyOneTimePreKey(bob.public.signingKey, deviceId, preKey)),
        await rejection(verifyPreKeyBundle({ deviceId, identity: bob.public, signedPreKey: preKey }, 'bob')),
      ]
      for (const error of errors) {
        expect(error.code).toBe('E2E_ERR_INVALID_INPUT')
        expect(error.message).toMatch(/device id: expected an integer in 1\.\.4294967295, got /)
      }
    }
  })
})

describe('device-bound prekey signatures: bundles and what a contact is told', () => {
  async function bobsDevice(deviceId: number) {
    const bob = await generateIdentity()
    return {
      bob,
      signed: publicPreKey(await generateSignedPreKey(bob, deviceId, 1)),
      oneTime: publicPreKey((await generateOneTimePreKeys(bob, deviceId, 2, 1))[0]!),
    }
  }

  it('accepts a bundle whose keys are signed for the device it is for', async () => {
    for (const deviceId of [1, 2, 3]) {
      const { bob, signed, oneTime } = await bobsDevice(deviceId)
      await verifyPreKeyBundle(
        { deviceId, identity: bob.public, signedPreKey: signed, oneTimePreKey: oneTime },
        'bob',
      )
      const alice = await generateIdentity()
      await startSession(
        alice,
        { deviceId, identity: bob.public, signedPreKey: signed, oneTimePreKey: oneTime },
        ALICE_TO_BOB,
      )
    }
  })

  it('names the account and the device, and says the server may have added it', async () => {
    const { bob, signed } = await bobsDevice(1)
    const phantom: PreKeyBundle = { deviceId: 3, identity: bob.public, signedPreKey: signed }
    const error = await rejection(verifyPreKeyBundle(phantom, 'bob'))
    expect(error.code).toBe('E2E_ERR_BAD_SIGNATURE')
    expect(error.message).toBe(
      "bob's device 3: its signed prekey is not signed by bob's identity key; the server may have added a device bob did not link",
    )
    // The same refusal when a session would start on it, named after the responder.
    const alice = await generateIdentity()
    const fromSession = await rejection(startSession(alice, phantom, ALICE_TO_BOB))
    expect(fromSession.message).toBe(error.message)

    // Device 3's signed prekey checks, but its one-time prekey was signed for device 2.
    const device3 = await bobsDevice(3)
    const device2OneTime = publicPreKey((await generateOneTimePreKeys(device3.bob, 2, 5, 1))[0]!)
    const oneTimeError = await rejection(
      verifyPreKeyBundle(
        {
          deviceId: 3,
          identity: device3.bob.public,
          signedPreKey: device3.signed,
          oneTimePreKey: device2OneTime,
        },
        'bob',
      ),
    )
    expect(oneTimeError.code).toBe('E2E_ERR_BAD_SIGNATURE')
    expect(oneTimeError.message).toBe(
      "bob's device 3: its one-time prekey is not signed by bob's identity key; the server may have added a device bob did not link",
    )
  })

  it('device 1 is never added by a server: a bad signature there says its key was replaced', async () => {
    const { bob } = await bobsDevice(1)
    const mallory = await generateIdentity()
    const forged = publicPreKey(await generateSignedPreKey(mallory, 1, 1))
    const error = await rejection(
      verifyPreKeyBundle({ deviceId: 1, identity: bob.public, signedPreKey: forged }, 'bob'),
    )
    expect(error.code).toBe('E2E_ERR_BAD_SIGNATURE')
    expect(error.message).toBe(
      "bob's device 1: its signed prekey is not signed by bob's identity key; the server may have replaced it",
    )
  })

  it('reads the device from the server’s answer, device 1 when it names none', async () => {
    const { bob, signed, oneTime } = await bobsDevice(2)
    const answer = {
      username: 'bob',
      identity: publicIdentityToJson(bob.public),
      signedPreKey: preKeyToJson(signed),
      oneTimePreKey: preKeyToJson(oneTime),
    }
    expect(preKeyBundleFromJson(decode(PreKeyBundleResponse, answer, 'prekey bundle')).deviceId).toBe(1)
    const forDevice2 = preKeyBundleFromJson(
      decode(PreKeyBundleResponse, { ...answer, deviceId: 2 }, 'prekey bundle'),
    )
    expect(forDevice2.deviceId).toBe(2)
    await verifyPreKeyBundle(forDevice2, 'bob')
    for (const deviceId of [0, -1, 1.5, 2 ** 32, '2']) {
      expect(() => decode(PreKeyBundleResponse, { ...answer, deviceId }, 'prekey bundle')).toThrow(
        expect.objectContaining({ code: 'E2E_ERR_MALFORMED_MESSAGE' }),
      )
    }
  })
})
