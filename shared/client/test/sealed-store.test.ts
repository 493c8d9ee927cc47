/**
 * The messages SealedStore keeps opened after their commit (RECENT_MESSAGES_KEPT): reading back
 * exactly what was committed opens nothing again, and anything else (other bytes under the key, a
 * put whose commit failed, a deleted or wiped one, one pushed out by newer ones) is opened as usual.
 * Real WebCrypto; decryptions are counted by spying on crypto.subtle.decrypt.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { directConversation } from '../../address.js'
import { newStorageKeyParameters } from '../../at-rest.js'
import type { AccountSecrets, UnlockedAccount } from '../account.js'
import { isClientError } from '../errors.js'
import { type MessageRecord, messageKey } from '../records.js'
import { RECENT_MESSAGES_KEPT, SealedStore } from '../sealed-store.js'
import { type ClientStore, MemoryStore, type StoreOperation } from '../store.js'

const bob = directConversation('bob')

async function account(): Promise<UnlockedAccount> {
  const storageKey = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, [
    'encrypt',
    'decrypt',
  ])
  return {
    username: 'alice',
    server: 'https://chat.example',
    storageKey,
    parameters: newStorageKeyParameters(),
    secrets: {} as AccountSecrets,
  }
}

function message(id: string, text = `text of ${id}`): MessageRecord {
  return {
    id,
    peer: 'bob',
    direction: 'in',
    text,
    sentAt: 1_700_000_000_000,
    serverAt: 1_700_000_000_000,
    state: 'received',
    order: 1_700_000_000_000,
  }
}

/** A store whose commits fail while `failing` is set. */
class FlakyStore extends MemoryStore {
  failing = false
  override async commit(operations: readonly StoreOperation[]): Promise<void> {
    if (this.failing) throw new Error('test: the disk is full')
    return super.commit(operations)
  }
}

async function stored(store: ClientStore, key: string): Promise<Uint8Array> {
  const record = await store.get('messages', key)
  if (!record) throw new Error(`test: expected ${key} stored`)
  return record.value
}

describe('SealedStore: messages kept opened after their commit', () => {
  let decryptions: ReturnType<typeof vi.spyOn>
  beforeEach(() => {
    decryptions = vi.spyOn(crypto.subtle, 'decrypt')
  })
  afterEach(() => {
    decryptions.mockRestore()
  })

  it('reads back what it committed without opening it, and opens other bytes under the key', async () => {
    const disk = new MemoryStore()
    const unlocked = await account()
    const sealed = new SealedStore(disk, unlocked)
    const key = messageKey(bob, 'm1')
    await sealed.store.commit([await sealed.messagePut(message('m1'))])
    decryptions.mockClear()
    expect(await sealed.openMessage(key, await stored(disk, key))).toEqual(message('m1'))
    expect(decryptions).not.toHaveBeenCalled()

    // Written under the same key by another opening of the store (not through this one).
    const other = new SealedStore(disk, unlocked)
    await disk.commit([await other.messagePut(message('m1', 'changed elsewhere'))])
    expect(await sealed.openMessage(key, await stored(disk, key))).toEqual(message('m1', 'changed elsewhere'))
    expect(decryptions).toHaveBeenCalledTimes(1)

    // Damaged bytes are reported, never answered from memory.
    const damaged = (await stored(disk, key)).slice()
    damaged[damaged.length - 1]! ^= 1
    const error = await sealed.openMessage(key, damaged).catch((caught: unknown) => caught)
    expect(isClientError(error, 'E2E_ERR_CORRUPT_STORE')).toBe(true)
  })

  it('keeps nothing from a commit that failed, a delete or a wipe', async () => {
    const disk = new FlakyStore()
    const sealed = new SealedStore(disk, await account())
    const failedKey = messageKey(bob, 'failed')
    const failed = await sealed.messagePut(message('failed'))
    disk.failing = true
    await expect(sealed.store.commit([failed])).rejects.toThrow('the disk is full')
    disk.failing = false
    decryptions.mockClear()
    const failedBytes = (failed as Extract<StoreOperation, { op: 'put' }>).record.value
    expect(await sealed.openMessage(failedKey, failedBytes)).toEqual(message('failed'))
    expect(decryptions).toHaveBeenCalledTimes(1)

    const key = messageKey(bob, 'm2')
    await sealed.store.commit([await sealed.messagePut(message('m2'))])
    const bytes = await stored(disk, key)
    await sealed.store.commit([{ op: 'delete', table: 'messages', key }])
    decryptions.mockClear()
    await sealed.openMessage(key, bytes)
    expect(decryptions).toHaveBeenCalledTimes(1)

    await sealed.store.commit([await sealed.messagePut(message('m3'))])
    const wipedKey = messageKey(bob, 'm3')
    const wipedBytes = await stored(disk, wipedKey)
    await sealed.store.wipe()
    decryptions.mockClear()
    await sealed.openMessage(wipedKey, wipedBytes)
    expect(decryptions).toHaveBeenCalledTimes(1)
  })

  it(`keeps the newest ${RECENT_MESSAGES_KEPT} and opens older ones as usual`, async () => {
    const disk = new MemoryStore()
    const sealed = new SealedStore(disk, await account())
    const ids = Array.from({ length: RECENT_MESSAGES_KEPT + 1 }, (_, i) => `m${i}`)
    for (let start = 0; start < ids.length; start += 1_000) {
      const batch = ids.slice(start, start + 1_000)
      await sealed.store.commit(await Promise.all(batch.map((id) => sealed.messagePut(message(id)))))
    }
    const oldest = messageKey(bob, ids[0]!)
    const newest = messageKey(bob, ids.at(-1)!)
    decryptions.mockClear()
    expect(await sealed.openMessage(newest, await stored(disk, newest))).toEqual(message(ids.at(-1)!))
    expect(decryptions).not.toHaveBeenCalled()
    expect(await sealed.openMessage(oldest, await stored(disk, oldest))).toEqual(message(ids[0]!))
    expect(decryptions).toHaveBeenCalledTimes(1)
  })
})

