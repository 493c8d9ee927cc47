/**
 * Known-answer tests of our own: fixed keys (derived from labels), a fixed conversation, and the
 * exact bytes it must produce. Any change to a KDF label, a constant, the envelope layout or the
 * padding changes these hashes: such a change is a new protocol version, not a refactor.
 *
 * The conversation runs twice: as sessions are made now (version 2, both usernames bound into AD,
 * docs/protocol.md §17.3), and as the version before made them (version 1, §17.5), whose pinned
 * bytes are unchanged: sessions established then still send and receive exactly those.
 */

import { describe, expect, it } from 'vitest'
import { DEFAULT_DEVICE_ID } from '../address.js'
import { fromHex, toHex, utf8Decode, utf8Encode } from '../bytes.js'
import { sha256 } from '../crypto/primitives.js'
import { generateOneTimePreKeys, generateSignedPreKey, publicPreKey } from '../identity.js'
import { safetyNumber } from '../safety-number.js'
import { acceptSession, decryptMessage, encryptMessage, startSession } from '../session.js'
import { deserializeSession, serializeSession } from '../session-serialization.js'
import { x3dhInitiate } from '../x3dh.js'
import {
  ALICE_TO_BOB,
  acceptAsVersion1,
  asVersion1Session,
  deterministicIdentity,
  deterministicKeys,
} from './helpers.js'

/** Version 2 (usernames bound): the conversation as sessions are made now. */
const KNOWN_ANSWERS_V2 = {
  aliceIdentityKey: '59d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa328',
  bobIdentityKey: '9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49',
  // The usernames go into AD, not into the KDF: the secret is version 1's.
  x3dhSharedSecret: '839b5b0901151e3f2ef9f457af9718ad7c981f8e7370e1843cbdebb2933a2581',
  // Version 1's 128 bytes, then u8(5) ‖ "alice" ‖ u8(3) ‖ "bob".
  associatedData:
    '59d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f' +
    '9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef165' +
    '05616c69636503626f62',
  envelopes: [
    'db2281658e77befb7c3d08c854928fd7f0e239f80fe3503052a67a15f8e905e8',
    'fbd16c4a69f011efd006eca93d93e434d1b3dec9c0b21c91895949495ccfeeff',
    '8eb8826ca57b98665bd2463b37ba7f985fe6de34fc66e7dbef021982871da45c',
    'cc50dd2a9b2545557446e02429fd0a1b6289d54ec1c25c319d237ce604fde845',
  ],
  /** SHA-256 of Bob's serialized session (format 3) after the conversation. */
  bobSessionAfter: 'c343596cce66d01cb913e3eb18514b98142914180121afa881039388afad36b4',
  safetyNumber: '710990490864141560788898561629829777358150725767928601002841',
  safetyQr:
    '01276b7a03a12706b0c8cd3f684151251da6efacd8c9a7b5097a95180672996d5e' +
    '68f756f97b779045d92cb9ef64180dcb0995896e60317320995214218dfd9c62',
}

/** Version 1 (sessions made before usernames were bound): the values version 0.1.0 pinned. */
const KNOWN_ANSWERS_V1 = {
  aliceIdentityKey: '59d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa328',
  bobIdentityKey: '9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49',
  x3dhSharedSecret: '839b5b0901151e3f2ef9f457af9718ad7c981f8e7370e1843cbdebb2933a2581',
  associatedData:
    '59d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f' +
    '9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef165',
  /** SHA-256 of each envelope: prekey message, prekey message, Bob's reply, Alice's new chain. */
  envelopes: [
    '33fcd43bbce70d551a74907ea4e3c6f0da076ee1eaf5e51ece213fa38b98f25c',
    '3d497faf7a38d57a07ec3874cad888c73a0fc2edf7149c98181b0e6cc08d6ce3',
    '8f5f080b51e56df4a86a346623596e955cc3fba71ffe4bbca34389fafa47182a',
    '77e27ae2c98a6c56785cca53c76d867247c0892d5ba078a5a96e1e681db10558',
  ],
  safetyNumber: '710990490864141560788898561629829777358150725767928601002841',
  safetyQr:
    '01276b7a03a12706b0c8cd3f684151251da6efacd8c9a7b5097a95180672996d5e' +
    '68f756f97b779045d92cb9ef64180dcb0995896e60317320995214218dfd9c62',
}

