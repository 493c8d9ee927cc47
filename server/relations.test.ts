/**
 * Presence only between people who talk, and blocking (issue 10, items 5 and 11), against the real
 * server over TLS with real WebSocket clients, on SQLite and PostgreSQL:
 *   - a stranger's subscription gets no state, no changes and no identity-change notice, while a
 *     user the owner shared presence with gets all three, also when the grant comes later;
 *   - a blocked user's sends are answered `accepted` and never stored or delivered, their watch
 *     ends, their bundle fetches claim no one-time prekey; unblocking lets sends through again;
 *   - grants and blocks survive a restart; the table names no second user; deleteRelationsOf
 *     removes every row of a user, either side;
 *   - a directory search answers one bounded page (USER_SEARCH_MAX_RESULTS).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { USER_SEARCH_MAX_RESULTS } from '../shared/limits.js'
import { primaryDevice } from './db/devices.js'
import { countQueued } from './db/queue.js'
import { deleteRelationsOf, RelationsKey } from './db/relations.js'
import { createAccount } from './db/users.js'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from './test/databases.js'
import { makeClient, signUp, startServer, type TestServer } from './test/harness.js'
import { connect, type RelaySocket, sharePresence } from './test/ws-client.js'

const pgSkip = await postgresUnavailable()

type Member = Awaited<ReturnType<typeof signUp>>

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`relations over WSS (${dialect})`, () => {
    let database: TestDatabase
    let server: TestServer
    const relationsKey = RelationsKey.random()
    const sockets: RelaySocket[] = []
    const name = (member: Member) => member.client.username
    const online = async (member: Member, label?: string) => {
      const socket = await connect(server, member.token, label ?? name(member))
      sockets.push(socket)
      return socket
    }
    const block = (owner: Member, other: Member, method: 'PUT' | 'DELETE' = 'PUT') =>
      server.request(`/api/v1/blocks/${name(other)}`, { method, token: owner.token })
    const relationRows = () => database.db.selectFrom('relations').selectAll().execute()

    beforeAll(async () => {
      database = await createTestDatabase(dialect)
      server = await startServer({ database, relationsKey })
    })
    afterAll(async () => {
      for (const socket of sockets) await socket.close()
      await server.stop()
      await database.dispose()
    })

    it("a stranger's subscription gets no state, no changes and no identity change; a contact's gets all", async () => {
      const [owner, contact, stranger] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      await sharePresence(server, owner.token, [name(contact)])
      const c = await online(contact)
      const s = await online(stranger)
      c.subscribe([name(owner)])
      s.subscribe([name(owner)])
      expect(await c.next('presence')).toEqual({
        v: 1,
        type: 'presence',
        username: name(owner),
        online: false,
      })

      const o = await online(owner)
      expect(await c.next('presence')).toMatchObject({ username: name(owner), online: true })
      // The owner starts over on a new device: only the contact is told.
      const replacement = await makeClient({ username: name(owner), password: owner.client.password })
      expect((await server.request('/api/v1/reinstall', { body: replacement.registerBody() })).status).toBe(
        200,
      )
      expect((await c.next('identity.changed')).username).toBe(name(owner))
      await o.closed
      expect(await c.next('presence')).toMatchObject({ username: name(owner), online: false })

      // Everything the owner did has reached the contact; the stranger heard none of it.
      await s.fence()
      expect(s.all('presence').filter((frame) => frame.username === name(owner))).toEqual([])
      expect(s.all('identity.changed')).toEqual([])
      expect(s.all('error')).toEqual([])
    })

    it('answers a waiting subscription once the owner shares presence, and tells nobody else', async () => {
      const [owner, viewer, other] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      const o = await online(owner)
      const v = await online(viewer)
      const x = await online(other)
      v.subscribe([name(owner)])
      x.subscribe([name(owner)])
      await v.fence()
      expect(v.all('presence').filter((frame) => frame.username === name(owner))).toEqual([])

      o.share([name(viewer), 'nobody-here-at-all', name(owner)])
      expect(await v.next('presence')).toEqual({
        v: 1,
        type: 'presence',
        username: name(owner),
        online: true,
      })
      await o.close()
      expect(await v.next('presence')).toMatchObject({ username: name(owner), online: false })
      await x.fence()
      expect(x.all('presence').filter((frame) => frame.username === name(owner))).toEqual([])
    })

    it("drops a blocked user's sends as accepted, ends their watch, and claims no prekey for them", async () => {
      const [owner, blocked, friend] = await Promise.all([
        signUp(server, { oneTimePreKeys: 3 }),
        signUp(server),
        signUp(server),
      ])
      await sharePresence(server, owner.token, [name(blocked), name(friend)])
      const o = await online(owner)
      const b = await online(blocked)
      b.subscribe([name(owner)])
      expect(await b.next('presence')).toMatchObject({ username: name(owner), online: true })

      expect((await block(owner, blocked)).status).toBe(204)
      // The watch ends with "offline", as when the owner leaves, and nothing follows.
      expect(await b.next('presence')).toMatchObject({ username: name(owner), online: false })
      const id = b.sendMessage(name(owner))
      const accepted = await b.next('accepted')
      expect(accepted.id).toBe(id)
      const bundle = await server.request(`/api/v1/users/${name(owner)}/bundle`, { token: blocked.token })
      expect(bundle.status).toBe(200)
      expect(bundle.body.signedPreKey.keyId).toBe(1)
      expect(bundle.body.oneTimePreKey).toBeUndefined()
      const status = await server.request('/api/v1/keys/status', { token: owner.token })
      expect(status.body.oneTimePreKeys).toBe(3)

      // Another sender is not affected: their message is the only one the owner gets.
      const f = await online(friend)
      const fromFriend = f.sendMessage(name(owner))
      const [delivered] = await o.receive(1)
      expect(delivered).toMatchObject({ id: fromFriend, from: name(friend) })
      await o.close()
      // Its acknowledgement was taken before the close; committed before the owner comes back.
      await server.app.relay.settled()
      const again = await online(owner)
      expect(again.ready.queued).toBe(0)
      expect(await countQueued(database.db, primaryDevice(await idOf(owner)))).toBe(0)

      // A second subscription gets nothing now, whether the owner is online or not.
      b.subscribe([name(owner)])
      await b.fence()
      expect(b.all('presence').filter((frame) => frame.username === name(owner))).toHaveLength(2)

      // Unblocked: sends go through again (presence stays withheld until the owner shares it again).
      expect((await block(owner, blocked, 'DELETE')).status).toBe(204)
      const after = b.sendMessage(name(owner))
      const [now] = await again.receive(1)
      expect(now).toMatchObject({ id: after, from: name(blocked) })
      expect(again.all('deliver').map((frame) => frame.id)).not.toContain(id)
    })

    it('refuses to block yourself or nobody, and needs a session', async () => {
      const owner = await signUp(server)
      const self = await server.request(`/api/v1/blocks/${name(owner)}`, {
        method: 'PUT',
        token: owner.token,
      })
      expect(self.status).toBe(400)
      expect(self.body.error.code).toBe('E2E_ERR_BAD_REQUEST')
      const nobody = await server.request('/api/v1/blocks/nobody-here-at-all', {
        method: 'PUT',
        token: owner.token,
      })
      expect(nobody.status).toBe(404)
      expect(nobody.body.error.code).toBe('E2E_ERR_USER_NOT_FOUND')
      const anonymous = await server.request(`/api/v1/blocks/${name(owner)}`, { method: 'PUT' })
      expect(anonymous.status).toBe(401)
    })

    it('keeps grants and blocks across a restart, stored without naming the other user', async () => {
      const [owner, viewer, blocked] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      await sharePresence(server, owner.token, [name(viewer), name(blocked)])
      expect((await block(owner, blocked)).status).toBe(204)
      await server.stop()
      server = await startServer({ database, relationsKey })

      const v = await online(viewer)
      const b = await online(blocked)
      v.subscribe([name(owner)])
      b.subscribe([name(owner)])
      expect(await v.next('presence')).toMatchObject({ username: name(owner), online: false })
      const dropped = b.sendMessage(name(owner))
      await b.next('accepted')
      await b.fence()
      expect(b.all('presence').filter((frame) => frame.username === name(owner))).toEqual([])
      const o = await online(owner)
      expect(o.ready.queued).toBe(0)
      expect(o.all('deliver').map((frame) => frame.id)).not.toContain(dropped)

      const ownerId = await idOf(owner)
      const rows = (await relationRows()).filter((row) => row.owner_id === ownerId)
      expect(rows.map((row) => row.kind).sort()).toEqual(['block', 'presence'])
      expect(Object.keys(rows[0]!).sort()).toEqual(['kind', 'owner_id', 'pair_hash'])
      for (const row of rows) expect(row.pair_hash).toHaveLength(32)
    })

    it('deleteRelationsOf removes the rows a user owns and those others keep with them', async () => {
      const [gone, keeper, bystander] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      await sharePresence(server, gone.token, [name(keeper)])
      await sharePresence(server, keeper.token, [name(gone), name(bystander)])
      expect((await block(bystander, gone)).status).toBe(204)
      const [goneId, keeperId, bystanderId] = await Promise.all([idOf(gone), idOf(keeper), idOf(bystander)])
      const countOf = async (ownerId: number) =>
        (await relationRows()).filter((row) => row.owner_id === ownerId).length
      expect([await countOf(goneId), await countOf(keeperId), await countOf(bystanderId)]).toEqual([1, 2, 1])

      await deleteRelationsOf(database.db, relationsKey, goneId)
      expect([await countOf(goneId), await countOf(keeperId), await countOf(bystanderId)]).toEqual([0, 1, 0])
      // What stays is keeper's grant to the bystander.
      const b = await online(bystander)
      b.subscribe([name(keeper)])
      expect(await b.next('presence')).toMatchObject({ username: name(keeper), online: false })
    })

    it('answers a directory search with one bounded page', async () => {
      const prefix = `page${dialect.slice(0, 2)}`
      for (let index = 0; index < USER_SEARCH_MAX_RESULTS + 5; index++) {
        await createAccount(database.db, {
          username: `${prefix}${String(index).padStart(3, '0')}`,
          passwordHash: 'x',
          loginKey: new Uint8Array(10),
          // Each account holds keys of its own (the server refuses a key another account holds).
          identity: {
            identityKey: crypto.getRandomValues(new Uint8Array(32)),
            signingKey: crypto.getRandomValues(new Uint8Array(32)),
            identitySignature: new Uint8Array(64),
          },
          signedPreKey: { keyId: 1, publicKey: new Uint8Array(32), signature: new Uint8Array(64) },
          oneTimePreKeys: [],
          now: 1,
        })
      }
      const searcher = await signUp(server)
      const page = await server.request(`/api/v1/users?query=${prefix}`, { token: searcher.token })
      expect(page.status).toBe(200)
      expect(page.body.users).toHaveLength(USER_SEARCH_MAX_RESULTS)
      expect(page.body.users[0]).toEqual({ username: `${prefix}000` })
      expect(page.body.users.at(-1)).toEqual({
        username: `${prefix}${String(USER_SEARCH_MAX_RESULTS - 1).padStart(3, '0')}`,
      })
    })

    async function idOf(member: Member): Promise<number> {
      const row = await database.db
        .selectFrom('users')
        .select('id')
        .where('username', '=', name(member))
        .executeTakeFirstOrThrow()
      return row.id
    }
  })
}
