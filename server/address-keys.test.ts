/**
 * Every per-address limit counts an IPv6 client by its /64 (issue 10, item 8). Over real TLS on ::1:
 * the server trusts the loopback proxy (--trust-proxy loopback), and X-Forwarded-For names clients
 * inside and outside one /64.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type TestServer } from './test/harness.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer({
    host: '::1',
    trustProxy: 'loopback',
    limits: { loginFailuresPerAddress: 3, loginRateLimit: { max: 5, timeWindowMs: 60_000 } },
  })
})

afterAll(async () => {
  await server?.close()
})

const from = (client: string) => ({ 'x-forwarded-for': client })

describe('IPv6 clients are counted by their /64', () => {
  it('failed log-ins from addresses of one /64 share one allowance', async () => {
    const guess = (username: string, client: string) =>
      server.request('/api/v1/login', { headers: from(client), body: { username, password: 'Summer2024!!' } })
    for (const [i, client] of ['2001:db8:0:1::a', '2001:db8:0:1::b', '2001:db8:0:1:ffff::c'].entries()) {
      expect((await guess(`v6spray${i}`, client)).status).toBe(401)
    }
    const refused = await guess('v6spray9', '2001:db8:0:1::d')
    expect(refused.status).toBe(429)
    expect(refused.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
    expect((await guess('v6spray9', '2001:db8:0:2::a')).status).toBe(401)
  })

  it('route rate limits key on the /64 too', async () => {
    const challenge = (client: string) =>
      server.request('/api/v1/login/challenge', { headers: from(client), body: { username: 'someone' } })
    for (let i = 1; i <= 5; i++) expect((await challenge(`2001:db8:0:3::${i}`)).status).toBe(200)
    const limited = await challenge('2001:db8:0:3::99')
    expect(limited.status).toBe(429)
    expect(limited.body.error.code).toBe('E2E_ERR_RATE_LIMITED')
    expect((await challenge('2001:db8:0:4::1')).status).toBe(200)
  })
})
