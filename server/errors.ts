/**
 * The server's one error type. Every failure a client can see leaves as
 * `{ error: { code, message } }` with a stable `E2E_ERR_*` code from the table below (clients
 * branch on the code, never on the text) and a message of the form "expected X, got Y".
 * Messages never carry passwords, tokens, key bytes or message bodies.
 */
import { ProtocolErrorCode } from '../shared/errors.js'

export const ServerErrorCode = {
  /** The request did not match its schema (missing field, wrong type, bad base64url, too long). */
  BadRequest: 'E2E_ERR_BAD_REQUEST',
  /** The body was not valid JSON, or had another content type than application/json. */
  MalformedBody: 'E2E_ERR_MALFORMED_BODY',
  /** The body exceeded the server's bodyLimit, or a WebSocket frame exceeded MAX_FRAME_BYTES. */
  TooLarge: ProtocolErrorCode.TooLarge,
  /** The username breaks the rules of shared/username.ts. */
  InvalidUsername: 'E2E_ERR_INVALID_USERNAME',
  /**
   * The password is too short, too long or too easy to guess. Sent by this server only to clients of
   * the previous version; today the client core checks the policy (the server never sees passwords).
   */
  WeakPassword: 'E2E_ERR_WEAK_PASSWORD',
  /**
   * The client sent a password where this server takes a login secret (a client of the previous
   * version registering, or logging in to an account already upgraded): it must be updated.
   */
  ClientOutdated: 'E2E_ERR_CLIENT_OUTDATED',
  /**
   * The account still proves itself with its password (made before login secrets): send the
   * password once more together with the login secret, and the server switches it over.
   */
  CredentialUpgrade: 'E2E_ERR_CREDENTIAL_UPGRADE',
  /** The normalised username is already registered (uniqueness is case-insensitive). */
  UsernameTaken: 'E2E_ERR_USERNAME_TAKEN',
  /**
   * Registration or reinstall: another account already holds this identity key or this signing key
   * (one code for both). Refused so that nobody can pass someone else's keys off under their name.
   */
  IdentityKeyTaken: 'E2E_ERR_IDENTITY_KEY_TAKEN',
  /** A signature over the identity key or a prekey did not verify. */
  BadSignature: ProtocolErrorCode.BadSignature,
  /** A public key was rejected (e.g. an RSA key that is not 3072-bit with e = 65537). */
  InvalidKey: ProtocolErrorCode.InvalidKey,
  /** Two prekeys in a request share an id, or an id is already stored for this user. */
  PreKeyIdConflict: 'E2E_ERR_PREKEY_ID_CONFLICT',
  /** Storing the uploaded one-time prekeys would exceed the per-user cap. */
  TooManyPreKeys: 'E2E_ERR_TOO_MANY_PREKEYS',
  /** Wrong password or unknown user: deliberately one code for both. */
  InvalidCredentials: 'E2E_ERR_INVALID_CREDENTIALS',
  /**
   * Too many failed logins from this address, for this account from this address, from this
   * device, or for this account (a short wait for unknown devices; reinstall refused).
   */
  TooManyAttempts: 'E2E_ERR_TOO_MANY_ATTEMPTS',
  /** Too many requests to a rate-limited route, or too many relay sends or frames (retry later). */
  RateLimited: 'E2E_ERR_RATE_LIMITED',
  /**
   * No bearer token, or one that is malformed, unknown, revoked or expired; on the relay also a
   * first frame that is not `auth`, no `auth` within AUTH_TIMEOUT_MS, or the session ending (logout).
   */
  Unauthenticated: 'E2E_ERR_UNAUTHENTICATED',
  /**
   * The named account was deleted by its owner and its name is held (DELETED_USERNAME_HOLD_MS): on
   * the relay a send's recipient (the frame carries the id), on REST a key or identity lookup.
   * Clients mark the conversation and stop sending.
   */
  AccountDeleted: 'E2E_ERR_ACCOUNT_DELETED',
  /** The named user does not exist (on the relay: a send's recipient; the frame carries the id). */
  UserNotFound: 'E2E_ERR_USER_NOT_FOUND',
  /** No route for this method and path. */
  NotFound: 'E2E_ERR_NOT_FOUND',
  /**
   * Relay: a WebSocket frame that is not JSON, not a known frame, fails its schema (including any
   * claimed sender: frames are closed objects), is binary, or comes at the wrong time.
   */
  BadFrame: 'E2E_ERR_BAD_FRAME',
  /** Relay: the recipient's queue is at its message or byte limit; retry later. Carries the id. */
  QueueFull: 'E2E_ERR_QUEUE_FULL',
  /**
   * Relay: the recipient's queue holds as many undelivered messages (or bytes) from this sender as
   * one sender may have there (its share); retry once the recipient has drained some. Carries the id.
   */
  QueueShareFull: 'E2E_ERR_QUEUE_SHARE_FULL',
  /** Relay: this user already has the most connections allowed; the oldest one was closed. */
  TooManyConnections: 'E2E_ERR_TOO_MANY_CONNECTIONS',
  /** Relay: this connection watches the most users allowed; the names beyond it were ignored. */
  TooManySubscriptions: 'E2E_ERR_TOO_MANY_SUBSCRIPTIONS',
  /** The user keeps the most relations allowed (presence grants and blocks): the new one was not stored. */
  TooManyRelations: 'E2E_ERR_TOO_MANY_RELATIONS',
  /** Provisioning: no channel has this id (never opened, or expired and purged since). */
  LinkUnknown: 'E2E_ERR_LINK_UNKNOWN',
  /** Provisioning: the channel's time ran out (PROVISIONING_CHANNEL_TTL_MS): the link code expired. */
  LinkExpired: 'E2E_ERR_LINK_EXPIRED',
  /** Provisioning: either side closed the channel: the link code was used. */
  LinkUsed: 'E2E_ERR_LINK_USED',
  LinkRefused: 'E2E_ERR_LINK_REFUSED',
  /** Provisioning: a device of another account claimed the channel first. */
  LinkClaimed: 'E2E_ERR_LINK_CLAIMED',
  /** Provisioning: the channel carried as many messages as one may (MAX_PROVISIONING_MESSAGES_PER_CHANNEL). */
  TooManyLinkMessages: 'E2E_ERR_TOO_MANY_LINK_MESSAGES',
  /** Provisioning: this address has MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS channels open already. */
  TooManyLinks: 'E2E_ERR_TOO_MANY_LINKS',
  /**
   * A session token of a device removed from its account (from another device): 401, and the
   * device's sockets close with it. The device says it was removed and offers to erase its data.
   */
  DeviceRemoved: 'E2E_ERR_DEVICE_REMOVED',
  /** No such device in this account (or one already removed): DELETE /devices/:id, PUT …/name. */
  DeviceNotFound: 'E2E_ERR_DEVICE_NOT_FOUND',
  /** The account has the most devices allowed (MAX_DEVICES_PER_ACCOUNT): remove one to link another. */
  TooManyDevices: 'E2E_ERR_TOO_MANY_DEVICES',
  /** Removing this device would leave the account with none: delete the account instead. */
  LastDevice: 'E2E_ERR_LAST_DEVICE',
  /** A link token that is unknown, expired or already used (one code for the three). */
  LinkTokenInvalid: 'E2E_ERR_LINK_TOKEN_INVALID',
  /** Anything unexpected; details go to the server log only. */
  Internal: 'E2E_ERR_INTERNAL',
} as const

