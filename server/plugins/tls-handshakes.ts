/**
 * Per-address limits on TLS handshakes (issue 10, item 8): how many may be in progress at once
 * (MAX_TLS_HANDSHAKES_IN_PROGRESS_PER_ADDRESS) and how many may start per second
 * (TLS_HANDSHAKE_RATE_PER_ADDRESS). They act on the raw TCP connection, before Node's TLS layer
 * does any work: a connection over a limit is destroyed at once. A connection stops counting as in
 * progress when its handshake finishes or it closes (the handshake timeout, TLS_HANDSHAKE_TIMEOUT_MS,
 * closes those that never finish).
 *
 * The address is the TCP peer, counted like every per-address limit (an IPv6 peer by its /64,
 * plugins/client-address.ts). Behind a reverse proxy the peer is the proxy, so `--trust-proxy`
 * decides: peers it names by address or CIDR are not limited (the proxy carries many clients and
 * should limit them itself), and with `true` or a hop count every peer is taken for a proxy, so
 * nothing is limited here. Fastify's X-Forwarded-For cannot help: no header exists before TLS.
 */
import { BlockList, isIPv4, isIPv6, type Socket } from 'node:net'
import type { TLSSocket, Server as TlsServer } from 'node:tls'
import { type Rate, TokenBucket } from '../ws/token-bucket.js'
import { addressKey } from './client-address.js'

export interface TlsHandshakeLimits {
  readonly maxInProgressPerAddress: number
  readonly ratePerAddress: Rate
  /** Addresses whose rate is remembered at most (TLS_HANDSHAKE_LIMITER_MAX_ADDRESSES). */
  readonly maxAddresses: number
}

export type HandshakeRefusal = 'in-progress' | 'rate'

/** Counts handshakes per address key; the clock is an argument. */
export class TlsHandshakeLimiter {
  private readonly inProgress = new Map<string, number>()
  private readonly buckets = new Map<string, TokenBucket>()

  constructor(
    private readonly limits: TlsHandshakeLimits,
    private readonly now: () => number,
  ) {}

  /** Counts a new handshake from `address`, or says which limit refuses it (nothing counted). */
  begin(address: string): HandshakeRefusal | undefined {
    if ((this.inProgress.get(address) ?? 0) >= this.limits.maxInProgressPerAddress) return 'in-progress'
    if (!this.bucketFor(address).take(this.now())) return 'rate'
    this.inProgress.set(address, (this.inProgress.get(address) ?? 0) + 1)
    return undefined
  }

  /** A handshake that `begin` counted finished or its connection closed. */
  end(address: string): void {
    const count = (this.inProgress.get(address) ?? 0) - 1
    if (count > 0) this.inProgress.set(address, count)
    else this.inProgress.delete(address)
  }

  handshakesInProgress(address: string): number {
    return this.inProgress.get(address) ?? 0
  }

  /** Addresses whose rate is remembered now (bounded by `maxAddresses`). */
  addressesRemembered(): number {
    return this.buckets.size
  }

  private bucketFor(address: string): TokenBucket {
    const known = this.buckets.get(address)
    if (known) return known
    if (this.buckets.size >= this.limits.maxAddresses) this.evict()
    const bucket = new TokenBucket(this.limits.ratePerAddress, this.now())
    this.buckets.set(address, bucket)
    return bucket
  }

  /**
   * Forgets addresses whose bucket is full again (they would start afresh anyway), then the oldest
   * until a tenth of the room is free, so the sweep over every entry runs once per many new
   * addresses rather than for each.
   */
  private evict(): void {
    const now = this.now()
    for (const [address, bucket] of this.buckets) {
      if (bucket.isFull(now)) this.buckets.delete(address)
    }
    const keep = Math.floor(this.limits.maxAddresses * 0.9)
    for (const address of this.buckets.keys()) {
      if (this.buckets.size <= keep) break
      this.buckets.delete(address)
    }
  }
}

/** `::ffff:a.b.c.d` (a dual-stack listener's IPv4 peer) as `a.b.c.d`; other addresses unchanged. */
function unmapped(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  return mapped ? mapped[1]! : address
}

/** proxy-addr's named ranges, which --trust-proxy accepts (server/config.ts). */
const NAMED_RANGES: Record<string, readonly string[]> = {
  loopback: ['127.0.0.1/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
}

/**
 * Which TCP peers are proxies by the --trust-proxy setting: none when it is off, every peer when
 * it is `true` or a hop count, else the addresses and CIDRs it lists.
 */
export function proxyPeers(trustProxy: boolean | number | string | undefined): (peer: string) => boolean {
  if (trustProxy === undefined || trustProxy === false) return () => false
  if (trustProxy === true || typeof trustProxy === 'number') return () => true
  const list = new BlockList()
  const add = (item: string) => {
    const [address = '', bits] = item.split('/')
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined
    if (!family) return
    if (bits === undefined) list.addAddress(address, family)
    else list.addSubnet(address, Number(bits), family)
  }
  for (const item of trustProxy.split(',').map((part) => part.trim())) {
    for (const range of NAMED_RANGES[item] ?? [item]) add(range)
  }
  return (peer) => {
    const address = unmapped(peer)
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined
    return family !== undefined && list.check(address, family)
  }
}

/**
 * Applies `limiter` to every connection `server` accepts from a peer that is not a proxy. Runs
 * before the TLS layer's own `connection` listener, so a refused connection costs no TLS work;
 * `refused` hears of each refusal (for a log line).
 */
export function limitTlsHandshakes(
  server: TlsServer,
  limiter: TlsHandshakeLimiter,
  options: {
    isProxy: (peer: string) => boolean
    refused: (address: string, limit: HandshakeRefusal) => void
  },
): void {
  /** Connections counted and not yet secure, by their TCP endpoint (the TLS socket reports the same). */
  const pending = new Map<string, { address: string; socket: Socket }>()
  const endpoint = (socket: Socket) => `${socket.remoteAddress}|${socket.remotePort}`

  server.prependListener('connection', (socket: Socket) => {
    const peer = socket.remoteAddress
    if (peer === undefined) {
      // Already gone: nothing to count, nothing to serve.
      socket.destroy()
      return
    }
    if (options.isProxy(peer)) return
    const address = addressKey(unmapped(peer))
    const refusal = limiter.begin(address)
    if (refusal) {
      options.refused(address, refusal)
      socket.destroy()
      return
    }
    const key = endpoint(socket)
    pending.set(key, { address, socket })
    socket.once('close', () => {
      if (pending.get(key)?.socket !== socket) return
      pending.delete(key)
      limiter.end(address)
    })
  })
  server.on('secureConnection', (tlsSocket: TLSSocket) => {
    const key = endpoint(tlsSocket)
    const entry = pending.get(key)
    if (!entry) return
    pending.delete(key)
    limiter.end(entry.address)
  })
}
