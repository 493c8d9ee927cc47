/**
 * An account on this device: made here (keys generated, stored sealed before anything is sent to
 * the server, with what registration sends), or opened from the local store with the password.
 * The store's records are migrated to today's layout as they are opened.
 *
 * What it does not know: the server's API (the façade sends what this prepares), sessions, sockets.
 */
import { DEFAULT_DEVICE_ID } from '../address.js'
import { deriveStorageKey, newStorageKeyParameters, STORAGE_KEY_MIN_ITERATIONS } from '../at-rest.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import type { AddDeviceRequest } from '../codec/api.js'
import { preKeyToJson, publicIdentityToJson } from '../codec/keys.js'
import {
  exportRsaPrivateKeyPkcs8,
  generateRsaOaepKeyPair,
  importRsaPrivateKeyPkcs8,
} from '../crypto/primitives.js'
import {
  exportIdentity,
  generateIdentity,
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  importIdentity,
  publicPreKey,
} from '../identity.js'
import { defaultKeyGeneration, type KeyGeneration } from '../key-generation.js'
import { ONE_TIME_PREKEY_BATCH } from '../limits.js'
import { deriveLoginSecret, LOGIN_SECRET_ITERATIONS } from '../login-secret.js'
import type { DecodedProvisioningContent } from '../provisioning-content.js'
import { normalizeUsername } from '../username.js'
import { ACCOUNT_KEY, readAccountHeader, type UnlockedAccount, unlockAccount } from './account.js'
import { ClientError, ClientErrorCode } from './errors.js'
import { migrateRecords, RECORDS_VERSION } from './migrations.js'
import type { ContactRecord } from './records.js'
import { SealedStore } from './sealed-store.js'
import type { ClientStore, StoreOperation } from './store.js'

export interface LocalAccountOptions {
  readonly serverUrl: string
  readonly store: ClientStore
  readonly now?: () => number
  readonly keyGeneration?: KeyGeneration
  /** PBKDF2 iterations for a new account's storage key (tests lower it; production keeps the default). */
  readonly storageKeyIterations?: number
  /** The fewest iterations accepted when unlocking (tests lower it). */
  readonly minimumStorageKeyIterations?: number
  /**
   * PBKDF2 iterations of the login secret (shared/login-secret.ts). Tests lower it; production keeps
   * the default, which is part of the format: a client with another count cannot log in.
   */
  readonly loginSecretIterations?: number
}

/** The login secret of `password` for `username` (canonical), at the options' cost. */
export function loginSecretOf(
  options: Pick<LocalAccountOptions, 'loginSecretIterations'>,
  password: string,
  username: string,
): Promise<string> {
  return deriveLoginSecret(password, username, options.loginSecretIterations ?? LOGIN_SECRET_ITERATIONS)
}

/** An unlocked account: its sealed records and its keys, ready for a client. */
export interface LocalAccount {
  readonly records: SealedStore
  readonly identity: Identity
  readonly loginKey: CryptoKey
}

/** A username in canonical form, or ClientError(InvalidInput) saying which rule it breaks. */
export function canonicalUsername(username: string): string {
  try {
    return normalizeUsername(username)
  } catch (cause) {
    throw new ClientError(ClientErrorCode.InvalidInput, (cause as Error).message, { cause })
  }
}

/**
 * Makes a new account's keys and stores them (sealed) in an empty store, before anything reaches
 * the server. Returns the account and the body of the registration (or reinstall) request.
 */
export async function createLocalAccount(
  options: LocalAccountOptions,
  name: string,
  password: string,
): Promise<{ account: LocalAccount; registration: Record<string, unknown>; loginSecret: string }> {
  if (await options.store.get('account', ACCOUNT_KEY)) {
    throw new ClientError(
      ClientErrorCode.AccountMismatch,
      'expected an empty local database, got one that holds an account',
    )
  }
  const now = (options.now ?? Date.now)()
  const keys = options.keyGeneration ?? defaultKeyGeneration
  const [identity, loginKeyPair] = await Promise.all([
    generateIdentity({ extractable: true }),
    generateRsaOaepKeyPair({ extractable: true }),
  ])
  // Registering makes the account's device 1, whose prekeys sign as accounts always have.
  const signedPreKey = await generateSignedPreKey(identity, DEFAULT_DEVICE_ID, 1, { extractable: true }, keys)
  const oneTimePreKeys = await generateOneTimePreKeys(
    identity,
    DEFAULT_DEVICE_ID,
    2,
    ONE_TIME_PREKEY_BATCH,
    { extractable: true },
    keys,
  )
  const parameters = newStorageKeyParameters(options.storageKeyIterations ?? STORAGE_KEY_MIN_ITERATIONS)
  // Two PBKDF2 runs under different salts: independent keys, derived side by side.
  const [storageKey, loginSecret] = await Promise.all([
    deriveStorageKey(password, parameters, options.minimumStorageKeyIterations),
    loginSecretOf(options, password, name),
  ])
  const unlocked: UnlockedAccount = {
    username: name,
    server: options.serverUrl,
    storageKey,
    parameters,
    secrets: {
      identity: toBase64Url(await exportIdentity(identity)),
      loginKey: toBase64Url(await exportRsaPrivateKeyPkcs8(loginKeyPair.privateKey)),
      nextPreKeyId: 2 + ONE_TIME_PREKEY_BATCH,
      signedPreKeyId: signedPreKey.keyId,
      signedPreKeyCreatedAt: now,
      registered: false,
      recordsVersion: RECORDS_VERSION,
      deviceId: DEFAULT_DEVICE_ID,
    },
  }
  const records = new SealedStore(options.store, unlocked)
  const operations: StoreOperation[] = [
    await records.accountPut(unlocked.secrets),
    ...(await Promise.all(
      [signedPreKey, ...oneTimePreKeys].map((preKey, i) => records.preKeyPut(preKey, i === 0)),
    )),
  ]
  await options.store.commit(operations)
  return {
    account: {
      records,
      identity: await importIdentity(fromBase64Url(unlocked.secrets.identity)),
      loginKey: await importRsaPrivateKeyPkcs8(fromBase64Url(unlocked.secrets.loginKey)),
    },
    loginSecret,
    registration: {
      username: name,
      loginSecret,
      loginKey: toBase64Url(loginKeyPair.publicKeySpki),
      identity: publicIdentityToJson(identity.public),
      signedPreKey: preKeyToJson(publicPreKey(signedPreKey)),
      oneTimePreKeys: oneTimePreKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))),
    },
  }
}