export type ServerErrorCode = (typeof ServerErrorCode)[keyof typeof ServerErrorCode]

export class ServerError extends Error {
  override readonly name = 'ServerError'
  readonly code: ServerErrorCode
  readonly statusCode: number
  /** Seconds until a retry may succeed (sent as Retry-After with 429). */
  readonly retryAfterSeconds: number | undefined

  constructor(
    code: ServerErrorCode,
    statusCode: number,
    message: string,
    options?: { cause?: unknown; retryAfterSeconds?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.statusCode = statusCode
    this.retryAfterSeconds = options?.retryAfterSeconds
  }

  toJSON(): { code: ServerErrorCode; message: string } {
    return { code: this.code, message: this.message }
  }
}

export function isServerError(error: unknown, code?: ServerErrorCode): error is ServerError {
  return error instanceof ServerError && (code === undefined || error.code === code)
}

/** The one place that pairs codes with statuses for the common cases. */
export const serverErrors = {
  badRequest: (message: string) => new ServerError(ServerErrorCode.BadRequest, 400, message),
  unauthenticated: (message: string) => new ServerError(ServerErrorCode.Unauthenticated, 401, message),
  invalidCredentials: () =>
    new ServerError(
      ServerErrorCode.InvalidCredentials,
      401,
      'expected a registered username and its password, got a combination that does not match',
    ),
  clientOutdated: () =>
    new ServerError(
      ServerErrorCode.ClientOutdated,
      400,
      'expected a login secret derived from the password, got the password itself: this client is older than the server, update secure-chat',
    ),
  credentialUpgrade: () =>
    new ServerError(
      ServerErrorCode.CredentialUpgrade,
      409,
      'expected the password once more with the login secret: this account was made before login secrets and switches over now',
    ),
  userNotFound: () =>
    new ServerError(ServerErrorCode.UserNotFound, 404, 'expected a registered username, got an unknown one'),
  accountDeleted: () =>
    new ServerError(
      ServerErrorCode.AccountDeleted,
      410,
      'expected a registered username, got the name of an account its owner deleted',
    ),
  /**
   * A session token of an account that was deleted (db/tokens.ts tokenEnding): 401, as for any
   * session that is no more, with the code that says why; a contact's lookup of a deleted account
   * answers 410 with the same code, and clients tell the two apart by the status.
   */
  sessionOfDeletedAccount: () =>
    new ServerError(
      ServerErrorCode.AccountDeleted,
      401,
      'expected a live session, got one of an account that was deleted (on this device or another)',
    ),
  usernameHeld: () =>
    new ServerError(
      ServerErrorCode.UsernameTaken,
      409,
      'expected an unused username, got the name of a deleted account, held so that nobody can take it over',
    ),
  usernameTaken: () =>
    new ServerError(
      ServerErrorCode.UsernameTaken,
      409,
      'expected an unused username, got one already registered',
    ),
  identityKeyTaken: () =>
    new ServerError(
      ServerErrorCode.IdentityKeyTaken,
      409,
      'expected an identity key and a signing key no other account holds, got a key another account registered',
    ),
  preKeyIdConflict: (message: string) => new ServerError(ServerErrorCode.PreKeyIdConflict, 409, message),
  sessionOfRemovedDevice: () =>
    new ServerError(
      ServerErrorCode.DeviceRemoved,
      401,
      'expected a live session, got one of a device removed from its account (from another of its devices)',
    ),
  /** /login for a device removed from the account: it cannot come back, only be linked anew. */
  removedDevice: () =>
    new ServerError(
      ServerErrorCode.DeviceRemoved,
      401,
      'expected a device of the account, got one that was removed from it: link this device again',
    ),
  deviceNotFound: () =>
    new ServerError(
      ServerErrorCode.DeviceNotFound,
      404,
      "expected one of this account's devices, got an id it has not (or no longer has)",
    ),
  linkTokenInvalid: () =>
    new ServerError(
      ServerErrorCode.LinkTokenInvalid,
      401,
      'expected a link token from a device of the account, got one that is unknown, expired or already used',
    ),
  internal: () =>
    new ServerError(ServerErrorCode.Internal, 500, 'expected to handle the request, got an internal error'),
}
