/**
 * Failed log-ins lock out attackers, not users (issue 10, item 2). Over real TLS, with real source
 * addresses: clients bind 127.0.0.x (Linux routes all of 127.0.0.0/8 to lo), and the server keys
 * failures per (account, address), per address and, slowing only unknown devices, per account. A
 * device proves itself by decrypting a challenge encrypted to its registered login key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fromBase64Url, toBase64Url } from '../shared/bytes.js'
import type { LoginResponse } from '../shared/codec/api.js'
import { rsaOaepDecrypt } from '../shared/crypto/primitives.js'
import { RelationsKey } from './db/relations.js'
import {
  LOGIN_ACCOUNT_DELAY_AFTER,
  LOGIN_ACCOUNT_DELAY_MAX_MS,
  LOGIN_FAILURES_PER_ACCOUNT,
  LOGIN_FAILURES_PER_ACCOUNT_ADDRESS,
} from './limits.js'
import {
  decryptToken,
  loginSecretFor,
  makeClient,
  register,
  startServer,
  type TestClient,
  type TestServer,
} from './test/harness.js'

const LOGIN = '/api/v1/login'
const CHALLENGE = '/api/v1/login/challenge'
const REINSTALL = '/api/v1/reinstall'

let server: TestServer
let clock = Date.UTC(2026, 0, 1)

beforeAll(async () => {
  server = await startServer({ now: () => clock })
})

afterAll(async () => {
  await server?.close()
})

function attempt(client: TestClient, from: string, password: string, deviceProof?: string) {
  return server.request(LOGIN, {
    localAddress: from,
    body: {
      username: client.username,
      loginSecret: loginSecretFor(password),
      ...(deviceProof ? { deviceProof } : {}),
    },
  })
}

/** What a device that holds the login private key does: fetch the challenge and decrypt it. */
async function deviceProof(client: TestClient, from: string): Promise<string> {
  const response = await server.request(CHALLENGE, {
    localAddress: from,
    body: { username: client.username },
  })
  expect(response.status).toBe(200)
  const challenge = fromBase64Url(response.body.challenge)
  expect(challenge).toHaveLength(384)
  return toBase64Url(await rsaOaepDecrypt(client.loginKey.privateKey, challenge))
}

async function wrongGuesses(client: TestClient, from: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const response = await attempt(client, from, `wrong-guess-${from}-${i}`)
    expect(response.status).toBe(401)
  }
}

async function registered(): Promise<TestClient> {
  const client = await makeClient()
  await register(server, client)
  return client
}

describe('failed log-ins', () => {
  it('ten wrong passwords from 127.0.0.1 lock out neither 127.0.0.2 nor the device with the login key', async () => {
    const client = await registered()
    await wrongGuesses(client, '127.0.0.1', LOGIN_FAILURES_PER_ACCOUNT_ADDRESS)

    // The attacker's address is refused for this account, the right password included.
    const refused = await attempt(client, '127.0.0.1', client.password)
    expect(refused.status).toBe(429)
    expect(refused.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0)

    // At once: the user on a new device elsewhere, and the user's own device (even behind the
    // attacker's address, which a shared NAT makes possible).
    const proof = await deviceProof(client, '127.0.0.1')
    const [elsewhere, sameDevice] = await Promise.all([
      attempt(client, '127.0.0.2', client.password),
      attempt(client, '127.0.0.1', client.password, proof),
    ])
    expect(elsewhere.status).toBe(200)
    expect(sameDevice.status).toBe(200)
    expect(await decryptToken(client, elsewhere.body as LoginResponse)).toHaveLength(32)
    expect(await decryptToken(client, sameDevice.body as LoginResponse)).toHaveLength(32)

    // Still refused without the proof; the window's end frees the address.
    expect((await attempt(client, '127.0.0.1', 'another-wrong-guess')).status).toBe(429)
    clock += 15 * 60 * 1000
    expect((await attempt(client, '127.0.0.1', client.password)).status).toBe(200)
  })

  it('slows unknown devices progressively when an account is attacked from many addresses', async () => {
    const client = await registered()
    const attackers = Math.ceil(LOGIN_ACCOUNT_DELAY_AFTER / LOGIN_FAILURES_PER_ACCOUNT_ADDRESS)
    for (let i = 0; i < attackers; i++) {
      await wrongGuesses(client, `127.0.1.${i + 1}`, LOGIN_FAILURES_PER_ACCOUNT_ADDRESS)
    }

    // A fresh address now waits, briefly, and the waits grow with every failure.
    const delays: number[] = []
    for (let i = 0; i < 4; i++) {
      const early = await attempt(client, '127.0.2.1', client.password)
      expect(early.status).toBe(429)
      expect(early.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
      const retryAfter = Number(early.headers['retry-after'])
      expect(retryAfter * 1000).toBeLessThanOrEqual(LOGIN_ACCOUNT_DELAY_MAX_MS)
      delays.push(retryAfter)
      clock += retryAfter * 1000
      expect((await attempt(client, `127.0.3.${i + 1}`, 'yet-another-guess')).status).toBe(401)
    }
    expect(delays[3]).toBeGreaterThan(delays[0]!)

    // The device holding the login key is never made to wait.
    expect(
      (await attempt(client, '127.0.2.1', client.password, await deviceProof(client, '127.0.2.1'))).status,
    ).toBe(200)

    // A new device gets in once its wait is over: slowed, not refused.
    const wait = await attempt(client, '127.0.2.2', client.password)
    expect(wait.status).toBe(429)
    clock += Number(wait.headers['retry-after']) * 1000
    expect((await attempt(client, '127.0.2.2', client.password)).status).toBe(200)
    clock += 60 * 60 * 1000
  })

  it('keeps reinstall, which replaces keys with the password alone, on the strict per-account limit', async () => {
    const client = await registered()
    await wrongGuesses(client, '127.0.4.1', LOGIN_FAILURES_PER_ACCOUNT)
    const replacement = await makeClient({ username: client.username, password: client.password })
    const reinstall = await server.request(REINSTALL, {
      localAddress: '127.0.4.2',
      body: replacement.registerBody(),
    })
    expect(reinstall.status).toBe(429)
    expect(reinstall.body.error.code).toBe('E2E_ERR_TOO_MANY_ATTEMPTS')
    // Logging in from elsewhere still works.
    expect((await attempt(client, '127.0.4.2', client.password)).status).toBe(200)
    clock += 60 * 60 * 1000
  })

  it('limits one address guessing across many accounts', async () => {
    const limited = await startServer({ now: () => clock, limits: { loginFailuresPerAddress: 5 } })
    try {
      const guess = (username: string, from: string) =>
        limited.request(LOGIN, {
          localAddress: from,
          body: { username, loginSecret: loginSecretFor('Summer2024!!') },
        })
      for (let i = 0; i < 5; i++) expect((await guess(`spray${i}`, '127.0.5.1')).status).toBe(401)
      const refused = await guess('spray9', '127.0.5.1')
      expect(refused.status).toBe(429)
      expect(refused.body.error.message).toMatch(/from this address/)
      expect((await guess('spray9', '127.0.5.2')).status).toBe(401)
    } finally {
      await limited.close()
    }
  })

  it('accepts a proof only from the login key holder, for its own account, and limits its failures', async () => {
    const client = await registered()
    const other = await registered()
    await wrongGuesses(client, '127.0.6.1', LOGIN_FAILURES_PER_ACCOUNT_ADDRESS)
    // Made-up bytes, or another account's proof, are no proof: still refused at this address.
    for (const proof of [toBase64Url(new Uint8Array(32)), await deviceProof(other, '127.0.6.1')]) {
      expect((await attempt(client, '127.0.6.1', client.password, proof)).status).toBe(429)
    }
    // An unknown name gets a challenge of the same size (its proof opens nothing).
    const unknown = await server.request(CHALLENGE, { body: { username: 'nobody-at-all-here' } })
    expect(unknown.status).toBe(200)
    expect(fromBase64Url(unknown.body.challenge)).toHaveLength(384)

    // The device's own wrong passwords are counted too, apart from anyone else's.
    const proof = await deviceProof(client, '127.0.6.1')
    for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT_ADDRESS; i++) {
      expect((await attempt(client, '127.0.6.1', `typo-${i}-on-device`, proof)).status).toBe(401)
    }
    expect((await attempt(client, '127.0.6.1', client.password, proof)).status).toBe(429)
    clock += 60 * 60 * 1000
  })
})

