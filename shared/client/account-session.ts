/**
 * The account's session with the server: the token (which only this device can read, since the
 * server encrypts it to our RSA login key), whether it is still valid, logging in and out, and
 * every REST request made with it. A request the server refuses as unauthenticated forgets the
 * token and tells the owner (`onRefused`), which stops the relay link.
 *
 * What it does not know: the relay, messages, contacts.
 */
import { DEFAULT_DEVICE_ID } from '../address.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import { LoginChallengeResponse, LoginResponse } from '../codec/api.js'
import { decode } from '../codec/schema.js'
import { rsaOaepDecrypt } from '../crypto/primitives.js'
import { type AccountSecrets, ownDeviceId } from './account.js'
import { ClientError, ClientErrorCode, isClientError } from './errors.js'
import type { SealedStore } from './sealed-store.js'
import { errorFromResponse, type HttpClient } from './transport.js'

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'

/**
 * A server of the previous version refuses a request with a login secret in it as invalid (its
 * schema wants a password): VersionMismatch, saying which side must be updated.
 */
export function olderServer(error: unknown): ClientError | undefined {
  if (
    isClientError(error) &&
    error.serverCode === 'E2E_ERR_BAD_REQUEST' &&
    /'password'|loginSecret|additional properties/.test(error.serverMessage ?? '')
  ) {
    return new ClientError(
      ClientErrorCode.VersionMismatch,
      'expected a server that takes login secrets, got one of an older version that wants the password itself: the server must be updated (this client never sends the password)',
      { cause: error, serverCode: error.serverCode, status: error.status ?? 400 },
    )
  }
  return undefined
}

export class AccountSession {
  private readonly http: HttpClient
  private readonly records: SealedStore
  private readonly loginKey: CryptoKey
  private readonly now: () => number
  /** The server refused the token (it was forgotten already). */
  onRefused: (error: ClientError) => void = () => {}
  /** The token whose refusal was last told (concurrent requests with it are refused alike). */
  private refusedToken: string | undefined

  /** The login secret of a password for this account (shared/login-secret.ts). */
  readonly loginSecretOf: (password: string) => Promise<string>

  constructor(
    http: HttpClient,
    records: SealedStore,
    loginKey: CryptoKey,
    now: () => number,
    loginSecretOf: (password: string) => Promise<string>,
  ) {
    this.http = http
    this.records = records
    this.loginKey = loginKey
    this.now = now
    this.loginSecretOf = loginSecretOf
  }

  private get secrets(): AccountSecrets {
    return this.records.account.secrets
  }

  private get username(): string {
    return this.records.account.username
  }

  /**
   * `device` for /login and /login/challenge: said only by a linked device, so that device 1 logs
   * in as it always has (a server from before devices refuses the field).
   */
  private deviceField(): { device?: number } {
    const deviceId = ownDeviceId(this.secrets)
    return deviceId === DEFAULT_DEVICE_ID ? {} : { device: deviceId }
  }

  get loggedIn(): boolean {
    const { token, tokenExpiresAt } = this.secrets
    return token !== undefined && (tokenExpiresAt === undefined || tokenExpiresAt > this.now())
  }

  token(): string {
    const token = this.secrets.token
    if (!token || !this.loggedIn)
      throw new ClientError(ClientErrorCode.NotLoggedIn, 'expected a valid login, got none')
    return token
  }

  /**
   * Gets a fresh session token: the server encrypts it to our RSA key, only we can read it. The log-in
   * carries a device proof (the server's challenge, decrypted with that key), so that failed
   * attempts by others against this account never hold this device back (docs/protocol.md §13.1).
   * What proves the account is the login secret, never the password, except once for an account
   * made before login secrets (see `withCredential`). `loginSecret`, when the caller has derived it
   * already, saves deriving it again; `password` may then be omitted only if the account is known
   * to be upgraded.
   */
  async login(password: string | undefined, loginSecret?: string): Promise<void> {
    if (password === undefined && loginSecret === undefined) {
      throw new ClientError(
        ClientErrorCode.InvalidInput,
        'login: expected a password or a login secret, got neither',
      )
    }
    const [deviceProof, secret] = await Promise.all([
      this.deviceProof(),
      loginSecret ?? this.loginSecretOf(password!),
    ])
    const body = {
      username: this.username,
      loginSecret: secret,
      ...(deviceProof ? { deviceProof } : {}),
      ...this.deviceField(),
    }
    const response = decode(
      LoginResponse,
      await this.withCredential(body, password, (sent) => this.request('POST', '/login', { body: sent })),
      'login response',
    )
    let token: Uint8Array
    try {
      token = await rsaOaepDecrypt(this.loginKey, fromBase64Url(response.encryptedToken))
    } catch (cause) {
      // The server encrypted the token to a login key this device does not hold: the account was
      // started over elsewhere (reinstall), and its keys here are no longer the account's.
      throw new ClientError(
        ClientErrorCode.AccountReplaced,
        `expected a token for this device's key, got one for another: ${this.username} started over on another device`,
        { cause },
      )
    }
    await this.records.saveSecrets({
      ...this.secrets,
      token: toBase64Url(token),
      tokenExpiresAt: response.expiresAt,
    })
  }

