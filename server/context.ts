/** What every route plugin receives: the database, the clock, the tunable limits and the relay. */
import type { DeviceProofs } from './auth/device-proof.js'
import type { LoginLimiting } from './auth/login-limiter.js'
import type { RelationsKey } from './db/relations.js'
import type { Db } from './db/schema.js'
import type { ServerMetrics } from './metrics.js'
import type { Rate } from './ws/token-bucket.js'

export interface RateLimit {
  readonly max: number
  readonly timeWindowMs: number
}

export interface ServerLimits {
  readonly registerRateLimit: RateLimit
  readonly loginRateLimit: RateLimit
  readonly bundleRateLimit: RateLimit
  readonly oneTimePreKeyClaimsPerTarget: RateLimit
  readonly bundleRefetchWindowMs: number
  readonly loginFailuresPerAccount: number
  readonly loginFailuresPerAddress: number
  readonly loginFailureWindowMs: number
  // Failed log-ins and per-address limits (limits.ts explains each default).
  readonly loginFailuresPerAccountAddress: number
  readonly loginAccountDelayAfter: number
  readonly loginAccountDelayBaseMs: number
  readonly loginAccountDelayMaxMs: number
  readonly loginFailuresPerDevice: number
  readonly maxUnauthenticatedSocketsPerAddress: number
  readonly tlsHandshakeTimeoutMs: number
  readonly maxTlsHandshakesInProgressPerAddress: number
  readonly tlsHandshakeRatePerAddress: Rate
  readonly maxOneTimePreKeysPerUser: number
  readonly signedPreKeysKept: number
  readonly maxTokensPerDevice: number
  readonly tokenLifetimeMs: number
  readonly maxDevicesPerAccount: number
  readonly linkTokenTtlMs: number
  readonly maxLinkTokensPerAccount: number
  // Relay (limits.ts explains each default).
  readonly maxQueuedMessagesPerRecipient: number
  readonly maxQueuedBytesPerRecipient: number
  readonly maxQueuedMessagesPerSender: number
  readonly maxQueuedBytesPerSender: number
  readonly messageTtlMs: number
  readonly maxConnectionsPerUser: number
  readonly sendRatePerUser: Rate
  readonly frameRatePerConnection: Rate
  readonly authTimeoutMs: number
  readonly heartbeatIntervalMs: number
  readonly deliveryWindow: number
  readonly relayRecheckIntervalMs: number
  readonly relaySessionRecheckIntervalMs: number
  readonly maxBadFramesPerConnection: number
  // Provisioning channels (limits.ts explains each default).
  readonly provisioningChannelTtlMs: number
  readonly provisioningOpenRateLimit: RateLimit
  readonly maxOpenProvisioningChannelsPerAddress: number
  readonly provisioningRateLimit: RateLimit
  readonly provisioningPollWaitMs: number
  readonly provisioningPollIntervalMs: number
}

/** What the HTTP routes tell the relay about, so connected clients hear of it at once. */
export interface RelayEvents {
  /** A session token of this user was revoked (logout): its sockets are closed. */
  sessionRevoked(userId: number, tokenHash: Uint8Array, reason?: 'device-removed'): void
  /** The user's prekey bundle was handed out: if few one-time prekeys are left and they are online, say so. */
  preKeyBundleServed(userId: number, deviceId: number): void
  /**
   * The user replaced their identity key (a new device): their old sessions' sockets are closed and
   * everyone watching their presence gets `identity.changed`.
   */
  identityChanged(userId: number, username: string): void
  /**
   * The user deleted their account: their sockets are closed (E2E_ERR_ACCOUNT_DELETED), the relay
   * forgets the name, and everyone watching them gets `identity.changed` (the identity is gone;
   * the check it prompts answers E2E_ERR_ACCOUNT_DELETED).
   */
  accountDeleted(userId: number, username: string): void
  /** The owner no longer lets the viewer see their presence (a block): the viewer's watches end. */
  presenceRevoked(ownerId: number, ownerName: string, viewerId: number): void
}

export interface ServerContext {
  readonly db: Db
  readonly now: () => number
  readonly bcryptCost: number
  readonly limits: ServerLimits
  readonly loginLimiter: LoginLimiting
  readonly deviceProofs: DeviceProofs
  readonly relay: RelayEvents
  /** The secret relation rows are hashed under (db/relations.ts); account deletion needs it too. */
  readonly relationsKey: RelationsKey
  /** Counts refused log-ins (server/metrics.ts). */
  readonly metrics: Pick<ServerMetrics, 'loginFailed'>
}
