/**
 * WebSocket framing for what the relay sends (RFC 6455 §5.2): unfragmented, unmasked (server to
 * client), uncompressed text frames, several of them encoded into one buffer so that one socket
 * write carries a whole turn's output for a connection.
 */

import type { OutgoingFrame } from './frames.js'

const FIN_TEXT = 0x81

function headerLength(payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10
}

/**
 * Encodes `frames` (each a JSON text of ASCII characters only, as frames.ts makes them, as a string
 * or as its bytes) as consecutive text frames in one buffer. ASCII lets a string's length be its
 * byte length and its copy be a plain one (latin1), skipping a UTF-8 scan and encode per frame.
 */
export function encodeTextFrames(frames: readonly OutgoingFrame[]): Buffer {
  let total = 0
  for (let i = 0; i < frames.length; i++) {
    const length = frames[i]!.length
    total += headerLength(length) + length
  }
  const out = Buffer.allocUnsafe(total)
  let offset = 0
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]!
    const length = frame.length
    out[offset++] = FIN_TEXT
    if (length < 126) {
      out[offset++] = length
    } else if (length < 0x10000) {
      out[offset++] = 126
      out.writeUInt16BE(length, offset)
      offset += 2
    } else {
      out[offset++] = 127
      out.writeUInt32BE(0, offset)
      out.writeUInt32BE(length, offset + 4)
      offset += 8
    }
    if (typeof frame === 'string') {
      offset += out.write(frame, offset, length, 'latin1')
    } else {
      out.set(frame, offset)
      offset += length
    }
  }
  return out
}
