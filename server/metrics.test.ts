/**
 * /metrics (server/metrics.ts, plugins/metrics.ts): not served unless configured, refused without
 * the token, served on a metrics port; and the figures move with real traffic: two WebSocket
 * clients over TLS exchanging a message, a log-in with the wrong secret.
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { register } from 'prom-client'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { ServerErrorCode } from './errors.js'
import { ServerMetrics } from './metrics.js'
import { buildMetricsServer } from './plugins/metrics.js'
import { webApp } from './plugins/web-app.js'
import { DIALECTS, postgresUnavailable } from './test/databases.js'
import { loginSecretFor, removeDir, signUp, startServer, type TestServer } from './test/harness.js'
import { connect, type RelaySocket, WAIT_TIMEOUT_MS } from './test/ws-client.js'

const pgSkip = await postgresUnavailable()
const TOKEN = 'metrics-token-for-tests-0123456789abcdef'

/** Every sample of an exposition, keyed `name{labels}` as printed. */
function samples(text: string): Map<string, number> {
  const found = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const cut = line.lastIndexOf(' ')
    found.set(line.slice(0, cut), Number(line.slice(cut + 1)))
  }
  return found
}

function httpGet(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    httpRequest(url, { headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      )
      res.on('error', reject)
    })
      .on('error', reject)
      .end()
  })
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } })

