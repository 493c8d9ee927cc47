/**
 * Session records: everything we hold for one remote address, as libsignal keeps it
 * (rust/protocol/src/state/session.rs, session_cipher.rs). A record has the current session, used
 * for sending, and up to MAX_ARCHIVED_SESSIONS earlier ones, newest first, kept so that a message
 * sent on any of them still decrypts:
 *
 *   - Two people who start at the same moment each make a session as initiator and then accept
 *     the other's prekey message. Both keep both sessions; whichever decrypted last becomes the one
 *     they send on, and the other side still holds it, so they converge with nothing lost.
 *   - A new prekey message archives the current session instead of replacing it.
 *   - Decryption tries the current session, then each archived one, each on a copy (the functions in
 *     session.ts never modify their input), and promotes the one that decrypts.
 *
 * Pure functions over immutable values, like session.ts. What this module does not know: which
 * prekeys we hold (the caller passes `accept`), storage, sealing, contacts or sockets.
 */
import { equalBytes } from './bytes.js'
import type { Envelope } from './codec/envelope.js'
import { isProtocolError, ProtocolError, ProtocolErrorCode } from './errors.js'
import { MAX_ARCHIVED_SESSIONS } from './limits.js'
import type { MessageOpener } from './ratchet/double-ratchet.js'
import { type AcceptedSession, type DecryptedMessage, decryptMessage, type Session } from './session.js'

export interface SessionRecord {
  /** The session we send on; null when we have none (never talked, or it was dropped). */
  readonly current: Session | null
  /** Earlier sessions, newest first, at most MAX_ARCHIVED_SESSIONS. */
  readonly archived: readonly Session[]
}

export const EMPTY_SESSION_RECORD: SessionRecord = { current: null, archived: [] }

/** The record with `session` as its current one; the previous current one is archived. */
export function promoteSession(record: SessionRecord, session: Session): SessionRecord {
  const archived = record.current ? [record.current, ...record.archived] : [...record.archived]
  return { current: session, archived: archived.slice(0, MAX_ARCHIVED_SESSIONS) }
}

/** The record with its current session archived: the next send starts a new session. */
export function archiveCurrentSession(record: SessionRecord): SessionRecord {
  if (!record.current) return record
  return {
    current: null,
    archived: [record.current, ...record.archived].slice(0, MAX_ARCHIVED_SESSIONS),
  }
}

/** The record with only the sessions that `keep` accepts (e.g. those on a newly trusted identity). */
export function filterSessions(record: SessionRecord, keep: (session: Session) => boolean): SessionRecord {
  return {
    current: record.current && keep(record.current) ? record.current : null,
    archived: record.archived.filter(keep),
  }
}

/** Every session of a record, current first. */
export function allSessions(record: SessionRecord): Session[] {
  return record.current ? [record.current, ...record.archived] : [...record.archived]
}

/** The record after `session`, which was `previous` in it, advanced: promoted to current. */
function replaceAndPromote(record: SessionRecord, previous: Session, session: Session): SessionRecord {
  if (record.current === previous) return { current: session, archived: record.archived }
  const archived = record.archived.filter((candidate) => candidate !== previous)
  return promoteSession({ current: record.current, archived }, session)
}

function matchesPreKey(session: Session, envelope: Envelope): boolean {
  const preKey = envelope.preKey
  return (
    preKey !== undefined &&
    equalBytes(preKey.ephemeralKey, session.baseKey) &&
    equalBytes(preKey.initiator.identityKey, session.remoteIdentity.identityKey)
  )
}

export interface RecordDecryption extends DecryptedMessage {
  /** The record to store: the session that decrypted is now current. */
  readonly record: SessionRecord
  /** Set when this message started a new session: the one-time prekey it consumed, if any. */
  readonly usedOneTimePreKeyId: number | undefined
  /** True when the message started a new session (the caller deletes the one-time prekey). */
  readonly newSession: boolean
}

/**
 * Decrypts an envelope with whichever session of the record it belongs to. A prekey message whose
 * key agreement the record already has (the initiator repeats the X3DH header until it hears back)
 * goes to that session; any other prekey message starts a new session through `accept`, and the
 * current one is archived. A plain message is tried on the current session, then on each archived
 * one. `opener` opens each message's AES-GCM (see shared/open-ahead.ts). Throws the current session's error when nothing decrypts (DecryptionFailed when there is
 * no session at all); a DuplicateMessage from any session ends the search, since that session
 * recognised the message as one it already opened.
 */
export async function decryptWithRecord(
  record: SessionRecord,
  envelope: Envelope,
  accept: (envelope: Envelope) => Promise<AcceptedSession>,
  opener?: MessageOpener,
): Promise<RecordDecryption> {
  if (envelope.preKey) {
    const known = allSessions(record).find((session) => matchesPreKey(session, envelope))
    if (!known) {
      const accepted = await accept(envelope)
      return {
        session: accepted.session,
        plaintext: accepted.plaintext,
        record: promoteSession(record, accepted.session),
        usedOneTimePreKeyId: accepted.usedOneTimePreKeyId,
        newSession: true,
      }
    }
    const decrypted = await decryptMessage(known, envelope, opener)
    return {
      ...decrypted,
      record: replaceAndPromote(record, known, decrypted.session),
      usedOneTimePreKeyId: undefined,
      newSession: false,
    }
  }
  let firstError: unknown
  for (const session of allSessions(record)) {
    try {
      const decrypted = await decryptMessage(session, envelope, opener)
      return {
        ...decrypted,
        record: replaceAndPromote(record, session, decrypted.session),
        usedOneTimePreKeyId: undefined,
        newSession: false,
      }
    } catch (error) {
      if (isProtocolError(error, ProtocolErrorCode.DuplicateMessage)) throw error
      if (!isProtocolError(error)) throw error
      firstError ??= error
    }
  }
  throw (
    firstError ??
    new ProtocolError(
      ProtocolErrorCode.DecryptionFailed,
      'expected a message for a session we hold, got one for none',
    )
  )
}
