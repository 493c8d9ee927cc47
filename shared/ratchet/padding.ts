/**
 * Plaintext padding (ISO/IEC 7816-4, as Signal does): a 0x80 byte, then zeros up to the next
 * multiple of PADDING_BLOCK_BYTES, so ciphertext lengths reveal only a size class.
 */
import { ProtocolError, ProtocolErrorCode } from '../errors.js'
import { MAX_PLAINTEXT_BYTES, PADDING_BLOCK_BYTES } from '../limits.js'

export function pad(plaintext: Uint8Array): Uint8Array {
  if (plaintext.length > MAX_PLAINTEXT_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `plaintext: expected at most ${MAX_PLAINTEXT_BYTES} bytes, got ${plaintext.length}`,
    )
  }
  const padded = new Uint8Array(Math.ceil((plaintext.length + 1) / PADDING_BLOCK_BYTES) * PADDING_BLOCK_BYTES)
  padded.set(plaintext)
  padded[plaintext.length] = 0x80
  return padded
}

export function unpad(padded: Uint8Array): Uint8Array {
  if (padded.length === 0 || padded.length % PADDING_BLOCK_BYTES !== 0) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `padding: expected a multiple of ${PADDING_BLOCK_BYTES} bytes, got ${padded.length}`,
    )
  }
  let end = padded.length - 1
  while (end >= 0 && padded[end] === 0) end--
  if (end < 0 || padded[end] !== 0x80 || padded.length - end > PADDING_BLOCK_BYTES) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      'padding: expected 0x80 then zeros, got another pattern',
    )
  }
  if (end > MAX_PLAINTEXT_BYTES) {
    // A conforming sender never pads more than MAX_PLAINTEXT_BYTES; refuse what it could not send.
    throw new ProtocolError(
      ProtocolErrorCode.TooLarge,
      `plaintext: expected at most ${MAX_PLAINTEXT_BYTES} bytes, got ${end}`,
    )
  }
  return padded.slice(0, end)
}
