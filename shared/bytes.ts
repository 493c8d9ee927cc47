/**
 * Byte helpers shared by every layer: assertions in the style of noble's `abytes`, constant-time
 * comparison, the project's one binary-to-text encoding (base64url without padding), and a small
 * fixed-order reader/writer for binary formats.
 */
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'

/** Asserts a Uint8Array (optionally of an exact length); the message never echoes the bytes. */
export function assertBytes(
  value: unknown,
  length: number | undefined,
  name: string,
): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `${name}: expected Uint8Array, got ${describeValue(value)}`,
    )
  }
  if (length !== undefined && value.length !== length) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `${name}: expected ${length} bytes, got ${value.length}`,
    )
  }
}

export function assertUint32(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `${name}: expected uint32, got ${describeValue(value)}`,
    )
  }
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let length = 0
  for (const part of parts) length += part.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/**
 * Compares two byte strings in time that depends only on their lengths, never on where they
 * differ. Use for MACs, tokens and key fingerprints.
 */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number)
  return diff === 0
}

/** True when every byte is zero, in constant time (for the X25519 all-zero shared-secret check). */
export function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i] as number
  return acc === 0
}

/** Overwrites a secret buffer once it is no longer needed (best effort: JS may hold copies). */
export function wipe(bytes: Uint8Array | undefined | null): void {
  bytes?.fill(0)
}

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder('utf-8', { fatal: true })

export function utf8Encode(text: string): Uint8Array {
  return textEncoder.encode(text)
}

/** Decodes UTF-8, rejecting invalid sequences rather than replacing them. */
export function utf8Decode(bytes: Uint8Array): string {
  try {
    return textDecoder.decode(bytes)
  } catch (cause) {
    throw new ProtocolError(ProtocolErrorCode.MalformedMessage, 'expected valid UTF-8, got invalid bytes', {
      cause,
    })
  }
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const B64URL_LOOKUP = (() => {
  const table = new Int16Array(128).fill(-1)
  for (let i = 0; i < B64URL.length; i++) table[B64URL.charCodeAt(i)] = i
  return table
})()

/** RFC 4648 §5 base64url without padding: the encoding of every binary field in JSON. */
export function toBase64Url(bytes: Uint8Array): string {
  let out = ''
  let i = 0
  for (; i + 2 < bytes.length; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number)
    out += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]! + B64URL[(n >>> 6) & 63]! + B64URL[n & 63]!
  }
  const rest = bytes.length - i
  if (rest === 1) {
    const n = (bytes[i] as number) << 16
    out += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]!
  } else if (rest === 2) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8)
    out += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]! + B64URL[(n >>> 6) & 63]!
  }
  return out
}

/**
 * Strict base64url decoding: rejects padding, whitespace, characters outside the alphabet and
 * non-canonical trailing bits, so every byte string has exactly one encoding.
 */
export function fromBase64Url(text: string): Uint8Array {
  if (typeof text !== 'string') {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `expected base64url string, got ${describeValue(text)}`,
    )
  }
  const rest = text.length % 4
  if (rest === 1) {
    throw new ProtocolError(
      ProtocolErrorCode.MalformedMessage,
      `expected base64url, got a length of ${text.length}`,
    )
  }
  const out = new Uint8Array(Math.floor(text.length / 4) * 3 + (rest === 0 ? 0 : rest - 1))
  const sextet = (index: number): number => {
    const code = text.charCodeAt(index)
    const value = code < 128 ? (B64URL_LOOKUP[code] as number) : -1
    if (value < 0) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `expected base64url, got a bad character at ${index}`,
      )
    }
    return value
  }
  let o = 0
  let i = 0
  for (; i + 3 < text.length; i += 4) {
    const n = (sextet(i) << 18) | (sextet(i + 1) << 12) | (sextet(i + 2) << 6) | sextet(i + 3)
    out[o++] = n >>> 16
    out[o++] = (n >>> 8) & 255
    out[o++] = n & 255
  }
  if (rest === 2) {
    const n = (sextet(i) << 18) | (sextet(i + 1) << 12)
    if (n & 0xffff) throw nonCanonical()
    out[o++] = n >>> 16
  } else if (rest === 3) {
    const n = (sextet(i) << 18) | (sextet(i + 1) << 12) | (sextet(i + 2) << 6)
    if (n & 0xff) throw nonCanonical()
    out[o++] = n >>> 16
    out[o++] = (n >>> 8) & 255
  }
  return out
}

