/**
 * Provisioning channels (routes/provisioning.ts, docs/protocol.md §13.7): one-time relays between a
 * new device and an existing device of an account, in the database so every node of a cluster
 * serves the same channel. What decides whether a request may use a channel is a single statement
 * per post (an UPDATE of the channel's row that checks the state, claims the channel and counts the
 * message at once), so two nodes racing on one channel cannot both take its last place or both
 * claim it for different accounts. Ciphertext only: the server cannot read what it relays.
 */
import { PostgresAdapter, sql } from 'kysely'
import type { Db, ProvisioningChannelRow, ProvisioningSide } from './schema.js'
import { inTransaction } from './transaction.js'

/** Why a channel refuses a request. */
export type ChannelRefusal =
  /** No such channel: never opened, or expired and purged. */
  | 'unknown'
  /** Its time ran out (PROVISIONING_CHANNEL_TTL_MS). */
  | 'expired'
  /** Either side closed it. */
  | 'used'
  /** An existing device closed it (it refused): what the new device hears instead of 'used'. */
  | 'refused'
  /** Another account's device claimed it. */
  | 'claimed'
  /** It carried as many messages as a channel may. */
  | 'full'

export interface NewProvisioningChannel {
  readonly id: Uint8Array
  readonly secretHash: Uint8Array
  readonly openerHash: Uint8Array
  readonly now: number
  readonly expiresAt: number
}

/** First key of the PostgreSQL advisory locks taken per opener (any fixed int4, not the queue's). */
const OPENER_LOCK_NAMESPACE = 0x5043 // "PC"

/**
 * Opens a channel unless its opener already has `maxOpenPerOpener` open (neither closed nor
 * expired); then says when the first of those expires. On PostgreSQL an advisory lock per opener
 * keeps two nodes from both passing the count for one address.
 */
export async function openProvisioningChannel(
  db: Db,
  channel: NewProvisioningChannel,
  maxOpenPerOpener: number,
): Promise<{ readonly opened: true } | { readonly opened: false; readonly retryAt: number }> {
  return inTransaction(db, async (trx) => {
    if (trx.getExecutor().adapter instanceof PostgresAdapter) {
      const key = Buffer.from(channel.openerHash).readInt32BE(0)
      await sql`select pg_advisory_xact_lock(${OPENER_LOCK_NAMESPACE}::int, ${key}::int)`.execute(trx)
    }
    const open = await trx
      .selectFrom('provisioning_channels')
      .select((eb) => [eb.fn.countAll<number | string>().as('open'), eb.fn.min('expires_at').as('first')])
      .where('opener_hash', '=', channel.openerHash)
      .where('closed_at', 'is', null)
      .where('expires_at', '>', channel.now)
      .executeTakeFirstOrThrow()
    if (Number(open.open) >= maxOpenPerOpener) {
      return { opened: false as const, retryAt: Number(open.first ?? channel.now) }
    }
    await trx
      .insertInto('provisioning_channels')
      .values({
        id: channel.id,
        secret_hash: channel.secretHash,
        opener_hash: channel.openerHash,
        claimed_by: null,
        created_at: channel.now,
        expires_at: channel.expiresAt,
        closed_at: null,
      })
      .execute()
    return { opened: true as const }
  })
}

export async function findProvisioningChannel(
  db: Db,
  id: Uint8Array,
): Promise<ProvisioningChannelRow | undefined> {
  return db.selectFrom('provisioning_channels').selectAll().where('id', '=', id).executeTakeFirst()
}

/**
 * What refuses a request on this channel at `now`, if anything. `claimant` is the account of an
 * existing device's request (absent for the new device's). `maxMessages` only for a post.
 */
export function channelRefusal(
  channel: ProvisioningChannelRow | undefined,
  now: number,
  options: { readonly claimant?: number; readonly maxMessages?: number } = {},
): ChannelRefusal | undefined {
  if (!channel) return 'unknown'
  if (channel.closed_at !== null) {
    // The new device's request (no claimant) of a channel an existing device closed: it refused.
    return options.claimant === undefined && channel.closed_by === 'existing' ? 'refused' : 'used'
  }
  if (channel.expires_at <= now) return 'expired'
  if (
    options.claimant !== undefined &&
    channel.claimed_by !== null &&
    channel.claimed_by !== options.claimant
  )
    return 'claimed'
  if (options.maxMessages !== undefined && channel.message_count >= options.maxMessages) return 'full'
  return undefined
}

