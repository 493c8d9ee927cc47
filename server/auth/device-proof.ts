/**
 * Device proofs: how a device the account already uses shows it, so that failed log-ins from
 * elsewhere never keep it out (login-limiter.ts). The device holds the account's RSA login private
 * key; the server encrypts a proof to the registered login public key (`POST /login/challenge`),
 * and only that device can send it back with `/login`.
 *
 * Stateless: the proof is HMAC-SHA-256(key, label ‖ period ‖ account), with a period of
 * LOGIN_PROOF_PERIOD_MS; the current and the previous period's proofs are accepted. Nothing is
 * stored per challenge, so challenges cost no memory. The key is derived from the relations key
 * (DEVICE_PROOF_KEY_PURPOSE), which every node of a cluster shares: behind a load balancer the
 * challenge and the log-in may reach different nodes, and a restart keeps proofs valid.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

export const DEVICE_PROOF_BYTES = 32
/** What the device-proof key is derived for from the relations key (RelationsKey.deriveKey). */
export const DEVICE_PROOF_KEY_PURPOSE = 'login device proof'
const LABEL = 'secure-chat login device proof v1'

export class DeviceProofs {
  private readonly key: Buffer

  constructor(
    private readonly now: () => number,
    private readonly periodMs: number,
    key: Uint8Array = randomBytes(32),
  ) {
    this.key = Buffer.from(key)
  }

  /** The proof for this (normalised) account name in the current period. */
  issue(account: string): Uint8Array {
    return this.mac(account, this.period())
  }

  /** True when `proof` is this account's proof of the current or the previous period. */
  verify(account: string, proof: Uint8Array): boolean {
    if (proof.length !== DEVICE_PROOF_BYTES) return false
    const period = this.period()
    // Both compared, in constant time, whichever matches.
    const current = timingSafeEqual(this.mac(account, period), proof)
    const previous = timingSafeEqual(this.mac(account, period - 1), proof)
    return current || previous
  }

  private period(): number {
    return Math.floor(this.now() / this.periodMs)
  }

  private mac(account: string, period: number): Buffer {
    const periodBytes = Buffer.alloc(8)
    periodBytes.writeBigUInt64BE(BigInt(Math.max(0, period)))
    return createHmac('sha256', this.key)
      .update(LABEL)
      .update(Buffer.from([0]))
      .update(periodBytes)
      .update(account, 'utf8')
      .digest()
  }
}
