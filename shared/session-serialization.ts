/**
 * Versioned bytes for sessions and session records, for the clients' stores (which seal them at
 * rest; these bytes hold secrets). Fields in a fixed order; integers big-endian; optional fields
 * behind a 0/1 byte.
 *
 *   record v1  = version(1) = 1 ‖ hasCurrent(u8) ‖ archivedCount(u8)
 *                ‖ (length(u32) ‖ session)*   current first when present, then archived, newest first
 *
 *   session v3 = as v2, except that after the role come the session's version and a sized AD:
 *                version(1) = 3 ‖ role(1) ‖ sessionVersion(1: 1 or 2) ‖ adLength(u8) ‖ associatedData
 *                ‖ … (v2 from the remote identity on). sessionVersion 2 binds both usernames into
 *                the AD (130 + their lengths bytes); 1 is a session made before (128 bytes), which
 *                is what formats 1 and 2 always hold
 *   session v2 = as v1, except that our ratchet key is opt(private key(32) ‖ public key(32)), so
 *                loading a session rebuilds no public key (v1 kept only the private half)
 *   session v1 = version(1) ‖ role(1: 1 initiator, 2 responder) ‖ associatedData(128)
 *     ‖ remote identityKey(32) ‖ signingKey(32) ‖ identitySignature(64) ‖ baseKey(32)
 *     ‖ opt(pending prekey header: identityKey(32) ‖ signingKey(32) ‖ identitySignature(64)
 *           ‖ ephemeralKey(32) ‖ signedPreKeyId(u32) ‖ hasOneTimePreKey(u8) ‖ oneTimePreKeyId(u32))
 *     ‖ rootKey(32) ‖ opt(our ratchet private key(32)) ‖ opt(sendingChainKey(32))
 *     ‖ sendingIndex(u32) ‖ previousSendingLength(u32)
 *     ‖ opt(theirRatchetKey(32)) ‖ opt(receivingChainKey(32)) ‖ receivingIndex(u32)
 *     ‖ retiredCount(u8) ‖ retired keys(32 each)
 *     ‖ skippedCount(u32) ‖ skipped entries (ratchetKey(32) ‖ index(u32) ‖ seed(32))
 */
import { assertBytes, ByteReader, ByteWriter, concatBytes } from './bytes.js'
import type { PreKeyHeader } from './codec/envelope.js'
import { exportPrivateKeyBytes, x25519KeyPairFromPrivateBytes } from './crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from './errors.js'
import type { PublicIdentity } from './identity.js'
import {
  MAX_ARCHIVED_SESSIONS,
  MAX_SKIPPED_MESSAGE_KEYS,
  USERNAME_MAX_LENGTH,
  USERNAME_MIN_LENGTH,
} from './limits.js'
import { MAX_RETIRED_RATCHET_KEYS, type SkippedMessageKey, skippedKeyId } from './ratchet/double-ratchet.js'
import type { Session } from './session.js'
import type { SessionRecord } from './session-record.js'
import { IDENTITY_AD_BYTES } from './x3dh.js'

/** The session format this code writes; it reads this one and versions 1 and 2. */
export const SESSION_SERIALIZATION_VERSION = 3
/** The shortest and longest AD of a session of version 2: the keys, two length bytes, two names. */
const BOUND_AD_MIN_BYTES = IDENTITY_AD_BYTES + 2 + 2 * USERNAME_MIN_LENGTH
const BOUND_AD_MAX_BYTES = IDENTITY_AD_BYTES + 2 + 2 * USERNAME_MAX_LENGTH
export const SESSION_RECORD_SERIALIZATION_VERSION = 1
/** The longest serialized session: the fixed fields (under 700 bytes) and every skipped key. */
const MAX_SESSION_BYTES = 1024 + (MAX_RETIRED_RATCHET_KEYS + 1) * 32 + MAX_SKIPPED_MESSAGE_KEYS * 68

function writeIdentity(writer: ByteWriter, identity: PublicIdentity): void {
  writer.fixed(identity.identityKey).fixed(identity.signingKey).fixed(identity.identitySignature)
}

function readIdentity(reader: ByteReader): PublicIdentity {
  return { identityKey: reader.fixed(32), signingKey: reader.fixed(32), identitySignature: reader.fixed(64) }
}

function writeOptional(writer: ByteWriter, bytes: Uint8Array | null): void {
  if (bytes === null) writer.u8(0)
  else writer.u8(1).fixed(bytes)
}

