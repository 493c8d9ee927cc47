/**
 * Message ids, chosen by the sender (docs/protocol.md §13.2): MESSAGE_ID_BYTES bytes, the first six
 * the time of writing in milliseconds since the Unix epoch (big-endian, as in UUIDv7), the other
 * ten random. Eighty random bits keep ids unique without coordination even within a millisecond;
 * the time in front makes a sender's ids increase, so the server's idempotency index on
 * (id, sender) grows at its end instead of at a random place for every message. The time is no
 * secret from anyone who sees the id: the server stamps its own time on every message anyway.
 */
import { randomBytes } from './crypto/primitives.js'
import { MESSAGE_ID_BYTES } from './limits.js'

/** Bytes of the timestamp at the front of a message id (48 bits: good until the year 10889). */
export const MESSAGE_ID_TIME_BYTES = 6

export function newMessageId(now: number): Uint8Array {
  const id = randomBytes(MESSAGE_ID_BYTES)
  let time = Math.max(0, Math.floor(now))
  for (let index = MESSAGE_ID_TIME_BYTES - 1; index >= 0; index--) {
    id[index] = time % 256
    time = Math.floor(time / 256)
  }
  return id
}
