import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { QueueRepository } from '../db/queue.js'
import { openQueueRepository } from '../db/queue-repository.js'
import { RelationsKey } from '../db/relations.js'
import { createAccount, deleteAccount } from '../db/users.js'
import { ServerErrorCode } from '../errors.js'
import { createTestDatabase, type TestDatabase } from '../test/databases.js'
import { GroupCommit, type PendingSend, type SendResult, sendFailure } from './group-commit.js'

const bytes = (length: number) => new Uint8Array(randomBytes(length))
const preKey = (keyId: number) => ({ keyId, publicKey: bytes(32), signature: bytes(64) })

let names = 0
function newAccount(database: TestDatabase): Promise<number> {
  names += 1
  return createAccount(database.db, {
    username: `commit${names}`,
    passwordHash: '$2b$04$placeholderplaceholderplaceholderplaceholderplacehold',
    loginKey: bytes(422),
    identity: { identityKey: bytes(32), signingKey: bytes(32), identitySignature: bytes(64) },
    signedPreKey: preKey(1),
    oneTimePreKeys: [],
    now: 1_000,
  })
}

describe.each(['sqlite', 'postgres'] as const)('group commit on %s', (dialect) => {
  let database: TestDatabase
  let queue: QueueRepository
  beforeAll(async () => {
    database = await createTestDatabase(dialect)
    queue = openQueueRepository(database.db, {
      maxMessages: 1_000,
      maxBytes: 1 << 24,
      maxMessagesPerSender: 1_000,
      maxBytesPerSender: 1 << 24,
    })
  })
  afterAll(async () => {
    await queue?.close()
    await database?.dispose()
  })

  it('a send to an account deleted meanwhile fails alone: the rest of its batch is stored', async () => {
    const sender = await newAccount(database)
    const kept = await newAccount(database)
    const gone = await newAccount(database)
    // The relay resolved the name to an id before the account was deleted; the batch commits after.
    await deleteAccount(database.db, gone, { heldUntil: 2_000, relationsKey: RelationsKey.random() })

    const committed: { origin: string; outcome: SendResult }[] = []
    const failed: string[] = []
    const errors: unknown[] = []
    const commit = new GroupCommit<string>(
      queue,
      {
        committed: (sends, outcomes) => {
          for (const [index, send] of sends.entries())
            committed.push({ origin: send.origin, outcome: outcomes[index]! })
        },
        failed: (sends, error) => {
          failed.push(...sends.map((send) => send.origin))
          errors.push(error)
        },
      },
      () => 1_500,
    )
    const send = (origin: string, recipientId: number, devices = [1]): PendingSend<string> => ({
      origin,
      messages: devices.map((recipientDevice) => ({
        recipientId,
        recipientDevice,
        senderId: sender,
        senderDevice: 1,
        clientId: bytes(16),
        body: bytes(64),
        now: 1_500,
        expiresAt: 9_999,
      })),
    })
    const pendings = [
      send('before', kept),
      send('to-gone', gone),
      // A send to two devices and a sent copy is never split by the halving: it is stored whole.
      send('two-devices', kept, [1, 2]),
      send('after', kept),
    ]
    for (const pending of pendings) commit.send(pending)
    await commit.idle()

    expect(failed).toEqual(['to-gone'])
    // Its sender is told the recipient's account is gone, not that the server failed.
    expect(sendFailure(errors[0]).code).toBe(ServerErrorCode.AccountDeleted)
    const kinds = (outcome: SendResult) => ('kind' in outcome ? outcome.kind : outcome.map((row) => row.kind))
    expect(committed.map(({ origin, outcome }) => [origin, kinds(outcome)])).toEqual([
      ['before', ['stored']],
      ['two-devices', ['stored', 'stored']],
      ['after', ['stored']],
    ])
    // In the order they were sent.
    const seqs = committed.map(({ outcome }) => (outcome as unknown as { seq: number }[])[0]!.seq)
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
    expect(await queue.countQueued({ userId: kept, deviceId: 1 }, 1_500)).toBe(3)
    expect(await queue.countQueued({ userId: kept, deviceId: 2 }, 1_500)).toBe(1)
  })
})

describe('group commit when every transaction fails', () => {
  it('reports each send failed exactly once, in order, and tries at most 2n - 1 transactions', async () => {
    let transactions = 0
    const down = {
      dialect: 'sqlite',
      commit: async () => {
        transactions += 1
        throw new Error('database unreachable')
      },
    } as unknown as QueueRepository
    const failed: number[] = []
    const commit = new GroupCommit<number>(
      down,
      {
        committed: () => {
          throw new Error('nothing can commit')
        },
        failed: (sends) => failed.push(...sends.map((send) => send.origin)),
      },
      () => 1_500,
    )
    const origins = Array.from({ length: 7 }, (_, index) => index)
    for (const origin of origins) {
      commit.send({
        origin,
        messages: [
          {
            recipientId: 1,
            recipientDevice: 1,
            senderId: 2,
            senderDevice: 1,
            clientId: bytes(16),
            body: bytes(8),
            now: 1_500,
            expiresAt: 9_999,
          },
        ],
      })
    }
    await commit.idle()
    expect(failed).toEqual(origins)
    expect(sendFailure(new Error('database unreachable')).code).toBe(ServerErrorCode.Internal)
    expect(transactions).toBeLessThanOrEqual(2 * origins.length - 1)
  })
})
