/**
 * Warns, once, through the server's log, when requests arrive through a reverse proxy that the
 * server was not told to trust: a request carrying X-Forwarded-For (or Forwarded) from a loopback
 * or private peer address, with --trust-proxy unset. Every client then shares the proxy's address,
 * so one client's failed log-ins and rate limits are everyone's. A forwarding header from a public
 * peer is a client's own doing and no sign of a proxy, so it is ignored.
 */
import { BlockList, isIPv4 } from 'node:net'
import type { FastifyInstance } from 'fastify'

const PROXY_NETWORKS = new BlockList()
for (const [network, prefix] of [
  ['127.0.0.0', 8],
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['169.254.0.0', 16],
] as const) {
  PROXY_NETWORKS.addSubnet(network, prefix, 'ipv4')
}
for (const [network, prefix] of [
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
] as const) {
  PROXY_NETWORKS.addSubnet(network, prefix, 'ipv6')
}

/** True for a loopback, private or link-local address (where a reverse proxy usually sits). */
export function isProxyLikeAddress(address: string): boolean {
  const mapped = /^::ffff:(.+)$/i.exec(address)?.[1]
  const plain = mapped !== undefined && isIPv4(mapped) ? mapped : address.split('%', 1)[0]!
  try {
    return PROXY_NETWORKS.check(plain, isIPv4(plain) ? 'ipv4' : 'ipv6')
  } catch {
    return false
  }
}

export function warnOnUntrustedProxy(app: FastifyInstance): void {
  let warned = false
  app.addHook('onRequest', async (request) => {
    if (warned) return
    const forwarded = request.headers['x-forwarded-for'] ?? request.headers.forwarded
    const peer = request.socket.remoteAddress
    if (forwarded === undefined || peer === undefined || !isProxyLikeAddress(peer)) return
    warned = true
    // The peer only: the header's addresses are the clients', and not needed to act on this.
    app.log.warn(
      { event: 'trust-proxy-missing', peer },
      `requests arrive through a proxy at ${peer} (they carry X-Forwarded-For) but --trust-proxy is not set: every client shares that address for rate limits and failed log-ins; start the server with --trust-proxy ${peer}`,
    )
  })
}