function nonCanonical(): ProtocolError {
  return new ProtocolError(
    ProtocolErrorCode.MalformedMessage,
    'expected canonical base64url, got stray trailing bits',
  )
}

export function toHex(bytes: Uint8Array): string {
  let out = ''
  for (const byte of bytes) out += byte.toString(16).padStart(2, '0')
  return out
}

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new ProtocolError(ProtocolErrorCode.InvalidInput, `expected hex string, got string(${hex.length})`)
  }
  const out = new Uint8Array(hex.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16)
  return out
}

/** Big-endian writer for the project's binary formats (wire envelopes, pickled state). */
export class ByteWriter {
  private buffer: Uint8Array
  private view: DataView
  private length = 0

  constructor(initialCapacity = 256) {
    this.buffer = new Uint8Array(initialCapacity)
    this.view = new DataView(this.buffer.buffer)
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.buffer.length) return
    let capacity = this.buffer.length * 2
    while (capacity < this.length + extra) capacity *= 2
    const next = new Uint8Array(capacity)
    next.set(this.buffer.subarray(0, this.length))
    this.buffer = next
    this.view = new DataView(next.buffer)
  }

  u8(value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xff) {
      throw new ProtocolError(ProtocolErrorCode.InvalidInput, `uint8 field: expected 0..255, got ${value}`)
    }
    this.reserve(1)
    this.view.setUint8(this.length, value)
    this.length += 1
    return this
  }

  u32(value: number): this {
    assertUint32(value, 'uint32 field')
    this.reserve(4)
    this.view.setUint32(this.length, value)
    this.length += 4
    return this
  }

  /** Raw bytes of a length both sides know from the format. */
  fixed(bytes: Uint8Array): this {
    this.reserve(bytes.length)
    this.buffer.set(bytes, this.length)
    this.length += bytes.length
    return this
  }

  /** Length-prefixed (uint32) bytes. */
  bytes(bytes: Uint8Array): this {
    return this.u32(bytes.length).fixed(bytes)
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.length)
  }
}

/** Big-endian reader: every read checks bounds and throws MalformedMessage on truncation. */
export class ByteReader {
  private offset = 0
  private readonly view: DataView

  constructor(
    private readonly input: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(input.buffer, input.byteOffset, input.byteLength)
  }

  private need(count: number): void {
    if (this.offset + count > this.input.length) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `${this.what}: expected ${count} more bytes at offset ${this.offset}, got ${this.input.length - this.offset}`,
      )
    }
  }

  u8(): number {
    this.need(1)
    return this.view.getUint8(this.offset++)
  }

  u32(): number {
    this.need(4)
    const value = this.view.getUint32(this.offset)
    this.offset += 4
    return value
  }

  fixed(length: number): Uint8Array {
    this.need(length)
    const out = this.input.slice(this.offset, this.offset + length)
    this.offset += length
    return out
  }

  /** Length-prefixed bytes, refusing lengths above `max` before reading them. */
  bytes(max: number): Uint8Array {
    const length = this.u32()
    if (length > max) {
      throw new ProtocolError(
        ProtocolErrorCode.TooLarge,
        `${this.what}: expected at most ${max} bytes, got ${length}`,
      )
    }
    return this.fixed(length)
  }

  /** The unread remainder. */
  rest(): Uint8Array {
    const out = this.input.slice(this.offset)
    this.offset = this.input.length
    return out
  }

  get remaining(): number {
    return this.input.length - this.offset
  }

  /** Asserts that the whole input was consumed: trailing bytes are an error, not ignored. */
  end(): void {
    if (this.offset !== this.input.length) {
      throw new ProtocolError(
        ProtocolErrorCode.MalformedMessage,
        `${this.what}: expected end of input, got ${this.input.length - this.offset} trailing bytes`,
      )
    }
  }
}
