/**
 * Usernames: what a user types is normalised (Unicode NFKC, lower-cased, surrounding white space
 * trimmed) and must then be
 * 3–32 characters of a–z, 0–9, '.', '_' or '-', beginning and ending with a letter or digit.
 * Restricting the normalised form to ASCII rules out look-alike names ("аlice" with a Cyrillic
 * а) while NFKC still maps full-width and compatibility forms ("ＡＬＩＣＥ") onto the plain name.
 * Uniqueness is on the normalised form, so it is case-insensitive.
 */
import { describeValue, ProtocolError, ProtocolErrorCode } from './errors.js'
import { USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH } from './limits.js'

export const USERNAME_PATTERN = new RegExp(
  `^[a-z0-9](?:[a-z0-9._-]{${USERNAME_MIN_LENGTH - 2},${USERNAME_MAX_LENGTH - 2}})[a-z0-9]$`,
)

/** Returns the canonical form of a username, or throws InvalidInput saying what rule it breaks. */
export function normalizeUsername(input: unknown): string {
  if (typeof input !== 'string') {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `username: expected a string, got ${describeValue(input)}`,
    )
  }
  const normalized = input.normalize('NFKC').toLowerCase().trim()
  if (normalized.length < USERNAME_MIN_LENGTH || normalized.length > USERNAME_MAX_LENGTH) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      `username: expected ${USERNAME_MIN_LENGTH}–${USERNAME_MAX_LENGTH} characters, got ${normalized.length}`,
    )
  }
  if (!USERNAME_PATTERN.test(normalized)) {
    throw new ProtocolError(
      ProtocolErrorCode.InvalidInput,
      'username: expected letters a–z, digits and . _ - (starting and ending with a letter or digit), got other characters',
    )
  }
  return normalized
}
