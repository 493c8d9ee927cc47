/**
 * POST /api/v1/account/delete over real TLS and WebSockets, on SQLite and PostgreSQL: the session
 * token and the login secret are both needed (the password beside it only for an account still on
 * its password, as for /login); deletion closes the user's sockets at once, leaves no row
 * that names the user (every table is read back), tells contacts (a send gets
 * E2E_ERR_ACCOUNT_DELETED, a watcher gets `identity.changed`, a key lookup 410), and holds the name
 * against registration by anyone until DELETED_USERNAME_HOLD_MS has passed on the injected clock.
 */
import { type Kysely, sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { toHex, utf8Encode } from '../shared/bytes.js'
import { CredentialFields, DeleteAccountRequest, LoginRequest } from '../shared/codec/api.js'
import { hashPassword } from './auth/password.js'
import { usernameHash } from './db/users.js'
import { DELETED_USERNAME_HOLD_MS, LOGIN_FAILURES_PER_ACCOUNT } from './limits.js'
import { DIALECTS, postgresUnavailable } from './test/databases.js'
import {
  login,
  loginSecretFor,
  makeClient,
  register,
  signUp,
  startServer,
  TEST_BCRYPT_COST,
  type TestServer,
} from './test/harness.js'
import { connect, openSocket, sharePresence } from './test/ws-client.js'

const pgSkip = await postgresUnavailable()
const START = Date.UTC(2026, 11, 3)

/** Every row of every table of the server's database, as hex and text, for grepping. */
async function everyRow(server: TestServer): Promise<Map<string, Record<string, unknown>[]>> {
  // biome-ignore lint/suspicious/noExplicitAny: reads whatever tables exist, whatever their layout
  const db = server.database.db as unknown as Kysely<any>
  const tables = (await db.introspection.getTables()).filter(
    (table) =>
      (server.database.dialect === 'sqlite' || table.schema === server.database.location) &&
      !table.name.startsWith('kysely_'),
  )
  const rows = new Map<string, Record<string, unknown>[]>()
  for (const table of tables) {
    rows.set(
      table.name,
      (await sql<Record<string, unknown>>`select * from ${sql.table(table.name)}`.execute(db)).rows,
    )
  }
  return rows
}

/** Columns that hold a user's id, in any table (besides users.id). */
const USER_ID_COLUMNS = new Set([
  'user_id',
  'sender_id',
  'recipient_id',
  'owner_id',
  'target_id',
  'requester_id',
  'claimed_by',
])

/** The columns of `rows` that hold this user id, and the values that contain these bytes. */
function mentions(
  rows: Map<string, Record<string, unknown>[]>,
  userId: number,
  needles: readonly Uint8Array[],
): string[] {
  const found: string[] = []
  const hexNeedles = needles.map((needle) => toHex(needle))
  for (const [table, tableRows] of rows) {
    for (const row of tableRows) {
      for (const [column, value] of Object.entries(row)) {
        const idColumn = column === 'id' ? table === 'users' : USER_ID_COLUMNS.has(column)
        if (idColumn && Number(value) === userId) found.push(`${table}.${column} = ${userId}`)
        const hex =
          value instanceof Uint8Array
            ? toHex(value)
            : typeof value === 'string'
              ? toHex(utf8Encode(value))
              : ''
        for (const needle of hexNeedles) if (hex.includes(needle)) found.push(`${table}.${column} holds it`)
      }
    }
  }
  return found
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`deleting an account on ${dialect}`, () => {
    let server: TestServer | undefined
    let clock = START
    afterEach(async () => {
      await server?.close()
      server = undefined
    })

    async function start(): Promise<TestServer> {
      clock = START
      server = await startServer({ dialect, now: () => clock })
      return server
    }

    /** Deletes with the login secret of `password`, as today's client sends it. */
    const remove = (target: TestServer, token: Uint8Array, username: string, password: string) =>
      target.request('/api/v1/account/delete', {
        token,
        body: { username, loginSecret: loginSecretFor(password) },
      })

    it('takes the credential fields /login takes, from one place', () => {
      for (const field of Object.keys(CredentialFields)) {
        expect(DeleteAccountRequest.properties).toHaveProperty(field)
        expect(LoginRequest.properties).toHaveProperty(field)
      }
    })

    it('refuses without the token, with a wrong password, or for another name; nothing is deleted', async () => {
      const target = await start()
      const alice = await signUp(target)
      const bob = await signUp(target)
      const { username, password } = alice.client

      const anonymous = await target.request('/api/v1/account/delete', {
        body: { username, loginSecret: loginSecretFor(password) },
      })
      expect(anonymous.status).toBe(401)
      expect(anonymous.body.error.code).toBe('E2E_ERR_UNAUTHENTICATED')

      const wrong = await remove(target, alice.token, username, `${password}!`)
      expect(wrong.status).toBe(401)
      expect(wrong.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')

      // Bob's own, correct password with Alice's token deletes nobody.
      const other = await remove(target, alice.token, bob.client.username, bob.client.password)
      expect(other.status).toBe(400)
      expect(other.body.error.code).toBe('E2E_ERR_BAD_REQUEST')

      const still = await target.request(`/api/v1/users/${username}/identity`, { token: bob.token })
      expect(still.status).toBe(200)
      expect((await target.request('/api/v1/keys/status', { token: alice.token })).status).toBe(200)
    })

    it('an account still on its password is asked for it beside the secret, as /login asks', async () => {
      const target = await start()
      const alice = await signUp(target)
      const { username, password, loginSecret } = alice.client
      // The account as the previous version stored it: a bcrypt hash of the password itself.
      await target.database.db
        .updateTable('users')
        .set({ credential: 'password', password_hash: await hashPassword(password, TEST_BCRYPT_COST) })
        .where('username', '=', username)
        .execute()
      const secretOnly = await remove(target, alice.token, username, password)
      expect(secretOnly.status).toBe(409)
      expect(secretOnly.body.error.code).toBe('E2E_ERR_CREDENTIAL_UPGRADE')
      expect((await target.request('/api/v1/keys/status', { token: alice.token })).status).toBe(200)
      // A password alone is what an old client would send: this route takes the secret always.
      const passwordOnly = await target.request('/api/v1/account/delete', {
        token: alice.token,
        body: { username, password },
      })
      expect(passwordOnly.status).toBe(400)
      const both = await target.request('/api/v1/account/delete', {
        token: alice.token,
        body: { username, loginSecret, password },
      })
      expect(both.status).toBe(204)
      expect(await target.database.db.selectFrom('users').selectAll().execute()).toEqual([])
    })

    it('guesses meet the strict per-account limit of reinstall', async () => {
      const target = await start()
      const alice = await signUp(target)
      const { username, password } = alice.client
      for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT; i++) {
        const wrong = await remove(target, alice.token, username, `${password}-${i}`)
        expect(wrong.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')
      }
      const refused = await remove(target, alice.token, username, password)
      expect(refused.status).toBe(429)
      expect(refused.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
      expect((await target.request('/api/v1/keys/status', { token: alice.token })).status).toBe(200)
    })

    it('deletes every row of the user, closes its sockets, and tells contacts', async () => {
      const target = await start()
      const alice = await signUp(target, { oneTimePreKeys: 3 })
      const bob = await signUp(target)
      const carol = await signUp(target)
      const dave = await signUp(target)
      const aliceId = Number(
        (
          await target.database.db
            .selectFrom('users')
            .select('id')
            .where('username', '=', alice.client.username)
            .executeTakeFirstOrThrow()
        ).id,
      )
      // Relations: Alice lets Carol see her presence, Bob lets Alice see his, and Dave blocks her.
      await sharePresence(target, alice.token, [carol.client.username])
      await sharePresence(target, bob.token, [alice.client.username])
      const blocked = await target.request(`/api/v1/blocks/${alice.client.username}`, {
        method: 'PUT',
        token: dave.token,
      })
      expect(blocked.status).toBe(204)
      // One-time prekey claims: Bob claims one of Alice's, Alice one of Carol's.
      for (const [token, of] of [
        [bob.token, alice.client.username],
        [alice.token, carol.client.username],
      ] as const) {
        expect((await target.request(`/api/v1/users/${of}/bundle`, { token })).status).toBe(200)
      }
      // A second session, online elsewhere: it ends too.
      const aliceSocket = await connect(target, alice.token, 'alice')
      // And a token of another device of Alice's, not connected now.
      const otherDevice = await login(target, alice.client)
      const bobSocket = await connect(target, bob.token, 'bob')
      const carolSocket = await connect(target, carol.token, 'carol')

      // Queued for Alice (Bob's), queued for Carol from Alice, and a tombstone of Alice's to Bob.
      bobSocket.sendMessage(alice.client.username)
      await bobSocket.next('accepted')
      aliceSocket.sendMessage(carol.client.username)
      await aliceSocket.next('accepted')
      aliceSocket.sendMessage(bob.client.username)
      await aliceSocket.next('accepted')
      const [delivered] = await bobSocket.receive(1)
      expect(delivered!.from).toBe(alice.client.username)
      // The ack has reached the relay (fence) and its batch is committed (settled): a tombstone.
      await bobSocket.fence()
      await target.app.relay.settled()
      // Carol watches Alice; the message from Alice reaches her but stays unacknowledged (queued).
      carolSocket.subscribe([alice.client.username])
      await carolSocket.next('presence', (frame) => frame.username === alice.client.username)

      const before = await everyRow(target)
      const needles = [utf8Encode(alice.client.username), alice.client.identity.public.identityKey]
      expect(mentions(before, aliceId, needles).length).toBeGreaterThan(0)
      expect(before.get('message_tombstones')!.length).toBeGreaterThan(0)
      expect(before.get('relations')).toHaveLength(3)
      expect(before.get('one_time_prekey_claims')).toHaveLength(2)

      const response = await remove(target, alice.token, alice.client.username, alice.client.password)
      expect(response.status).toBe(204)
      expect(response.text).toBe('')

      const closed = await aliceSocket.closed
      expect(closed.code).toBe(1008)
      expect(aliceSocket.all('error').map((frame) => frame.code)).toContain('E2E_ERR_ACCOUNT_DELETED')
      expect((await carolSocket.next('identity.changed')).username).toBe(alice.client.username)

      // No row names Alice: not her id, her name or her identity key; the hold keeps a hash only.
      const after = await everyRow(target)
      expect(mentions(after, aliceId, needles)).toEqual([])
      // Relations name no user but their owner; every one here concerned Alice, so none is left.
      expect(after.get('relations')).toEqual([])
      expect(after.get('one_time_prekey_claims')).toEqual([])
      expect(after.get('deleted_usernames')).toEqual([
        expect.objectContaining({ held_until: START + DELETED_USERNAME_HOLD_MS }),
      ])
      expect(Object.keys(after.get('deleted_usernames')![0]!).sort()).toEqual(['held_until', 'username_hash'])
      expect(new Uint8Array(after.get('deleted_usernames')![0]!.username_hash as Uint8Array)).toEqual(
        usernameHash(alice.client.username),
      )
      // Everyone else's rows are still there.
      expect(after.get('users')!.map((row) => row.username)).toEqual(
        expect.arrayContaining([bob.client.username, carol.client.username]),
      )

      // The old tokens are dead, REST and relay alike, and say why: the account was deleted (the
      // device whose answer to the delete was lost, or another device of the account, hears it).
      for (const token of [alice.token, otherDevice]) {
        const status = await target.request('/api/v1/keys/status', { token })
        expect(status.status).toBe(401)
        expect(status.body.error.code).toBe('E2E_ERR_ACCOUNT_DELETED')
        const socket = await openSocket(target, 'alice after')
        socket.auth(token)
        const refused = await socket.next('error')
        expect(refused.code).toBe('E2E_ERR_ACCOUNT_DELETED')
        expect(refused.id).toBeUndefined()
        expect((await socket.closed).code).toBe(1008)
      }
      // Only the token hashes, as auth_tokens kept them, and why: nothing that names Alice.
      expect(after.get('ended_tokens')!.map((row) => Object.keys(row).sort())).toEqual([
        ['expires_at', 'reason', 'token_hash'],
        ['expires_at', 'reason', 'token_hash'],
      ])
      // A token nobody ever had is still just unknown.
      expect(
        (await target.request('/api/v1/keys/status', { token: new Uint8Array(32).fill(9) })).status,
      ).toBe(401)
      const loginAgain = await target.request('/api/v1/login', {
        body: { username: alice.client.username, loginSecret: alice.client.loginSecret },
      })
      expect(loginAgain.body.error.code).toBe('E2E_ERR_INVALID_CREDENTIALS')

      // Contacts get a clear answer: the account was deleted (not "nobody has this name").
      const id = bobSocket.sendMessage(alice.client.username)
      const refusal = await bobSocket.next('error', (frame) => frame.id === id)
      expect(refusal.code).toBe('E2E_ERR_ACCOUNT_DELETED')
      for (const path of ['identity', 'bundle']) {
        const lookup = await target.request(`/api/v1/users/${alice.client.username}/${path}`, {
          token: bob.token,
        })
        expect(lookup.status).toBe(410)
        expect(lookup.body.error.code).toBe('E2E_ERR_ACCOUNT_DELETED')
      }
      const search = await target.request(`/api/v1/users?query=${alice.client.username}`, {
        token: bob.token,
      })
      expect(search.body.users).toEqual([])
      // What Alice sent and Carol had not acknowledged is gone from Carol's queue too.
      expect(carolSocket.all('deliver').map((frame) => frame.from)).toEqual([alice.client.username])
      const carolAgain = await connect(target, carol.token, 'carol again')
      expect(carolAgain.ready.queued).toBe(0)
      await Promise.all([bobSocket.close(), carolSocket.close(), carolAgain.close()])
    })

    it('holds the name against anyone registering it until the hold ends, then frees it', async () => {
      const target = await start()
      const alice = await signUp(target)
      const bob = await signUp(target)
      expect((await remove(target, alice.token, alice.client.username, alice.client.password)).status).toBe(
        204,
      )

      const impostor = await makeClient({ username: alice.client.username.toUpperCase() })
      const refused = await target.request('/api/v1/register', { body: impostor.registerBody() })
      expect(refused.status).toBe(409)
      expect(refused.body.error.code).toBe('E2E_ERR_USERNAME_TAKEN')
      expect(refused.body.error.message).toMatch(/deleted account/)

      clock = START + DELETED_USERNAME_HOLD_MS - 1
      expect((await target.request('/api/v1/register', { body: impostor.registerBody() })).status).toBe(409)

      // The hold has ended: a send now meets "no such user", and the name can be registered.
      clock = START + DELETED_USERNAME_HOLD_MS
      // Bob's first token has expired by now (TOKEN_LIFETIME_MS).
      const bobSocket = await connect(target, await login(target, bob.client), 'bob')
      const id = bobSocket.sendMessage(alice.client.username)
      expect((await bobSocket.next('error', (frame) => frame.id === id)).code).toBe('E2E_ERR_USER_NOT_FOUND')
      await register(target, impostor)
      const rows = await target.database.db.selectFrom('deleted_usernames').selectAll().execute()
      expect(rows).toEqual([])
      await bobSocket.close()
    })
  })
}
