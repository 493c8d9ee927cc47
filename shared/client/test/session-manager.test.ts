/**
 * The client core starts a session only on a bundle of the device it means to reach, whose keys are
 * signed for that device (issue 12): a device the server made up, or another device's keys passed
 * off under its address, is refused before any key agreement, with a message that says why.
 */
import { describe, expect, it } from 'vitest'
import { address } from '../../address.js'
import { newStorageKeyParameters } from '../../at-rest.js'
import { utf8Encode } from '../../bytes.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  type PreKeyBundle,
  publicPreKey,
} from '../../identity.js'
import { defaultKeyGeneration } from '../../key-generation.js'
import type { AccountSecrets, UnlockedAccount } from '../account.js'
import { SealedStore } from '../sealed-store.js'
import { SessionManager } from '../session-manager.js'
import { MemoryStore } from '../store.js'

async function aliceSessions(): Promise<SessionManager> {
  const storageKey = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, [
    'encrypt',
    'decrypt',
  ])
  const account: UnlockedAccount = {
    username: 'alice',
    server: 'https://chat.example',
    storageKey,
    parameters: newStorageKeyParameters(),
    secrets: {} as AccountSecrets,
  }
  const store = new MemoryStore()
  const alice = await generateIdentity()
  return new SessionManager(
    store,
    new SealedStore(store, account),
    () => alice,
    'alice',
    defaultKeyGeneration,
  )
}

/** A bundle that says it is for `deviceId`, with keys signed for `signedFor`. */
async function bundleOf(bob: Identity, deviceId: number, signedFor = deviceId): Promise<PreKeyBundle> {
  const [signed, [oneTime]] = await Promise.all([
    generateSignedPreKey(bob, signedFor, 1),
    generateOneTimePreKeys(bob, signedFor, 2, 1),
  ])
  return {
    deviceId,
    identity: bob.public,
    signedPreKey: publicPreKey(signed),
    oneTimePreKey: publicPreKey(oneTime!),
  }
}

describe('SessionManager: bundles of devices', () => {
  it('starts a session with device 2 from a bundle signed for device 2', async () => {
    const sessions = await aliceSessions()
    const bob = await generateIdentity()
    const { envelope } = await sessions.encrypt(address('bob', 2), utf8Encode('hi'), {
      bundle: await bundleOf(bob, 2),
    })
    expect(envelope.length).toBeGreaterThan(0)
  })

  it('refuses a device whose keys are not signed for it: the server may have added it', async () => {
    const sessions = await aliceSessions()
    const bob = await generateIdentity()
    // Device 1's genuine keys, presented as a device 3 that bob never linked.
    const phantom = await bundleOf(bob, 3, 1)
    await expect(
      sessions.encrypt(address('bob', 3), utf8Encode('hi'), { bundle: phantom }),
    ).rejects.toMatchObject({
      code: 'E2E_ERR_BAD_SIGNATURE',
      message:
        "bob's device 3: its signed prekey is not signed by bob's identity key; the server may have added a device bob did not link",
    })
    expect(await sessions.currentSession(address('bob', 3))).toBeNull()
  })

  it('refuses a bundle of another device than the address it is to start a session with', async () => {
    const sessions = await aliceSessions()
    const bob = await generateIdentity()
    await expect(
      sessions.encrypt(address('bob', 3), utf8Encode('hi'), { bundle: await bundleOf(bob, 1) }),
    ).rejects.toMatchObject({
      code: 'E2E_ERR_MALFORMED_MESSAGE',
      message: "expected a prekey bundle of bob's device 3, got one of device 1",
    })
    expect(await sessions.currentSession(address('bob', 3))).toBeNull()
  })
})
