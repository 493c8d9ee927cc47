/**
 * The fuzz campaign's seeded randomness: sfc32 (a small, fast generator that passes PractRand),
 * and a mix of the campaign's seed with an input's index, so each input can be regenerated alone
 * from the two numbers a failure report prints, whatever order the workers ran in.
 */

/** murmur3's finaliser: spreads every input bit over the whole 32-bit result. */
function fmix32(value: number): number {
  let h = value >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85eb_ca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2_ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A seed for one part of the campaign (a phase, an input): the parts mixed into the campaign's seed. */
export function seedFor(seed: number, ...parts: number[]): number {
  let h = fmix32(seed ^ 0x9e37_79b9)
  for (const part of parts) h = fmix32(h ^ fmix32(part + 0x7f4a_7c15))
  return h
}

export class Prng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: number) {
    this.a = 0x9e37_79b9
    this.b = 0x243f_6a88
    this.c = 0xb7e1_5162
    this.d = seed >>> 0
    // The first outputs of sfc32 still show the seed's structure.
    for (let i = 0; i < 12; i++) this.next()
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** A uniform number in [0, 1). */
  float(): number {
    return this.next() / 2 ** 32
  }

  /** A uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.float() * n)
  }

  /** A uniform integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.below(max - min + 1)
  }

  chance(probability: number): boolean {
    return this.float() < probability
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick: expected a non-empty list, got none')
    return items[this.below(items.length)]!
  }

  /** One of `choices` by weight. */
  weighted<T>(choices: readonly (readonly [T, number])[]): T {
    const total = choices.reduce((sum, [, weight]) => sum + weight, 0)
    let roll = this.float() * total
    for (const [choice, weight] of choices) {
      roll -= weight
      if (roll < 0) return choice
    }
    return choices.at(-1)![0]
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(length)
    for (let i = 0; i < length; i++) out[i] = this.next() & 0xff
    return out
  }
}
