/**
 * The typed shape of the server's database, as the code sees it after the latest migration.
 * Binary columns (keys, signatures, token hashes, message ids and bodies) are BLOB in SQLite and
 * bytea in PostgreSQL and read back as Uint8Array (Node's Buffer subclass). Times are integer
 * milliseconds since the Unix epoch; PostgreSQL's int8 is parsed to a JS number (see connect.ts).
 *
 * Migrations never import this file: they are frozen in time and take Kysely<any>.
 */
import type { Generated, Insertable, Kysely, Selectable } from 'kysely'

/** Values of users.credential (migration 2026-12-03-01-login-secret). */
export type Credential = 'password' | 'login-secret-v1'

export interface UsersTable {
  id: Generated<number>
  /** Normalised (NFKC, lower-case) username; unique, so uniqueness is case-insensitive. */
  username: string
  /** bcrypt hash of the pre-hashed credential (see auth/password.ts): what `credential` names. */
  password_hash: string
  /**
   * What the client proves itself with: its login secret (shared/login-secret.ts), or, for an
   * account made before login secrets and not yet upgraded by its owner's client, the password.
   */
  credential: Generated<Credential>
  /** X25519 identity key (32 bytes). */
  identity_key: Uint8Array
  /** Ed25519 signing key (32 bytes). */
  signing_key: Uint8Array
  /** Ed25519 signature over label ‖ identity_key (64 bytes). */
  identity_signature: Uint8Array
  created_at: number
  /** When the identity keys were last set; peers compare it to notice a change. */
  identity_changed_at: number
}

/**
 * One device of an account (migration 2026-12-03-08-devices). Device ids count from 1 (the device
 * that registered the account) per account and are never reused: a removed device keeps its row,
 * with `removed_at` set and no name.
 */
export interface DevicesTable {
  user_id: number
  device_id: number
  /** RSA-OAEP-3072 public key, SubjectPublicKeyInfo DER: this device's login tokens are encrypted to it. */
  login_key: Uint8Array
  /** The device's name, sealed by the account's devices: opaque bytes to the server. */
  name: Uint8Array | null
  created_at: number
  last_seen_at: number
  /** When the device was removed from the account; null while it is one of its devices. */
  removed_at: number | null
}

export interface SignedPreKeysTable {
  /** Insertion order: the row with the highest id is a device's current signed prekey. */
  id: Generated<number>
  user_id: number
  device_id: number
  key_id: number
  public_key: Uint8Array
  signature: Uint8Array
  created_at: number
}

export interface OneTimePreKeysTable {
  user_id: number
  device_id: number
  key_id: number
  public_key: Uint8Array
  signature: Uint8Array
}

export interface AuthTokensTable {
  /** SHA-256 of the 32-byte session token: the token itself is never stored. */
  token_hash: Uint8Array
  user_id: number
  /** The device the session is of. */
  device_id: number
  created_at: number
  expires_at: number
}

/** A queued message: the row exists from "accepted" until the recipient acknowledges it or it expires. */
export interface MessagesTable {
  recipient_id: number
  /** The recipient's device: every device has its own queue. */
  recipient_device: number
  /**
   * Position in this device's queue (1, 2, 3, … per recipient device; queue_positions keeps the
   * last one), never reused, so cumulative acks stay meaningful and say nothing of other traffic.
   */
  seq: number
  sender_id: number
  sender_device: number
  /**
   * The sender's random 16-byte message id, the same for every device of one send; UNIQUE with
   * the sending and the receiving device makes sends idempotent.
   */
  client_id: Uint8Array
  /** The encrypted envelope, opaque to the server. */
  body: Uint8Array
  created_at: number
  /** The message is purged at this time if still undelivered. */
  expires_at: number
}

/**
 * What an acknowledged message leaves behind, only for idempotency: a retry of (sending device,
 * client id, destination) until the message's original expiry is answered "accepted" and not
 * queued again. No recipient, no delivery time, no body: of the destination only its device id
 * and whether it was one of the sender's own devices (a sent copy).
 */
export interface MessageTombstonesTable {
  client_id: Uint8Array
  sender_id: number
  sender_device: number
  recipient_device: number
  /** 1 for a copy to one of the sender's own devices, 0 for the other account's. */
  to_self: number
  expires_at: number
}

/** The last sequence number given out in each device's queue (kept when the queue is empty). */
export interface QueuePositionsTable {
  recipient_id: number
  recipient_device: number
  last_seq: number
}

/**
 * One row per one-time prekey handed out, kept only for the per-target claim limit and the
 * re-fetch window (server/limits.ts): purged once older than both. Never logged.
 */
export interface OneTimePreKeyClaimsTable {
  target_id: number
  requester_id: number
  claimed_at: number
}

