/**
 * The per-user send rate counted for the whole cluster (cluster-send-rate.ts): two nodes on one
 * PostgreSQL database and one Redis, one user with a socket on each. Sends spread over both draw
 * on one bucket, so together they get the burst once, not once per node. The rate is so slow
 * (one token in 1,000 s) that refill during the test adds nothing to the count.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RelationsKey } from '../db/relations.js'
import { ServerErrorCode } from '../errors.js'
import { createTestDatabase, postgresUnavailable, type TestDatabase } from '../test/databases.js'
import { signUp, startServer, type TestServer } from '../test/harness.js'
import { REDIS_TEST_URL, redisUnavailable, testChannelPrefix } from '../test/redis.js'
import { connect, type RelaySocket } from '../test/ws-client.js'
import { sendRateLeaseSize } from './cluster-send-rate.js'

const skip = (await postgresUnavailable()) ?? (await redisUnavailable())

const SEND_RATE = { perSecond: 0.001, burst: 20 }
/** What each node may hold unspent beyond the burst (one send at this burst). */
const LEASE = sendRateLeaseSize(SEND_RATE)

describe.skipIf(skip !== undefined)('the send rate across nodes', () => {
  let database: TestDatabase
  let nodes: TestServer[] = []

  beforeAll(async () => {
    database = await createTestDatabase('postgres')
    const redis = { url: REDIS_TEST_URL, channelPrefix: testChannelPrefix() }
    const relationsKey = RelationsKey.random()
    const limits = { sendRatePerUser: SEND_RATE }
    nodes = [
      await startServer({ database, redis, relationsKey, limits }),
      await startServer({ database, redis, relationsKey, limits }),
    ]
  })

  afterAll(async () => {
    for (const node of nodes) await node.close()
    await database?.dispose()
  })

  it('is one allowance for the cluster: sends spread over two nodes are refused after one burst', async () => {
    const alice = await signUp(nodes[0]!)
    const bob = await signUp(nodes[1]!)
    const sockets = [await connect(nodes[0]!, alice.token), await connect(nodes[1]!, alice.token)]
    const sent: string[][] = [[], []]
    // Twice the burst, alternating: each node alone would have allowed all of its half.
    for (let i = 0; i < 2 * SEND_RATE.burst; i++) {
      sent[i % 2]!.push(sockets[i % 2]!.sendMessage(bob.client.username))
    }
    const answers = await Promise.all(sockets.map((socket, index) => answered(socket, sent[index]!)))
    const accepted = answers.flatMap((answer) => answer.accepted)
    const refused = answers.flatMap((answer) => answer.refused)

    expect(accepted.length).toBeGreaterThanOrEqual(SEND_RATE.burst)
    expect(accepted.length).toBeLessThanOrEqual(SEND_RATE.burst + nodes.length * LEASE)
    expect(accepted.length + refused.length).toBe(2 * SEND_RATE.burst)
    // Both nodes refuse, each with the error a single node gives.
    for (const answer of answers) expect(answer.refused.length).toBeGreaterThan(0)
    for (const error of refused) {
      expect(error).toMatchObject({
        code: ServerErrorCode.RateLimited,
        message: `expected at most ${SEND_RATE.perSecond} sends a second, got more; retry later`,
      })
    }
    for (const socket of sockets) await socket.close()
  })
})

/** Waits until every send in `ids` is answered, accepted or refused. */
async function answered(socket: RelaySocket, ids: readonly string[]) {
  const wanted = new Set(ids)
  const accepted = () => socket.all('accepted').filter((frame) => wanted.has(frame.id))
  const refused = () => socket.all('error').filter((frame) => frame.id !== undefined && wanted.has(frame.id))
  await socket.until(
    () => (accepted().length + refused().length >= ids.length ? true : undefined),
    `an answer to each of ${ids.length} sends`,
  )
  return { accepted: accepted(), refused: refused() }
}