/**
 * A linked device's account (docs/protocol.md §13.8): the identity and contacts from the
 * provisioning content, a login key and prekeys of its own, signed for the device id the link
 * token reserved. Stored sealed in an empty store (not yet registered) before anything reaches
 * the server; returns the account and the body of POST /devices, but for the sealed name.
 */
export async function createLinkedAccount(
  options: LocalAccountOptions,
  content: DecodedProvisioningContent,
  password: string,
): Promise<{ account: LocalAccount; addDevice: Omit<AddDeviceRequest, 'name'> }> {
  if (await options.store.get('account', ACCOUNT_KEY)) {
    throw new ClientError(
      ClientErrorCode.AccountMismatch,
      'expected an empty local database, got one that holds an account',
    )
  }
  const now = (options.now ?? Date.now)()
  const keys = options.keyGeneration ?? defaultKeyGeneration
  const { identity, deviceId } = content
  const [loginKeyPair, signedPreKey, oneTimePreKeys] = await Promise.all([
    generateRsaOaepKeyPair({ extractable: true }),
    generateSignedPreKey(identity, deviceId, 1, { extractable: true }, keys),
    generateOneTimePreKeys(identity, deviceId, 2, ONE_TIME_PREKEY_BATCH, { extractable: true }, keys),
  ])
  const parameters = newStorageKeyParameters(options.storageKeyIterations ?? STORAGE_KEY_MIN_ITERATIONS)
  const unlocked: UnlockedAccount = {
    username: content.username,
    server: options.serverUrl,
    storageKey: await deriveStorageKey(password, parameters, options.minimumStorageKeyIterations),
    parameters,
    secrets: {
      identity: toBase64Url(content.identityExport),
      loginKey: toBase64Url(await exportRsaPrivateKeyPkcs8(loginKeyPair.privateKey)),
      nextPreKeyId: 2 + ONE_TIME_PREKEY_BATCH,
      signedPreKeyId: signedPreKey.keyId,
      signedPreKeyCreatedAt: now,
      registered: false,
      recordsVersion: RECORDS_VERSION,
      deviceId,
    },
  }
  const records = new SealedStore(options.store, unlocked)
  const contacts = content.contacts.map(
    (contact): ContactRecord => ({
      username: contact.username,
      ...(contact.identity ? { identity: publicIdentityToJson(contact.identity) } : {}),
      verified: contact.verified,
      unread: 0,
      presenceShared: contact.presenceShared,
      ...(contact.blocked ? { blocked: true } : {}),
    }),
  )
  await options.store.commit([
    await records.accountPut(unlocked.secrets),
    ...(await Promise.all(
      [signedPreKey, ...oneTimePreKeys].map((preKey, i) => records.preKeyPut(preKey, i === 0)),
    )),
    ...(await Promise.all(contacts.map((contact) => records.contactPut(contact)))),
  ])
  return {
    account: {
      records,
      identity: await importIdentity(content.identityExport),
      loginKey: await importRsaPrivateKeyPkcs8(fromBase64Url(unlocked.secrets.loginKey)),
    },
    addDevice: {
      linkToken: toBase64Url(content.linkToken),
      deviceId,
      loginKey: toBase64Url(loginKeyPair.publicKeySpki),
      signedPreKey: preKeyToJson(publicPreKey(signedPreKey)),
      oneTimePreKeys: oneTimePreKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))),
    },
  }
}

/** Opens the local store with the password, and migrates its records. */
export async function openLocalAccount(
  options: LocalAccountOptions,
  password: string,
  expectedUsername?: string,
): Promise<LocalAccount> {
  const record = await options.store.get('account', ACCOUNT_KEY)
  if (!record)
    throw new ClientError(ClientErrorCode.NoAccount, 'expected an account in the local database, got none')
  const header = readAccountHeader(record.value)
  if (expectedUsername !== undefined && header.username !== canonicalUsername(expectedUsername)) {
    throw new ClientError(
      ClientErrorCode.AccountMismatch,
      `expected the account ${expectedUsername}, got another one`,
    )
  }
  const unlocked = await unlockAccount(record.value, password, options.minimumStorageKeyIterations)
  if (!unlocked.secrets.registered) {
    throw new ClientError(
      ClientErrorCode.CorruptStore,
      'expected a registered account, got one whose registration never finished',
    )
  }
  let identity: Identity
  let loginKey: CryptoKey
  try {
    identity = await importIdentity(fromBase64Url(unlocked.secrets.identity))
    loginKey = await importRsaPrivateKeyPkcs8(fromBase64Url(unlocked.secrets.loginKey))
  } catch (cause) {
    throw new ClientError(ClientErrorCode.CorruptStore, 'expected readable account keys, got damaged ones', {
      cause,
    })
  }
  const records = new SealedStore(options.store, unlocked)
  await migrateRecords(options.store, records)
  return { records, identity, loginKey }
}