/**
 * A relation one user (the owner) keeps with another, stored without naming the other: see
 * db/relations.ts for `pair_hash`. Kinds: 'presence' (the owner's presence may go to the other
 * user) and 'block' (the other user's sends, presence subscriptions and bundle claims are refused).
 */
export interface RelationsTable {
  pair_hash: Uint8Array
  owner_id: number
  kind: 'presence' | 'block'
}

/**
 * The name of a deleted account, held so that nobody else registers it while its old contacts may
 * still take a new owner for the old one. Only a hash of the normalised name (users.ts
 * `usernameHash`); nothing links it to the account that had it.
 */
export interface DeletedUsernamesTable {
  username_hash: Uint8Array
  /** Registering the name is refused before this time; afterwards the row is purged. */
  held_until: number
}

/** A check value of a secret kept outside the database (migration 2026-12-03-06-key-checks). */
export interface KeyChecksTable {
  /** Which secret: 'relations' (relations-key.ts). */
  name: string
  /** HMAC-SHA256 under the secret of a fixed label: 32 bytes, says nothing of the secret. */
  check_value: Uint8Array
  recorded_at: number
}

/**
 * Why a token in ended_tokens ended (migrations 2026-12-03-07-ended-tokens and
 * 2026-12-03-08-devices).
 */
export type TokenEnding = 'account-deleted' | 'device-removed'

/** A single-use token to link a new device to the account (migration 2026-12-03-08-devices). */
export interface LinkTokensTable {
  /** SHA-256 of the 32-byte token: the token itself is never stored. */
  token_hash: Uint8Array
  user_id: number
  /** The id the linked device will have (reserved: no other token or device of the account has it). */
  device_id: number
  created_at: number
  expires_at: number
}

/** A session token that ended for a reason its holder is told, until it would have expired. */
export interface EndedTokensTable {
  /** SHA-256 of the token, as auth_tokens kept it. */
  token_hash: Uint8Array
  reason: TokenEnding
  expires_at: number
}

/** Which device a provisioning message is for (migration 2026-12-03-09-provisioning-channels). */
export type ProvisioningSide = 'new' | 'existing'

/**
 * A one-time provisioning channel between a new device and an existing device of an account
 * (db/provisioning.ts). Nothing here is readable: ids are random, the secret is kept as its
 * SHA-256, the opening address as a keyed hash.
 */
export interface ProvisioningChannelsTable {
  /** 16 random bytes, in the link code (shared/provisioning.ts). */
  id: Uint8Array
  /** SHA-256 of the new device's 32-byte channel secret, its capability on the channel. */
  secret_hash: Uint8Array
  /** HMAC of the opening client's address key under a key derived from the relations key. */
  opener_hash: Uint8Array
  /** The account whose device posted first with its session token; null until then. */
  claimed_by: number | null
  /** Messages the channel carried (both sides); the last position given out. */
  message_count: Generated<number>
  created_at: number
  expires_at: number
  /** Set when either side closed it; its messages are deleted then. */
  closed_at: number | null
  /** Which side closed it (null while open, and for channels closed before this was kept). */
  closed_by: ProvisioningSide | null
}

/** Ciphertext waiting on a provisioning channel for one side; opaque to the server. */
export interface ProvisioningMessagesTable {
  channel_id: Uint8Array
  /** 1, 2, 3, … in the channel, shared by both sides (so gaps on one side are normal). */
  position: number
  recipient: ProvisioningSide
  body: Uint8Array
  created_at: number
}

export interface Database {
  users: UsersTable
  devices: DevicesTable
  signed_prekeys: SignedPreKeysTable
  one_time_prekeys: OneTimePreKeysTable
  auth_tokens: AuthTokensTable
  messages: MessagesTable
  message_tombstones: MessageTombstonesTable
  queue_positions: QueuePositionsTable
  one_time_prekey_claims: OneTimePreKeyClaimsTable
  relations: RelationsTable
  deleted_usernames: DeletedUsernamesTable
  key_checks: KeyChecksTable
  ended_tokens: EndedTokensTable
  link_tokens: LinkTokensTable
  provisioning_channels: ProvisioningChannelsTable
  provisioning_messages: ProvisioningMessagesTable
}

/** The database handle every repository function takes first: the root handle or a transaction. */
export type Db = Kysely<Database>

export type SqlDialect = 'sqlite' | 'postgres'

export type UserRow = Selectable<UsersTable>
export type DeviceRow = Selectable<DevicesTable>
export type NewUser = Insertable<UsersTable>
export type PreKeyRow = Pick<Selectable<OneTimePreKeysTable>, 'key_id' | 'public_key' | 'signature'>
export type SignedPreKeyRow = Selectable<SignedPreKeysTable>
export type MessageRow = Selectable<MessagesTable>
export type ProvisioningChannelRow = Selectable<ProvisioningChannelsTable>
