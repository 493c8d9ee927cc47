/**
 * `npm run bench:crypto`: throughput of the protocol core, against a floor measured in the same run.
 *
 * - ratchet.oneWay: Alice sends many 100-byte messages, Bob decrypts them in order (symmetric steps).
 * - ratchet.alternating: the direction changes every message, so every message carries a DH step.
 * - x3dh: bundle verification + X3DH on both sides (initiator and responder).
 * - floor.webcryptoSymmetricStepPerSec: the raw WebCrypto calls one message's symmetric ratchet
 *   step needs on both sides (chain HMACs, HKDF, AES-GCM key import, encrypt / decrypt), with
 *   independent calls in parallel — what a pure-WebCrypto ratchet could at best reach.
 * - floor.webcryptoDhStepPerSec: the same plus the DH step's calls (key generation, export,
 *   public-key import, two X25519 derivations): the floor for the alternating case.
 *
 * A message counts once it is both encrypted and decrypted. Prints a table, then one JSON line.
 *
 * Optional peer: libsignal's native Node binding, measured on the same cases by
 * bench/libsignal-peer.ts (see there for exactly what each case runs). It is AGPL-licensed and
 * never a dependency of this project; to include it in a run, install it without saving:
 *
 *   npm install --no-save @signalapp/libsignal-client@0.103.0
 *
 * Then the table gains libsignal rows and an "ours/libsignal" column, and the JSON line gains
 * `peer.libsignal` and the `…VsLibsignal…` ratios. Without it, one line on stderr says the
 * comparison was skipped, and the output is otherwise unchanged.
 */
import { DEFAULT_DEVICE_ID } from '../shared/address.js'
import { utf8Encode } from '../shared/bytes.js'
import {
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  publicPreKey,
} from '../shared/identity.js'
import {
  acceptSession,
  decryptMessage,
  encryptMessage,
  type Session,
  startSession,
} from '../shared/session.js'
import { x3dhInitiate, x3dhRespond } from '../shared/x3dh.js'
import { measureLibsignal } from './libsignal-peer.js'

const subtle = globalThis.crypto.subtle
const MESSAGE = utf8Encode('x'.repeat(100))
const DURATION_MS = Number(process.env.BENCH_MS ?? 2000)

async function measure(
  name: string,
  step: () => Promise<void>,
  batch = 50,
  durationMs = DURATION_MS,
): Promise<number> {
  for (let i = 0; i < batch * 2; i++) await step() // warm-up: JIT, key caches
  let count = 0
  const start = performance.now()
  while (performance.now() - start < durationMs) {
    for (let i = 0; i < batch; i++) await step()
    count += batch
  }
  const perSec = count / ((performance.now() - start) / 1000)
  process.stderr.write(`  measured ${name}\n`)
  return perSec
}

async function newConversation(): Promise<{ alice: Session; bob: Session }> {
  const [aliceIdentity, bobIdentity] = await Promise.all([generateIdentity(), generateIdentity()])
  const signedPreKey = await generateSignedPreKey(bobIdentity, DEFAULT_DEVICE_ID, 1)
  const [oneTimePreKey] = await generateOneTimePreKeys(bobIdentity, DEFAULT_DEVICE_ID, 1, 1)
  const started = await startSession(
    aliceIdentity,
    {
      deviceId: DEFAULT_DEVICE_ID,
      identity: bobIdentity.public,
      signedPreKey: publicPreKey(signedPreKey),
      oneTimePreKey: publicPreKey(oneTimePreKey!),
    },
    { initiator: 'alice', responder: 'bob' },
  )
  const first = await encryptMessage(started, MESSAGE)
  const accepted = await acceptSession(
    bobIdentity,
    first.envelope,
    { signedPreKey, oneTimePreKey },
    { initiator: 'alice', responder: 'bob' },
  )
  const reply = await encryptMessage(accepted.session, MESSAGE)
  const alice = (await decryptMessage(first.session, reply.envelope)).session
  return { alice, bob: reply.session }
}

