/** Conversions between the protocol's key objects and their JSON (base64url) forms in the API. */
import { DEFAULT_DEVICE_ID } from '../address.js'
import { fromBase64Url, toBase64Url } from '../bytes.js'
import type { PreKeyBundle, PublicIdentity, PublicPreKey } from '../identity.js'
import type { PreKeyBundleResponse, PreKeyJson, PublicIdentityJson } from './api.js'

export function publicIdentityToJson(identity: PublicIdentity): PublicIdentityJson {
  return {
    identityKey: toBase64Url(identity.identityKey),
    signingKey: toBase64Url(identity.signingKey),
    identitySignature: toBase64Url(identity.identitySignature),
  }
}

export function publicIdentityFromJson(json: PublicIdentityJson): PublicIdentity {
  return {
    identityKey: fromBase64Url(json.identityKey),
    signingKey: fromBase64Url(json.signingKey),
    identitySignature: fromBase64Url(json.identitySignature),
  }
}

export function preKeyToJson(preKey: PublicPreKey): PreKeyJson {
  return {
    keyId: preKey.keyId,
    publicKey: toBase64Url(preKey.publicKey),
    signature: toBase64Url(preKey.signature),
  }
}

export function preKeyFromJson(json: PreKeyJson): PublicPreKey {
  return {
    keyId: json.keyId,
    publicKey: fromBase64Url(json.publicKey),
    signature: fromBase64Url(json.signature),
  }
}

/**
 * A bundle from the API, still unverified: `startSession` verifies it before use, as a bundle of
 * the device it names (device 1 when it names none, as servers before devices answer).
 */
export function preKeyBundleFromJson(json: PreKeyBundleResponse): PreKeyBundle {
  return {
    deviceId: json.deviceId ?? DEFAULT_DEVICE_ID,
    identity: publicIdentityFromJson(json.identity),
    signedPreKey: preKeyFromJson(json.signedPreKey),
    oneTimePreKey: json.oneTimePreKey ? preKeyFromJson(json.oneTimePreKey) : undefined,
  }
}