export interface ProvisioningPost {
  readonly channelId: Uint8Array
  /** The side the message is for. */
  readonly recipient: ProvisioningSide
  readonly body: Uint8Array
  readonly now: number
  /** An existing device's account: the first such post claims the channel for it. */
  readonly claimant?: number
  readonly maxMessages: number
}

/**
 * Stores a message for one side, claiming the channel for `claimant` if nobody has: its position,
 * or why the channel refused it (nothing is stored then).
 */
export async function postProvisioningMessage(
  db: Db,
  post: ProvisioningPost,
): Promise<{ readonly position: number } | { readonly refused: ChannelRefusal }> {
  return inTransaction(db, async (trx) => {
    let update = trx
      .updateTable('provisioning_channels')
      .set((eb) => ({
        message_count: eb('message_count', '+', 1),
        ...(post.claimant !== undefined ? { claimed_by: post.claimant } : {}),
      }))
      .where('id', '=', post.channelId)
      .where('closed_at', 'is', null)
      .where('expires_at', '>', post.now)
      .where('message_count', '<', post.maxMessages)
    if (post.claimant !== undefined) {
      const claimant = post.claimant
      update = update.where((eb) => eb.or([eb('claimed_by', 'is', null), eb('claimed_by', '=', claimant)]))
    }
    const counted = await update.returning('message_count').executeTakeFirst()
    if (!counted) {
      const channel = await findProvisioningChannel(trx, post.channelId)
      const refusal = channelRefusal(channel, post.now, {
        ...(post.claimant !== undefined ? { claimant: post.claimant } : {}),
        maxMessages: post.maxMessages,
      })
      // The row changed between the two statements (closed, say): refused as it is now.
      return { refused: refusal ?? 'used' }
    }
    const position = Number(counted.message_count)
    await trx
      .insertInto('provisioning_messages')
      .values({
        channel_id: post.channelId,
        position,
        recipient: post.recipient,
        body: post.body,
        created_at: post.now,
      })
      .execute()
    return { position }
  })
}

/** The messages for `recipient` after position `after`, oldest first. */
export async function readProvisioningMessages(
  db: Db,
  channelId: Uint8Array,
  recipient: ProvisioningSide,
  after: number,
): Promise<{ readonly position: number; readonly body: Uint8Array }[]> {
  const rows = await db
    .selectFrom('provisioning_messages')
    .select(['position', 'body'])
    .where('channel_id', '=', channelId)
    .where('recipient', '=', recipient)
    .where('position', '>', after)
    .orderBy('position')
    .execute()
  return rows.map((row) => ({ position: Number(row.position), body: new Uint8Array(row.body) }))
}

/**
 * Closes a channel (idempotent): nothing more is posted or read, and its messages are deleted
 * now. The row stays until it expires, so either side is told "used" rather than "unknown".
 */
export async function closeProvisioningChannel(
  db: Db,
  id: Uint8Array,
  now: number,
  by: ProvisioningSide,
): Promise<void> {
  await inTransaction(db, async (trx) => {
    await trx
      .updateTable('provisioning_channels')
      .set({ closed_at: now, closed_by: by })
      .where('id', '=', id)
      .where('closed_at', 'is', null)
      .execute()
    await trx.deleteFrom('provisioning_messages').where('channel_id', '=', id).execute()
  })
}

/** Deletes the channels that expired by `now` with their messages; returns how many channels. */
export async function purgeExpiredProvisioningChannels(db: Db, now: number): Promise<number> {
  return inTransaction(db, async (trx) => {
    const expired = trx.selectFrom('provisioning_channels').select('id').where('expires_at', '<=', now)
    await trx.deleteFrom('provisioning_messages').where('channel_id', 'in', expired).execute()
    const result = await trx
      .deleteFrom('provisioning_channels')
      .where('expires_at', '<=', now)
      .executeTakeFirst()
    return Number(result.numDeletedRows)
  })
}
