/**
 * The one error type of the protocol boundary. Every failure that shared/ reports carries a stable
 * `code` that callers branch on (never the message text), and a message of the form
 * "expected X, got Y". Messages never contain key material, tokens or plaintext.
 */
export const ProtocolErrorCode = {
  /** An argument had the wrong type or length (a programming error or hostile input). */
  InvalidInput: 'E2E_ERR_INVALID_INPUT',
  /** Bytes or JSON from the network did not match the expected schema or encoding. */
  MalformedMessage: 'E2E_ERR_MALFORMED_MESSAGE',
  /** A wire or storage format carried a version this code does not speak. */
  UnsupportedVersion: 'E2E_ERR_UNSUPPORTED_VERSION',
  /** A public key was rejected (low-order X25519 point, all-zero shared secret, bad encoding). */
  InvalidKey: 'E2E_ERR_INVALID_KEY',
  /** An Ed25519 signature over a key or bundle did not verify. */
  BadSignature: 'E2E_ERR_BAD_SIGNATURE',
  /** AEAD authentication failed: the ciphertext, header or associated data was altered. */
  DecryptionFailed: 'E2E_ERR_DECRYPTION_FAILED',
  /** A message whose key was already used (or never existed) arrived again. */
  DuplicateMessage: 'E2E_ERR_DUPLICATE_MESSAGE',
  /** A message asked to skip more message keys than the limits allow. */
  TooManySkippedMessages: 'E2E_ERR_TOO_MANY_SKIPPED',
  /**
   * A group message came on a sender-key chain the receiver does not hold (its distribution never
   * arrived, or the chain was rotated out): the receiver asks the sender for its sender key again.
   */
  NoSenderKey: 'E2E_ERR_NO_SENDER_KEY',
  /** Input exceeded a named size limit. */
  TooLarge: 'E2E_ERR_TOO_LARGE',
  /** The platform lacks a required primitive and no fallback exists. */
  Unsupported: 'E2E_ERR_UNSUPPORTED',
  /** A session was used in a way its state does not allow (e.g. receiving before it exists). */
  InvalidState: 'E2E_ERR_INVALID_STATE',
  /**
   * A prekey message of envelope version 1 would start a session: its sender's app predates the
   * usernames bound into the key agreement (docs/protocol.md §4.5) and must be updated.
   */
  OutdatedSender: 'E2E_ERR_OUTDATED_SENDER',
} as const

export type ProtocolErrorCode = (typeof ProtocolErrorCode)[keyof typeof ProtocolErrorCode]

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError'
  readonly code: ProtocolErrorCode

  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }

  toJSON(): { name: string; code: ProtocolErrorCode; message: string } {
    return { name: this.name, code: this.code, message: this.message }
  }
}

/** Type guard in the style of libsignal's `ErrorCode` checks: `isProtocolError(e, 'E2E_ERR_…')`. */
export function isProtocolError(error: unknown, code?: ProtocolErrorCode): error is ProtocolError {
  return error instanceof ProtocolError && (code === undefined || error.code === code)
}

/** Describes a value for "expected X, got Y" messages without echoing its contents. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (value instanceof Uint8Array) return `${value.constructor.name}(${value.length})`
  if (Array.isArray(value)) return `array(${value.length})`
  if (typeof value === 'string') return `string(${value.length})`
  return typeof value
}
