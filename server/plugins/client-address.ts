/**
 * The key by which the server counts a client for every per-address limit (route rate limits,
 * failed log-ins, unauthenticated sockets): an IPv4 address as is, an IPv6 address by its /64
 * (IPV6_ADDRESS_PREFIX_BITS), since one subscriber is usually given a whole /64 and could rotate
 * through it past any per-address count. IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as the IPv4
 * address. The address is Fastify's `request.ip`: the peer, or with --trust-proxy the client named
 * by X-Forwarded-For.
 */
import { isIPv4, isIPv6 } from 'node:net'
import { IPV6_ADDRESS_PREFIX_BITS } from '../limits.js'

/** The eight 16-bit groups of an IPv6 address (already known to be valid), or undefined. */
function ipv6Groups(address: string): number[] | undefined {
  let text = address
  let tail: number[] = []
  // A dotted IPv4 ending (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) becomes its two groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (dotted) {
    const octets = dotted[2]!.split('.').map(Number)
    tail = [(octets[0]! << 8) | octets[1]!, (octets[2]! << 8) | octets[3]!]
    text = dotted[1]!.endsWith('::') ? dotted[1]! : dotted[1]!.slice(0, -1)
  }
  const halves = text.split('::')
  const parse = (part: string) =>
    part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16))
  const head = parse(halves[0]!)
  const rest = halves.length === 2 ? parse(halves[1]!) : []
  const missing = 8 - head.length - rest.length - tail.length
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return undefined
  return [...head, ...new Array<number>(missing).fill(0), ...rest, ...tail]
}

export function addressKey(ip: string): string {
  const address = ip.split('%', 1)[0]!
  if (isIPv4(address)) return address
  if (!isIPv6(address)) return address
  const groups = ipv6Groups(address.toLowerCase())
  if (!groups) return address
  const mapped = groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff
  if (mapped) return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`
  return `${ipv6Prefix(groups, IPV6_ADDRESS_PREFIX_BITS)}::/${IPV6_ADDRESS_PREFIX_BITS}`
}

/** The first `bits` of the address as full hex groups (the last one masked), e.g. `2001:db8:0:1`. */
function ipv6Prefix(groups: readonly number[], bits: number): string {
  const kept: number[] = []
  for (let index = 0; index * 16 < bits; index++) {
    const within = Math.min(16, bits - index * 16)
    kept.push(groups[index]! & ((0xffff << (16 - within)) & 0xffff))
  }
  return kept.map((group) => group.toString(16)).join(':')
}