describe('device proofs in logs', () => {
  it('never writes a challenge or a proof to the log', async () => {
    const lines: string[] = []
    const logged = await startServer({
      log: { level: 'trace', stream: { write: (line: string) => void lines.push(line) } },
    })
    try {
      const client = await makeClient()
      await register(logged, client)
      const challenge = await logged.request(CHALLENGE, { body: { username: client.username } })
      const proof = toBase64Url(
        await rsaOaepDecrypt(client.loginKey.privateKey, fromBase64Url(challenge.body.challenge)),
      )
      const response = await logged.request(LOGIN, {
        body: { username: client.username, loginSecret: client.loginSecret, deviceProof: proof },
      })
      expect(response.status).toBe(200)
      const log = lines.join('\n')
      expect(log).toContain('session issued')
      expect(log).not.toContain(proof)
      expect(log).not.toContain(challenge.body.challenge)
    } finally {
      await logged.close()
    }
  })
})

describe('device proofs on several nodes', () => {
  it('a proof one node issued is taken by another with the same relations key, not by one with another', async () => {
    const relationsKey = RelationsKey.random()
    const first = await startServer({ now: () => clock, relationsKey })
    const second = await startServer({ now: () => clock, relationsKey, database: first.database })
    const other = await startServer({ now: () => clock, database: first.database })
    try {
      const client = await makeClient()
      await register(first, client)
      const loginOn = (node: TestServer, password: string, proof?: string) =>
        node.request(LOGIN, {
          localAddress: '127.0.9.1',
          body: {
            username: client.username,
            loginSecret: loginSecretFor(password),
            ...(proof ? { deviceProof: proof } : {}),
          },
        })
      for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT_ADDRESS; i++) {
        expect((await loginOn(first, `wrong-${i}`)).status).toBe(401)
      }
      expect((await loginOn(first, client.password)).status).toBe(429)
      // The challenge goes to one node and the log-in to another, as behind a load balancer.
      const challenge = await second.request(CHALLENGE, {
        localAddress: '127.0.9.1',
        body: { username: client.username },
      })
      const proof = toBase64Url(
        await rsaOaepDecrypt(client.loginKey.privateKey, fromBase64Url(challenge.body.challenge)),
      )
      expect((await loginOn(first, client.password, proof)).status).toBe(200)
      // A node with another relations key knows nothing of it (docs/operations.md: copy the file).
      for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT_ADDRESS; i++) {
        expect((await loginOn(other, `wrong-${i}`)).status).toBe(401)
      }
      expect((await loginOn(other, client.password, proof)).status).toBe(429)
    } finally {
      await other.close()
      await second.close()
      await first.close()
    }
  })
})
