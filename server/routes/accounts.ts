/**
 * Accounts: POST /register, POST /reinstall, POST /login, POST /login/challenge,
 * POST /account/password, POST /account/delete, POST /logout.
 *
 * The server never sees a password from today's clients: they send a login secret derived from it
 * (shared/login-secret.ts), which the server stores as a bcrypt hash; the password policy runs on
 * the client. Registration verifies everything the client sends before storing any of it: username
 * rules, the login secret's form, the RSA login key (3072-bit, e = 65537), the identity signature and every prekey
 * signature; then stores user and keys in one transaction.
 *
 * Login answers an unknown user exactly like a wrong password (same code, same bcrypt work), limits
 * failures as auth/login-limiter.ts describes, and returns a fresh token encrypted to the user's
 * login key. POST /login/challenge gives a device the proof that it holds that key.
 * Older tokens stay valid until they expire or are logged out (up to MAX_TOKENS_PER_DEVICE per user).
 *
 * Deleting an account takes the session token and the password proof /login takes, checked by the
 * same `authenticate` (with the strict limit of reinstall); then everything keyed by the user goes
 * in one transaction (db/users.ts deleteAccount) and the name is held for DELETED_USERNAME_HOLD_MS.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { fromBase64Url, toBase64Url } from '../../shared/bytes.js'
import {
  ChangePasswordRequest,
  ChangePasswordResponse,
  DeleteAccountRequest,
  LoginChallengeRequest,
  LoginChallengeResponse,
  LoginRequest,
  LoginResponse,
  RegisterRequest,
  RegisterResponse,
} from '../../shared/codec/api.js'
import { preKeyFromJson, publicIdentityFromJson } from '../../shared/codec/keys.js'
import { Type } from '../../shared/codec/schema.js'
import {
  generateRsaOaepKeyPair,
  importRsaOaepPublicKey,
  rsaOaepEncrypt,
} from '../../shared/crypto/primitives.js'
import { verifyOneTimePreKey, verifyPublicIdentity, verifySignedPreKey } from '../../shared/identity.js'
import { dummyPasswordHash, hashPassword, passwordHashCost, verifyPassword } from '../auth/password.js'
import { hashSessionToken, newSessionToken } from '../auth/tokens.js'
import type { ServerContext } from '../context.js'
import { findDevice, PRIMARY_DEVICE_ID, touchDevice, wasRemoved } from '../db/devices.js'
import type { UserRow } from '../db/schema.js'
import { deleteOtherTokens, deleteToken, insertToken } from '../db/tokens.js'
import {
  createAccount,
  deleteAccount,
  findUserByUsername,
  isUsernameHeld,
  replaceAccountKeys,
  setLoginSecretHash,
  updatePasswordHash,
  usernameExists,
} from '../db/users.js'
import { isServerError, ServerError, ServerErrorCode, serverErrors } from '../errors.js'
import { DELETED_USERNAME_HOLD_MS } from '../limits.js'
import { requireSession, sessionOf } from '../plugins/auth.js'
import { addressKey } from '../plugins/client-address.js'
import { assertDistinctKeyIds, errorResponses, parseUsername } from './common.js'

/** How a refusal names what was counted (never whether the account exists). */
const LIMIT_SCOPES = {
  address: 'from this address',
  'account-address': 'for this account from this address',
  account: 'for this account',
  device: 'from this device',
} as const

