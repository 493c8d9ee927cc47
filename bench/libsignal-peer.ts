/**
 * Optional peer measurement for `npm run bench:crypto`: the same cases, run through libsignal's
 * native Node binding (`@signalapp/libsignal-client`, Rust, PQXDH + Double Ratchet).
 *
 * libsignal is AGPL-3.0, so it is never a dependency of this project (not in package.json, not in
 * package-lock.json). To include it in a run, install it without saving:
 *
 *   npm install --no-save @signalapp/libsignal-client@0.103.0
 *
 * Without it, `measureLibsignal` prints one line on stderr and returns undefined. The package is
 * loaded by a computed specifier so that `tsc` never looks for its types; `LibsignalModule` below
 * declares the small part of its API used here (checked against the 0.103.0 declarations).
 *
 * Cases (each a loop of the operations listed; 100-byte messages, in-memory stores):
 * - one-way: Alice `signalEncrypt`s, Bob `signalDecrypt`s (ciphertext serialized and parsed as a
 *   `SignalMessage` in between), on a session where both sides have already exchanged a message,
 *   so Alice sends plain (not prekey) messages.
 * - alternating: the same, but sender and receiver swap after every message, so every message
 *   starts a new sending chain (a DH ratchet step) and the receiver takes the matching step.
 * - session setup: fresh session stores on both sides, then Alice `processPreKeyBundle` (verifies
 *   the signed-prekey and Kyber-prekey signatures, PQXDH as initiator), `signalEncrypt` of the
 *   first message (a `PreKeySignalMessage`), and Bob `signalDecryptPreKey` (PQXDH as responder,
 *   ratchet initialisation, decryption). The bundle (signed prekey + Kyber prekey, no one-time EC
 *   prekey) is built once, like the bundle of our x3dh case. This does more than our x3dh case
 *   (key agreement only): an ML-KEM-1024 encapsulation/decapsulation, session-record bookkeeping
 *   and one message encrypted and decrypted. libsignal offers no lower-level X3DH entry point.
 *
 * libsignal also does work ours does not, in every case: its sessions run the SPQR post-quantum
 * ratchet alongside the Double Ratchet (0.103.0: 37 bytes of it in each message), and every call
 * crosses the native bridge and loads and stores a whole session record (4-6 KB) through the
 * async JS stores. Its rates are those of the binding as an application would use it.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

/** The `measure` helper of bench/crypto.ts: warm-up, then steps per second over `durationMs`. */
export type Measure = (
  name: string,
  step: () => Promise<void>,
  batch?: number,
  durationMs?: number,
) => Promise<number>

export interface LibsignalRates {
  oneWay: number
  alternating: number
  sessionSetup: number
}

const PACKAGE = '@signalapp/libsignal-client'
const EXPECTED_VERSION = '0.103.0'
const MESSAGE = new TextEncoder().encode('x'.repeat(100))

// The slice of libsignal's API used here, declared locally: the package is absent at type-check time.
type Bytes = Uint8Array<ArrayBuffer>
interface PublicKey {
  serialize(): Bytes
}
interface PrivateKey {
  sign(message: Bytes): Bytes
  getPublicKey(): PublicKey
}
interface KemPublicKey {
  serialize(): Bytes
}
interface KemKeyPair {
  getPublicKey(): KemPublicKey
}
interface ProtocolAddress {
  toString(): string
}
interface SessionRecord {
  serialize(): Bytes
}
interface PreKeyRecord {
  id(): number
}
interface SignedPreKeyRecord {
  id(): number
}
interface KyberPreKeyRecord {
  id(): number
}
interface PreKeyBundle {
  registrationId(): number
}
interface CiphertextMessage {
  serialize(): Bytes
  type(): number
}
interface SignalMessage {
  counter(): number
}
interface PreKeySignalMessage {
  signedPreKeyId(): number
}
type AbstractClass = abstract new () => object

