/**
 * The web client's colour tokens (client-web/src/styles/global.css) against WCAG 2.2: text at least
 * 4.5:1 on every surface it is used on (1.4.3, AA), and the non-text marks people must see (the
 * focus ring, the online dot) at least 3:1 (1.4.11), in the light and the dark scheme. The pairs
 * are the ones the components use.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const css = readFileSync(join(import.meta.dirname, '../client-web/src/styles/global.css'), 'utf8')

function tokens(block: string): Map<string, string> {
  return new Map([...block.matchAll(/--([a-z0-9-]+):\s*(#[0-9a-f]{6})\s*;/gi)].map((m) => [m[1]!, m[2]!]))
}

const light = tokens(css.slice(css.indexOf(':root {'), css.indexOf('@media (prefers-color-scheme: dark)')))
const dark = new Map([
  ...light,
  ...tokens(css.slice(css.indexOf('@media (prefers-color-scheme: dark)'), css.indexOf('*,'))),
])

/** WCAG 2.2 relative luminance and contrast ratio of two #rrggbb colours. */
function luminance(hex: string): number {
  const channel = (offset: number) => {
    const value = Number.parseInt(hex.slice(offset, offset + 2), 16) / 255
    return value <= 0.04045 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4
  }
  return 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

function contrast(a: string, b: string): number {
  const [high, low] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number]
  return (high + 0.05) / (low + 0.05)
}

const TEXT_PAIRS: [string, string][] = [
  ...['text', 'text-2', 'text-3'].flatMap((text) =>
    ['bg', 'surface', 'surface-2', 'surface-3'].map((surface): [string, string] => [text, surface]),
  ),
  ['accent-text', 'surface'],
  ['accent-text', 'accent-soft'],
  ['on-accent', 'accent'],
  ['on-accent', 'accent-hover'],
  ['bubble-in-text', 'bubble-in'],
  ['bubble-out-text', 'bubble-out'],
  ['bubble-out-meta', 'bubble-out'],
  ['danger', 'surface'],
  ['danger', 'danger-soft'],
  ['on-danger', 'danger'],
  ['warning', 'surface'],
  ['warning', 'warning-soft'],
  // A notice for a message that is lost or damaged: its sentence and time on the warning tint.
  ['text-2', 'warning-soft'],
  ['text-3', 'warning-soft'],
  ['success', 'surface'],
  ['success', 'success-soft'],
]

const MARK_PAIRS: [string, string][] = [
  ['focus', 'surface'],
  ['focus', 'bg'],
  ['online', 'surface'],
]

describe.each([
  ['light', light],
  ['dark', dark],
])('%s colour scheme', (_scheme, palette) => {
  const colour = (name: string) => {
    const value = palette.get(name)
    expect(value, `--${name} is not defined as #rrggbb`).toBeDefined()
    return value!
  }

  it.each(TEXT_PAIRS)('--%s on --%s has at least 4.5:1', (text, surface) => {
    expect(contrast(colour(text), colour(surface))).toBeGreaterThanOrEqual(4.5)
  })

  it.each(MARK_PAIRS)('--%s against --%s has at least 3:1', (mark, surface) => {
    expect(contrast(colour(mark), colour(surface))).toBeGreaterThanOrEqual(3)
  })
})

describe('the contrast formula', () => {
  it('gives the published extremes', () => {
    expect(contrast('#000000', '#ffffff')).toBeCloseTo(21, 5)
    expect(contrast('#777777', '#ffffff')).toBeCloseTo(4.48, 2)
    expect(contrast('#123456', '#123456')).toBe(1)
  })
})
