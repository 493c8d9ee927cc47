/**
 * The provisioning channel (issue 12, linking a device; docs/protocol.md §13.7) against the real
 * server over TLS, on SQLite and PostgreSQL: a new device opens a one-time channel, an existing
 * device of an account claims it with its session token, and ciphertext flows both ways, read by
 * long polls that return when a message arrives (on this node at once, on another node sharing
 * the database by its periodic check). Expiry on the injected clock, closing, the claim, sizes,
 * counts and per-address limits are refused with their stable codes; the database keeps only the
 * secret's hash, and the log only event names.
 */
import { createHash } from 'node:crypto'
import { Agent } from 'node:https'
import { afterEach, describe, expect, it } from 'vitest'
import { REQUEST_TIMEOUT_MS as TERMINAL_REQUEST_TIMEOUT_MS } from '../client-terminal/transport.js'
import { fromBase64Url, toBase64Url, toHex, utf8Decode, utf8Encode } from '../shared/bytes.js'
import { isClientError } from '../shared/client/errors.js'
import {
  closeProvisioningChannel,
  openProvisioningChannel,
  type ProvisioningCaller,
  postProvisioningMessage,
  readProvisioningMessages,
} from '../shared/client/provisioning-channel.js'
import { type HttpClient, REQUEST_TIMEOUT_MS } from '../shared/client/transport.js'
import { ProvisioningMessagesResponse } from '../shared/codec/api.js'
import { matches } from '../shared/codec/schema.js'
import { generateX25519KeyPair } from '../shared/crypto/primitives.js'
import {
  MAX_PROVISIONING_ANSWER_BYTES,
  MAX_PROVISIONING_MESSAGES_PER_CHANNEL,
  MAX_PROVISIONING_PLAINTEXT_BYTES,
  PROVISIONING_POLL_WAIT_MS,
} from '../shared/limits.js'
import {
  decodeLinkCode,
  deriveLinkKeys,
  encodeLinkCode,
  MAX_PROVISIONING_SEALED_BYTES,
  openProvisioning,
  PROVISIONING_CHANNEL_ID_BYTES,
  sealProvisioning,
} from '../shared/provisioning.js'
import { purgeExpiredProvisioningChannels } from './db/provisioning.js'
import { ServerErrorCode } from './errors.js'
import { MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS, PROVISIONING_CHANNEL_TTL_MS } from './limits.js'
import { DIALECTS, postgresUnavailable } from './test/databases.js'
import {
  type HttpResponse,
  httpsFetch,
  type StartOptions,
  signUp,
  startServer,
  type TestServer,
} from './test/harness.js'

const pgSkip = await postgresUnavailable()
const START = Date.UTC(2026, 11, 3, 9)
const API = '/api/v1'

/** The client core's HttpClient over the test server's TLS (as test/client-helpers.ts makes it). */
function httpClient(server: TestServer): HttpClient {
  const agent = new Agent({ ca: server.ca, keepAlive: true })
  return {
    async request(method, path, options = {}) {
      const response = await httpsFetch(agent, server.origin, `${API}${path}`, {
        method,
        ...(options.body !== undefined ? { body: options.body } : {}),
        ...(options.token ? { headers: { authorization: `Bearer ${options.token}` } } : {}),
      })
      return { status: response.status, body: response.body }
    },
  }
}

interface Opened {
  readonly channelId: string
  readonly channelSecret: string
  readonly expiresAt: number
}

const bytesOf = (length: number, fill: number) => new Uint8Array(length).fill(fill)

async function errorCodeOf(promise: Promise<unknown>): Promise<string | undefined> {
  const caught = await promise.then(
    () => undefined,
    (error: unknown) => error,
  )
  return isClientError(caught) ? caught.serverCode : `not a ClientError: ${String(caught)}`
}