async function benchOneWay(): Promise<number> {
  let { alice, bob } = await newConversation()
  return measure('ratchet one-way', async () => {
    const sent = await encryptMessage(alice, MESSAGE)
    alice = sent.session
    bob = (await decryptMessage(bob, sent.envelope)).session
  })
}

async function benchAlternating(): Promise<number> {
  const conversation = await newConversation()
  let sender = conversation.alice
  let receiver = conversation.bob
  return measure('ratchet alternating', async () => {
    const sent = await encryptMessage(sender, MESSAGE)
    const received = await decryptMessage(receiver, sent.envelope)
    sender = received.session
    receiver = sent.session
  })
}

async function benchX3dh(): Promise<number> {
  const [alice, bob] = await Promise.all([generateIdentity(), generateIdentity()])
  const signedPreKey = await generateSignedPreKey(bob, DEFAULT_DEVICE_ID, 1)
  const bundle = {
    deviceId: DEFAULT_DEVICE_ID,
    identity: bob.public,
    signedPreKey: publicPreKey(signedPreKey),
  }
  return measure(
    'x3dh',
    async () => {
      const initiation = await x3dhInitiate(alice, bundle, { initiator: 'alice', responder: 'bob' })
      await x3dhRespond(bob, signedPreKey, undefined, alice.public, initiation.ephemeralPublicKey, {
        initiator: 'alice',
        responder: 'bob',
      })
    },
    10,
  )
}

