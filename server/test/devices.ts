/**
 * Linking a device in tests, as a new device does it over the real routes (docs/protocol.md
 * §13.8): a link token from a device of the account, then POST /devices with prekeys signed for
 * the reserved id. The provisioning channel that carries the token between the two devices is
 * left out here (server/provisioning.test.ts covers it).
 */
import { fromBase64Url, toBase64Url } from '../../shared/bytes.js'
import type { AddDeviceRequest, AddDeviceResponse, LinkTokenResponse } from '../../shared/codec/api.js'
import { preKeyToJson } from '../../shared/codec/keys.js'
import {
  generateRsaOaepKeyPair,
  type RsaOaepKeyPair,
  rsaOaepDecrypt,
} from '../../shared/crypto/primitives.js'
import {
  generateOneTimePreKeys,
  generateSignedPreKey,
  type Identity,
  publicPreKey,
} from '../../shared/identity.js'
import type { TestClient, TestServer } from './harness.js'

let linkedDeviceKey: Promise<RsaOaepKeyPair> | undefined

/** One RSA login key for every linked device of a test run (making one takes a few hundred ms). */
export function linkedDeviceLoginKey(): Promise<RsaOaepKeyPair> {
  linkedDeviceKey ??= generateRsaOaepKeyPair()
  return linkedDeviceKey
}

/** What a new device of `identity`'s account sends to add itself as `deviceId` (keys signed for `signedFor`). */
export async function addDeviceBody(
  identity: Identity,
  linkToken: string,
  deviceId: number,
  signedFor = deviceId,
): Promise<AddDeviceRequest> {
  const [signed, oneTime, loginKey] = await Promise.all([
    generateSignedPreKey(identity, signedFor, 1),
    generateOneTimePreKeys(identity, signedFor, 1, 3),
    linkedDeviceLoginKey(),
  ])
  return {
    linkToken,
    deviceId,
    loginKey: toBase64Url(loginKey.publicKeySpki),
    signedPreKey: preKeyToJson(publicPreKey(signed)),
    oneTimePreKeys: oneTime.map((preKey) => preKeyToJson(publicPreKey(preKey))),
    name: toBase64Url(new Uint8Array(40).fill(7)),
  }
}

/** Links another device to `client`'s account (approved with `token`); its id and session token. */
export async function linkDevice(
  server: Pick<TestServer, 'request'>,
  client: TestClient,
  token: Uint8Array,
): Promise<{ deviceId: number; token: Uint8Array }> {
  const reserved = await server.request('/api/v1/devices/link-token', { method: 'POST', token })
  if (reserved.status !== 201) throw new Error(`link token: ${reserved.status} ${reserved.text}`)
  const { linkToken, deviceId } = reserved.body as LinkTokenResponse
  const added = await server.request('/api/v1/devices', {
    body: await addDeviceBody(client.identity, linkToken, deviceId),
  })
  if (added.status !== 201) throw new Error(`add device: ${added.status} ${added.text}`)
  const response = added.body as AddDeviceResponse
  const session = await rsaOaepDecrypt(
    (await linkedDeviceLoginKey()).privateKey,
    fromBase64Url(response.encryptedToken),
  )
  return { deviceId: response.deviceId, token: session }
}
