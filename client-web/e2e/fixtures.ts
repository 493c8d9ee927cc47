/**
 * Fixtures for the browser tests: a test server with browsers on it, unique usernames, strong
 * passwords, and a hostile key swap.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll } from 'vitest'
import { startServer, type TestServer } from '../../server/test/harness.js'
import { Device, type DeviceOptions } from './browser.js'

export interface ServerWithBrowsers<Name extends string> {
  /** The running server (read it in hooks and tests: it starts in `beforeAll`). */
  readonly server: TestServer
  /** One device per name, started on the server in `beforeAll`. */
  readonly devices: Readonly<Record<Name, Device>>
}

/**
 * For one test file: starts a test server and a browser with a fresh profile per device named
 * (`{ alice: {}, phone: { viewport: PHONE } }`, the name also naming its screenshots) before the
 * file's tests, and closes them all after them (after the file's own `afterAll` hooks, which run
 * first). Call it at the top of the file; the devices can be taken out at once.
 */
export function serverWithBrowsers<const Name extends string>(
  options: Readonly<Record<Name, DeviceOptions>>,
): ServerWithBrowsers<Name> {
  const names = Object.keys(options) as Name[]
  const devices = Object.fromEntries(names.map((name) => [name, new Device(name, options[name])])) as Record<
    Name,
    Device
  >
  let server: TestServer | undefined
  const started: Device[] = []
  beforeAll(async () => {
    const running = await startServer()
    server = running
    await Promise.all(
      names.map(async (name) => {
        await devices[name].start(running)
        started.push(devices[name])
      }),
    )
  })
  // A failed (or timed-out) test says where each browser stood: vitest's timeout names no step,
  // so this is how a hang seen once in CI can be read afterwards.
  afterEach(async (context) => {
    if (context.task.result?.state !== 'fail') return
    for (const device of started) console.error(await device.describe())
  })
  afterAll(async () => {
    await Promise.all(started.map((device) => device.dispose()))
    await server?.close()
  })
  return {
    get server(): TestServer {
      if (!server) throw new Error('The test server starts in beforeAll: read it in a hook or a test')
      return server
    },
    devices,
  }
}

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
 * hostile server) would: the next client to fetch the victim's keys sees a changed identity. The
 * impostor's account gives its keys up first (random bytes in their place): the database lets only
 * one account hold a key (migration 2026-12-03-05-unique-identity-keys).
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
    .set({ identity_key: new Uint8Array(randomBytes(32)), signing_key: new Uint8Array(randomBytes(32)) })
    .where('id', '=', impostorRow.id)
    .execute()
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
    .columns(['user_id', 'device_id', 'key_id', 'public_key', 'signature', 'created_at'])
    .expression(
      db
        .selectFrom('signed_prekeys')
        .select([
          (eb) => eb.val(victimRow.id).as('user_id'),
          'device_id',
          'key_id',
          'public_key',
          'signature',
          'created_at',
        ])
        .where('user_id', '=', impostorRow.id),
    )
    .execute()
}