/** One side's symmetric step in raw WebCrypto: HMAC ×2, HKDF, AES-GCM import + seal/open. */
async function webCryptoSymmetricSide(
  chainKey: Uint8Array<ArrayBuffer>,
  decryptInput?: Uint8Array<ArrayBuffer>,
) {
  const hmacKey = await subtle.importKey('raw', chainKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
  const [seed, next] = await Promise.all([
    subtle.sign('HMAC', hmacKey, new Uint8Array([1])),
    subtle.sign('HMAC', hmacKey, new Uint8Array([2])),
  ])
  const hkdfKey = await subtle.importKey('raw', seed, 'HKDF', false, ['deriveBits'])
  const okm = new Uint8Array(
    await subtle.deriveBits(
      { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: new Uint8Array(8) },
      hkdfKey,
      44 * 8,
    ),
  )
  const aesKey = await subtle.importKey('raw', okm.slice(0, 32), 'AES-GCM', false, ['encrypt', 'decrypt'])
  const params = { name: 'AES-GCM', iv: okm.slice(32, 44), additionalData: new Uint8Array(170) }
  const output = decryptInput
    ? await subtle.decrypt(params, aesKey, decryptInput)
    : await subtle.encrypt(params, aesKey, new Uint8Array(160))
  return { next: new Uint8Array(next), output: new Uint8Array(output) }
}

async function benchSymmetricFloor(): Promise<number> {
  let senderChain = crypto.getRandomValues(new Uint8Array(32))
  let receiverChain = senderChain.slice()
  return measure('floor: WebCrypto symmetric step', async () => {
    const sent = await webCryptoSymmetricSide(senderChain)
    const received = await webCryptoSymmetricSide(receiverChain, sent.output)
    senderChain = sent.next
    receiverChain = received.next
  })
}

async function benchDhFloor(): Promise<number> {
  const peer = (await subtle.generateKey({ name: 'X25519' }, true, ['deriveBits'])) as CryptoKeyPair
  const peerPublic = new Uint8Array(await subtle.exportKey('raw', peer.publicKey))
  let chain = crypto.getRandomValues(new Uint8Array(32))
  return measure('floor: WebCrypto DH step', async () => {
    // Sender: new ratchet key, export it, import the peer's key, derive.
    const fresh = (await subtle.generateKey({ name: 'X25519' }, true, ['deriveBits'])) as CryptoKeyPair
    const [freshPublic, theirKey] = await Promise.all([
      subtle.exportKey('raw', fresh.publicKey),
      subtle.importKey('raw', peerPublic, { name: 'X25519' }, true, []),
    ])
    await subtle.deriveBits({ name: 'X25519', public: theirKey }, fresh.privateKey, 256)
    // Receiver: import the new key, derive.
    const received = await subtle.importKey('raw', freshPublic, { name: 'X25519' }, true, [])
    await subtle.deriveBits({ name: 'X25519', public: received }, peer.privateKey, 256)
    const sent = await webCryptoSymmetricSide(chain)
    chain = (await webCryptoSymmetricSide(chain, sent.output)).next
  })
}

const round = (n: number) => Math.round(n)
const ratio = (ours: number, theirs: number) => Number((ours / theirs).toFixed(2))

async function main() {
  process.stderr.write(`bench:crypto — ${DURATION_MS} ms per case, Node ${process.version}\n`)
  const symmetricFloor = await benchSymmetricFloor()
  const dhFloor = await benchDhFloor()
  const oneWay = await benchOneWay()
  const alternating = await benchAlternating()
  const x3dh = await benchX3dh()
  const peer = await measureLibsignal(DURATION_MS, measure)

  // [case, rate, floor for "vs floor", libsignal's rate for "ours/libsignal"]
  const rows: [string, number, number | undefined, number | undefined][] = [
    ['ratchet one-way (msgs/s)', oneWay, symmetricFloor, peer?.oneWay],
    ['ratchet alternating (msgs/s)', alternating, dhFloor, peer?.alternating],
    ['x3dh setups (both sides, /s)', x3dh, undefined, peer?.sessionSetup],
    ['floor: WebCrypto symmetric step (/s)', symmetricFloor, undefined, undefined],
    ['floor: WebCrypto DH step (/s)', dhFloor, undefined, undefined],
  ]
  if (peer) {
    rows.push(
      ['libsignal one-way (msgs/s)', peer.oneWay, undefined, undefined],
      ['libsignal alternating (msgs/s)', peer.alternating, undefined, undefined],
      ['libsignal session setup (both sides, /s)', peer.sessionSetup, undefined, undefined],
    )
  }
  const peerColumn = (text: string) => (peer ? text.padStart(16) : '')
  console.log('')
  console.log(
    `${'case'.padEnd(40)}${'rate'.padStart(12)}${'vs floor'.padStart(12)}${peerColumn('ours/libsignal')}`,
  )
  for (const [name, rate, floor, libsignal] of rows) {
    console.log(
      `${name.padEnd(40)}${String(round(rate)).padStart(12)}${(floor ? `${(rate / floor).toFixed(2)}x` : '').padStart(12)}${peerColumn(libsignal ? `${(rate / libsignal).toFixed(2)}x` : '')}`,
    )
  }
  console.log('')
  console.log(
    JSON.stringify({
      ratchet: { oneWay: { msgsPerSec: round(oneWay) }, alternating: { msgsPerSec: round(alternating) } },
      x3dh: { setupsPerSec: round(x3dh) },
      floor: { webcryptoSymmetricStepPerSec: round(symmetricFloor), webcryptoDhStepPerSec: round(dhFloor) },
      ratios: {
        oneWayVsSymmetricFloor: Number((oneWay / symmetricFloor).toFixed(2)),
        alternatingVsDhFloor: Number((alternating / dhFloor).toFixed(2)),
        ...(peer && {
          oneWayVsLibsignal: ratio(oneWay, peer.oneWay),
          alternatingVsLibsignal: ratio(alternating, peer.alternating),
          x3dhVsLibsignalSessionSetup: ratio(x3dh, peer.sessionSetup),
        }),
      },
      ...(peer && {
        peer: {
          libsignal: {
            oneWay: { msgsPerSec: round(peer.oneWay) },
            alternating: { msgsPerSec: round(peer.alternating) },
            setupsPerSec: round(peer.sessionSetup),
          },
        },
      }),
    }),
  )
}

await main()