export const accountRoutes: FastifyPluginAsyncTypebox<ServerContext> = async (app, context) => {
  const { db, now, bcryptCost, limits, loginLimiter } = context

  /**
   * Proves a credential for /login, /reinstall and a password change alike: failed attempts are
   * limited as auth/login-limiter.ts describes (a valid device proof, login only, skips the limits
   * meant for strangers), and an unknown or invalid name costs the same bcrypt work and gets the
   * same answer as a wrong secret, so neither timing nor codes reveal who is registered.
   *
   * The credential is the login secret, except for an account made before login secrets
   * (`credential` 'password'): a client of the previous version proves it with the password, as
   * before; today's client is asked once for the password beside the secret, and after that check
   * the account switches to the secret for good (docs/protocol.md §4.1).
   */
  async function authenticate(
    input: string,
    credential: { loginSecret?: string | undefined; password?: string | undefined },
    request: FastifyRequest,
    kind: 'login' | 'reinstall' | 'delete',
    options: { deviceProof?: string | undefined; knownDevice?: boolean } = {},
  ): Promise<UserRow> {
    try {
      return await verifyCredential(input, credential, request, kind, options)
    } catch (error) {
      // By stable code only (a fixed set): never the name tried, which may be a password typed
      // into the wrong field, nor whether the account exists (both are INVALID_CREDENTIALS).
      context.metrics.loginFailed(kind, isServerError(error) ? error.code : ServerErrorCode.Internal)
      throw error
    }
  }

  async function verifyCredential(
    input: string,
    credential: { loginSecret?: string | undefined; password?: string | undefined },
    request: FastifyRequest,
    kind: 'login' | 'reinstall' | 'delete',
    options: { deviceProof?: string | undefined; knownDevice?: boolean } = {},
  ): Promise<UserRow> {
    if (credential.loginSecret === undefined && credential.password === undefined) {
      throw serverErrors.badRequest('expected a loginSecret, got neither it nor a password')
    }
    let username: string | undefined
    try {
      username = parseUsername(input)
    } catch {
      username = undefined
    }
    // Invalid names cannot exist; they still count against the address and their own key.
    const account = username ?? `invalid:${input}`
    const knownDevice =
      options.knownDevice === true ||
      (username !== undefined &&
        options.deviceProof !== undefined &&
        context.deviceProofs.verify(username, fromBase64Url(options.deviceProof)))
    const attempt = { account, address: addressKey(request.ip), kind, knownDevice }
    const decision = await loginLimiter.attempt(attempt)
    if (!decision.allowed) {
      const retryAfterSeconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000))
      throw new ServerError(
        ServerErrorCode.TooManyAttempts,
        429,
        `expected fewer failed logins ${LIMIT_SCOPES[decision.scope]}, got too many; retry in ${retryAfterSeconds} s`,
        { retryAfterSeconds },
      )
    }
    const user = username === undefined ? undefined : await findUserByUsername(db, username)
    if (user?.credential === 'login-secret-v1' && credential.loginSecret === undefined) {
      await loginLimiter.released(attempt)
      throw serverErrors.clientOutdated()
    }
    if (user?.credential === 'password' && credential.password === undefined) {
      await loginLimiter.released(attempt)
      throw serverErrors.credentialUpgrade()
    }
    const presented =
      user?.credential === 'password' ? credential.password : (credential.loginSecret ?? credential.password)
    const matches = await verifyPassword(
      presented ?? '',
      user?.password_hash ?? (await dummyPasswordHash(bcryptCost)),
    )
    if (!user || !matches) throw serverErrors.invalidCredentials()
    await loginLimiter.succeeded(attempt)
    if (user.credential === 'password' && credential.loginSecret !== undefined) {
      const passwordHash = await hashPassword(credential.loginSecret, bcryptCost)
      await setLoginSecretHash(db, user.id, passwordHash)
      request.log.info(
        { event: 'credential-upgrade', userId: user.id },
        'account switched to its login secret',
      )
      return { ...user, credential: 'login-secret-v1', password_hash: passwordHash }
    }
    return user
  }

  /**
   * Unknown names get a challenge encrypted to a key nobody holds, after the same import and
   * encryption work, so the answer does not tell who is registered. Made once, when first needed
   * rather than at start (an RSA key pair takes a few hundred ms, and most servers never need it):
   * only that first answer is slower.
   */
  let dummyLoginKey: Promise<Uint8Array> | undefined
  const unknownLoginKey = () => {
    dummyLoginKey ??= generateRsaOaepKeyPair().then((pair) => pair.publicKeySpki)
    return dummyLoginKey
  }

  // Made before the first login, so even the first unknown-user attempt costs the usual time.
  app.addHook('onReady', async () => {
    await dummyPasswordHash(bcryptCost)
  })

  app.post(
    '/register',
    {
      schema: { body: RegisterRequest, response: { 201: RegisterResponse, ...errorResponses } },
      config: {
        rateLimit: { max: limits.registerRateLimit.max, timeWindow: limits.registerRateLimit.timeWindowMs },
      },
    },
    async (request, reply) => {
      const body = request.body
      const username = parseUsername(body.username)
      // Cheap refusals first; the unique index still decides a race (createAccount maps it to 409).
      // The password policy ran on the client (shared/client/password-policy.ts): the server only
      // ever sees the login secret, whose form the schema checked.
      if (body.loginSecret === undefined) throw serverErrors.clientOutdated()
      if (await usernameExists(db, username)) throw serverErrors.usernameTaken()
      if (await isUsernameHeld(db, username, now())) throw serverErrors.usernameHeld()
      const { identity, signedPreKey, oneTimePreKeys, loginKey } = await verifiedKeys(body)

      const passwordHash = await hashPassword(body.loginSecret, bcryptCost)
      await createAccount(db, {
        username,
        passwordHash,
        loginKey,
        identity,
        signedPreKey,
        oneTimePreKeys,
        now: now(),
      })
      request.log.info({ event: 'register' }, 'account created')
      return reply.code(201).send({ username })
    },
  )

  /**
   * Starting over on a new device (the old one lost or wiped): the login secret proves the account,
   * and new keys replace the old ones. Counted like a login (same limits, same answer for unknown
   * users). Every peer watching the user learns at once that the identity changed; the others learn
   * it when they next fetch the user's keys, and their client core warns before sending.
   */
  app.post(
    '/reinstall',
    {
      schema: { body: RegisterRequest, response: { 200: RegisterResponse, ...errorResponses } },
      config: {
        rateLimit: { max: limits.registerRateLimit.max, timeWindow: limits.registerRateLimit.timeWindowMs },
      },
    },
    async (request) => {
      const body = request.body
      const user = await authenticate(body.username, body, request, 'reinstall')
      const keys = await verifiedKeys(body)
      await replaceAccountKeys(db, user.id, { ...keys, now: now() })
      context.relay.identityChanged(user.id, user.username)
      request.log.info({ event: 'reinstall', userId: user.id }, 'identity replaced')
      return { username: user.username }
    },
  )

  app.post(
    '/login',
    {
      schema: { body: LoginRequest, response: { 200: LoginResponse, ...errorResponses } },
      config: {
        rateLimit: { max: limits.loginRateLimit.max, timeWindow: limits.loginRateLimit.timeWindowMs },
      },
    },
    async (request) => {
      const { loginSecret, password, deviceProof } = request.body
      const user = await authenticate(request.body.username, { loginSecret, password }, request, 'login', {
        deviceProof,
      })

      if (passwordHashCost(user.password_hash) < bcryptCost) {
        const presented = user.credential === 'password' ? password : loginSecret
        if (presented !== undefined) {
          await updatePasswordHash(db, user.id, await hashPassword(presented, bcryptCost))
        }
      }

      // The device logging in (1 unless it says): the token is its own, encrypted to its login key.
      const address = { userId: user.id, deviceId: request.body.device ?? PRIMARY_DEVICE_ID }
      const device = await findDevice(db, address)
      if (!device) {
        if (await wasRemoved(db, address)) throw serverErrors.removedDevice()
        throw serverErrors.invalidCredentials()
      }
      const token = newSessionToken()
      const issuedAt = now()
      const expiresAt = issuedAt + limits.tokenLifetimeMs
      const encryptedToken = await rsaOaepEncrypt(await importRsaOaepPublicKey(device.login_key), token)
      const revoked = await insertToken(
        db,
        { tokenHash: hashSessionToken(token), device: address, now: issuedAt, expiresAt },
        limits.maxTokensPerDevice,
      )
      await touchDevice(db, address, issuedAt)
      token.fill(0)
      // Relay sockets opened with a token this log-in pushed out end with it, as after a logout.
      for (const tokenHash of revoked) context.relay.sessionRevoked(user.id, tokenHash)
      request.log.info({ event: 'login', userId: user.id }, 'session issued')
      return { username: user.username, encryptedToken: toBase64Url(encryptedToken), expiresAt }
    },
  )

  /**
   * A device proof for this name, encrypted to its registered login key: only the device holding
   * the private key can read it and send it with /login (auth/device-proof.ts).
   */
  app.post(
    '/login/challenge',
    {
      schema: { body: LoginChallengeRequest, response: { 200: LoginChallengeResponse, ...errorResponses } },
      config: {
        rateLimit: { max: limits.loginRateLimit.max, timeWindow: limits.loginRateLimit.timeWindowMs },
      },
    },
    async (request) => {
      let username: string | undefined
      try {
        username = parseUsername(request.body.username)
      } catch {
        username = undefined
      }
      const user = username === undefined ? undefined : await findUserByUsername(db, username)
      const device =
        user &&
        (await findDevice(db, { userId: user.id, deviceId: request.body.device ?? PRIMARY_DEVICE_ID }))
      const loginKey = await importRsaOaepPublicKey(device?.login_key ?? (await unknownLoginKey()))
      const proof = context.deviceProofs.issue(username ?? '')
      const challenge = await rsaOaepEncrypt(loginKey, proof)
      proof.fill(0)
      return { challenge: toBase64Url(challenge) }
    },
  )

  /**
   * A password change: the client proves the current credential (as for /login; a session token
   * alone is not enough, so a stolen token cannot lock the owner out) and sends the login secret of
   * the new password. With `endOtherSessions`, every other session of the account ends (their
   * sockets close); this one stays.
   */
  app.post(
    '/account/password',
    {
      schema: { body: ChangePasswordRequest, response: { 200: ChangePasswordResponse, ...errorResponses } },
      onRequest: requireSession(context),
      config: {
        rateLimit: { max: limits.loginRateLimit.max, timeWindow: limits.loginRateLimit.timeWindowMs },
      },
    },
    async (request) => {
      const { userId, username, tokenHash } = sessionOf(request)
      const { loginSecret, password, newLoginSecret, endOtherSessions } = request.body
      // The token shows this is one of the account's devices: its failures are its own.
      const user = await authenticate(username, { loginSecret, password }, request, 'login', {
        knownDevice: true,
      })
      if (user.id !== userId) throw serverErrors.invalidCredentials()
      await setLoginSecretHash(db, user.id, await hashPassword(newLoginSecret, bcryptCost))
      const ended = endOtherSessions ? await deleteOtherTokens(db, user.id, tokenHash) : []
      for (const hash of ended) context.relay.sessionRevoked(user.id, hash)
      request.log.info({ event: 'password-change', userId: user.id }, 'login secret replaced')
      return { endedSessions: ended.length }
    },
  )

  app.post(
    '/logout',
    {
      schema: { response: { 204: Type.Null(), ...errorResponses } },
      onRequest: requireSession(context),
    },
    async (request, reply) => {
      const { userId, tokenHash } = sessionOf(request)
      await deleteToken(db, tokenHash)
      // Relay sockets opened with this token end with it.
      context.relay.sessionRevoked(userId, tokenHash)
      return reply.code(204).send(null)
    },
  )

  /**
   * Deletes the session's own account. The body names it (the confirmation the user typed) and
   * proves it with the login secret as /login does (the password beside it only for the credential
   * upgrade), through the same `authenticate`: a stolen token alone
   * cannot delete an account, and guesses meet the strict per-account limit of reinstall. Then
   * everything keyed by the user goes at once, the name is held, every socket of the user closes
   * and everyone watching the user hears of it.
   */
  app.post(
    '/account/delete',
    {
      schema: { body: DeleteAccountRequest, response: { 204: Type.Null(), ...errorResponses } },
      onRequest: requireSession(context),
      config: {
        rateLimit: { max: limits.loginRateLimit.max, timeWindow: limits.loginRateLimit.timeWindowMs },
      },
    },
    async (request, reply) => {
      const session = sessionOf(request)
      const { username, loginSecret, password } = request.body
      if (parseUsername(username) !== session.username) {
        throw serverErrors.badRequest(
          "username: expected this session's own username (the account to delete), got another",
        )
      }
      const user = await authenticate(username, { loginSecret, password }, request, 'delete')
      // The name proved the credential; it must also be the token's account (it is: names are unique).
      if (user.id !== session.userId) throw serverErrors.invalidCredentials()
      await deleteAccount(db, user.id, {
        heldUntil: now() + DELETED_USERNAME_HOLD_MS,
        relationsKey: context.relationsKey,
      })
      context.relay.accountDeleted(user.id, user.username)
      request.log.info({ event: 'account-deleted' }, 'account deleted')
      return reply.code(204).send(null)
    },
  )
}

/** Every key a registration or reinstall carries, checked: RSA size and exponent, every signature. */
async function verifiedKeys(body: RegisterRequest) {
  const identity = publicIdentityFromJson(body.identity)
  const signedPreKey = preKeyFromJson(body.signedPreKey)
  const oneTimePreKeys = body.oneTimePreKeys.map(preKeyFromJson)
  const loginKey = fromBase64Url(body.loginKey)
  assertDistinctKeyIds(oneTimePreKeys, 'one-time prekeys')
  await importRsaOaepPublicKey(loginKey)
  await verifyPublicIdentity(identity)
  // A registration (or a reinstall) carries the keys of the account's first device.
  await verifySignedPreKey(identity.signingKey, PRIMARY_DEVICE_ID, signedPreKey)
  await Promise.all(
    oneTimePreKeys.map((preKey) => verifyOneTimePreKey(identity.signingKey, PRIMARY_DEVICE_ID, preKey)),
  )
  return { identity, signedPreKey, oneTimePreKeys, loginKey }
}
