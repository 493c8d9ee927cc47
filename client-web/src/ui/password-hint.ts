/**
 * An early warning, while the user types, that a password is easy to guess. The client core decides
 * on submit (zxcvbn with its common-password lists, shared/client/password-policy.ts, loaded only
 * then: too large for every page load); this catches only the obvious cases so the user hears
 * about them while typing, and says nothing otherwise.
 */
import { PASSWORD_MIN_LENGTH } from '../../../shared/limits.js'

/**
 * Passwords at the top of every leaked-password list, and words people build them from. A
 * password containing one of these is what attackers try first.
 */
const COMMON_FRAGMENTS = [
  'password',
  'passw0rd',
  'qwerty',
  'azerty',
  'asdfgh',
  '123456',
  '654321',
  '111111',
  'abc123',
  'abcdef',
  'letmein',
  'welcome',
  'iloveyou',
  'admin',
  'secret',
  'monkey',
  'dragon',
  'sunshine',
  'princess',
  'football',
]

/** Fewer distinct characters than this, in a password of any length, is a repetition. */
const MIN_DISTINCT_CHARACTERS = 5

/** Why `password` is easy to guess, or undefined when nothing obvious is wrong with it. */
export function guessableReason(password: string, username: string): string | undefined {
  const lower = password.toLowerCase()
  const name = username.trim().toLowerCase()
  if (lower === '') return undefined
  if (name.length >= 3 && lower.includes(name)) return 'it contains your username.'
  const common = COMMON_FRAGMENTS.find((fragment) => lower.includes(fragment))
  if (common) return `it contains “${common}”, one of the most common passwords.`
  // Judged on a full-length password only: before that, the length line says what is missing.
  if ([...password].length < PASSWORD_MIN_LENGTH) return undefined
  if (/^\d+$/.test(password)) return 'it is only digits.'
  if (new Set(password).size < MIN_DISTINCT_CHARACTERS) return 'it repeats a few characters.'
  return undefined
}