function readFlag(reader: ByteReader): boolean {
  const flag = reader.u8()
  if (flag > 1)
    throw new ProtocolError(ProtocolErrorCode.MalformedMessage, `session: expected flag 0 or 1, got ${flag}`)
  return flag === 1
}

function readOptional(reader: ByteReader, length: number): Uint8Array | null {
  return readFlag(reader) ? reader.fixed(length) : null
}

/**
 * Sessions are immutable values (every change makes a new object), so the bytes of one never
 * change: a record's archived sessions, unchanged by most messages, are serialized (and their keys
 * exported) once, not for every message.
 */
const serialized = new WeakMap<Session, Uint8Array>()

export async function serializeSession(session: Session): Promise<Uint8Array> {
  const known = serialized.get(session)
  if (known) return known
  const bytes = await encodeSession(session)
  serialized.set(session, bytes)
  return bytes
}

async function encodeSession(session: Session): Promise<Uint8Array> {
  const { ratchet } = session
  const ourRatchetKey = ratchet.ourRatchetKey
    ? concatBytes(
        await exportPrivateKeyBytes(ratchet.ourRatchetKey.privateKey),
        ratchet.ourRatchetKey.publicKey,
      )
    : null
  const writer = new ByteWriter(1024 + ratchet.skippedKeys.size * 68)
  writer.u8(SESSION_SERIALIZATION_VERSION).u8(session.role === 'initiator' ? 1 : 2)
  writer.u8(session.version).u8(session.associatedData.length).fixed(session.associatedData)
  writeIdentity(writer, session.remoteIdentity)
  writer.fixed(session.baseKey)
  const pending = session.pendingPreKey
  if (pending) {
    writer.u8(1)
    writeIdentity(writer, pending.initiator)
    writer
      .fixed(pending.ephemeralKey)
      .u32(pending.signedPreKeyId)
      .u8(pending.oneTimePreKeyId === undefined ? 0 : 1)
      .u32(pending.oneTimePreKeyId ?? 0)
  } else {
    writer.u8(0)
  }
  writer.fixed(ratchet.rootKey)
  writeOptional(writer, ourRatchetKey)
  writeOptional(writer, ratchet.sendingChainKey)
  writer.u32(ratchet.sendingIndex).u32(ratchet.previousSendingLength)
  writeOptional(writer, ratchet.theirRatchetKey)
  writeOptional(writer, ratchet.receivingChainKey)
  writer.u32(ratchet.receivingIndex)
  writer.u8(ratchet.retiredRatchetKeys.length)
  for (const key of ratchet.retiredRatchetKeys) writer.fixed(key)
  writer.u32(ratchet.skippedKeys.size)
  for (const entry of ratchet.skippedKeys.values())
    writer.fixed(entry.ratchetKey).u32(entry.index).fixed(entry.seed)
  return writer.finish()
}

export async function deserializeSession(bytes: Uint8Array): Promise<Session> {
  assertBytes(bytes, undefined, 'session')
  const reader = new ByteReader(bytes, 'session')
  const session = await readSession(reader)
  reader.end()
  return session
}

