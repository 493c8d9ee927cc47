/**
 * A fair queue, with the server's default limits, on SQLite and PostgreSQL: one account that floods
 * an offline user with the largest envelopes is refused once its own share of that user's queue is
 * full (E2E_ERR_QUEUE_SHARE_FULL, which names the limit it hit), while another sender still gets
 * through, and the recipient drains both. Before per-sender shares, the flood filled the whole queue
 * (about 1,020 such envelopes) and everyone else was refused with E2E_ERR_QUEUE_FULL.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { toBase64Url } from '../../shared/bytes.js'
import { MAX_ENVELOPE_BYTES } from '../../shared/limits.js'
import { ServerErrorCode } from '../errors.js'
import { MAX_QUEUED_BYTES_PER_SENDER } from '../limits.js'
import { createTestDatabase, DIALECTS, postgresUnavailable } from '../test/databases.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { connect, type FrameOf, type RelaySocket } from '../test/ws-client.js'

const pgSkip = await postgresUnavailable()

/** Sends per round of the flood: answers are awaited before the next round. */
const ROUND = 32
/** More than fill the recipient's whole queue (64 MiB is about 1,020 of these envelopes). */
const MAX_FLOOD = 1_100

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(`fair queue (${dialect})`, () => {
    const sockets: RelaySocket[] = []
    let server: TestServer | undefined
    afterAll(async () => {
      for (const socket of sockets) await socket.close()
      await server?.stop()
      await server?.database.dispose()
    })

    it('one sender flooding an offline user is refused at its share; another still gets through', async () => {
      let clock = Date.now()
      server = await startServer({ now: () => clock, database: await createTestDatabase(dialect) })
      const [mallory, carol, bob] = await Promise.all([signUp(server), signUp(server), signUp(server)])
      const bobName = bob.client.username
      const flooder = await connect(server, mallory.token, 'mallory')
      sockets.push(flooder)

      // Flood bob (offline) with the largest envelopes until the server refuses one.
      const accepted: string[] = []
      let refusal: FrameOf<'error'> | undefined
      let refusedId: string | undefined
      // A second passes per round, so the send rate limit never refuses the flood.
      while (!refusal && accepted.length < MAX_FLOOD) {
        clock += 1_000
        const ids = Array.from({ length: ROUND }, () =>
          flooder.sendMessage(bobName, { body: toBase64Url(randomBytes(MAX_ENVELOPE_BYTES)) }),
        )
        for (const id of ids) {
          const answer = await flooder.until(
            () =>
              flooder.frames.find(
                (frame) => (frame.type === 'accepted' || frame.type === 'error') && frame.id === id,
              ),
            `an answer to ${id}`,
          )
          if (answer.type === 'accepted') accepted.push(id)
          else if (!refusal) {
            refusal = answer as FrameOf<'error'>
            refusedId = id
          }
        }
      }
      expect(refusal, 'the flood was never refused').toBeDefined()
      expect(refusal).toMatchObject({ code: ServerErrorCode.QueueShareFull, id: refusedId })
      expect(refusal!.message).toMatch(/share/)
      // The share is well below the recipient's queue: the sender's bytes, not the queue's, ran out.
      expect(accepted.length).toBe(Math.floor(MAX_QUEUED_BYTES_PER_SENDER / MAX_ENVELOPE_BYTES))

      // Someone else still gets through to bob.
      const other = await connect(server, carol.token, 'carol')
      sockets.push(other)
      const carolId = other.sendMessage(bobName)
      expect(await other.next('accepted')).toMatchObject({ id: carolId })
      expect(other.all('error')).toEqual([])

      // Bob comes online and drains both senders' messages, in the order they were accepted.
      const recipient = await connect(server, bob.token, 'bob')
      sockets.push(recipient)
      expect(recipient.ready?.queued).toBe(accepted.length + 1)
      const delivered = await recipient.receive(accepted.length + 1)
      expect(delivered.map((frame) => frame.id)).toEqual([...accepted, carolId])
      expect(delivered.filter((frame) => frame.from === carol.client.username)).toHaveLength(1)

      // Once drained, the flooder's share is free again: the refused message goes through on retry.
      recipient.ack(delivered.at(-1)!.seq)
      await recipient.fence()
      await server.app.relay.settled()
      flooder.sendMessage(bobName, { id: refusedId!, body: toBase64Url(randomBytes(100)) })
      expect(await flooder.next('accepted', (frame) => frame.id === refusedId)).toBeDefined()
    })
  })
}