interface SessionStoreLike {
  saveSession(address: ProtocolAddress, record: SessionRecord): Promise<void>
  getSession(address: ProtocolAddress): Promise<SessionRecord | null>
  getExistingSessions(addresses: ProtocolAddress[]): Promise<SessionRecord[]>
}
interface IdentityStoreLike {
  getIdentityKey(): Promise<PrivateKey>
  getLocalRegistrationId(): Promise<number>
  saveIdentity(address: ProtocolAddress, key: PublicKey): Promise<number>
  isTrustedIdentity(address: ProtocolAddress, key: PublicKey, direction: number): Promise<boolean>
  getIdentity(address: ProtocolAddress): Promise<PublicKey | null>
}
interface PreKeyStoreLike {
  savePreKey(id: number, record: PreKeyRecord): Promise<void>
  getPreKey(id: number): Promise<PreKeyRecord>
  removePreKey(id: number): Promise<void>
}
interface SignedPreKeyStoreLike {
  saveSignedPreKey(id: number, record: SignedPreKeyRecord): Promise<void>
  getSignedPreKey(id: number): Promise<SignedPreKeyRecord>
}
interface KyberPreKeyStoreLike {
  saveKyberPreKey(id: number, record: KyberPreKeyRecord): Promise<void>
  getKyberPreKey(id: number): Promise<KyberPreKeyRecord>
  markKyberPreKeyUsed(id: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void>
}

// `'new'` is quoted: a static method named new (`new(...)` would be a construct signature).
export interface LibsignalModule {
  PrivateKey: { generate(): PrivateKey }
  KEMKeyPair: { generate(): KemKeyPair }
  ProtocolAddress: { 'new'(name: string, deviceId: number): ProtocolAddress }
  SignedPreKeyRecord: {
    'new'(
      id: number,
      timestamp: number,
      publicKey: PublicKey,
      privateKey: PrivateKey,
      signature: Bytes,
    ): SignedPreKeyRecord
  }
  KyberPreKeyRecord: {
    'new'(id: number, timestamp: number, keyPair: KemKeyPair, signature: Bytes): KyberPreKeyRecord
  }
  PreKeyBundle: {
    'new'(
      registrationId: number,
      deviceId: number,
      preKeyId: number | null,
      preKey: PublicKey | null,
      signedPreKeyId: number,
      signedPreKey: PublicKey,
      signedPreKeySignature: Bytes,
      identityKey: PublicKey,
      kyberPreKeyId: number,
      kyberPreKey: KemPublicKey,
      kyberPreKeySignature: Bytes,
    ): PreKeyBundle
  }
  SignalMessage: { deserialize(bytes: Bytes): SignalMessage }
  PreKeySignalMessage: { deserialize(bytes: Bytes): PreKeySignalMessage }
  CiphertextMessageType: { readonly Whisper: number; readonly PreKey: number }
  IdentityChange: { readonly NewOrUnchanged: number; readonly ReplacedExisting: number }
  SessionStore: AbstractClass
  IdentityKeyStore: AbstractClass
  PreKeyStore: AbstractClass
  SignedPreKeyStore: AbstractClass
  KyberPreKeyStore: AbstractClass
  processPreKeyBundle(
    bundle: PreKeyBundle,
    address: ProtocolAddress,
    localAddress: ProtocolAddress,
    sessionStore: SessionStoreLike,
    identityStore: IdentityStoreLike,
  ): Promise<void>
  signalEncrypt(
    message: Bytes,
    address: ProtocolAddress,
    localAddress: ProtocolAddress,
    sessionStore: SessionStoreLike,
    identityStore: IdentityStoreLike,
  ): Promise<CiphertextMessage>
  signalDecrypt(
    message: SignalMessage,
    address: ProtocolAddress,
    localAddress: ProtocolAddress,
    sessionStore: SessionStoreLike,
    identityStore: IdentityStoreLike,
  ): Promise<Bytes>
  signalDecryptPreKey(
    message: PreKeySignalMessage,
    address: ProtocolAddress,
    localAddress: ProtocolAddress,
    sessionStore: SessionStoreLike,
    identityStore: IdentityStoreLike,
    preKeyStore: PreKeyStoreLike,
    signedPreKeyStore: SignedPreKeyStoreLike,
    kyberPreKeyStore: KyberPreKeyStoreLike,
  ): Promise<Bytes>
}

/** Loads the package, or says on stderr why the comparison is skipped. */
async function loadLibsignal(): Promise<LibsignalModule | undefined> {
  let version: string
  try {
    const manifest = createRequire(import.meta.url).resolve(`${PACKAGE}/package.json`)
    version = (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version
  } catch {
    process.stderr.write(
      `  libsignal peer comparison skipped: ${PACKAGE} is not installed ` +
        `(npm install --no-save ${PACKAGE}@${EXPECTED_VERSION} to include it)\n`,
    )
    return undefined
  }
  try {
    const specifier: string = PACKAGE // computed, so tsc does not look for the absent package
    const lib = (await import(specifier)) as LibsignalModule
    const note = version === EXPECTED_VERSION ? '' : ` (this bench was written against ${EXPECTED_VERSION})`
    process.stderr.write(`  libsignal peer: ${PACKAGE} ${version}${note}\n`)
    return lib
  } catch (error) {
    process.stderr.write(
      `  libsignal peer comparison skipped: ${PACKAGE} ${version} is installed but failed to load: ` +
        `${error instanceof Error ? error.message : String(error)}\n`,
    )
    return undefined
  }
}

/** Minimal in-memory implementations of libsignal's abstract store classes. */
function defineStores(lib: LibsignalModule) {
  class MemorySessionStore extends lib.SessionStore implements SessionStoreLike {
    private readonly sessions = new Map<string, SessionRecord>()
    async saveSession(address: ProtocolAddress, record: SessionRecord): Promise<void> {
      this.sessions.set(address.toString(), record)
    }
    async getSession(address: ProtocolAddress): Promise<SessionRecord | null> {
      return this.sessions.get(address.toString()) ?? null
    }
    async getExistingSessions(addresses: ProtocolAddress[]): Promise<SessionRecord[]> {
      return addresses.map((address) => found(this.sessions.get(address.toString()), `session ${address}`))
    }
  }

  /** Trusts every identity (our protocol core has no trust store either) and remembers what it saw. */
  class MemoryIdentityStore extends lib.IdentityKeyStore implements IdentityStoreLike {
    private readonly identities = new Map<string, PublicKey>()
    constructor(
      private readonly identityKey: PrivateKey,
      private readonly registrationId: number,
    ) {
      super()
    }
    async getIdentityKey(): Promise<PrivateKey> {
      return this.identityKey
    }
    async getLocalRegistrationId(): Promise<number> {
      return this.registrationId
    }
    async saveIdentity(address: ProtocolAddress, key: PublicKey): Promise<number> {
      const previous = this.identities.get(address.toString())
      this.identities.set(address.toString(), key)
      return previous && !equalBytes(previous.serialize(), key.serialize())
        ? lib.IdentityChange.ReplacedExisting
        : lib.IdentityChange.NewOrUnchanged
    }
    async isTrustedIdentity(): Promise<boolean> {
      return true
    }
    async getIdentity(address: ProtocolAddress): Promise<PublicKey | null> {
      return this.identities.get(address.toString()) ?? null
    }
  }

  class MemoryPreKeyStore extends lib.PreKeyStore implements PreKeyStoreLike {
    private readonly records = new Map<number, PreKeyRecord>()
    async savePreKey(id: number, record: PreKeyRecord): Promise<void> {
      this.records.set(id, record)
    }
    async getPreKey(id: number): Promise<PreKeyRecord> {
      return found(this.records.get(id), `prekey ${id}`)
    }
    async removePreKey(id: number): Promise<void> {
      this.records.delete(id)
    }
  }

  class MemorySignedPreKeyStore extends lib.SignedPreKeyStore implements SignedPreKeyStoreLike {
    private readonly records = new Map<number, SignedPreKeyRecord>()
    async saveSignedPreKey(id: number, record: SignedPreKeyRecord): Promise<void> {
      this.records.set(id, record)
    }
    async getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
      return found(this.records.get(id), `signed prekey ${id}`)
    }
  }

  /** Kyber prekeys stay after use, like a last-resort key: the bundle is reused for every setup. */
  class MemoryKyberPreKeyStore extends lib.KyberPreKeyStore implements KyberPreKeyStoreLike {
    private readonly records = new Map<number, KyberPreKeyRecord>()
    async saveKyberPreKey(id: number, record: KyberPreKeyRecord): Promise<void> {
      this.records.set(id, record)
    }
    async getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
      return found(this.records.get(id), `Kyber prekey ${id}`)
    }
    async markKyberPreKeyUsed(): Promise<void> {}
  }

