import { describe, expect, it } from 'vitest'
import { utf8Decode, utf8Encode } from '../bytes.js'
import { decodeEnvelope } from '../codec/envelope.js'
import { generateIdentity, generateOneTimePreKeys, generateSignedPreKey, publicPreKey } from '../identity.js'
import { acceptSession, decryptMessage, encryptMessage, startSession } from '../session.js'

describe('session smoke', () => {
  it('alice and bob exchange messages', async () => {
    const alice = await generateIdentity()
    const bob = await generateIdentity()
    const spk = await generateSignedPreKey(bob, 1)
    const [opk] = await generateOneTimePreKeys(bob, 100, 1)
    let a = await startSession(alice, {
      identity: bob.public,
      signedPreKey: publicPreKey(spk),
      oneTimePreKey: publicPreKey(opk!),
    })
    const first = await encryptMessage(a, utf8Encode('hello bob'))
    a = first.session
    const env = decodeEnvelope(first.envelope)
    const accepted = await acceptSession(bob, env, { signedPreKey: spk, oneTimePreKey: opk })
    expect(utf8Decode(accepted.plaintext)).toBe('hello bob')
    let b = accepted.session
    const reply = await encryptMessage(b, utf8Encode('hi alice'))
    b = reply.session
    const got = await decryptMessage(a, reply.envelope)
    a = got.session
    expect(utf8Decode(got.plaintext)).toBe('hi alice')
    expect(a.pendingPreKey).toBeNull()
  })
})
