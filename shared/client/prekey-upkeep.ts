/**
 * Prekey upkeep: one-time prekeys refilled when the server runs low (on connect, on `prekeys.low`
 * and every PREKEY_UPKEEP_INTERVAL_MS while connected), the signed prekey rotated once it is older
 * than SIGNED_PREKEY_ROTATION_MS, keeping the last SIGNED_PREKEYS_KEPT so that prekey messages
 * sent to an older bundle still open. Private halves are stored before the public ones are
 * published, so a message to any published key can always be opened.
 *
 * What it does not know: sessions, messages, sockets.
 */
import { PreKeyStatusResponse } from '../codec/api.js'
import { preKeyToJson } from '../codec/keys.js'
import { decode } from '../codec/schema.js'
import { generateOneTimePreKeys, generateSignedPreKey, publicPreKey } from '../identity.js'
import {
  ONE_TIME_PREKEY_BATCH,
  ONE_TIME_PREKEY_REFILL_THRESHOLD,
  SIGNED_PREKEY_ROTATION_MS,
} from '../limits.js'
import type { ClientContext } from './context.js'
import type { StoreOperation } from './store.js'

/** Signed prekeys kept after rotation, so prekey messages sent to an older bundle still open. */
export const SIGNED_PREKEYS_KEPT = 5
/**
 * While connected, prekeys are checked this often too (besides on every connect and on the server's
 * prekeys.low), so a client that stays online for days still rotates its signed prekey on time.
 */
export const PREKEY_UPKEEP_INTERVAL_MS = 6 * 60 * 60 * 1000

export type PreKeyStatus = ReturnType<typeof decodeStatus>

function decodeStatus(value: unknown) {
  return decode(PreKeyStatusResponse, value, 'prekey status')
}

export class PreKeyUpkeep {
  private readonly ctx: ClientContext
  private running: Promise<void> | undefined
  /** Another check was asked for while one ran. */
  private again = false
  private timer: ReturnType<typeof setInterval> | undefined

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

  /** Refills one-time prekeys when the server runs low, and rotates the signed prekey when it is old. */
  async maintain(): Promise<void> {
    const status = await this.status()
    if (status.oneTimePreKeys < ONE_TIME_PREKEY_REFILL_THRESHOLD) {
      const secrets = this.ctx.records.account.secrets
      const first = secrets.nextPreKeyId
      const preKeys = await generateOneTimePreKeys(
        this.ctx.identity(),
        first,
        ONE_TIME_PREKEY_BATCH,
        { extractable: true },
        this.ctx.keys,
      )
      await this.ctx.store.commit([
        ...(await Promise.all(preKeys.map((preKey) => this.ctx.records.preKeyPut(preKey, false)))),
        await this.ctx.records.accountPut({ ...secrets, nextPreKeyId: first + ONE_TIME_PREKEY_BATCH }),
      ])
      await this.ctx.api('POST', '/keys/one-time', {
        oneTimePreKeys: preKeys.map((preKey) => preKeyToJson(publicPreKey(preKey))),
      })
    }
    if (this.ctx.now() - status.signedPreKeyCreatedAt >= SIGNED_PREKEY_ROTATION_MS)
      await this.rotateSignedPreKey()
  }

  async rotateSignedPreKey(): Promise<void> {
    const secrets = this.ctx.records.account.secrets
    const keyId = secrets.nextPreKeyId
    const preKey = await generateSignedPreKey(
      this.ctx.identity(),
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
