/**
 * Versioned bytes for a session, for the clients' stores (which seal them at rest; these bytes
 * hold secrets). Fields in a fixed order; integers big-endian; optional fields behind a 0/1 byte.
 *
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
import { assertBytes, ByteReader, ByteWriter } from './bytes.js'
import type { PreKeyHeader } from './codec/envelope.js'
import { exportPrivateKeyBytes, x25519KeyPairFromPrivateBytes } from './crypto/primitives.js'
import { ProtocolError, ProtocolErrorCode } from './errors.js'
import type { PublicIdentity } from './identity.js'
import { MAX_SKIPPED_MESSAGE_KEYS } from './limits.js'
import { MAX_RETIRED_RATCHET_KEYS, type SkippedMessageKey, skippedKeyId } from './ratchet/double-ratchet.js'
import type { Session } from './session.js'

export const SESSION_SERIALIZATION_VERSION = 1

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

export async function serializeSession(session: Session): Promise<Uint8Array> {
  const { ratchet } = session
  const ourPrivate = ratchet.ourRatchetKey
    ? await exportPrivateKeyBytes(ratchet.ourRatchetKey.privateKey)
    : null
  const writer = new ByteWriter(1024 + ratchet.skippedKeys.size * 68)
  writer.u8(SESSION_SERIALIZATION_VERSION).u8(session.role === 'initiator' ? 1 : 2)
  writer.fixed(session.associatedData)
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
  writeOptional(writer, ourPrivate)
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
  const version = reader.u8()
  if (version !== SESSION_SERIALIZATION_VERSION) {
    throw new ProtocolError(
      ProtocolErrorCode.UnsupportedVersion,
      `session: expected version ${SESSION_SERIALIZATION_VERSION}, got ${version}`,
    )
  }
  const roleByte = reader.u8()
  if (roleByte !== 1 && roleByte !== 2) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `session: expected role 1 or 2, got ${roleByte}`,
    )
  }
  const associatedData = reader.fixed(128)
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
  const ourPrivate = readOptional(reader, 32)
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
  reader.end()
  return {
    role: roleByte === 1 ? 'initiator' : 'responder',
    associatedData,
    remoteIdentity,
    baseKey,
    pendingPreKey,
    ratchet: {
      rootKey,
      ourRatchetKey: ourPrivate
        ? await x25519KeyPairFromPrivateBytes(ourPrivate, { extractable: true })
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