describe('/metrics exposure', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  it('is not served by default: 404 like any unknown path', async () => {
    const server = await startServer()
    cleanups.push(() => server.close())
    const response = await server.request('/metrics', bearer(TOKEN))
    expect(response.status).toBe(404)
    expect(response.body.error.code).toBe(ServerErrorCode.NotFound)
  })

  it('is a 404, not the web app page, when the app is built and metrics are off', async () => {
    const root = await mkdtemp(join(tmpdir(), 'secure-chat-webapp-'))
    await writeFile(join(root, 'index.html'), '<!doctype html><title>app</title>')
    const app = Fastify()
    cleanups.push(async () => {
      await app.close()
      await removeDir(root)
    })
    await app.register(webApp, { root })
    expect((await app.inject({ method: 'GET', url: '/contacts' })).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(404)
  })

  it('with a token, is served on the main port to requests bearing it and refused to others', async () => {
    const server = await startServer({ metricsToken: TOKEN })
    cleanups.push(() => server.close())
    const attempts: Record<string, string>[] = [
      {},
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Basic ${TOKEN}` },
    ]
    for (const headers of attempts) {
      const refused = await server.request('/metrics', { headers })
      expect(refused.status).toBe(401)
      expect(refused.body.error.code).toBe(ServerErrorCode.Unauthenticated)
      expect(refused.headers['www-authenticate']).toBe('Bearer')
      expect(refused.text).not.toContain('secure_chat_')
      expect(refused.text).not.toContain(TOKEN)
    }
    expect((await server.request('/metrics', { headers: { authorization: `bearer ${TOKEN}` } })).status).toBe(
      200,
    )
    const served = await server.request('/metrics', bearer(TOKEN))
    expect(served.status).toBe(200)
    expect(served.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(served.headers['cache-control']).toBe('no-store')
    expect(served.text).toContain('# TYPE secure_chat_messages_accepted_total counter')
    expect(served.text).not.toContain(TOKEN)
  })

  it('never writes the token to the log, whether it was right or wrong', async () => {
    const lines: string[] = []
    const server = await startServer({
      metricsToken: TOKEN,
      log: { level: 'trace', stream: { write: (line: string) => lines.push(line) } },
    })
    cleanups.push(() => server.close())
    expect((await server.request('/metrics', bearer(TOKEN))).status).toBe(200)
    expect((await server.request('/metrics', bearer(`${TOKEN}-wrong`))).status).toBe(401)
    expect(lines.some((line) => line.includes('/metrics'))).toBe(true)
    expect(lines.join('')).not.toContain(TOKEN)
  })

  it('is served on a metrics port of its own, with the token required there when one is set', async () => {
    const metrics = new ServerMetrics({ processMetrics: true })
    const server = await startServer({ metrics })
    cleanups.push(() => server.close())
    // The main port serves no /metrics: no token was given to it.
    expect((await server.request('/metrics')).status).toBe(404)

    const open = await buildMetricsServer({ metrics, log: false })
    cleanups.push(() => open.close())
    await open.listen({ host: '127.0.0.1', port: 0 })
    const url = `http://127.0.0.1:${(open.server.address() as AddressInfo).port}/metrics`
    const answer = await httpGet(url)
    expect(answer.status).toBe(200)
    const values = samples(answer.text)
    expect(values.get('secure_chat_connections_open')).toBe(0)
    // The event-loop delay, from prom-client's process metrics.
    expect(answer.text).toContain('# TYPE nodejs_eventloop_lag_p99_seconds gauge')
    expect(answer.text).toContain('# TYPE process_cpu_seconds_total counter')

    const guarded = await buildMetricsServer({ metrics, token: TOKEN, log: false })
    cleanups.push(() => guarded.close())
    await guarded.listen({ host: '127.0.0.1', port: 0 })
    const guardedUrl = `http://127.0.0.1:${(guarded.server.address() as AddressInfo).port}/metrics`
    expect((await httpGet(guardedUrl)).status).toBe(401)
    expect((await httpGet(guardedUrl, { authorization: `Bearer ${TOKEN}` })).status).toBe(200)
  })

  it('keeps apps apart: each counts in a registry of its own, none in the global one', async () => {
    const first = new ServerMetrics()
    const second = new ServerMetrics()
    first.messageAccepted()
    first.loginFailed('login', ServerErrorCode.InvalidCredentials)
    const one = samples((await first.exposition()).text)
    const other = samples((await second.exposition()).text)
    expect(one.get('secure_chat_messages_accepted_total')).toBe(1)
    expect(other.get('secure_chat_messages_accepted_total')).toBe(0)
    expect(register.getSingleMetric('secure_chat_messages_accepted_total')).toBeUndefined()
  })
})

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(
    `metrics under real traffic (${dialect})`,
    () => {
      let server: TestServer
      const sockets: RelaySocket[] = []
      afterAll(async () => {
        for (const socket of sockets) await socket.close()
        await server?.close()
      })

      async function scrape(): Promise<Map<string, number>> {
        const response = await server.request('/metrics', bearer(TOKEN))
        expect(response.status).toBe(200)
        return samples(response.text)
      }

      it('counts connections, users, accepted and delivered messages, the queue, drains, the bus and failed log-ins', async () => {
        server = await startServer({ dialect, metricsToken: TOKEN })
        const [alice, bob] = await Promise.all([signUp(server), signUp(server)])
        const before = await scrape()
        expect(before.get('secure_chat_connections_open')).toBe(0)
        expect(before.get('secure_chat_users_connected')).toBe(0)
        expect(before.get('secure_chat_messages_accepted_total')).toBe(0)
        expect(before.get('secure_chat_messages_delivered_total')).toBe(0)
        expect(before.get('secure_chat_queue_depth')).toBe(0)

        // Queued while bob is offline: the queue gauge sees the row.
        const a = await connect(server, alice.token, 'alice')
        sockets.push(a)
        a.sendMessage(bob.client.username)
        await a.next('accepted')
        const queued = await scrape()
        expect(queued.get('secure_chat_messages_accepted_total')).toBe(1)
        expect(queued.get('secure_chat_queue_depth')).toBe(1)
        expect(queued.get('secure_chat_connections_open')).toBe(1)
        expect(queued.get('secure_chat_users_connected')).toBe(1)

        // Bob connects, drains it, then gets a second one pushed live.
        const b = await connect(server, bob.token, 'bob')
        sockets.push(b)
        const [drained] = await b.take('deliver', 1)
        a.sendMessage(bob.client.username)
        await a.next('accepted')
        const [pushed] = await b.take('deliver', 1)
        b.ack(pushed!.seq)
        await b.fence()
        await server.app.relay.settled()
        expect(drained!.seq).toBeLessThan(pushed!.seq)

        const after = await scrape()
        expect(after.get('secure_chat_messages_accepted_total')).toBe(2)
        expect(after.get('secure_chat_messages_delivered_total')).toBe(2)
        expect(after.get('secure_chat_queue_depth')).toBe(0)
        expect(after.get('secure_chat_connections_open')).toBe(2)
        expect(after.get('secure_chat_users_connected')).toBe(2)
        // Bob was caught up before the live push reached him; alice is caught up too by now.
        expect(after.get('secure_chat_drain_seconds_count')).toBeGreaterThanOrEqual(1)
        expect(after.get('secure_chat_bus_published_total{kind="message.committed"}')).toBe(2)
        // The first commit found nobody subscribed to bob's address; the second reached his listener.
        expect(after.get('secure_chat_bus_received_total{kind="message.committed"}')).toBe(1)
        expect(after.get('secure_chat_bus_published_total{kind="presence.changed"}')).toBe(2)
        // Within one process a hand-over is a function call: no lag is measured (the Redis bus's is).
        expect(after.get('secure_chat_bus_lag_seconds_count')).toBe(0)

        // A wrong login secret, by reason code; the name tried appears nowhere.
        const wrong = await server.request('/api/v1/login', {
          body: { username: alice.client.username, loginSecret: loginSecretFor('not the password at all') },
        })
        expect(wrong.status).toBe(401)
        const failed = await server.request('/metrics', bearer(TOKEN))
        expect(
          samples(failed.text).get(
            `secure_chat_login_failures_total{kind="login",reason="${ServerErrorCode.InvalidCredentials}"}`,
          ),
        ).toBe(1)
        expect(failed.text).not.toContain(alice.client.username)
        expect(failed.text).not.toContain(bob.client.username)

        // Closing a socket takes it off the gauges (the server hears of it a moment after the client).
        await a.close()
        await expect
          .poll(async () => (await scrape()).get('secure_chat_connections_open'), {
            timeout: WAIT_TIMEOUT_MS,
          })
          .toBe(1)
        expect((await scrape()).get('secure_chat_users_connected')).toBe(1)
      })
    },
  )
}
