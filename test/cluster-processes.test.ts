/**
 * Three server processes as `npm start` runs them (server/main.ts), each on its own port and data
 * directory, on one PostgreSQL database (a fresh schema of this run) and one Redis (a redis-server
 * of this test's own, so that it can be killed and restarted without touching the machine's), with
 * real WebSocket clients: live and queued delivery across nodes, a logout on one node ending
 * sockets on two others, a node killed with SIGKILL in the middle of a burst without losing or
 * repeating a message, and Redis restarted mid-run with delivery going on after. Every wait ends on
 * an event; timeouts only turn a hang into a failure.
 */
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  createTestDatabase,
  POSTGRES_TEST_URL,
  postgresUnavailable,
  type TestDatabase,
} from '../server/test/databases.js'
import { login, removeDir, signUp, type TestClient, testCertificate } from '../server/test/harness.js'
import { freePort, type NodeProcess, shareRelationsKey, startNode } from '../server/test/processes.js'
import { hasRedisServer, startRedisServer, stopRedisServer } from '../server/test/redis.js'
import { connect, type FrameOf, type RelaySocket, WAIT_TIMEOUT_MS } from '../server/test/ws-client.js'

const pgSkip = await postgresUnavailable()
const redisServer = hasRedisServer()

const NODES = 3
const BURST = 200
/** Deliveries bob reads on node 2 before it is killed: the middle of the burst. */
const KILL_AFTER = 60

