/**
 * Accounts: POST /register, POST /reinstall, POST /login, POST /login/challenge, POST /logout,
 * POST /account/delete.
 *
 * Registration verifies everything the client sends before storing any of it: username rules, the
 * password policy, the RSA login key (3072-bit, e = 65537), the identity signature and every prekey
 * signature; then stores user and keys in one transaction.
 *
 * Login answers an unknown user exactly like a wrong password (same code, same bcrypt work), limits
 * failures as auth/login-limiter.ts describes, and returns a fresh token encrypted to the user's
 * login key. POST /login/challenge gives a device the proof that it holds that key.
 * Older tokens stay valid until they expire or are logged out (up to MAX_TOKENS_PER_USER per user).
 *
 * Deleting an account takes the session token and the password proof /login takes, checked by the
 * same `authenticate` (with the strict limit of reinstall); then everything keyed by the user goes
 * in one transaction (db/users.ts deleteAccount) and the name is held for DELETED_USERNAME_HOLD_MS.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { fromBase64Url, toBase64Url } from '../../shared/bytes.js'
import {
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
import {
  checkPasswordPolicy,
  dummyPasswordHash,
  hashPassword,
  passwordHashCost,
  verifyPassword,
} from '../auth/password.js'
import { hashSessionToken, newSessionToken } from '../auth/tokens.js'
import type { ServerContext } from '../context.js'
import type { UserRow } from '../db/schema.js'
import { deleteToken, insertToken } from '../db/tokens.js'
import {
  createAccount,
  deleteAccount,
  findUserByUsername,
  isUsernameHeld,
  replaceAccountKeys,
  updatePasswordHash,
  usernameExists,
} from '../db/users.js'
import { ServerError, ServerErrorCode, serverErrors } from '../errors.js'
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
   * Proves a password for /login and /reinstall alike: failed attempts are limited as
   * auth/login-limiter.ts describes (a valid device proof, login only, skips the limits meant for
   * strangers), and an unknown or invalid name costs the same bcrypt work and gets the same answer
   * as a wrong password, so neither timing nor codes reveal who is registered.
   */
  async function authenticate(
    input: string,
    password: string,
    request: FastifyRequest,
    kind: 'login' | 'reinstall' | 'delete',
    deviceProof?: string,
  ): Promise<UserRow> {
    let username: string | undefined
    try {
      username = parseUsername(input)
    } catch {
      username = undefined
    }
    // Invalid names cannot exist; they still count against the address and their own key.
    const account = username ?? `invalid:${input}`
    const knownDevice =
      username !== undefined &&
      deviceProof !== undefined &&
      context.deviceProofs.verify(username, fromBase64Url(deviceProof))
    const attempt = { account, address: addressKey(request.ip), kind, knownDevice }
    const decision = loginLimiter.attempt(attempt)
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
    const matches = await verifyPassword(
      password,
      user?.password_hash ?? (await dummyPasswordHash(bcryptCost)),
    )
    if (!user || !matches) throw serverErrors.invalidCredentials()
    loginLimiter.succeeded(attempt)
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
      if (await usernameExists(db, username)) throw serverErrors.usernameTaken()
      if (await isUsernameHeld(db, username, now())) throw serverErrors.usernameHeld()
      await checkPasswordPolicy(body.password, [username, body.username])
      const { identity, signedPreKey, oneTimePreKeys, loginKey } = await verifiedKeys(body)

      const passwordHash = await hashPassword(body.password, bcryptCost)
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
   * Starting over on a new device (the old one lost or wiped): the password proves the account,
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
      const user = await authenticate(body.username, body.password, request, 'reinstall')
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
      const { password, deviceProof } = request.body
      const user = await authenticate(request.body.username, password, request, 'login', deviceProof)

      if (passwordHashCost(user.password_hash) < bcryptCost) {
        await updatePasswordHash(db, user.id, await hashPassword(password, bcryptCost))
      }

      const token = newSessionToken()
      const issuedAt = now()
      const expiresAt = issuedAt + limits.tokenLifetimeMs
      const encryptedToken = await rsaOaepEncrypt(await importRsaOaepPublicKey(user.login_key), token)
      const revoked = await insertToken(
        db,
        { tokenHash: hashSessionToken(token), userId: user.id, now: issuedAt, expiresAt },
        limits.maxTokensPerUser,
      )
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
      const loginKey = await importRsaOaepPublicKey(user?.login_key ?? (await unknownLoginKey()))
      const proof = context.deviceProofs.issue(username ?? '')
      const challenge = await rsaOaepEncrypt(loginKey, proof)
      proof.fill(0)
      return { challenge: toBase64Url(challenge) }
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
   * proves its password as /login does, through the same `authenticate`: a stolen token alone
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
      const { username, password } = request.body
      if (parseUsername(username) !== session.username) {
        throw serverErrors.badRequest(
          "username: expected this session's own username (the account to delete), got another",
        )
      }
      const user = await authenticate(username, password, request, 'delete')
      // The name proved the password; it must also be the token's account (it is: names are unique).
      if (user.id !== session.userId) throw serverErrors.invalidCredentials()
      await deleteAccount(db, user.id, { heldUntil: now() + DELETED_USERNAME_HOLD_MS })
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
  await verifySignedPreKey(identity.signingKey, signedPreKey)
  await Promise.all(oneTimePreKeys.map((preKey) => verifyOneTimePreKey(identity.signingKey, preKey)))
  return { identity, signedPreKey, oneTimePreKeys, loginKey }
}
