/**
 * Prekey upkeep of this client's own device, whose id its prekeys are signed for (docs/protocol.md
 * §2.2): one-time prekeys refilled when the server runs low (on connect, on `prekeys.low` and
 * every PREKEY_UPKEEP_INTERVAL_MS while connected), never past MAX_LOCAL_ONE_TIME_PREKEYS kept,
 * and those handed out but unused deleted after ONE_TIME_PREKEY_UNUSED_LIFETIME_MS (the plan is
 * one-time-prekeys.ts's); the signed prekey rotated once it is older than
 * SIGNED_PREKEY_ROTATION_MS, keeping the last SIGNED_PREKEYS_KEPT so that prekey messages sent to
 * an older bundle still open. Private halves are stored before the public ones are
 * published, so a message to any published key can always be opened.
 *
 * What it does not know: sessions, messages, sockets.
 */
import { OneTimePreKeyIdsResponse, PreKeyStatusResponse } from '../codec/api.js'
import { preKeyToJson } from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import { generateOneTimePreKeys, generateSignedPreKey, publicPreKey } from '../identity.js'
import { SIGNED_PREKEY_ROTATION_MS } from '../limits.js'
import type { ClientContext } from './context.js'
import { isClientError } from './errors.js'
import { type OneTimePreKeyEntry, planOneTimePreKeys } from './one-time-prekeys.js'
import type { StoreOperation } from './store.js'

/** Signed prekeys kept after rotation, so prekey messages sent to an older bundle still open. */
export const SIGNED_PREKEYS_KEPT = 5
/**
 * While connected, prekeys are checked this often too (besides on every connect and on the server's
 * prekeys.low), so a client that stays online for days still rotates its signed prekey on time.
 */
export const PREKEY_UPKEEP_INTERVAL_MS = 6 * 60 * 60 * 1000

export type PreKeyStatus = ReturnType<typeof decodeStatus>

const ONE_TIME_KEY_PREFIX = 'one-time:'

function sameLedger(
  stored: readonly OneTimePreKeyEntry[] | undefined,
  next: readonly OneTimePreKeyEntry[],
): boolean {
  if (!stored || stored.length !== next.length) return false
  return stored.every(
    (entry, i) =>
      entry.id === next[i]!.id &&
      entry.generatedAt === next[i]!.generatedAt &&
      entry.handedOutAt === next[i]!.handedOutAt,
  )
}

function decodeStatus(value: unknown) {
  return decode(PreKeyStatusResponse, value, 'prekey status')
}

export class PreKeyUpkeep {
  private readonly ctx: ClientContext
  private running: Promise<void> | undefined
  /** Another check was asked for while one ran. */
  private again = false
  private timer: ReturnType<typeof setInterval> | undefined
  /** The last upkeep step asked for (maintain, rotate): each runs after the one before. */
  private exclusive: Promise<void> = Promise.resolve()

  constructor(ctx: ClientContext) {
    this.ctx = ctx
  }

