/**
 * Less metadata at rest, on SQLite and PostgreSQL: after an end-to-end run over the real relay
 * (real sockets, real database), the database is searched, every table and every row, for what
 * must not be there once a message was delivered and acknowledged: a row linking its recipient to
 * its sender, the time it was acknowledged, its body. On SQLite the file itself is searched too
 * (deleted rows are zeroed, not left in free pages). And the sequence numbers a recipient sees
 * count only their own messages, not the server's traffic.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { createTestDatabase, DIALECTS, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, type RelaySocket } from '../test/ws-client.js'

const pgSkip = await postgresUnavailable()

type Member = Awaited<ReturnType<typeof signUp>>

/** Columns that name a user (users.id and the columns that reference it). */
const USER_COLUMNS = new Set(['user_id', 'sender_id', 'recipient_id'])

/** Every row of every table the application made (Kysely's own bookkeeping aside). */
async function everyRow(database: TestDatabase): Promise<{ table: string; row: Record<string, unknown> }[]> {
  const tables = (await database.db.introspection.getTables())
    .filter((table) => (database.dialect === 'postgres' ? table.schema === database.location : true))
    .map((table) => table.name)
    .filter((name) => !name.startsWith('kysely_'))
  const out: { table: string; row: Record<string, unknown> }[] = []
  for (const table of tables) {
    const { rows } = await sql<Record<string, unknown>>`select * from ${sql.table(table)}`.execute(
      database.db,
    )
    for (const row of rows) out.push({ table, row })
  }
  return out
}

const contains = (haystack: Uint8Array, needle: Uint8Array) => Buffer.from(haystack).indexOf(needle) !== -1

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`metadata at rest (${dialect})`, () => {
    const sockets: RelaySocket[] = []
    let server: TestServer | undefined
    afterAll(async () => {
      for (const socket of sockets) await socket.close()
      await server?.stop()
      await server?.database.dispose()
    })

    it('keeps no link from a delivered message to its recipient, nor its time or body; seq is per recipient', async () => {
      let clock = 1_800_000_000_000
      server = await startServer({ now: () => clock, database: await createTestDatabase(dialect) })
      const members = await Promise.all([1, 2, 3, 4].map(() => signUp(server!)))
      const [alice, bob, carol, dave] = members as [Member, Member, Member, Member]
      const online = async (member: Member, label: string) => {
        const socket = await connect(server!, member.token, label)
        sockets.push(socket)
        return socket
      }

      // Other traffic on the server: carol writes to dave twenty times.
      const c = await online(carol, 'carol')
      const d = await online(dave, 'dave')
      for (let i = 0; i < 20; i++) c.sendMessage(dave.client.username)
      const toDave = await d.receive(20)
      expect(toDave.map((frame) => frame.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))

      // Alice writes to bob, who is offline.
      const envelope = randomBytes(300)
      const a = await online(alice, 'alice')
      const id = a.sendMessage(bob.client.username, { body: toBase64Url(envelope) })
      await a.next('accepted')

      // Bob comes online at a time nothing else happens at, reads and acknowledges it.
      clock += 123_457
      const ackTime = clock
      const b = await online(bob, 'bob')
      const [delivered] = await b.receive(1)
      // His first message is number 1: nothing of carol's twenty shows.
      expect(delivered).toMatchObject({ seq: 1, id, from: alice.client.username })
      await b.fence()
      clock += 1_000
      c.sendMessage(dave.client.username) // a later commit, so bob's ack is surely committed
      await c.next('accepted', () => true)
      await server.app.relay.settled()
      for (const socket of sockets.splice(0)) await socket.close()
      await server.stop()

      const database = server.database
      const ids = await database.db.selectFrom('users').select(['id', 'username']).execute()
      const idOf = (member: Member) => ids.find((row) => row.username === member.client.username)!.id
      const [aliceId, bobId] = [idOf(alice), idOf(bob)]
      const messageId = Buffer.from(id, 'base64url')

      const rows = await everyRow(database)
      expect(rows.some(({ table }) => table === 'message_tombstones')).toBe(true)
      for (const { table, row } of rows) {
        const values = Object.values(row)
        const where = `${table} ${JSON.stringify(Object.keys(row))}`
        // No delivery time.
        expect(values.map(Number), `${where} holds the acknowledgement time`).not.toContain(ackTime)
        // No body.
        for (const value of values) {
          if (value instanceof Uint8Array)
            expect(contains(value, envelope), `${where} holds the body`).toBe(false)
        }
        // No row that links the recipient to this message or to its sender.
        const idColumns = Object.entries(row)
          // A row's own `id` names a user only in `users` (elsewhere it is that row's number, which
          // may equal any user's id by chance).
          .filter(([column]) => USER_COLUMNS.has(column) || (column === 'id' && table === 'users'))
          .map(([, value]) => Number(value))
        const holdsMessage = values.some(
          (value) => value instanceof Uint8Array && Buffer.from(value).equals(messageId),
        )
        if (holdsMessage)
          expect(idColumns, `${where} names the recipient of the message`).not.toContain(bobId)
        expect(
          idColumns.includes(aliceId) && idColumns.includes(bobId),
          `${where} links the sender and the recipient`,
        ).toBe(false)
      }

      if (dialect === 'sqlite') {
        // Deleted rows are zeroed in the file once the log is checkpointed into it.
        await sql`pragma wal_checkpoint(truncate)`.execute(database.db)
        const file = readFileSync(database.location)
        expect(contains(file, envelope), 'the database file holds the delivered body').toBe(false)
      }
    })
  })
}
