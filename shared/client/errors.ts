/**
 * The client core's one error type, seen by both UIs. Codes are stable; a UI maps them to words.
 * Server refusals keep the server's own code in `serverCode` (e.g. E2E_ERR_USERNAME_TAKEN).
 */
export const ClientErrorCode = {
  /** The server answered with an error; `serverCode` and `status` say which. */
  Server: 'E2E_ERR_SERVER',
  /** The server could not be reached, or the connection broke mid-request. */
  Network: 'E2E_ERR_NETWORK',
  /** The local database did not open with this password. */
  WrongPassword: 'E2E_ERR_WRONG_PASSWORD',
  /** No account in this local database yet (register first). */
  NoAccount: 'E2E_ERR_NO_ACCOUNT',
  /** The local database holds an account already, or a different one than asked for. */
  AccountMismatch: 'E2E_ERR_ACCOUNT_MISMATCH',
  /** The local database is damaged or was written by another program or a newer version. */
  CorruptStore: 'E2E_ERR_CORRUPT_STORE',
  /** An operation needs a login (a session token) that is missing or no longer valid. */
  NotLoggedIn: 'E2E_ERR_NOT_LOGGED_IN',
  /**
   * This account started over on another device (its keys were replaced there): this device's keys
   * no longer belong to it. Log-ins from here cannot work; the local history can still be read.
   */
  AccountReplaced: 'E2E_ERR_ACCOUNT_REPLACED',
  /** The contact's identity key changed; the user must acknowledge it before sending more. */
  IdentityChanged: 'E2E_ERR_IDENTITY_CHANGED',
  /** The contact is blocked: unblock them before sending. */
  Blocked: 'E2E_ERR_CONTACT_BLOCKED',
  /** The named user does not exist on the server. */
  UnknownUser: 'E2E_ERR_UNKNOWN_USER',
  /**
   * The contact deleted their account (the server says so while it holds the name): the
   * conversation stays, marked, and nothing more can be sent to it.
   */
  AccountDeleted: 'E2E_ERR_ACCOUNT_DELETED',
  /** The client was asked to do something its state does not allow (e.g. send while locked). */
  InvalidState: 'E2E_ERR_CLIENT_STATE',
  /**
   * A new password breaks the policy (shared/client/password-policy.ts); the message says which
   * rule. The same code as the server's refusal of clients of the previous version.
   */
  WeakPassword: 'E2E_ERR_WEAK_PASSWORD',
  /**
   * The server takes a login secret and this client sent a password, or the other way round: one
   * of the two is older than the other and must be updated (the message says which).
   */
  VersionMismatch: 'E2E_ERR_VERSION_MISMATCH',
  /** Input from the UI was refused (empty message, message too long, bad username). */
  InvalidInput: 'E2E_ERR_CLIENT_INPUT',
  /** A wait was given up (its AbortSignal fired); nothing more happens unless it is asked again. */
  Cancelled: 'E2E_ERR_CANCELLED',
  /**
   * Linking a device cannot go on: the other device's message did not open or was not what linking
   * expects (altered or reflected on the way, or from an app of another version; `cause` says
   * which). The channel is closed; start again with a new code.
   */
  LinkFailed: 'E2E_ERR_LINK_FAILED',
} as const

export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode]

export class ClientError extends Error {
  override readonly name = 'ClientError'
  readonly code: ClientErrorCode
  readonly serverCode: string | undefined
  /** The server's own message, for showing to the user as it is (e.g. why a password is too weak). */
  readonly serverMessage: string | undefined
  readonly status: number | undefined

  constructor(
    code: ClientErrorCode,
    message: string,
    options: { cause?: unknown; serverCode?: string; serverMessage?: string; status?: number } = {},
  ) {
    super(message, { cause: options.cause })
    this.code = code
    this.serverCode = options.serverCode
    this.serverMessage = options.serverMessage
    this.status = options.status
  }

  toJSON(): { name: string; code: ClientErrorCode; serverCode?: string; message: string } {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      ...(this.serverCode ? { serverCode: this.serverCode } : {}),
    }
  }
}

export function isClientError(error: unknown, code?: ClientErrorCode): error is ClientError {
  return error instanceof ClientError && (code === undefined || error.code === code)
}
