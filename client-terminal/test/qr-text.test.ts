/**
 * The terminal's QR code (qr-text.ts): the lines hold exactly uqr's module matrix, two rows a
 * line, quiet zone included, black on white when colours are on; a code of the link-code size
 * fits an 80-column terminal.
 */
import { encode } from 'uqr'
import { describe, expect, it } from 'vitest'
import { QR_QUIET_ZONE_MODULES, qrLines, qrModules } from '../qr-text.js'

/** An ANSI colour sequence (ESC [ … m), to read the text without them. */
const ANSI_SGR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g')

/** The matrix the lines draw, read back character by character. */
function modulesOf(lines: string[]): boolean[][] {
  const rows: boolean[][] = []
  for (const line of lines) {
    const text = line.replace(ANSI_SGR, '')
    const top = [...text].map((char) => char === '█' || char === '▀')
    const bottom = [...text].map((char) => char === '█' || char === '▄')
    rows.push(top, bottom)
  }
  return rows
}

// As long as a link code (shared/provisioning.ts): "sc1" and 66 base64url characters.
const LINK_CODE = `sc1${'AQABAgMEBQYHCAkKCwwNDg8cn9iPRWBtkyqAxxgkrhUdFdc-d9446OAAhS5hT65wGQ'}`

describe('QR codes in the terminal', () => {
  it('draw exactly the module matrix, two rows a line, with the quiet zone', () => {
    const lines = qrLines(LINK_CODE, { color: false })
    const modules = qrModules(LINK_CODE)
    const drawn = modulesOf(lines)
    // An odd size gets a light half row at the bottom.
    expect(drawn.slice(0, modules.length)).toEqual(modules)
    expect(drawn.slice(modules.length).every((row) => row.every((dark) => !dark))).toBe(true)
    expect(lines).toHaveLength(Math.ceil(modules.length / 2))
    for (const line of lines) expect([...line]).toHaveLength(modules.length)
    // The matrix is uqr's own for the text, with 4 light modules all round.
    const bare = encode(LINK_CODE, { ecc: 'M', border: 0 }).data
    expect(modules.length).toBe(bare.length + 2 * QR_QUIET_ZONE_MODULES)
    expect(
      modules
        .slice(QR_QUIET_ZONE_MODULES, -QR_QUIET_ZONE_MODULES)
        .map((row) => row.slice(QR_QUIET_ZONE_MODULES, -QR_QUIET_ZONE_MODULES)),
    ).toEqual(bare)
    for (const row of [
      ...modules.slice(0, QR_QUIET_ZONE_MODULES),
      ...modules.slice(-QR_QUIET_ZONE_MODULES),
    ]) {
      expect(row.every((dark) => !dark)).toBe(true)
    }
    // A link code fits 80 columns.
    expect(modules.length).toBeLessThanOrEqual(80)
  })

  it('draws every line black on white when colours are on, and the same modules', () => {
    const plain = qrLines(LINK_CODE, { color: false })
    const colored = qrLines(LINK_CODE, { color: true })
    expect(colored.map((line) => line.replace(ANSI_SGR, ''))).toEqual(plain)
    for (const line of colored) {
      expect(line.startsWith('\x1b[30;47m')).toBe(true)
      expect(line.endsWith('\x1b[0m')).toBe(true)
    }
  })

  it('takes bytes as well as text', () => {
    const bytes = new TextEncoder().encode(LINK_CODE)
    expect(qrModules(bytes)).toEqual(
      encode(Array.from(bytes), { ecc: 'M', border: QR_QUIET_ZONE_MODULES }).data,
    )
  })
})
