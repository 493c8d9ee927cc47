import { describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../address.js'
import { equalBytes, toHex, utf8Decode, utf8Encode } from '../bytes.js'
import { generateX25519KeyPair } from '../crypto/primitives.js'
import { isProtocolError } from '../errors.js'
import {
  exportIdentity,
  exportPreKey,
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  importIdentity,
  importPreKey,
  publicPreKey,
  verifyPreKeyBundle,
} from '../identity.js'
import { acceptSession, decryptMessage, encryptMessage, startSession } from '../session.js'
import { x3dhInitiate, x3dhRespond } from '../x3dh.js'
import { ALICE_TO_BOB } from './helpers.js'

async function bobWithKeys() {
  const bob = await generateIdentity({ extractable: true })
  const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 3, { extractable: true })
  const oneTimePreKeys = await generateOneTimePreKeys(bob, DEFAULT_DEVICE_ID, 10, 3, { extractable: true })
  return { bob, signedPreKey, oneTimePreKeys }
}

describe('X3DH', () => {
  it('both sides derive the same secret and associated data, with and without a one-time prekey', async () => {
    const alice = await generateIdentity()
    const { bob, signedPreKey, oneTimePreKeys } = await bobWithKeys()
    for (const oneTimePreKey of [oneTimePreKeys[0], undefined]) {
      const initiation = await x3dhInitiate(
        alice,
        {
          deviceId: DEFAULT_DEVICE_ID,
          identity: bob.public,
          signedPreKey: publicPreKey(signedPreKey),
          oneTimePreKey: oneTimePreKey && publicPreKey(oneTimePreKey),
        },
        ALICE_TO_BOB,
      )
      const response = await x3dhRespond(
        bob,
        signedPreKey,
        oneTimePreKey,
        alice.public,
        initiation.ephemeralPublicKey,
        ALICE_TO_BOB,
      )
      expect(toHex(response.sharedSecret)).toBe(toHex(initiation.sharedSecret))
      expect(toHex(response.associatedData)).toBe(toHex(initiation.associatedData))
      expect(initiation.oneTimePreKeyId).toBe(oneTimePreKey?.keyId)
    }
  })

  it('the one-time prekey changes the secret (DH4 is mixed in)', async () => {
    const alice = await generateIdentity()
    const { bob, signedPreKey, oneTimePreKeys } = await bobWithKeys()
    const initiation = await x3dhInitiate(
      alice,
      {
        deviceId: DEFAULT_DEVICE_ID,
        identity: bob.public,
        signedPreKey: publicPreKey(signedPreKey),
        oneTimePreKey: publicPreKey(oneTimePreKeys[0]!),
      },
      ALICE_TO_BOB,
    )
    const withoutOneTime = await x3dhRespond(
      bob,
      signedPreKey,
      undefined,
      alice.public,
      initiation.ephemeralPublicKey,
      ALICE_TO_BOB,
    )
    expect(equalBytes(withoutOneTime.sharedSecret, initiation.sharedSecret)).toBe(false)
  })

  it('rejects a forged signed prekey before doing any Diffie-Hellman', async () => {
    const alice = await generateIdentity()
    const { bob, signedPreKey } = await bobWithKeys()
    const mallory = await generateX25519KeyPair()
    const forged = { ...publicPreKey(signedPreKey), publicKey: mallory.publicKey }
    let generated = 0
    const error = await x3dhInitiate(
      alice,
      { deviceId: DEFAULT_DEVICE_ID, identity: bob.public, signedPreKey: forged },
      ALICE_TO_BOB,
      {
        generateKeyPair: async (options) => {
          generated++
          return generateX25519KeyPair(options)
        },
      },
    ).catch((e: unknown) => e)
    expect(isProtocolError(error, 'E2E_ERR_BAD_SIGNATURE')).toBe(true)
    expect(generated).toBe(0)
  })

  it('rejects a bundle whose identity key is not vouched for by its signing key', async () => {
    const { bob, signedPreKey } = await bobWithKeys()
    const other = await generateIdentity()
    const bundle = {
      deviceId: DEFAULT_DEVICE_ID,
      identity: { ...bob.public, identityKey: other.public.identityKey },
      signedPreKey: publicPreKey(signedPreKey),
    }
    await expect(verifyPreKeyBundle(bundle, 'bob')).rejects.toMatchObject({ code: 'E2E_ERR_BAD_SIGNATURE' })
  })

  it('rejects a one-time prekey signed by someone else, and a prekey whose id was changed', async () => {
    const { bob, signedPreKey, oneTimePreKeys } = await bobWithKeys()
    const mallory = await generateIdentity()
    const [foreign] = await generateOneTimePreKeys(mallory, DEFAULT_DEVICE_ID, 10, 1)
    await expect(
      verifyPreKeyBundle(
        {
          deviceId: DEFAULT_DEVICE_ID,
          identity: bob.public,
          signedPreKey: publicPreKey(signedPreKey),
          oneTimePreKey: publicPreKey(foreign!),
        },
        'bob',
      ),
    ).rejects.toMatchObject({ code: 'E2E_ERR_BAD_SIGNATURE' })
    await expect(
      verifyPreKeyBundle(
        {
          deviceId: DEFAULT_DEVICE_ID,
          identity: bob.public,
          signedPreKey: { ...publicPreKey(signedPreKey), keyId: signedPreKey.keyId + 1 },
          oneTimePreKey: publicPreKey(oneTimePreKeys[0]!),
        },
        'bob',
      ),
    ).rejects.toMatchObject({ code: 'E2E_ERR_BAD_SIGNATURE' })
    // A one-time prekey cannot pass as a signed prekey: the signatures carry different labels.
    await expect(
      verifyPreKeyBundle(
        { deviceId: DEFAULT_DEVICE_ID, identity: bob.public, signedPreKey: publicPreKey(oneTimePreKeys[0]!) },
        'bob',
      ),
    ).rejects.toMatchObject({ code: 'E2E_ERR_BAD_SIGNATURE' })
  })

  it('a one-time prekey is used at most once: a second session on it cannot be accepted once it is deleted', async () => {
    const alice = await generateIdentity()
    const { bob, signedPreKey, oneTimePreKeys } = await bobWithKeys()
    const oneTimePreKey = oneTimePreKeys[0]!
    // Bob's store (here a Map) hands out and deletes one-time prekeys as the client core will.
    const store = new Map(oneTimePreKeys.map((key) => [key.keyId, key]))
    const bundle = {
      deviceId: DEFAULT_DEVICE_ID,
      identity: bob.public,
      signedPreKey: publicPreKey(signedPreKey),
      oneTimePreKey: publicPreKey(oneTimePreKey),
    }
    const first = await encryptMessage(await startSession(alice, bundle, ALICE_TO_BOB), utf8Encode('one'))
    const accepted = await acceptSession(
      bob,
      first.envelope,
      {
        signedPreKey,
        oneTimePreKey: store.get(oneTimePreKey.keyId),
      },
      ALICE_TO_BOB,
    )
    expect(accepted.usedOneTimePreKeyId).toBe(oneTimePreKey.keyId)
    store.delete(accepted.usedOneTimePreKeyId!)
    // A replay of the first message, or a second session built on the same bundle, needs the deleted key.
    const second = await encryptMessage(await startSession(alice, bundle, ALICE_TO_BOB), utf8Encode('two'))
    const error = await acceptSession(
      bob,
      second.envelope,
      {
        signedPreKey,
        oneTimePreKey: store.get(oneTimePreKey.keyId),
      },
      ALICE_TO_BOB,
    ).catch((e: unknown) => e)
    expect(isProtocolError(error, 'E2E_ERR_INVALID_INPUT')).toBe(true)
    // And pretending the message named no one-time prekey gives a different secret: it cannot decrypt.
    const withoutOneTime = await acceptSession(
      bob,
      second.envelope,
      {
        signedPreKey,
        oneTimePreKey: undefined,
      },
      ALICE_TO_BOB,
    ).catch((e: unknown) => e)
    expect(isProtocolError(withoutOneTime)).toBe(true)
  })
})