async function conversation(version: 1 | 2 = 2) {
  const alice = await deterministicIdentity('alice')
  const bob = await deterministicIdentity('bob')
  const aliceKeys = deterministicKeys('alice-ephemeral')
  const bobKeys = deterministicKeys('bob-ephemeral')
  const bobPreKeys = deterministicKeys('bob-prekeys')
  const signedPreKey = await generateSignedPreKey(
    bob,
    DEFAULT_DEVICE_ID,
    1,
    { extractable: true },
    bobPreKeys,
  )
  const [oneTimePreKey] = await generateOneTimePreKeys(
    bob,
    DEFAULT_DEVICE_ID,
    100,
    1,
    { extractable: true },
    bobPreKeys,
  )
  const bundle = {
    deviceId: DEFAULT_DEVICE_ID,
    identity: bob.public,
    signedPreKey: publicPreKey(signedPreKey),
    oneTimePreKey: publicPreKey(oneTimePreKey!),
  }
  const x3dh = await x3dhInitiate(alice, bundle, ALICE_TO_BOB, deterministicKeys('alice-ephemeral'))

  const envelopes: Uint8Array[] = []
  let a = await startSession(alice, bundle, ALICE_TO_BOB, aliceKeys)
  if (version === 1) a = asVersion1Session(a, alice.public, bob.public)
  let sent = await encryptMessage(a, utf8Encode('Hello Bob, this is Alice.'), aliceKeys)
  a = sent.session
  envelopes.push(sent.envelope)
  sent = await encryptMessage(a, utf8Encode('A second message in the first chain.'), aliceKeys)
  a = sent.session
  envelopes.push(sent.envelope)

  const accepted =
    version === 1
      ? await acceptAsVersion1(bob, envelopes[0]!, { signedPreKey, oneTimePreKey })
      : await acceptSession(bob, envelopes[0]!, { signedPreKey, oneTimePreKey }, ALICE_TO_BOB)
  let b = accepted.session
  b = (await decryptMessage(b, envelopes[1]!)).session
  sent = await encryptMessage(b, utf8Encode('Hi Alice. Bob here.'), bobKeys)
  b = sent.session
  envelopes.push(sent.envelope)
  const reply = await decryptMessage(a, sent.envelope)
  a = reply.session
  sent = await encryptMessage(a, utf8Encode('New chain after the DH ratchet.'), aliceKeys)
  a = sent.session
  envelopes.push(sent.envelope)
  const last = await decryptMessage(b, sent.envelope)
  b = last.session
  return {
    alice,
    bob,
    associatedData: a.associatedData,
    x3dh,
    envelopes,
    bobSession: b,
    aliceSession: a,
    texts: [utf8Decode(accepted.plaintext), utf8Decode(reply.plaintext), utf8Decode(last.plaintext)],
  }
}

/** Alice's session at the end of `conversation(1)`, as version 0.1.0 serialized it (session format 1). */
const ALICE_SESSION_FORMAT_1 =
  '010159d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef1659726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef1656504435de1197481d719bb42de1e2ce43ce37537d7ee2be6e86765e2d2aadd3f835f21e4ce72fa03635a727ecd16b355ef280144f8c37618d7cfa4fa221f7d031761de565027d7e84ce962ab9febb32583dcf8cb930c093fe1d94d951ecb2c1b00c11c80ffc373e373cc967aa5d8d3f7156443e722dac6d53452875a8b6c36871101594f8bedf92d85fedea4502eff5b259c5fc3bedba7788c4b227bf8a7e8c3c7ec015d7c0d3e2fe07dc8d317e994837bff12bcd485e91fa736411f39a0efc703e6b90000000100000002017e27741b39fd681ad0f86fee0d3bf7f13e00b6ce470eee5b9dc30df738ea8f4d018a90ef8f6e77b7773b3bd7e7013ec3e57325e329e067e4888d0226f0aa1a63e600000001013e9584e721d3dff8749e0f6fe61e8b4b2b3cf80d267fa541974405e991ff3c5f00000000'

