/**
 * Real Redis for tests, at REDIS_URL_TEST or the CI machine's default. Each caller takes a fresh
 * channel prefix, so test files running at once never hear each other. When Redis is unreachable
 * the Redis tests are skipped and the reason is printed, except under CI=true, where they fail.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'

export const REDIS_TEST_URL = process.env.REDIS_URL_TEST ?? 'redis://127.0.0.1:6379'

let probe: Promise<string | undefined> | undefined

/** Undefined when Redis answers; otherwise why not. */
export function redisUnavailable(): Promise<string | undefined> {
  probe ??= (async () => {
    const client = new Redis(REDIS_TEST_URL, {
      lazyConnect: true,
      connectTimeout: 3_000,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    let lastError: string | undefined
    client.on('error', (error: Error) => {
      lastError = error.message
    })
    try {
      await client.connect()
      await client.ping()
      return undefined
    } catch (error) {
      const reason = `Redis at ${new URL(REDIS_TEST_URL).host} is unreachable (${lastError ?? (error as Error).message})`
      // In CI the service is part of the run (.ci/run starts it): its absence is a failure, never a skip.
      if (process.env.CI === 'true') throw new Error(`CI=true: ${reason}; the Redis tests must run`)
      console.warn(`[skipped] Redis tests were skipped: ${reason}`)
      return reason
    } finally {
      client.disconnect()
    }
  })()
  return probe
}

/** A channel prefix no other test run uses. */
export function testChannelPrefix(): string {
  return `test-${randomBytes(6).toString('hex')}:`
}

/** A plain client for what a test does to Redis itself (publishing junk, killing connections). */
export function rawRedis(url: string = REDIS_TEST_URL): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  return client
}

/** Closes the connection that RedisRelayBus `nodeId` uses to subscribe (CLIENT LIST by its name). */
export async function killSubscriber(client: Redis, nodeId: string): Promise<void> {
  const list = (await client.client('LIST')) as string
  const line = list.split('\n').find((entry) => entry.includes(` name=secure-chat-relay-sub-${nodeId} `))
  const id = line?.match(/^id=(\d+) /)?.[1]
  if (!id) throw new Error(`expected a subscriber connection of node ${nodeId} in CLIENT LIST, got none`)
  await client.client('KILL', 'ID', id)
}

/** Whether a redis-server binary is installed (for tests that run a Redis of their own). */
export function hasRedisServer(): boolean {
  const found = spawnSync('redis-server', ['--version']).status === 0
  if (!found && process.env.CI === 'true') {
    throw new Error('CI=true: expected the redis-server binary (.ci/run installs it), got none')
  }
  return found
}

/**
 * A throwaway redis-server on a loopback `port`: no persistence, answering PING when this returns.
 * `extraArgs` go after the defaults (e.g. to run it in cluster mode).
 */
export async function startRedisServer(
  port: number,
  extraArgs: readonly string[] = [],
): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs],
    { stdio: 'ignore' },
  )
  const client = rawRedis(`redis://127.0.0.1:${port}`)
  try {
    // Only a guard against a hang: it answers within milliseconds.
    for (let attempt = 0; ; attempt++) {
      try {
        await client.ping()
        break
      } catch (error) {
        if (attempt >= 200 || child.exitCode !== null) throw error
        await new Promise((done) => setTimeout(done, 25))
      }
    }
  } finally {
    client.disconnect()
  }
  return child
}

/** SIGKILL, as a crash would: no save, no goodbye to clients. */
export async function stopRedisServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((done) => child.once('exit', () => done()))
  child.kill('SIGKILL')
  await exited
}