describe('identity and prekey export format', () => {
  it('round-trips an identity and a prekey, and the imported keys still work', async () => {
    const alice = await generateIdentity({ extractable: true })
    const { bob, signedPreKey } = await bobWithKeys()
    const restoredBob = await importIdentity(await exportIdentity(bob))
    const restoredPreKey = await importPreKey(await exportPreKey(signedPreKey))
    expect(toHex(restoredBob.public.identityKey)).toBe(toHex(bob.public.identityKey))
    expect(toHex(restoredBob.public.signingKey)).toBe(toHex(bob.public.signingKey))
    expect(restoredBob.agreement.privateKey.extractable).toBe(false)
    const sent = await encryptMessage(
      await startSession(
        alice,
        { deviceId: DEFAULT_DEVICE_ID, identity: bob.public, signedPreKey: publicPreKey(signedPreKey) },
        ALICE_TO_BOB,
      ),
      utf8Encode('after restore'),
    )
    const accepted = await acceptSession(
      restoredBob,
      sent.envelope,
      {
        signedPreKey: restoredPreKey,
        oneTimePreKey: undefined,
      },
      ALICE_TO_BOB,
    )
    expect(utf8Decode(accepted.plaintext)).toBe('after restore')
  })

  it('refuses to export a non-extractable identity, and rejects unknown versions and bad lengths', async () => {
    const locked = await generateIdentity()
    await expect(exportIdentity(locked)).rejects.toMatchObject({ code: 'E2E_ERR_INVALID_STATE' })
    const exported = await exportIdentity(await generateIdentity({ extractable: true }))
    const wrongVersion = exported.slice()
    wrongVersion[0] = 2
    await expect(importIdentity(wrongVersion)).rejects.toMatchObject({ code: 'E2E_ERR_UNSUPPORTED_VERSION' })
    await expect(importIdentity(exported.slice(0, 100))).rejects.toMatchObject({
      code: 'E2E_ERR_MALFORMED_MESSAGE',
    })
    const badSignature = exported.slice()
    badSignature[100]! ^= 1
    await expect(importIdentity(badSignature)).rejects.toMatchObject({ code: 'E2E_ERR_BAD_SIGNATURE' })
  })

  it('private keys redact themselves in JSON and string form', async () => {
    const identity = await generateIdentity({ extractable: true })
    const text = `${JSON.stringify(identity)} ${String(identity.agreement.privateKey)}`
    expect(text).toContain('[redacted X25519 private key]')
    expect(text).toContain('[redacted Ed25519 private key]')
    const privateBytes = (await exportIdentity(identity)).slice(1, 33)
    expect(text).not.toContain(toHex(privateBytes))
  })
})

describe('decrypting with the wrong session', () => {
  it('a message for another session does not decrypt', async () => {
    const alice = await generateIdentity()
    const { bob, signedPreKey } = await bobWithKeys()
    const bundle = {
      deviceId: DEFAULT_DEVICE_ID,
      identity: bob.public,
      signedPreKey: publicPreKey(signedPreKey),
    }
    const one = await encryptMessage(await startSession(alice, bundle, ALICE_TO_BOB), utf8Encode('one'))
    const two = await encryptMessage(await startSession(alice, bundle, ALICE_TO_BOB), utf8Encode('two'))
    const accepted = await acceptSession(
      bob,
      one.envelope,
      { signedPreKey, oneTimePreKey: undefined },
      ALICE_TO_BOB,
    )
    await expect(decryptMessage(accepted.session, two.envelope)).rejects.toMatchObject({
      code: 'E2E_ERR_INVALID_STATE',
    })
  })
})