/** Bob's session at the end of `conversation(1)`, as commit c4be598 serialized it (session format 2). */
const BOB_SESSION_FORMAT_2 =
  '020259d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef16559d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f7565e05e0008ca7bf2ea2aa2c7852867fb8be2049279dfbfaadd4abc8e21834cdcc9516221d3237440d079030ca214028d794a9b204e07f6fca9d4d9559d91071761de565027d7e84ce962ab9febb32583dcf8cb930c093fe1d94d951ecb2c1b00c11c80ffc373e373cc967aa5d8d3f7156443e722dac6d53452875a8b6c36871100000000000100000000018c19f1f54cd6da6e0b0393d049a2de04804c05965f2e7bdd057b5da286fd636f015d7c0d3e2fe07dc8d317e994837bff12bcd485e91fa736411f39a0efc703e6b90000000101acab0271514c718e1d0d905409815adac1b316e9a421a19d5de9ef1830af0e3b00000000'
/** Alice's session after her two prekey messages of `conversation(1)`, unanswered, in format 2 (c4be598). */
const ALICE_PENDING_SESSION_FORMAT_2 =
  '020159d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f9726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef1659726f8480a941e1c2ac6e74e12154b3e440e197f62a7f5918f3a0c6655516b49435bffcd9a6b45ea8098c2433f1e8603834065ca1d1c8a372cd5839b5d7ef1656504435de1197481d719bb42de1e2ce43ce37537d7ee2be6e86765e2d2aadd3f835f21e4ce72fa03635a727ecd16b355ef280144f8c37618d7cfa4fa221f7d031761de565027d7e84ce962ab9febb32583dcf8cb930c093fe1d94d951ecb2c1b0159d7183fb72b1de6ca42cab70c13e41d9a63a7a2f6e3ca9c2e5b1815846fa3282ec228cd5094c7feb40f3b5ad8d177061208e53c9b1eea64a3c075c8b551d36f7565e05e0008ca7bf2ea2aa2c7852867fb8be2049279dfbfaadd4abc8e21834cdcc9516221d3237440d079030ca214028d794a9b204e07f6fca9d4d9559d91071761de565027d7e84ce962ab9febb32583dcf8cb930c093fe1d94d951ecb2c1b000000010100000064f94a09336fdfe40d7c344095c2d47e260f9cf1c62c06d627f4e6d05b5decd2e30147c18bbe8a64c7970a9a52f553aa4f2d3ba62dff07e00cee8b98035d5aae0899acab0271514c718e1d0d905409815adac1b316e9a421a19d5de9ef1830af0e3b011a96f3fd156091655cc47e97b3884b16b18e113f1a8a1e1f4afe52db37cf39230000000200000000013e9584e721d3dff8749e0f6fe61e8b4b2b3cf80d267fa541974405e991ff3c5f00000000000000000000'

async function pinnedValues(run: Awaited<ReturnType<typeof conversation>>) {
  const safety = safetyNumber(
    { username: 'alice', identity: run.alice.public },
    { username: 'bob', identity: run.bob.public },
  )
  return {
    aliceIdentityKey: toHex(run.alice.public.identityKey),
    bobIdentityKey: toHex(run.bob.public.identityKey),
    x3dhSharedSecret: toHex(run.x3dh.sharedSecret),
    associatedData: toHex(run.associatedData),
    envelopes: run.envelopes.map((envelope) => toHex(sha256(envelope))),
    bobSessionAfter: toHex(sha256(await serializeSession(run.bobSession))),
    safetyNumber: safety.digits,
    safetyQr: toHex(safety.qrPayload),
  }
}

