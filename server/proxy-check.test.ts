/**
 * Behind a reverse proxy without --trust-proxy every client shares the proxy's address: the server
 * warns once through its log (issue 10, item 8). Over real TLS on loopback.
 */
import { describe, expect, it } from 'vitest'
import { isProxyLikeAddress } from './plugins/proxy-check.js'
import { startServer } from './test/harness.js'

async function warningsOf(trustProxy: string | undefined, requests: Record<string, string>[]) {
  const lines: string[] = []
  const server = await startServer({
    ...(trustProxy ? { trustProxy } : {}),
    log: { level: 'info', stream: { write: (line: string) => void lines.push(line) } },
  })
  try {
    for (const headers of requests) {
      expect((await server.request('/api/v1/health', { headers })).status).toBe(200)
    }
  } finally {
    await server.close()
  }
  return lines.map((line) => JSON.parse(line)).filter((entry) => entry.event === 'trust-proxy-missing')
}

describe('--trust-proxy warning', () => {
  it('warns once when requests come through a loopback proxy the server does not trust', async () => {
    const forwarded = { 'x-forwarded-for': '203.0.113.9' }
    const warnings = await warningsOf(undefined, [{}, forwarded, forwarded, forwarded])
    expect(warnings).toHaveLength(1)
    expect(warnings[0].level).toBe(40)
    expect(warnings[0].peer).toBe('127.0.0.1')
    expect(warnings[0].msg).toMatch(/--trust-proxy 127\.0\.0\.1/)
    // The clients' addresses are not written.
    expect(JSON.stringify(warnings)).not.toContain('203.0.113.9')
  })

  it('stays quiet without forwarded requests, and when the proxy is trusted', async () => {
    expect(await warningsOf(undefined, [{}, {}])).toHaveLength(0)
    expect(await warningsOf('127.0.0.1', [{ 'x-forwarded-for': '203.0.113.9' }])).toHaveLength(0)
  })

  it.each([
    ['127.0.0.1', true],
    ['::ffff:10.1.2.3', true],
    ['192.168.1.1', true],
    ['172.20.0.5', true],
    ['::1', true],
    ['fd00::1', true],
    ['203.0.113.9', false],
    ['2001:db8::1', false],
    ['::ffff:203.0.113.9', false],
  ])('%s looks like a proxy: %s', (address, expected) => {
    expect(isProxyLikeAddress(address)).toBe(expected)
  })
})
