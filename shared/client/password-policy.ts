/**
 * The password policy, run by the client core for both UIs: the server never sees a password
 * (it gets the login secret, shared/login-secret.ts), so it cannot be the one to refuse a weak one.
 *
 * OWASP ASVS 5, V6.2: at least 12 characters and at most 256, counted in Unicode code points after
 * NFKC normalisation (so the same passphrase typed on different keyboards matches, as NIST SP
 * 800-63B asks); no composition rules; common and easily guessed passwords refused by zxcvbn-ts
 * (score below 3, with the username as a known input).
 *
 * zxcvbn's dictionaries are large (about 400 kB of JavaScript): they are imported only when a
 * password is first checked, so the PWA loads them with the registration form's first use, not on
 * every page load (Vite puts a dynamic import in a chunk of its own).
 */
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../limits.js'
import { ClientError, ClientErrorCode } from './errors.js'

/** zxcvbn scores 0–4; a new password needs at least this ("safely unguessable: moderate protection"). */
export const MIN_PASSWORD_SCORE = 3

type Estimator = (password: string, userInputs: readonly string[]) => number

let estimator: Promise<Estimator> | undefined

function loadEstimator(): Promise<Estimator> {
  estimator ??= Promise.all([import('@zxcvbn-ts/core'), import('@zxcvbn-ts/language-common')]).then(
    ([core, common]) => {
      const factory = new core.ZxcvbnFactory({
        dictionary: { ...common.dictionary },
        graphs: common.adjacencyGraphs,
        maxLength: PASSWORD_MAX_LENGTH,
      })
      return (password, userInputs) => factory.check(password, [...userInputs]).score
    },
  )
  // A failed load (a PWA chunk that did not arrive) is tried again next time.
  estimator.catch(() => {
    estimator = undefined
  })
  return estimator
}

/** zxcvbn's score (0–4) for `password`, penalising words from `userInputs` (e.g. the username). */
export async function passwordScore(password: string, userInputs: readonly string[]): Promise<number> {
  return (await loadEstimator())(password.normalize('NFKC'), userInputs)
}

function weak(message: string): ClientError {
  return new ClientError(ClientErrorCode.WeakPassword, message)
}

/** Throws ClientError(WeakPassword), saying which rule, unless `password` meets the policy above. */
export async function checkPasswordPolicy(password: string, userInputs: readonly string[]): Promise<void> {
  const normalized = password.normalize('NFKC')
  const length = [...normalized].length
  if (length < PASSWORD_MIN_LENGTH) {
    throw weak(`password: expected at least ${PASSWORD_MIN_LENGTH} characters, got ${length}`)
  }
  if (length > PASSWORD_MAX_LENGTH) {
    throw weak(`password: expected at most ${PASSWORD_MAX_LENGTH} characters, got ${length}`)
  }
  const score = await passwordScore(normalized, userInputs)
  if (score < MIN_PASSWORD_SCORE) {
    throw weak(
      `password: expected one that is hard to guess (strength ${MIN_PASSWORD_SCORE} of 4 or more), got strength ${score}; avoid common passwords, names, dates, repeats and keyboard patterns, or use a few random words`,
    )
  }
}
