/** redis-bus.ts redisServerProblem: which Redis servers a node refuses at start, from their INFO. */
import { describe, expect, it } from 'vitest'
import { redisServerProblem } from './redis-bus.js'

const info = (fields: Record<string, string>) =>
  `# Server\r\n${Object.entries(fields)
    .map(([name, value]) => `${name}:${value}`)
    .join('\r\n')}\r\n`

describe('redisServerProblem', () => {
  it('takes Redis 7 and later, and Valkey (which reports a compatible redis_version)', () => {
    expect(redisServerProblem(info({ redis_version: '7.0.15', cluster_enabled: '0' }))).toBeUndefined()
    expect(redisServerProblem(info({ redis_version: '8.2.1', cluster_enabled: '0' }))).toBeUndefined()
    expect(
      redisServerProblem(info({ redis_version: '7.2.4', valkey_version: '8.1.0', cluster_enabled: '0' })),
    ).toBeUndefined()
  })

  it('refuses a Redis before 7: it has no sharded pub/sub', () => {
    expect(redisServerProblem(info({ redis_version: '6.2.14', cluster_enabled: '0' }))).toBe(
      'expected Redis 7 or later (sharded pub/sub: SPUBLISH, SSUBSCRIBE), got 6.2.14',
    )
  })

  it('refuses Redis Cluster', () => {
    expect(redisServerProblem(info({ redis_version: '7.0.15', cluster_enabled: '1' }))).toMatch(
      /got Redis Cluster, which this version does not support$/,
    )
  })

  it('says nothing when INFO could not be read (an ACL that forbids it): the commands will tell', () => {
    expect(redisServerProblem('')).toBeUndefined()
  })
})