async function readSession(reader: ByteReader): Promise<Session> {
  const version = reader.u8()
  if (version !== 1 && version !== 2 && version !== SESSION_SERIALIZATION_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `session: expected version 1, 2 or ${SESSION_SERIALIZATION_VERSION}, got ${version}`,
    )
  }
  const roleByte = reader.u8()
  if (roleByte !== 1 && roleByte !== 2) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session: expected role 1 or 2, got ${roleByte}`,
    )
  }
  // Formats 1 and 2 predate bound usernames: every session they hold is of version 1.
  const sessionVersion = version < 3 ? 1 : reader.u8()
  if (sessionVersion !== 1 && sessionVersion !== 2) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session: expected session version 1 or 2, got ${sessionVersion}`,
    )
  }
  const adLength = version < 3 ? IDENTITY_AD_BYTES : reader.u8()
  const adFits =
    sessionVersion === 1
      ? adLength === IDENTITY_AD_BYTES
      : adLength >= BOUND_AD_MIN_BYTES && adLength <= BOUND_AD_MAX_BYTES
  if (!adFits) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session: expected an associated data length that fits session version ${sessionVersion}, got ${adLength}`,
    )
  }
  const associatedData = reader.fixed(adLength)
  const remoteIdentity = readIdentity(reader)
  const baseKey = reader.fixed(32)
  let pendingPreKey: PreKeyHeader | null = null
  if (readFlag(reader)) {
    const initiator = readIdentity(reader)
    const ephemeralKey = reader.fixed(32)
    const signedPreKeyId = reader.u32()
    const hasOneTimePreKey = readFlag(reader)
    const oneTimePreKeyId = reader.u32()
    if (!hasOneTimePreKey && oneTimePreKeyId !== 0) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `session: expected one-time prekey id 0 without the flag, got ${oneTimePreKeyId}`,
      )
    }
    pendingPreKey = {
      initiator,
      ephemeralKey,
      signedPreKeyId,
      oneTimePreKeyId: hasOneTimePreKey ? oneTimePreKeyId : undefined,
    }
  }
  const rootKey = reader.fixed(32)
  const ourRatchetKey = readOptional(reader, version === 1 ? 32 : 64)
  const sendingChainKey = readOptional(reader, 32)
  const sendingIndex = reader.u32()
  const previousSendingLength = reader.u32()
  const theirRatchetKey = readOptional(reader, 32)
  const receivingChainKey = readOptional(reader, 32)
  const receivingIndex = reader.u32()
  const retiredCount = reader.u8()
  if (retiredCount > MAX_RETIRED_RATCHET_KEYS) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session: expected at most ${MAX_RETIRED_RATCHET_KEYS} retired keys, got ${retiredCount}`,
    )
  }
  const retiredRatchetKeys = Array.from({ length: retiredCount }, () => reader.fixed(32))
  const skippedCount = reader.u32()
  if (skippedCount > MAX_SKIPPED_MESSAGE_KEYS) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session: expected at most ${MAX_SKIPPED_MESSAGE_KEYS} skipped keys, got ${skippedCount}`,
    )
  }
  const skippedKeys = new Map<string, SkippedMessageKey>()
  for (let i = 0; i < skippedCount; i++) {
    const entry: SkippedMessageKey = {
      ratchetKey: reader.fixed(32),
      index: reader.u32(),
      seed: reader.fixed(32),
    }
    skippedKeys.set(skippedKeyId(entry.ratchetKey, entry.index), entry)
  }
  return {
    role: roleByte === 1 ? 'initiator' : 'responder',
    version: sessionVersion,
    associatedData,
    remoteIdentity,
    baseKey,
    pendingPreKey,
    ratchet: {
      rootKey,
      ourRatchetKey: ourRatchetKey
        ? await x25519KeyPairFromPrivateBytes(
            ourRatchetKey.subarray(0, 32),
            { extractable: true },
            version === 1 ? undefined : ourRatchetKey.subarray(32),
          )
        : null,
      sendingChainKey,
      sendingIndex,
      previousSendingLength,
      theirRatchetKey,
      receivingChainKey,
      receivingIndex,
      skippedKeys,
      retiredRatchetKeys,
    },
  }
}

export async function serializeSessionRecord(record: SessionRecord): Promise<Uint8Array> {
  const sessions = record.current ? [record.current, ...record.archived] : [...record.archived]
  const encoded = await Promise.all(sessions.map(serializeSession))
  const writer = new ByteWriter(3 + encoded.reduce((total, bytes) => total + 4 + bytes.length, 0))
  writer
    .u8(SESSION_RECORD_SERIALIZATION_VERSION)
    .u8(record.current ? 1 : 0)
    .u8(record.archived.length)
  for (const bytes of encoded) writer.bytes(bytes)
  return writer.finish()
}

export async function deserializeSessionRecord(bytes: Uint8Array): Promise<SessionRecord> {
  assertBytes(bytes, undefined, 'session record')
  const reader = new ByteReader(bytes, 'session record')
  const version = reader.u8()
  if (version !== SESSION_RECORD_SERIALIZATION_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `session record: expected version ${SESSION_RECORD_SERIALIZATION_VERSION}, got ${version}`,
    )
  }
  const hasCurrent = readFlag(reader)
  const archivedCount = reader.u8()
  if (archivedCount > MAX_ARCHIVED_SESSIONS) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session record: expected at most ${MAX_ARCHIVED_SESSIONS} archived sessions, got ${archivedCount}`,
    )
  }
  const sessions: Session[] = []
  for (let i = 0; i < archivedCount + (hasCurrent ? 1 : 0); i++) {
    const bytes = reader.bytes(MAX_SESSION_BYTES)
    const inner = new ByteReader(bytes, 'session')
    const session = await readSession(inner)
    inner.end()
    // Written again as read, unless it was an older format (which is written as the current one).
    if (bytes[0] === SESSION_SERIALIZATION_VERSION) serialized.set(session, bytes)
    sessions.push(session)
  }
  reader.end()
  return hasCurrent
    ? { current: sessions[0]!, archived: sessions.slice(1) }
    : { current: null, archived: sessions }
}