describe('known answers', () => {
  it('a fixed conversation produces exactly the pinned bytes', async () => {
    const run = await conversation()
    expect(run.texts).toEqual([
      'Hello Bob, this is Alice.',
      'Hi Alice. Bob here.',
      'New chain after the DH ratchet.',
    ])
    expect(toHex(run.x3dh.associatedData)).toBe(KNOWN_ANSWERS_V2.associatedData)
    expect(await pinnedValues(run)).toEqual(KNOWN_ANSWERS_V2)
    expect(run.envelopes.map((envelope) => envelope[0])).toEqual([2, 2, 2, 2])
    // docs/protocol.md §9's example sizes.
    expect(run.associatedData).toHaveLength(138)
    expect(await serializeSession(run.bobSession)).toHaveLength(452)
  })

  it('the same conversation on a session of version 1 still produces the bytes version 0.1.0 pinned', async () => {
    const run = await conversation(1)
    expect(run.texts).toEqual([
      'Hello Bob, this is Alice.',
      'Hi Alice. Bob here.',
      'New chain after the DH ratchet.',
    ])
    const { bobSessionAfter: _format3, ...pinned } = await pinnedValues(run)
    expect(pinned).toEqual(KNOWN_ANSWERS_V1)
    expect(run.envelopes.map((envelope) => envelope[0])).toEqual([1, 1, 1, 1])
  })

  it('the same conversation run twice gives the same bytes (nothing random leaks in)', async () => {
    const [one, two] = [await conversation(), await conversation()]
    expect(one.envelopes.map(toHex)).toEqual(two.envelopes.map(toHex))
  })

  it('a session stored in format 1 (before the ratchet public key was kept) still loads', async () => {
    const run = await conversation(1)
    // Alice's session after the conversation, serialized by version 0.1.0 of this code (format 1).
    const loaded = await deserializeSession(fromHex(ALICE_SESSION_FORMAT_1))
    expect(loaded.version).toBe(1)
    expect(loaded.ratchet.ourRatchetKey?.publicKey).toEqual(run.aliceSession.ratchet.ourRatchetKey?.publicKey)
    expect(toHex(await serializeSession(loaded))).toBe(toHex(await serializeSession(run.aliceSession)))
    // It goes on working: the next message from Alice opens on Bob's side.
    const next = await encryptMessage(loaded, utf8Encode('after the upgrade'))
    const opened = await decryptMessage(run.bobSession, next.envelope)
    expect(utf8Decode(opened.plaintext)).toBe('after the upgrade')
  })

  it('sessions stored in format 2 (before usernames were bound) load as version 1 and keep working', async () => {
    const run = await conversation(1)
    const bob = await deserializeSession(fromHex(BOB_SESSION_FORMAT_2))
    expect(bob.version).toBe(1)
    expect(bob.associatedData).toHaveLength(128)
    expect(toHex(await serializeSession(bob))).toBe(toHex(await serializeSession(run.bobSession)))
    // Format 3 keeps what was derived: reloading gives the same session, version and AD.
    const again = await deserializeSession(await serializeSession(bob))
    expect({ version: again.version, ad: toHex(again.associatedData) }).toEqual({
      version: 1,
      ad: KNOWN_ANSWERS_V1.associatedData,
    })
    // Both directions go on, with version-1 envelopes the old peer reads.
    const fromBob = await encryptMessage(again, utf8Encode('still here'))
    expect(fromBob.envelope[0]).toBe(1)
    const atAlice = await decryptMessage(run.aliceSession, fromBob.envelope)
    expect(utf8Decode(atAlice.plaintext)).toBe('still here')
    const fromAlice = await encryptMessage(atAlice.session, utf8Encode('and back'))
    expect(utf8Decode((await decryptMessage(fromBob.session, fromAlice.envelope)).plaintext)).toBe('and back')

    // An initiator session stored before its first answer: loads as version 1, pending.
    const pending = await deserializeSession(fromHex(ALICE_PENDING_SESSION_FORMAT_2))
    expect({ version: pending.version, pending: pending.pendingPreKey !== null }).toEqual({
      version: 1,
      pending: true,
    })
  })
})