  /** Checks now, and every PREKEY_UPKEEP_INTERVAL_MS while connected. */
  start(): void {
    this.schedule()
    if (this.timer) return
    this.timer = setInterval(() => {
      if (this.ctx.connection() === 'online') this.schedule()
    }, PREKEY_UPKEEP_INTERVAL_MS)
    // In Node, this timer alone must not keep a script's process running.
    ;(this.timer as { unref?: () => void }).unref?.()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  /** A check, now or right after the one under way. */
  schedule(): void {
    if (this.running) {
      // The check under way may have read the server's count before whatever asks now (a
      // prekeys.low after a peer took our last keys): run another once it is done, not none.
      this.again = true
      return
    }
    this.running = this.maintain()
      .catch((error: unknown) => this.ctx.report(error))
      .finally(() => {
        this.running = undefined
        const again = this.again
        this.again = false
        if (again && this.ctx.connection() === 'online') this.schedule()
      })
  }

  /** How many one-time prekeys the server still holds for us, and which signed prekey it hands out. */
  async status(): Promise<PreKeyStatus> {
    return decodeStatus(await this.ctx.api('GET', '/keys/status'))
  }

  /**
   * The ids of our one-time prekeys the server still holds, or undefined from a server that predates
   * GET /keys/one-time (it answers 404 E2E_ERR_NOT_FOUND; one-time-prekeys.ts then infers them).
   */
  async oneTimePreKeyIdsOnServer(): Promise<number[] | undefined> {
    try {
      const answer = decode(
        OneTimePreKeyIdsResponse,
        await this.ctx.api('GET', '/keys/one-time'),
        'one-time prekey ids',
      )
      return answer.keyIds
    } catch (error) {
      if (isClientError(error) && error.status === 404 && error.serverCode === 'E2E_ERR_NOT_FOUND')
        return undefined
      throw error
    }
  }

  /**
   * Deletes one-time private keys handed out and unused past their lifetime, refills when the server
   * runs low (never past MAX_LOCAL_ONE_TIME_PREKEYS: one-time-prekeys.ts), and rotates the signed
   * prekey when it is old.
   */
  maintain(): Promise<void> {
    return this.oneAtATime(() => this.maintainNow())
  }

  /**
   * Runs `work` after any upkeep under way: each takes the next key ids from the account secrets
   * and writes them back, so two at once (the check on connecting and a rotation the user asked
   * for) would sign two keys with one id, and the server would refuse the second.
   */
  private oneAtATime(work: () => Promise<void>): Promise<void> {
    const turn = this.exclusive.then(work)
    this.exclusive = turn.catch(() => undefined)
    return turn
  }

  private async maintainNow(): Promise<void> {
    const [status, serverIds, ledger, stored] = await Promise.all([
      this.status(),
      this.oneTimePreKeyIdsOnServer(),
      this.ctx.records.loadOneTimePreKeyLedger(),
      this.ctx.store.list('prekeys'),
    ])
    const now = this.ctx.now()
    const plan = planOneTimePreKeys({
      ledger: ledger?.keys ?? [],
      localIds: stored
        .filter((record) => record.key.startsWith(ONE_TIME_KEY_PREFIX))
        .map((record) => Number(record.key.slice(ONE_TIME_KEY_PREFIX.length))),
      serverIds,
      serverCount: status.oneTimePreKeys,
      now,
    })
    const secrets = this.ctx.records.account.secrets
    const first = secrets.nextPreKeyId
    const preKeys =
      plan.generate > 0
        ? await generateOneTimePreKeys(
            this.ctx.identity(),
            this.ctx.deviceId,
            first,
            plan.generate,
            { extractable: true },
            this.ctx.keys,
          )
        : []
    const entries = [...plan.ledger, ...preKeys.map((preKey) => ({ id: preKey.keyId, generatedAt: now }))]
    const unchanged = preKeys.length === 0 && plan.deleteIds.length === 0 && sameLedger(ledger?.keys, entries)
    if (!unchanged) {
      // Private halves (and their ledger entries) are stored before the public ones are published.
      await this.ctx.store.commit([
        ...plan.deleteIds.map(
          (id): StoreOperation => ({ op: 'delete', table: 'prekeys', key: `${ONE_TIME_KEY_PREFIX}${id}` }),
        ),
        ...(await Promise.all(preKeys.map((preKey) => this.ctx.records.preKeyPut(preKey, false)))),
        await this.ctx.records.oneTimePreKeyLedgerPut({ v: 1, keys: entries }),
        ...(preKeys.length > 0
          ? [await this.ctx.records.accountPut({ ...secrets, nextPreKeyId: first + preKeys.length })]
          : []),
      ])
    }
    if (preKeys.length > 0) {
      await this.ctx.api('POST', '/keys/one-time', {
        oneTimePreKeys: preKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))),
      })
    }
    if (this.ctx.now() - status.signedPreKeyCreatedAt >= SIGNED_PREKEY_ROTATION_MS) await this.rotateNow()
  }

  rotateSignedPreKey(): Promise<void> {
    return this.oneAtATime(() => this.rotateNow())
  }

  private async rotateNow(): Promise<void> {
    const secrets = this.ctx.records.account.secrets
    const keyId = secrets.nextPreKeyId
    const preKey = await generateSignedPreKey(
      this.ctx.identity(),
      this.ctx.deviceId,
      keyId,
      { extractable: true },
      this.ctx.keys,
    )
    const stale = (await this.ctx.store.list('prekeys'))
      .map((record) => record.key)
      .filter((key) => key.startsWith('signed:'))
      .map((key) => Number(key.slice('signed:'.length)))
      .sort((a, b) => b - a)
      .slice(SIGNED_PREKEYS_KEPT - 1)
    await this.ctx.store.commit([
      await this.ctx.records.preKeyPut(preKey, true),
      ...stale.map((id): StoreOperation => ({ op: 'delete', table: 'prekeys', key: `signed:${id}` })),
      await this.ctx.records.accountPut({
        ...secrets,
        nextPreKeyId: keyId + 1,
        signedPreKeyId: keyId,
        signedPreKeyCreatedAt: this.ctx.now(),
      }),
    ])
    await this.ctx.api('PUT', '/keys/signed', { signedPreKey: preKeyToJson(publicPreKey(preKey)) })
  }
}