  return {
    MemorySessionStore,
    MemoryIdentityStore,
    MemoryPreKeyStore,
    MemorySignedPreKeyStore,
    MemoryKyberPreKeyStore,
  }
}

function found<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`libsignal peer: ${what} not found`)
  return value
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i])
}

interface Party {
  address: ProtocolAddress
  identityKey: PrivateKey
  registrationId: number
  identity: IdentityStoreLike
  sessions: SessionStoreLike
  preKeys: PreKeyStoreLike
  signedPreKeys: SignedPreKeyStoreLike
  kyberPreKeys: KyberPreKeyStoreLike
}

async function measureCases(
  lib: LibsignalModule,
  durationMs: number,
  measure: Measure,
): Promise<LibsignalRates> {
  const stores = defineStores(lib)

  function newParty(name: string, registrationId: number): Party {
    const identityKey = lib.PrivateKey.generate()
    return {
      address: lib.ProtocolAddress.new(name, 1),
      identityKey,
      registrationId,
      identity: new stores.MemoryIdentityStore(identityKey, registrationId),
      sessions: new stores.MemorySessionStore(),
      preKeys: new stores.MemoryPreKeyStore(),
      signedPreKeys: new stores.MemorySignedPreKeyStore(),
      kyberPreKeys: new stores.MemoryKyberPreKeyStore(),
    }
  }

  /** Bob's bundle: a signed prekey and a Kyber prekey, both signed by his identity key; no one-time prekey. */
  async function publishBundle(bob: Party): Promise<PreKeyBundle> {
    const signedPreKey = lib.PrivateKey.generate()
    const signedPreKeySignature = bob.identityKey.sign(signedPreKey.getPublicKey().serialize())
    const kyberKeyPair = lib.KEMKeyPair.generate()
    const kyberSignature = bob.identityKey.sign(kyberKeyPair.getPublicKey().serialize())
    const now = Date.now()
    await bob.signedPreKeys.saveSignedPreKey(
      1,
      lib.SignedPreKeyRecord.new(1, now, signedPreKey.getPublicKey(), signedPreKey, signedPreKeySignature),
    )
    await bob.kyberPreKeys.saveKyberPreKey(1, lib.KyberPreKeyRecord.new(1, now, kyberKeyPair, kyberSignature))
    return lib.PreKeyBundle.new(
      bob.registrationId,
      1,
      null,
      null,
      1,
      signedPreKey.getPublicKey(),
      signedPreKeySignature,
      bob.identityKey.getPublicKey(),
      1,
      kyberKeyPair.getPublicKey(),
      kyberSignature,
    )
  }

  function startSession(alice: Party, bob: Party, bundle: PreKeyBundle): Promise<void> {
    return lib.processPreKeyBundle(bundle, bob.address, alice.address, alice.sessions, alice.identity)
  }

  function send(from: Party, to: Party, message: Bytes): Promise<CiphertextMessage> {
    return lib.signalEncrypt(message, to.address, from.address, from.sessions, from.identity)
  }

  /** Decrypts as the receiver would off the wire: serialized bytes, parsed by message type. */
  function receive(to: Party, from: Party, message: CiphertextMessage): Promise<Bytes> {
    const bytes = message.serialize()
    if (message.type() === lib.CiphertextMessageType.PreKey) {
      return lib.signalDecryptPreKey(
        lib.PreKeySignalMessage.deserialize(bytes),
        from.address,
        to.address,
        to.sessions,
        to.identity,
        to.preKeys,
        to.signedPreKeys,
        to.kyberPreKeys,
      )
    }
    return lib.signalDecrypt(
      lib.SignalMessage.deserialize(bytes),
      from.address,
      to.address,
      to.sessions,
      to.identity,
    )
  }

  async function expectPlaintext(received: Promise<Bytes>): Promise<void> {
    if (!equalBytes(await received, MESSAGE)) throw new Error('libsignal peer: decrypted the wrong plaintext')
  }

  /** Like crypto.ts's newConversation: prekey message, then a reply, so both sides send plain messages. */
  async function newConversation(): Promise<{ alice: Party; bob: Party }> {
    const alice = newParty('alice', 1)
    const bob = newParty('bob', 2)
    await startSession(alice, bob, await publishBundle(bob))
    const first = await send(alice, bob, MESSAGE)
    if (first.type() !== lib.CiphertextMessageType.PreKey)
      throw new Error('libsignal peer: expected a prekey message')
    await expectPlaintext(receive(bob, alice, first))
    await expectPlaintext(receive(alice, bob, await send(bob, alice, MESSAGE)))
    const next = await send(alice, bob, MESSAGE)
    if (next.type() !== lib.CiphertextMessageType.Whisper)
      throw new Error('libsignal peer: expected a plain message')
    await expectPlaintext(receive(bob, alice, next))
    return { alice, bob }
  }

  async function benchOneWay(): Promise<number> {
    const { alice, bob } = await newConversation()
    return measure(
      'libsignal one-way',
      async () => {
        await receive(bob, alice, await send(alice, bob, MESSAGE))
      },
      50,
      durationMs,
    )
  }

  async function benchAlternating(): Promise<number> {
    const conversation = await newConversation()
    let sender = conversation.alice
    let receiver = conversation.bob
    return measure(
      'libsignal alternating',
      async () => {
        await receive(receiver, sender, await send(sender, receiver, MESSAGE))
        ;[sender, receiver] = [receiver, sender]
      },
      50,
      durationMs,
    )
  }

  async function benchSessionSetup(): Promise<number> {
    const alice = newParty('alice', 1)
    const bob = newParty('bob', 2)
    const bundle = await publishBundle(bob)
    return measure(
      'libsignal session setup',
      async () => {
        // A new conversation each time: no stored session on either side.
        alice.sessions = new stores.MemorySessionStore()
        bob.sessions = new stores.MemorySessionStore()
        await startSession(alice, bob, bundle)
        await receive(bob, alice, await send(alice, bob, MESSAGE))
      },
      10,
      durationMs,
    )
  }

  const oneWay = await benchOneWay()
  const alternating = await benchAlternating()
  const sessionSetup = await benchSessionSetup()
  return { oneWay, alternating, sessionSetup }
}

/**
 * libsignal's rates for the cases of bench/crypto.ts, each measured by `measure` for `durationMs`;
 * undefined (with a line on stderr) when the package is not installed or does not load.
 */
export async function measureLibsignal(
  durationMs: number,
  measure: Measure,
): Promise<LibsignalRates | undefined> {
  const lib = await loadLibsignal()
  return lib ? measureCases(lib, durationMs, measure) : undefined
}
