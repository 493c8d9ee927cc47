/**
 * A pairwise session: X3DH to start it, the Double Ratchet to run it, the envelope to carry it.
 *
 *   startSession(identity, bundle, names)             → initiator session (sends prekey messages until answered)
 *   acceptSession(identity, envelope, preKeys, names) → responder session + the first plaintext
 *   encryptMessage(session, plaintext)         → { session', envelope bytes }
 *   decryptMessage(session, envelope)          → { session', plaintext }
 *
 * All functions return new values and never modify their inputs; a failure leaves the caller's
 * session exactly as it was. Which session to use for an incoming envelope, and storing the
 * result together with the message, belong to the client core.
 *
 * Versions: a session made here is version 2 (both usernames bound into its AD, docs/protocol.md
 * §4.4) and its envelopes say so. Sessions of version 1, made before, come only from storage
 * (session-serialization.ts); they keep working, in both directions, with their 128-byte AD and
 * version-1 envelopes. A version-1 prekey message never starts a new session (OutdatedSender).
 */
import { equalBytes } from './bytes.js'
import {
  decodeEnvelope,
  ENVELOPE_VERSION,
  type Envelope,
  EnvelopeType,
  type EnvelopeVersion,
  encodeEnvelope,
  encodeEnvelopeHeader,
  type PreKeyHeader,
  UNBOUND_ENVELOPE_VERSION,
} from './codec/envelope.js'
import { ProtocolError, ProtocolErrorCode } from './errors.js'
import type { Identity, PreKeyBundle, PreKeyPair, PublicIdentity } from './identity.js'
import { defaultKeyGeneration, type KeyGeneration } from './key-generation.js'
import {
  initiatorRatchetState,
  type MessageOpener,
  type RatchetState,
  ratchetDecrypt,
  ratchetEncrypt,
  responderRatchetState,
} from './ratchet/double-ratchet.js'
import { type SessionNames, x3dhInitiate, x3dhRespond } from './x3dh.js'

export type SessionRole = 'initiator' | 'responder'
/** 2: usernames bound into AD (every session made now); 1: a session made before, from storage. */
export type SessionVersion = EnvelopeVersion

export interface Session {
  readonly role: SessionRole
  /** The version its envelopes carry, which says how its AD was made. */
  readonly version: SessionVersion
  /**
   * Version 2: initiator identityKey ‖ signingKey ‖ responder identityKey ‖ signingKey ‖ both
   * usernames, length-prefixed, initiator first. Version 1: the 128 bytes of keys alone.
   */
  readonly associatedData: Uint8Array
  readonly remoteIdentity: PublicIdentity
  /** The initiator's X3DH ephemeral key: names the key agreement this session came from. */
  readonly baseKey: Uint8Array
  /** Set on the initiator until its first successful decryption: every message repeats the X3DH header. */
  readonly pendingPreKey: PreKeyHeader | null
  readonly ratchet: RatchetState
}

/**
 * Starts a session from a peer's prekey bundle. Verifies every signature first. `names.initiator`
 * is our own username, `names.responder` the one whose bundle this is.
 */
export async function startSession(
  identity: Identity,
  bundle: PreKeyBundle,
  names: SessionNames,
  deps: KeyGeneration = defaultKeyGeneration,
): Promise<Session> {
  const agreement = await x3dhInitiate(identity, bundle, names, deps)
  return {
    role: 'initiator',
    version: ENVELOPE_VERSION,
    associatedData: agreement.associatedData,
    remoteIdentity: bundle.identity,
    baseKey: agreement.ephemeralPublicKey,
    pendingPreKey: {
      initiator: identity.public,
      ephemeralKey: agreement.ephemeralPublicKey,
      signedPreKeyId: agreement.signedPreKeyId,
      oneTimePreKeyId: agreement.oneTimePreKeyId,
    },
    ratchet: initiatorRatchetState(agreement.sharedSecret, agreement.remoteSignedPreKey),
  }
}

export interface EncryptedMessage {
  readonly session: Session
  readonly envelope: Uint8Array
}

export async function encryptMessage(
  session: Session,
  plaintext: Uint8Array,
  deps: KeyGeneration = defaultKeyGeneration,
): Promise<EncryptedMessage> {
  const preKey = session.pendingPreKey ?? undefined
  const result = await ratchetEncrypt(
    session.ratchet,
    plaintext,
    session.associatedData,
    (header) => encodeEnvelopeHeader(session.version, preKey, header),
    deps,
  )
  return {
    session: { ...session, ratchet: result.state },
    envelope: encodeEnvelope(result.headerBytes, result.ciphertext),
  }
}

