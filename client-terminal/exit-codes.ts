/**
 * Exit codes of the non-interactive commands, and the one-line message for each failure. Scripts
 * branch on the code; the message (on stderr) is for the person reading the log.
 *
 *   0  ok
 *   1  unexpected failure (a bug: please report it)
 *   2  usage: bad arguments or options, an invalid username, an empty message, no password given
 *   3  wrong password: the local database did not open with it (nothing was changed)
 *   4  the server refused: username taken, weak password, unknown user, rate limit, session refused,
 *      a contact who deleted their account
 *   5  network: the server could not be reached, or its certificate is not trusted
 *   6  the contact's identity key changed: compare safety numbers, then `accept-key` before sending
 *   7  local database: none for this account, more than one to choose from, damaged, foreign, from a
 *      newer version, or in use by another secure-chat process (the file is left untouched)
 *   8  `verify --confirm --number`: the number given is not the safety number with the contact
 *      (mistyped, or someone is intercepting); nothing was marked
 *   9  `remove-device`: the account has no device with that id (E2E_ERR_DEVICE_NOT_FOUND)
 *  10  `remove-device`: it is the account's last device (E2E_ERR_LAST_DEVICE): delete the account instead
 *  11  this device was removed from the account on another device (E2E_ERR_DEVICE_REMOVED): it can no
 *      longer log in; its local data can still be read, and erased
 *  12  linking did not complete: the other device's message did not open or was not a link's
 *      (E2E_ERR_LINK_FAILED), or the wait for it was given up (E2E_ERR_CANCELLED); start again
 *  13  `link`: not approved in time: the link code expired (E2E_ERR_LINK_EXPIRED, or _UNKNOWN once
 *      purged) or `--wait` ran out; or the approval's link token expired before the password was
 *      given (E2E_ERR_LINK_TOKEN_INVALID). The code is closed, start again
 *  14  linking refused: `link`, the other device refused it (E2E_ERR_LINK_REFUSED), or the code was
 *      closed on this device meanwhile (E2E_ERR_LINK_USED);
 *      `approve-link`, the answer to "Approve?" was not yes. Nothing was linked
 *  15  `approve-link`: the code is no link code, or one the server does not take: unknown
 *      (E2E_ERR_LINK_UNKNOWN), expired (E2E_ERR_LINK_EXPIRED), already used or given up
 *      (E2E_ERR_LINK_USED), claimed by another account (E2E_ERR_LINK_CLAIMED)
 */
import { isClientError } from '../shared/client/errors.js'
import { isProtocolError } from '../shared/errors.js'
import { safeText } from './safe-text.js'

export const ExitCode = {
  Ok: 0,
  Failure: 1,
  Usage: 2,
  WrongPassword: 3,
  ServerRefused: 4,
  Network: 5,
  IdentityChanged: 6,
  LocalDatabase: 7,
  SafetyNumberMismatch: 8,
  NoSuchDevice: 9,
  LastDevice: 10,
  DeviceRemoved: 11,
  LinkFailed: 12,
  LinkExpired: 13,
  LinkRefused: 14,
  LinkCodeInvalid: 15,
} as const
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode]

/** A mistake in how the command was called. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

/** A failure that already knows its exit code (e.g. "which account?" is a local-database problem). */
export class CommandError extends Error {
  override readonly name = 'CommandError'
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message)
  }
}

export function exitCodeFor(error: unknown): ExitCode {
  if (error instanceof UsageError) return ExitCode.Usage
  if (error instanceof CommandError) return error.exitCode
  if (isClientError(error)) {
    // Refusals that scripts tell apart by the server's own code, before the general "refused".
    switch (error.serverCode) {
      case 'E2E_ERR_DEVICE_NOT_FOUND':
        return ExitCode.NoSuchDevice
      case 'E2E_ERR_LAST_DEVICE':
        return ExitCode.LastDevice
      // The core reports it as "not logged in"; the server says why.
      case 'E2E_ERR_DEVICE_REMOVED':
        return ExitCode.DeviceRemoved
      // `approve-link` tells these apart itself (cli.ts): there, an expired code is a bad code.
      case 'E2E_ERR_LINK_EXPIRED':
        return ExitCode.LinkExpired
    }
    switch (error.code) {
      case 'E2E_ERR_WRONG_PASSWORD':
        return ExitCode.WrongPassword
      case 'E2E_ERR_SERVER':
      // Refused by the password policy (the core checks it now; the server did before) or by a
      // server of another version: still "refused", as scripts written before expect.
      case 'E2E_ERR_WEAK_PASSWORD':
      case 'E2E_ERR_VERSION_MISMATCH':
      case 'E2E_ERR_UNKNOWN_USER':
      case 'E2E_ERR_NOT_LOGGED_IN':
      case 'E2E_ERR_ACCOUNT_REPLACED':
      case 'E2E_ERR_ACCOUNT_DELETED':
        return ExitCode.ServerRefused
      case 'E2E_ERR_NETWORK':
        return ExitCode.Network
      case 'E2E_ERR_LINK_FAILED':
      case 'E2E_ERR_CANCELLED':
        return ExitCode.LinkFailed
      case 'E2E_ERR_IDENTITY_CHANGED':
        return ExitCode.IdentityChanged
      case 'E2E_ERR_NO_ACCOUNT':
      case 'E2E_ERR_ACCOUNT_MISMATCH':
      case 'E2E_ERR_CORRUPT_STORE':
      case 'E2E_ERR_CLIENT_STATE':
        return ExitCode.LocalDatabase
      case 'E2E_ERR_CLIENT_INPUT':
      // Sending to someone you blocked: unblock first.
      case 'E2E_ERR_CONTACT_BLOCKED':
        return ExitCode.Usage
    }
  }
  // Usernames and passwords refused by the protocol core's own checks.
  if (isProtocolError(error, 'E2E_ERR_INVALID_INPUT')) return ExitCode.Usage
  return ExitCode.Failure
}

/** The message to print: one line, never a stack, safe to print (it may quote the server). */
export function describeFailure(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  return safeText(message.replace(/\s*\n\s*/g, ' '))
}