describe.skipIf(pgSkip !== undefined || !redisServer)(
  'three server processes on PostgreSQL and Redis',
  () => {
    let dir: string
    let database: TestDatabase
    let redisPort: number
    let redis: ChildProcess
    const nodes: NodeProcess[] = []
    const sockets: RelaySocket[] = []
    let alice: { client: TestClient; token: Uint8Array }
    let bob: { client: TestClient; token: Uint8Array }

    async function online(node: NodeProcess, token: Uint8Array, label: string) {
      const socket = await connect(node, token, label)
      sockets.push(socket)
      return socket
    }

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'secure-chat-cluster-processes-'))
      database = await createTestDatabase('postgres')
      const url = new URL(POSTGRES_TEST_URL)
      url.searchParams.set('options', `-c search_path=${database.location}`)
      redisPort = await freePort()
      redis = await startRedisServer(redisPort)

      const certificate = await testCertificate()
      const certFile = join(dir, 'cert.pem')
      const keyFile = join(dir, 'key.pem')
      await writeFile(certFile, certificate.cert)
      await writeFile(keyFile, certificate.key, { mode: 0o600 })
      const dataDirs = Array.from({ length: NODES }, (_, index) => join(dir, `node${index + 1}`))
      await shareRelationsKey(dataDirs)
      const env = {
        DATABASE_URL: url.toString(),
        REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        TLS_CERT: certFile,
        TLS_KEY: keyFile,
      }
      // The first node migrates the fresh schema; the others then find it current.
      nodes.push(await startNode({ label: 'node1', env, dataDir: dataDirs[0]!, ca: certificate.cert }))
      nodes.push(
        ...(await Promise.all(
          dataDirs
            .slice(1)
            .map((dataDir, index) =>
              startNode({ label: `node${index + 2}`, env, dataDir, ca: certificate.cert }),
            ),
        )),
      )
      ;[alice, bob] = await Promise.all([signUp(nodes[0]!), signUp(nodes[1]!)])
    })

    afterAll(async () => {
      for (const socket of sockets) await socket.close()
      for (const node of nodes) await node.stop()
      if (redis) await stopRedisServer(redis)
      await database?.dispose()
      if (dir) await removeDir(dir)
    })

    it('alice on node 1 reaches both of bob’s connections, on nodes 2 and 3, live', async () => {
      const a = await online(nodes[0]!, alice.token, 'alice@1')
      const b2 = await online(nodes[1]!, bob.token, 'bob@2')
      const b3 = await online(nodes[2]!, bob.token, 'bob@3')
      expect(b2.ready.queued).toBe(0)

      const id = a.sendMessage(bob.client.username)
      await a.next('accepted', (frame) => frame.id === id)
      const [on2, on3] = await Promise.all([b2.next('deliver'), b3.next('deliver')])
      expect(on2).toMatchObject({ id, from: alice.client.username })
      expect(on3).toMatchObject({ id, from: alice.client.username, seq: on2.seq })
      b3.ack(on3.seq)
      // And back from node 3 to node 1.
      const reply = b3.sendMessage(alice.client.username)
      expect((await a.next('deliver')).id).toBe(reply)
      await Promise.all([a.close(), b2.close(), b3.close()])
    })

    it('bob, offline while alice sends, connects to node 3 and drains the queue in order', async () => {
      const a = await online(nodes[0]!, alice.token, 'alice@1')
      const sent = [1, 2, 3].map(() => a.sendMessage(bob.client.username))
      for (const id of sent) await a.next('accepted', (frame) => frame.id === id)

      const b3 = await online(nodes[2]!, bob.token, 'bob@3')
      expect(b3.ready.queued).toBe(sent.length)
      expect((await b3.receive(sent.length)).map((frame) => frame.id)).toEqual(sent)
      // Caught up: the next one comes live, and nothing comes twice.
      const live = a.sendMessage(bob.client.username)
      expect((await b3.next('deliver')).id).toBe(live)
      b3.ack(b3.all('deliver').at(-1)!.seq)
      expect(b3.all('deliver').map((frame) => frame.id)).toEqual([...sent, live])
      await Promise.all([a.close(), b3.close()])
    })

    it('a logout through node 1 closes bob’s sockets on nodes 2 and 3', async () => {
      const b2 = await online(nodes[1]!, bob.token, 'bob@2')
      const b3 = await online(nodes[2]!, bob.token, 'bob@3')
      await Promise.all([b2.fence(), b3.fence()])

      const logout = await nodes[0]!.request('/api/v1/logout', { method: 'POST', token: bob.token })
      expect(logout.status).toBe(204)
      for (const socket of [b2, b3]) {
        expect((await socket.next('error')).code).toBe('E2E_ERR_UNAUTHENTICATED')
        expect((await socket.closed).code).toBe(1008)
      }
      bob = { client: bob.client, token: await login(nodes[2]!, bob.client) }
    })

    it('node 2 killed (SIGKILL) in the middle of a burst: bob drains on node 3, every accepted message once, in order', async () => {
      const a = await online(nodes[0]!, alice.token, 'alice@1')
      const b2 = await online(nodes[1]!, bob.token, 'bob@2')

      const burst = (count: number) => Array.from({ length: count }, () => a.sendMessage(bob.client.username))
      // Half the burst; bob reads and acknowledges part of it on node 2 (more is in flight to him)...
      const sent = burst(BURST / 2)
      const beforeKill = await b2.receive(KILL_AFTER)
      // ...then node 2 dies (the signal is sent before `kill` first awaits) as the rest goes out.
      const killed = nodes[1]!.kill()
      sent.push(...burst(BURST / 2))
      await killed
      await b2.closed
      const onNode2 = b2.all('deliver')
      expect(onNode2.length).toBeGreaterThanOrEqual(beforeKill.length)
      expect(onNode2.length).toBeLessThanOrEqual(BURST / 2)

      // Alice's node lives: every one of her sends is answered, and each answer is `accepted`.
      const answers = await a.until(() => {
        const answered = a.frames.filter(
          (frame) => (frame.type === 'accepted' || frame.type === 'error') && 'id' in frame,
        )
        return answered.length >= BURST ? answered : undefined
      }, `${BURST} answers to the burst`)
      expect(answers.filter((frame) => frame.type !== 'accepted')).toEqual([])
      const accepted = sent.filter((id) => a.all('accepted').some((frame) => frame.id === id))
      expect(accepted).toHaveLength(BURST)

      // Bob reconnects to node 3: what node 2 delivered and he acknowledged is gone from the queue;
      // what it delivered unacknowledged (or whose ack died with it) comes again under the same seq.
      const b3 = await online(nodes[2]!, bob.token, 'bob@3')
      const lastSeqOnNode2 = onNode2.at(-1)?.seq ?? 0
      const firstSeq = onNode2[0]!.seq
      const expectedLastSeq = firstSeq + BURST - 1
      const onNode3: FrameOf<'deliver'>[] = []
      while ((onNode3.at(-1)?.seq ?? 0) < expectedLastSeq) onNode3.push(...(await b3.receive(1)))

      // Each connection's deliveries are in queue order, without repeats.
      for (const frames of [onNode2, onNode3]) {
        const seqs = frames.map((frame) => frame.seq)
        expect(seqs).toEqual([...seqs].sort((x, y) => x - y))
        expect(new Set(seqs).size).toBe(seqs.length)
      }
      // A seq seen on both is one message redelivered (its id is the same), never a second copy.
      const bySeq = new Map<number, string>()
      for (const frame of [...onNode2, ...onNode3]) {
        const known = bySeq.get(frame.seq)
        if (known !== undefined) expect(frame.id).toBe(known)
        bySeq.set(frame.seq, frame.id)
      }
      expect(onNode3[0]!.seq).toBeLessThanOrEqual(lastSeqOnNode2 + 1)
      const received = [...bySeq.entries()].sort(([x], [y]) => x - y).map(([, id]) => id)
      expect(received).toEqual(accepted)
      expect(new Set(received).size).toBe(BURST)
      // A fence: the next message is the next thing bob gets, so nothing of the burst came late.
      const fence = a.sendMessage(bob.client.username)
      expect((await b3.receive(1))[0]).toMatchObject({ id: fence, seq: expectedLastSeq + 1 })
      expect(b3.all('deliver')).toHaveLength(onNode3.length + 1)
      await Promise.all([a.close(), b3.close()])
    })

    it('Redis restarted mid-run: a message sent while it is down arrives when it is back, and delivery goes on', async () => {
      const live = [nodes[0]!, nodes[2]!]
      const a = await online(nodes[0]!, alice.token, 'alice@1')
      const b3 = await online(nodes[2]!, bob.token, 'bob@3')
      const before = a.sendMessage(bob.client.username)
      const first = await b3.next('deliver')
      expect(first.id).toBe(before)
      b3.ack(first.seq)

      await stopRedisServer(redis)
      await waitForReady(live, 503)
      const during = a.sendMessage(bob.client.username)
      await a.next('accepted', (frame) => frame.id === during)

      redis = await startRedisServer(redisPort)
      await waitForReady(live, 200)
      const duringFrame = await b3.next('deliver')
      expect(duringFrame.id).toBe(during)
      b3.ack(duringFrame.seq)
      const after = a.sendMessage(bob.client.username)
      expect((await b3.next('deliver')).id).toBe(after)
      expect(b3.all('deliver').map((frame) => frame.id)).toEqual([before, during, after])
    })
  },
)

/** Waits until every node's /ready answers `status` (503 while Redis is away, 200 once it is back). */
async function waitForReady(nodes: NodeProcess[], status: number): Promise<void> {
  await vi.waitFor(
    async () => {
      for (const node of nodes) {
        const ready = await node.request('/ready')
        if (ready.status !== status) {
          throw new Error(`expected ${node.label} /ready ${status}, got ${ready.status} ${ready.text}`)
        }
      }
    },
    { timeout: WAIT_TIMEOUT_MS, interval: 25 },
  )
}
