/**
 * Known answers of sender keys (docs/protocol.md §19.7), in the manner of kat.test.ts: a fixed
 * sender key (chain id, chain key and signing seed derived from labels), its distribution message
 * and two group messages, and the exact bytes they must be. Ed25519 is deterministic, so the
 * signatures are fixed too. Any change to a label, the chain step, the layouts or the padding
 * changes these values: such a change is a new group message version, not a refactor.
 */

import { afterEach, describe, expect, it } from 'vitest'
import { toHex, utf8Decode, utf8Encode } from '../bytes.js'
import { sha256 } from '../crypto/primitives.js'
import {
  createSenderKey,
  groupDecrypt,
  groupEncrypt,
  processDistribution,
  senderKeyDistribution,
} from '../group/sender-key.js'
import { decodeSenderKeyDistribution, encodeSenderKeyDistribution } from '../group/sender-key-codec.js'
import { deserializeSenderKeyRecord, serializeSenderKeyRecord } from '../group/sender-key-serialization.js'
import { curveBackends, deterministicBytes } from './helpers.js'

const KNOWN_ANSWERS_SENDER_KEY = {
  distributionId: 'd0fd8f9ff37a4a0ab977461698e912a1',
  distribution:
    '01d0fd8f9ff37a4a0ab977461698e912a1f8d35ea500000000949a4944eff412fa547bc06e615386baa5d12ce204a4af4dcd4395b5bc83ce7e1ac28aa05e4e057d2fa16ae6069302728a7d7911885553c4b6c26a560330811a',
  messages: [
    '01d0fd8f9ff37a4a0ab977461698e912a1f8d35ea500000000a969b3fcb24e79ef7108feee4dd05e6154720d005782010e9528e046bdb41efaa4f6f411c0e957e8a039ec26c7a07c40ee28dbe2e1ddca8236989709f6da47c0a9e8e342f56b948ca1ac819ae72c0b6dc148b5fcbf71a08bc672898cede2c6fba7f6d6282757dc5648c7554c1d25c49b7252a744fbdd338d93b99ed47a85f5c64a3d1ae91a4745ffb6475f4f72594a71a4867aecb8886ce395f448b2eef894a7a7bee6e6d4e6625cf65cb11ae6db1608bd3bad1f2e0d384897c17e84f05dc70c896bf84a264383c8a77b9759562453dc6386bcae0870b40cfd39a15cc376ffbf5c3a7d4dc3cc6a4861f4dd541198d802',
    '01d0fd8f9ff37a4a0ab977461698e912a1f8d35ea5000000013bc1c46694123b408ac8600602c7fa4ee0c93bcf89b12ea0f3a56c5a6c9da2a6390baf602aea6a33160b35841b71aabc58e22d0d589ff9ac0ac892a4686dffd48260ef825a87acd6bd957ec46674478a69f31f4b757213b41bed10e468e0412b797c6d8a6467f03928d7dc6f70913b25048ca93aacea4d87ffb7f840873839f6f3616ed0dad2b8818b974ce2d2bec0fd3bd53a3d213e893fde0f6a0173edbc282c306aa4f0e2a5c734f8ca84817039000ed8bcda7a6648b4e1369248d8bf7f0b897d3929f4584ae212261027fc146715b6fe450bbd90bfa281a7d48ff596cd1da2ab37c0bfd560804737267b0b2f2c0e',
  ],
  /** SHA-256 of Bob's serialized record after message 1 (so with message 0's key skipped). */
  bobRecordAfterMessage1: '6f26d6b5b1f4b47e3ae3e76fc10a8813cbfcb790895f036e98852695d697b6dc',
  /** SHA-256 of Alice's serialized record after both messages (her signing seed included). */
  aliceRecordAfter: '88f2168cf215f6d1bb1fef6df8d1f2e7c1f32191233f352c22ba6462ef2ed1d7',
}

/** The k-th call asks for deterministicBytes("alice/sender-key/" + k, length): seed, chain id, chain key. */
function senderKeyRandom(label: string): (length: number) => Uint8Array {
  let counter = 0
  return (length) => deterministicBytes(`${label}/${counter++}`, length)
}

async function groupConversation() {
  const distributionId = deterministicBytes('group/distribution-id', 16)
  let alice = await createSenderKey(distributionId, {
    extractable: true,
    random: senderKeyRandom('alice/sender-key'),
  })
  const distribution = encodeSenderKeyDistribution(senderKeyDistribution(alice))
  const messages: Uint8Array[] = []
  for (const text of ['Hello group, this is Alice.', 'A second group message.']) {
    const sent = await groupEncrypt(alice, utf8Encode(text))
    alice = sent.record
    messages.push(sent.message)
  }
  // Bob receives the distribution, then the two messages in reverse order.
  let bob = processDistribution(null, decodeSenderKeyDistribution(distribution))
  const second = await groupDecrypt(bob, messages[1])
  bob = second.record
  const bobRecordAfterMessage1 = await serializeSenderKeyRecord(bob)
  const first = await groupDecrypt(bob, messages[0])
  bob = first.record
  return {
    distributionId,
    distribution,
    messages,
    alice,
    bob,
    bobRecordAfterMessage1,
    texts: [utf8Decode(first.plaintext), utf8Decode(second.plaintext)],
  }
}

describe.each(curveBackends)('sender key known answers ($name)', ({ force }) => {
  let restore: () => void = () => {}
  afterEach(() => restore())

  it('a fixed sender key, its distribution and two group messages are exactly the pinned bytes', async () => {
    restore = force()
    const run = await groupConversation()
    expect(run.texts).toEqual(['Hello group, this is Alice.', 'A second group message.'])
    expect({
      distributionId: toHex(run.distributionId),
      distribution: toHex(run.distribution),
      messages: run.messages.map(toHex),
      bobRecordAfterMessage1: toHex(sha256(run.bobRecordAfterMessage1)),
      aliceRecordAfter: toHex(sha256(await serializeSenderKeyRecord(run.alice))),
    }).toEqual(KNOWN_ANSWERS_SENDER_KEY)
    // docs/protocol.md §19's sizes: 89-byte distribution, 25 + 176 + 64 bytes per short message.
    expect(run.distribution).toHaveLength(89)
    expect(run.messages.map((message) => message.length)).toEqual([265, 265])
    // §19.5: a state is 78 bytes (110 with the seed) and 36 per skipped key, after an 18-byte head.
    expect(run.bobRecordAfterMessage1).toHaveLength(132)
    expect(await serializeSenderKeyRecord(run.alice)).toHaveLength(128)
  })

  it('the pinned records load again and go on: Bob reads what Alice sends next', async () => {
    restore = force()
    const run = await groupConversation()
    const alice = await deserializeSenderKeyRecord(await serializeSenderKeyRecord(run.alice))
    const bob = await deserializeSenderKeyRecord(await serializeSenderKeyRecord(run.bob))
    expect(toHex(await serializeSenderKeyRecord(bob))).toBe(toHex(await serializeSenderKeyRecord(run.bob)))
    const next = await groupEncrypt(alice, utf8Encode('after a reload'))
    expect(utf8Decode((await groupDecrypt(bob, next.message)).plaintext)).toBe('after a reload')
  })
})