  /**
   * The server's login challenge decrypted with our login key, or nothing: a server of the previous
   * version has no challenge route (404), and a challenge this device cannot decrypt (the account was
   * started over elsewhere) proves nothing; the log-in then goes ahead as from an unknown device.
   */
  private async deviceProof(): Promise<string | undefined> {
    let challenge: LoginChallengeResponse
    try {
      challenge = decode(
        LoginChallengeResponse,
        await this.request('POST', '/login/challenge', {
          body: { username: this.username, ...this.deviceField() },
        }),
        'login challenge',
      )
    } catch (error) {
      if (isClientError(error) && error.status === 404) return undefined
      throw error
    }
    try {
      return toBase64Url(await rsaOaepDecrypt(this.loginKey, fromBase64Url(challenge.challenge)))
    } catch {
      return undefined
    }
  }

  /**
   * Deletes the account on the server: the token and the login secret (as /login takes it), both
   * required, so a stolen token alone deletes nothing. `password` goes too only if the server asks
   * for the credential upgrade (see `withCredential`). Throws the server's refusal; then nothing was
   * deleted.
   */
  async deleteAccount(password: string): Promise<void> {
    const body = { username: this.username, loginSecret: await this.loginSecretOf(password) }
    await this.withCredential(body, password, (sent) =>
      this.request('POST', '/account/delete', { token: this.token(), body: sent }),
    )
    await this.forgetToken()
  }

  /**
   * Sends a request that proves the account with its login secret. An account made before login
   * secrets answers E2E_ERR_CREDENTIAL_UPGRADE: the same request goes once more with the password
   * beside the secret, and the server switches the account to the secret for good (docs/protocol.md
   * §4.1): the one time the password leaves this device. A server of the previous version refuses
   * the secret outright; that is said plainly (VersionMismatch).
   */
  async withCredential<T>(
    body: Record<string, unknown>,
    password: string | undefined,
    send: (body: Record<string, unknown>) => Promise<T>,
  ): Promise<T> {
    try {
      return await send(body)
    } catch (error) {
      if (
        isClientError(error) &&
        error.serverCode === 'E2E_ERR_CREDENTIAL_UPGRADE' &&
        password !== undefined
      ) {
        return send({ ...body, password })
      }
      throw olderServer(error) ?? error
    }
  }

  /** Ends the session on the server (if it still can) and forgets the token here. */
  async logout(): Promise<void> {
    if (!this.secrets.token) return
    await this.request('POST', '/logout', { token: this.token() }).catch(() => undefined)
    await this.forgetToken()
  }

  async forgetToken(): Promise<void> {
    if (this.secrets.token === undefined) return
    const { token: _token, tokenExpiresAt: _expires, ...rest } = this.secrets
    await this.records.saveSecrets(rest)
  }

  /** A request with the token. */
  api(method: Method, path: string, body?: unknown): Promise<unknown> {
    return this.request(method, path, { token: this.token(), ...(body !== undefined ? { body } : {}) })
  }

  /** The decoded JSON body of a 2xx answer, or the server's error as a ClientError. */
  async request(
    method: Method,
    path: string,
    options: { body?: unknown; token?: string } = {},
  ): Promise<unknown> {
    const response = await this.http.request(method, path, options)
    if (response.status >= 200 && response.status < 300) return response.body
    const error = errorFromResponse(response, `${method} ${path.split('?')[0]}`)
    if (error.code === ClientErrorCode.NotLoggedIn && options.token) {
      const first = this.refusedToken !== options.token
      this.refusedToken = options.token
      await this.forgetToken()
      if (first) this.onRefused(error)
    }
    throw error
  }
}
