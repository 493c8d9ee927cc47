/** Test data for the browser tests: unique usernames, strong passwords, and a hostile key swap. */
import { randomBytes } from 'node:crypto'
import type { TestServer } from '../../server/test/harness.js'

let counter = 0

/** A username no other test (or earlier run against the same database) has used. */
export function uniqueName(prefix: string): string {
  counter++
  return `${prefix}${process.pid.toString(36)}${counter}${randomBytes(2).toString('hex')}`
}

/** A password zxcvbn scores 4 (random words and a random tail). */
export function strongPassword(): string {
  return `violet-anchor-${randomBytes(6).toString('base64url')}-mosaic`
}

/**
 * Makes the server hand out `impostor`'s identity and prekeys as `victim`'s, as a reinstall (or a
 * hostile server) would: the next client to fetch the victim's keys sees a changed identity.
 */
export async function swapIdentity(server: TestServer, victim: string, impostor: string): Promise<void> {
  const db = server.database.db
  const impostorRow = await db
    .selectFrom('users')
    .selectAll()
    .where('username', '=', impostor)
    .executeTakeFirstOrThrow()
  const victimRow = await db
    .selectFrom('users')
    .select('id')
    .where('username', '=', victim)
    .executeTakeFirstOrThrow()
  await db
    .updateTable('users')
    .set({
      identity_key: impostorRow.identity_key,
      signing_key: impostorRow.signing_key,
      identity_signature: impostorRow.identity_signature,
    })
    .where('id', '=', victimRow.id)
    .execute()
  await db.deleteFrom('signed_prekeys').where('user_id', '=', victimRow.id).execute()
  await db.deleteFrom('one_time_prekeys').where('user_id', '=', victimRow.id).execute()
  await db
    .insertInto('signed_prekeys')
    .columns(['user_id', 'key_id', 'public_key', 'signature', 'created_at'])
    .expression(
      db
        .selectFrom('signed_prekeys')
        .select([
          (eb) => eb.val(victimRow.id).as('user_id'),
          'key_id',
          'public_key',
          'signature',
          'created_at',
        ])
        .where('user_id', '=', impostorRow.id),
    )
    .execute()
}