export interface DecryptedMessage {
  readonly session: Session
  readonly plaintext: Uint8Array
}

/** True when a prekey envelope belongs to this session (a repeat of the X3DH it came from). */
export function envelopeMatchesSession(session: Session, envelope: Envelope): boolean {
  if (!envelope.preKey) return true
  return (
    equalBytes(envelope.preKey.ephemeralKey, session.baseKey) &&
    equalBytes(envelope.preKey.initiator.identityKey, session.remoteIdentity.identityKey)
  )
}

export async function decryptMessage(
  session: Session,
  input: Uint8Array | Envelope,
  opener?: MessageOpener,
): Promise<DecryptedMessage> {
  const envelope = input instanceof Uint8Array ? decodeEnvelope(input) : input
  if (envelope.version !== session.version) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      `expected an envelope of this session's version ${session.version}, got version ${envelope.version}`,
    )
  }
  if (!envelopeMatchesSession(session, envelope)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      'expected a prekey message for this session, got one that starts another session',
    )
  }
  const result = await ratchetDecrypt(
    session.ratchet,
    envelope.header,
    envelope.headerBytes,
    envelope.ciphertext,
    session.associatedData,
    opener,
  )
  // Any authentic message from the responder proves it has the session: stop repeating the X3DH header.
  const pendingPreKey = session.role === 'initiator' ? null : session.pendingPreKey
  return { session: { ...session, ratchet: result.state, pendingPreKey }, plaintext: result.plaintext }
}

export interface ResponderPreKeys {
  readonly signedPreKey: PreKeyPair
  /** The one-time prekey the envelope names; undefined when it names none. */
  readonly oneTimePreKey: PreKeyPair | undefined
}

export interface AcceptedSession extends DecryptedMessage {
  /** The one-time prekey this consumed: the caller deletes it once the session is stored. */
  readonly usedOneTimePreKeyId: number | undefined
}

/**
 * Throws OutdatedSender for a prekey message of version 1: accepting it would make a session
 * without the usernames bound (docs/protocol.md §4.5 says why it is refused rather than accepted).
 * Callers that look prekeys up first call this before, so the sender's version is what they report.
 */
export function refuseUnboundPreKeyMessage(envelope: Envelope): void {
  if (envelope.type === EnvelopeType.PreKeyMessage && envelope.version === UNBOUND_ENVELOPE_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.OutdatedSender,
      `expected a prekey message of version ${ENVELOPE_VERSION} (usernames bound), got version ${envelope.version}: the sender's app must be updated`,
    )
  }
}

/**
 * Creates the responder's session from a prekey envelope and decrypts its message. The caller
 * looks the prekeys up by the ids in `envelope.preKey` (see `preKeyIds`). `names.initiator` is the
 * sender's username as the server stamped the delivery, `names.responder` our own.
 */
export async function acceptSession(
  identity: Identity,
  input: Uint8Array | Envelope,
  preKeys: ResponderPreKeys,
  names: SessionNames,
): Promise<AcceptedSession> {
  const envelope = input instanceof Uint8Array ? decodeEnvelope(input) : input
  const header = envelope.preKey
  if (envelope.type !== EnvelopeType.PreKeyMessage || !header) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidState,
      'expected a prekey message to start a session, got a plain message',
    )
  }
  refuseUnboundPreKeyMessage(envelope)
  if (
    preKeys.signedPreKey.keyId !== header.signedPreKeyId ||
    preKeys.oneTimePreKey?.keyId !== header.oneTimePreKeyId
  ) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      'expected the prekeys the envelope names, got others',
    )
  }
  const agreement = await x3dhRespond(
    identity,
    preKeys.signedPreKey,
    preKeys.oneTimePreKey,
    header.initiator,
    header.ephemeralKey,
    names,
  )
  const session: Session = {
    role: 'responder',
    version: ENVELOPE_VERSION,
    associatedData: agreement.associatedData,
    remoteIdentity: header.initiator,
    baseKey: header.ephemeralKey,
    pendingPreKey: null,
    ratchet: responderRatchetState(agreement.sharedSecret, preKeys.signedPreKey.keyPair),
  }
  const decrypted = await decryptMessage(session, envelope)
  return { ...decrypted, usedOneTimePreKeyId: header.oneTimePreKeyId }
}