describe('SealedStore: re-sealing under a new key (a password change)', () => {
  it('seals every record again in one commit, and a batch sealed under the old key is sealed again before it lands', async () => {
    const inner = new MemoryStore()
    const before = await account()
    const records = new SealedStore(inner, before)
    await records.store.commit([
      await records.messagePut(message('m1')),
      await records.contactPut({ username: 'bob', verified: false, unread: 0 } as never),
    ])
    // Sealed now, committed only after the re-seal: it must not land under the old key.
    const late = await records.messagePut(message('m2'))
    const after = await account()
    const progress: number[] = []
    await records.reseal(
      { storageKey: after.storageKey, parameters: after.parameters },
      {} as AccountSecrets,
      (done) => progress.push(done),
    )
    await records.store.commit([late])
    expect(progress.at(-1)).toBe(2)

    // A new SealedStore with only the new key reads everything; one with the old key reads nothing.
    const withNewKey = new SealedStore(inner, { ...before, storageKey: after.storageKey })
    expect((await withNewKey.loadMessage(bob, 'm1'))?.text).toBe('text of m1')
    expect((await withNewKey.loadMessage(bob, 'm2'))?.text).toBe('text of m2')
    expect((await withNewKey.loadContact('bob'))?.username).toBe('bob')
    const withOldKey = new SealedStore(inner, before)
    for (const id of ['m1', 'm2']) {
      const error = await withOldKey.loadMessage(bob, id).catch((e: unknown) => e)
      expect(isClientError(error, 'E2E_ERR_CORRUPT_STORE')).toBe(true)
    }
  })

  it('makes commits that start during a re-seal wait for it', async () => {
    const inner = new MemoryStore()
    const before = await account()
    const records = new SealedStore(inner, before)
    for (let i = 0; i < 50; i++) await records.store.commit([await records.messagePut(message(`m${i}`))])
    const after = await account()
    const resealing = records.reseal(
      { storageKey: after.storageKey, parameters: after.parameters },
      {} as AccountSecrets,
    )
    const during = (async () =>
      records.store.commit([await records.messagePut(message('late', 'written meanwhile'))]))()
    await Promise.all([resealing, during])
    const withNewKey = new SealedStore(inner, { ...before, storageKey: after.storageKey })
    expect((await withNewKey.loadMessage(bob, 'late'))?.text).toBe('written meanwhile')
    expect((await withNewKey.loadMessage(bob, 'm49'))?.text).toBe('text of m49')
  })
})