for (const dialect of DIALECTS) {
  describe.skipIf(dialect === 'postgres' && pgSkip !== undefined)(
    `provisioning channels on ${dialect}`,
    () => {
      let clock = START
      const servers: TestServer[] = []
      afterEach(async () => {
        // Nodes sharing a database first, the one that owns it last.
        for (const server of servers.splice(0).reverse()) await server.close()
        clock = START
      })

      async function start(options: StartOptions = {}): Promise<TestServer> {
        const server = await startServer({
          dialect,
          now: () => clock,
          ...options,
          // Waiting reads check the database often here, so a test on two nodes is quick, and answer
          // "nothing new" soon; the tests of waiting say how long they wait.
          limits: { provisioningPollIntervalMs: 20, provisioningPollWaitMs: 500, ...options.limits },
        })
        servers.push(server)
        return server
      }

      const open = async (server: TestServer, localAddress?: string): Promise<Opened> => {
        const response = await server.request(`${API}/provisioning`, {
          method: 'POST',
          ...(localAddress ? { localAddress } : {}),
        })
        expect(response.status, response.text).toBe(201)
        return response.body as Opened
      }
      /** The existing device: posts to the new side, reads its own, with its session token. */
      const toNew = (server: TestServer, channel: Opened, token: Uint8Array, message: string) =>
        server.request(`${API}/provisioning/${channel.channelId}/new`, { token, body: { message } })
      const readExisting = (server: TestServer, channel: Opened, token: Uint8Array, after = 0) =>
        server.request(`${API}/provisioning/${channel.channelId}/existing?after=${after}`, { token })
      /** The new device: posts to the existing side, reads its own, with the channel secret. */
      const secretOf = (channel: Opened) => fromBase64Url(channel.channelSecret)
      const toExisting = (server: TestServer, channel: Opened, message: string, secret = secretOf(channel)) =>
        server.request(`${API}/provisioning/${channel.channelId}/existing`, {
          token: secret,
          body: { message },
        })
      const readNew = (server: TestServer, channel: Opened, after = 0, secret = secretOf(channel)) =>
        server.request(`${API}/provisioning/${channel.channelId}/new?after=${after}`, { token: secret })
      const close = (server: TestServer, channel: Opened, token: Uint8Array) =>
        server.request(`${API}/provisioning/${channel.channelId}`, { method: 'DELETE', token })
      const refusal = (response: HttpResponse) => [response.status, response.body?.error?.code]

      it('links a device: the whole exchange both ways through the client functions, then the code is used', async () => {
        const server = await start()
        const alice = await signUp(server)
        const http = httpClient(server)

        // The new device opens a channel and shows the code.
        const channel = await openProvisioningChannel(http)
        expect(channel.channelId).toHaveLength(PROVISIONING_CHANNEL_ID_BYTES)
        expect(channel.channelSecret).toHaveLength(32)
        expect(channel.expiresAt).toBe(START + PROVISIONING_CHANNEL_TTL_MS)
        const newKeys = await generateX25519KeyPair()
        const code = encodeLinkCode({ channelId: channel.channelId, ephemeralPublicKey: newKeys.publicKey })
        const newDevice: ProvisioningCaller = { device: 'new', ...channel }
        const waitingForKey = readProvisioningMessages(http, newDevice)

        // The existing device reads the code and answers with its ephemeral key.
        const scanned = decodeLinkCode(code)
        const existingDevice: ProvisioningCaller = {
          device: 'existing',
          channelId: scanned.channelId,
          token: toBase64Url(alice.token),
        }
        const existingKeys = await generateX25519KeyPair()
        expect(await postProvisioningMessage(http, existingDevice, existingKeys.publicKey)).toBe(1)
        const publicKeys = {
          newDevicePublicKey: scanned.ephemeralPublicKey,
          existingDevicePublicKey: existingKeys.publicKey,
        }
        const existingLink = await deriveLinkKeys(existingKeys.privateKey, 'existing device', publicKeys)

        // The new device gets it, and both show the same check.
        const first = await waitingForKey
        expect(first.messages).toEqual([{ position: 1, message: existingKeys.publicKey }])
        expect(first.expiresAt).toBe(channel.expiresAt)
        const newLink = await deriveLinkKeys(newKeys.privateKey, 'new device', {
          newDevicePublicKey: newKeys.publicKey,
          existingDevicePublicKey: first.messages[0]!.message,
        })
        expect(newLink.check).toBe(existingLink.check)

        // The new device says its name, sealed; the existing device reads it.
        const name = await sealProvisioning(newLink, 'to existing device', utf8Encode('laptop'))
        expect(await postProvisioningMessage(http, newDevice, name)).toBe(2)
        const answer = await readProvisioningMessages(http, existingDevice, 0)
        expect(answer.messages.map((message) => message.position)).toEqual([2])
        expect(
          utf8Decode(await openProvisioning(existingLink, 'to existing device', answer.messages[0]!.message)),
        ).toBe('laptop')

        // Approved: the sealed provisioning message, as large as one may be.
        const provisioning = new Uint8Array(MAX_PROVISIONING_PLAINTEXT_BYTES).fill(0x61)
        const sealed = await sealProvisioning(existingLink, 'to new device', provisioning)
        expect(sealed).toHaveLength(MAX_PROVISIONING_SEALED_BYTES)
        expect(await postProvisioningMessage(http, existingDevice, sealed)).toBe(3)
        const second = await readProvisioningMessages(http, newDevice, 1)
        expect(second.messages.map((message) => message.position)).toEqual([3])
        expect(await openProvisioning(newLink, 'to new device', second.messages[0]!.message)).toEqual(
          provisioning,
        )

        // The new device closes it (later: after registering itself); the code works once.
        await closeProvisioningChannel(http, newDevice)
        expect(await errorCodeOf(readProvisioningMessages(http, newDevice, 0))).toBe(ServerErrorCode.LinkUsed)
        expect(await errorCodeOf(postProvisioningMessage(http, existingDevice, existingKeys.publicKey))).toBe(
          ServerErrorCode.LinkUsed,
        )
        // Closing deleted what it carried.
        expect(await server.database.db.selectFrom('provisioning_messages').selectAll().execute()).toEqual([])
      })

      it('a waiting read returns when a message arrives: on this node, and on another node sharing the database', async () => {
        const waitLong = { limits: { provisioningPollWaitMs: 60_000 } }
        const server = await start(waitLong)
        const other = await start({ ...waitLong, database: server.database })
        const alice = await signUp(server)
        const channel = await open(server)

        // Asked before anything was posted; answered by the post (a read that did not wait would have
        // answered with nothing meanwhile).
        const here = readNew(server, channel)
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect((await toNew(server, channel, alice.token, toBase64Url(bytesOf(32, 1)))).status).toBe(201)
        expect((await here).body).toMatchObject({
          messages: [{ position: 1, message: toBase64Url(bytesOf(32, 1)) }],
        })

        // The other node hears nothing of the post but finds it in the database.
        const there = readExisting(other, channel, alice.token, 0)
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect((await toExisting(server, channel, toBase64Url(bytesOf(40, 2)))).status).toBe(201)
        const answered = await there
        expect(answered.status).toBe(200)
        expect(matches(ProvisioningMessagesResponse, answered.body)).toBe(true)
        expect(answered.body.messages).toEqual([{ position: 2, message: toBase64Url(bytesOf(40, 2)) }])

        // A read of a channel that the existing device closes meanwhile is told it was refused.
        const waiting = readNew(other, channel, 1)
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect((await close(server, channel, alice.token)).status).toBe(204)
        expect(refusal(await waiting)).toEqual([410, ServerErrorCode.LinkRefused])
      })

      it('a read with nothing new answers an empty list when its wait ends; a newer read ends an older one', async () => {
        const server = await start({ limits: { provisioningPollWaitMs: 100 } })
        const channel = await open(server)
        const response = await readNew(server, channel)
        expect(response.status).toBe(200)
        expect(response.body).toEqual({ messages: [], expiresAt: channel.expiresAt })

        const patient = await start({ limits: { provisioningPollWaitMs: 60_000 } })
        const waiting = await open(patient)
        // Two reads of one side: whichever came second ends the first, which answers before the
        // wait is up (the test's timeout is shorter than it); the server's shutdown answers the
        // other rather than wait for it.
        const reads = [readNew(patient, waiting), readNew(patient, waiting)]
        const first = await Promise.race(reads)
        expect(first.body).toEqual({ messages: [], expiresAt: waiting.expiresAt })
        const closing = patient.app.close()
        for (const read of await Promise.all(reads)) {
          expect(read.body).toEqual({ messages: [], expiresAt: waiting.expiresAt })
        }
        // The test's client still holds its kept-alive connections: let them go, so the close ends.
        await patient.stop()
        await closing
      })

      it('expires on the server clock: refused as expired (a waiting read too), then purged and unknown', async () => {
        const server = await start({ limits: { provisioningPollWaitMs: 60_000 } })
        const alice = await signUp(server)
        const channel = await open(server)
        expect((await toNew(server, channel, alice.token, toBase64Url(bytesOf(32, 1)))).status).toBe(201)

        clock = START + PROVISIONING_CHANNEL_TTL_MS - 1
        expect((await readNew(server, channel)).status).toBe(200)
        const waiting = readNew(server, channel, 1)
        await new Promise((resolve) => setTimeout(resolve, 200))
        clock = START + PROVISIONING_CHANNEL_TTL_MS
        expect(refusal(await waiting)).toEqual([410, ServerErrorCode.LinkExpired])
        expect(refusal(await readNew(server, channel))).toEqual([410, ServerErrorCode.LinkExpired])
        expect(refusal(await readExisting(server, channel, alice.token))).toEqual([
          410,
          ServerErrorCode.LinkExpired,
        ])
        expect(refusal(await toNew(server, channel, alice.token, 'AAAA'))).toEqual([
          410,
          ServerErrorCode.LinkExpired,
        ])
        expect(refusal(await toExisting(server, channel, 'AAAA'))).toEqual([410, ServerErrorCode.LinkExpired])
        expect(
          (await server.request(`${API}/provisioning/${channel.channelId}/new`, { token: secretOf(channel) }))
            .body.error.message,
        ).toMatch(/link code expired/)

        // The server's periodic purge (also run when a node starts) deletes it: now unknown.
        const restarted = await start({ database: server.database })
        expect(refusal(await readNew(restarted, channel))).toEqual([404, ServerErrorCode.LinkUnknown])
        expect(await purgeExpiredProvisioningChannels(server.database.db, clock)).toBe(0)
      })

      it('refuses an unknown channel, a malformed id, a wrong or missing secret, a missing token', async () => {
        const server = await start()
        const alice = await signUp(server)
        const channel = await open(server)
        const unknown: Opened = { ...channel, channelId: toBase64Url(bytesOf(16, 7)) }
        expect(refusal(await readNew(server, unknown))).toEqual([404, ServerErrorCode.LinkUnknown])
        expect(refusal(await toExisting(server, unknown, 'AAAA'))).toEqual([404, ServerErrorCode.LinkUnknown])
        expect(refusal(await toNew(server, unknown, alice.token, 'AAAA'))).toEqual([
          404,
          ServerErrorCode.LinkUnknown,
        ])
        expect(refusal(await readExisting(server, unknown, alice.token))).toEqual([
          404,
          ServerErrorCode.LinkUnknown,
        ])
        expect(refusal(await close(server, unknown, alice.token))).toEqual([404, ServerErrorCode.LinkUnknown])
        for (const id of ['AAAA', toBase64Url(bytesOf(17, 1)), `${channel.channelId.slice(0, -1)}+`]) {
          expect(refusal(await readNew(server, { ...channel, channelId: id }))).toEqual([
            400,
            ServerErrorCode.BadRequest,
          ])
        }
        const wrong = bytesOf(32, 9)
        expect(refusal(await readNew(server, channel, 0, wrong))).toEqual([
          401,
          ServerErrorCode.Unauthenticated,
        ])
        expect(refusal(await toExisting(server, channel, 'AAAA', wrong))).toEqual([
          401,
          ServerErrorCode.Unauthenticated,
        ])
        expect(refusal(await close(server, channel, wrong))).toEqual([401, ServerErrorCode.Unauthenticated])
        const bare = await server.request(`${API}/provisioning/${channel.channelId}/new`)
        expect(refusal(bare)).toEqual([401, ServerErrorCode.Unauthenticated])
        const anonymous = await server.request(`${API}/provisioning/${channel.channelId}/new`, {
          body: { message: 'AAAA' },
        })
        expect(refusal(anonymous)).toEqual([401, ServerErrorCode.Unauthenticated])
        // The channel secret is no session token: it cannot act as the existing device.
        expect(refusal(await toNew(server, channel, secretOf(channel), 'AAAA'))).toEqual([
          401,
          ServerErrorCode.Unauthenticated,
        ])
        // The GET reads have no HEAD twin (it would wait, then answer nothing).
        expect(
          (
            await server.request(`${API}/provisioning/${channel.channelId}/new`, {
              method: 'HEAD',
              token: secretOf(channel),
            })
          ).status,
        ).toBe(404)
      })

      it('either side closes it; afterwards it is refused as used (to the new device, as refused when the existing one closed it), and closing again changes nothing', async () => {
        const server = await start()
        const alice = await signUp(server)
        const byNew = await open(server)
        expect((await close(server, byNew, secretOf(byNew))).status).toBe(204)
        expect(refusal(await toNew(server, byNew, alice.token, 'AAAA'))).toEqual([
          410,
          ServerErrorCode.LinkUsed,
        ])
        expect(refusal(await readNew(server, byNew))).toEqual([410, ServerErrorCode.LinkUsed])
        expect((await close(server, byNew, secretOf(byNew))).status).toBe(204)

        const byExisting = await open(server)
        expect((await toNew(server, byExisting, alice.token, 'AAAA')).status).toBe(201)
        expect((await close(server, byExisting, alice.token)).status).toBe(204)
        // The new device hears that the other one said no, not only that the code is used.
        expect(refusal(await toExisting(server, byExisting, 'AAAA'))).toEqual([
          410,
          ServerErrorCode.LinkRefused,
        ])
        expect(refusal(await readNew(server, byExisting))).toEqual([410, ServerErrorCode.LinkRefused])
        expect(refusal(await readExisting(server, byExisting, alice.token))).toEqual([
          410,
          ServerErrorCode.LinkUsed,
        ])
        expect((await close(server, byExisting, alice.token)).status).toBe(204)
        // Closing it again from the new device changes nothing: the existing device closed it.
        expect((await close(server, byExisting, secretOf(byExisting))).status).toBe(204)
        expect(refusal(await readNew(server, byExisting))).toEqual([410, ServerErrorCode.LinkRefused])
      })

      it("the first authenticated post claims it: another account's device is refused posting, reading and closing", async () => {
        const server = await start()
        const [alice, bob] = await Promise.all([signUp(server), signUp(server)])
        const channel = await open(server)
        // Before the claim anyone with the code may read (there is nothing yet).
        expect((await readExisting(server, channel, bob.token)).status).toBe(200)
        expect((await toNew(server, channel, alice.token, 'AAAA')).status).toBe(201)
        expect(refusal(await toNew(server, channel, bob.token, 'AAAA'))).toEqual([
          409,
          ServerErrorCode.LinkClaimed,
        ])
        expect(refusal(await readExisting(server, channel, bob.token))).toEqual([
          409,
          ServerErrorCode.LinkClaimed,
        ])
        expect(refusal(await close(server, channel, bob.token))).toEqual([409, ServerErrorCode.LinkClaimed])
        // The claimant carries on.
        expect((await toNew(server, channel, alice.token, 'AQID')).body).toEqual({ position: 2 })
        expect((await readNew(server, channel)).body.messages).toHaveLength(2)
      })

      it('refuses bad base64url and messages over their limit (413); takes one of exactly the limit', async () => {
        const server = await start()
        const alice = await signUp(server)
        const channel = await open(server)
        for (const message of ['', 'QU+D', 'QUJD=', 'QR', 12]) {
          expect(refusal(await toNew(server, channel, alice.token, message as string))).toEqual([
            400,
            ServerErrorCode.BadRequest,
          ])
          expect(refusal(await toExisting(server, channel, message as string))).toEqual([
            400,
            ServerErrorCode.BadRequest,
          ])
        }
        const large = (bytes: number) => toBase64Url(bytesOf(bytes, 5))
        expect(
          refusal(await toNew(server, channel, alice.token, large(MAX_PROVISIONING_SEALED_BYTES + 1))),
        ).toEqual([413, ServerErrorCode.TooLarge])
        expect(
          refusal(await toNew(server, channel, alice.token, large(4 * MAX_PROVISIONING_SEALED_BYTES))),
        ).toEqual([413, ServerErrorCode.TooLarge])
        expect(refusal(await toExisting(server, channel, large(MAX_PROVISIONING_ANSWER_BYTES + 1)))).toEqual([
          413,
          ServerErrorCode.TooLarge,
        ])
        // Nothing refused was stored or counted.
        expect((await readNew(server, channel, 0)).body.messages).toEqual([])
        expect(
          (await toNew(server, channel, alice.token, large(MAX_PROVISIONING_SEALED_BYTES))).body,
        ).toEqual({
          position: 1,
        })
        expect((await toExisting(server, channel, large(MAX_PROVISIONING_ANSWER_BYTES))).body).toEqual({
          position: 2,
        })
      })

      it('refuses a message beyond MAX_PROVISIONING_MESSAGES_PER_CHANNEL, from either side', async () => {
        const server = await start()
        const alice = await signUp(server)
        const channel = await open(server)
        const positions: number[] = []
        for (let i = 0; i < MAX_PROVISIONING_MESSAGES_PER_CHANNEL; i++) {
          const response =
            i % 2 === 0
              ? await toNew(server, channel, alice.token, 'AAAA')
              : await toExisting(server, channel, 'AAAA')
          positions.push(response.body.position)
        }
        expect(positions).toEqual(
          Array.from({ length: MAX_PROVISIONING_MESSAGES_PER_CHANNEL }, (_, i) => i + 1),
        )
        expect(refusal(await toNew(server, channel, alice.token, 'AAAA'))).toEqual([
          409,
          ServerErrorCode.TooManyLinkMessages,
        ])
        expect(refusal(await toExisting(server, channel, 'AAAA'))).toEqual([
          409,
          ServerErrorCode.TooManyLinkMessages,
        ])
        // What it carried can still be read, each side its own.
        expect(
          (await readNew(server, channel, 0)).body.messages.map((m: { position: number }) => m.position),
        ).toEqual([1, 3, 5, 7])
        expect((await readExisting(server, channel, alice.token, 4)).body.messages).toHaveLength(2)
      })

      it('limits the channels open per address (429 with Retry-After) and the opens per window', async () => {
        const server = await start({
          limits: { provisioningOpenRateLimit: { max: 100, timeWindowMs: 60_000 } },
        })
        const from = '127.0.3.1'
        const opened: Opened[] = []
        for (let i = 0; i < MAX_OPEN_PROVISIONING_CHANNELS_PER_ADDRESS; i++) {
          clock = START + i * 1_000
          opened.push(await open(server, from))
        }
        const refused = await server.request(`${API}/provisioning`, { method: 'POST', localAddress: from })
        expect(refusal(refused)).toEqual([429, ServerErrorCode.TooManyLinks])
        // The first of them expires in the TTL less the 4 seconds that passed.
        expect(refused.headers['retry-after']).toBe(String(PROVISIONING_CHANNEL_TTL_MS / 1000 - 4))
        // Another address is not affected; a closed channel no longer counts; nor does an expired one.
        await open(server, '127.0.3.2')
        expect((await close(server, opened[0]!, secretOf(opened[0]!))).status).toBe(204)
        await open(server, from)
        expect(
          (await server.request(`${API}/provisioning`, { method: 'POST', localAddress: from })).status,
        ).toBe(429)
        clock = START + PROVISIONING_CHANNEL_TTL_MS + 1_000
        await open(server, from)

        const limited = await start({
          limits: { provisioningOpenRateLimit: { max: 2, timeWindowMs: 60_000 } },
        })
        await open(limited, from)
        await open(limited, from)
        const third = await limited.request(`${API}/provisioning`, { method: 'POST', localAddress: from })
        expect(refusal(third)).toEqual([429, ServerErrorCode.RateLimited])
      })

      it('stores only the hash of the secret and no address; the log has event names and nothing of the channel', async () => {
        const lines: string[] = []
        const server = await start({
          log: { level: 'trace', stream: { write: (line: string) => lines.push(line) } },
        })
        const alice = await signUp(server)
        const channel = await open(server)
        const key = toBase64Url(bytesOf(32, 0x42))
        const sealed = toBase64Url(bytesOf(300, 0x43))
        expect((await toNew(server, channel, alice.token, key)).status).toBe(201)
        expect((await toExisting(server, channel, sealed)).status).toBe(201)
        expect((await readNew(server, channel)).status).toBe(200)
        expect((await readExisting(server, channel, alice.token)).status).toBe(200)
        expect(refusal(await readNew(server, channel, 0, bytesOf(32, 1)))).toEqual([
          401,
          ServerErrorCode.Unauthenticated,
        ])
        expect((await close(server, channel, alice.token)).status).toBe(204)

        const rows = await server.database.db.selectFrom('provisioning_channels').selectAll().execute()
        expect(rows).toHaveLength(1)
        const row = rows[0]!
        const secret = fromBase64Url(channel.channelSecret)
        expect(toHex(row.secret_hash)).toBe(createHash('sha256').update(secret).digest('hex'))
        const stored = JSON.stringify(rows, (_key, value) =>
          value instanceof Uint8Array ? toHex(value) : typeof value === 'bigint' ? Number(value) : value,
        )
        expect(stored).not.toContain(toHex(secret))
        expect(stored).not.toContain(toHex(utf8Encode('127.0.0.1')))
        expect(row.claimed_by).not.toBeNull()

        const output = lines.join('')
        for (const event of ['provisioning.opened', 'provisioning.message', 'provisioning.closed']) {
          expect(output).toContain(`"event":"${event}"`)
        }
        expect(output).toContain('"path":"/api/v1/provisioning/:channelId/new"')
        const channelId = fromBase64Url(channel.channelId)
        for (const needle of [
          channel.channelId,
          toHex(channelId),
          channel.channelSecret,
          toHex(secret),
          key,
          sealed,
        ]) {
          expect(output.includes(needle), `the log holds a value of ${needle.length} characters`).toBe(false)
        }
      })
    },
  )
}

describe('provisioning limits clients rely on', () => {
  it('a long poll answers before either client gives up on the request', () => {
    expect(PROVISIONING_POLL_WAIT_MS).toBeLessThan(REQUEST_TIMEOUT_MS)
    expect(PROVISIONING_POLL_WAIT_MS).toBeLessThan(TERMINAL_REQUEST_TIMEOUT_MS)
  })
})
