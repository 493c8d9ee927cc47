/**
 * A QR code as lines of terminal text, for codes another device's camera reads off the screen
 * (the link code of `secure-chat link`, issue 12). Two rows of modules share one line: the upper
 * half block '▀', the lower '▄', the full '█' or a space, so the code keeps its square shape in a
 * terminal's tall character cells. With `color` (a terminal that takes ANSI colours) every line is
 * drawn black on white whatever the terminal's theme, as scanners expect dark modules on a light
 * ground; without it the blocks are in the terminal's own colours, light on dark in most, which
 * many scanners also read. The same matrix as the PWA's (uqr, error correction M), with the quiet
 * zone of 4 modules the QR standard asks for.
 */
import { encode } from 'uqr'

export const QR_QUIET_ZONE_MODULES = 4

const BLACK_ON_WHITE = '\x1b[30;47m'
const RESET = '\x1b[0m'

/** uqr's module matrix for `payload`, quiet zone included: `true` is a dark module. */
export function qrModules(payload: string | Uint8Array): boolean[][] {
  const data = typeof payload === 'string' ? payload : Array.from(payload)
  return encode(data, { ecc: 'M', border: QR_QUIET_ZONE_MODULES }).data
}

function cell(top: boolean, bottom: boolean): string {
  if (top && bottom) return '█'
  if (top) return '▀'
  if (bottom) return '▄'
  return ' '
}

/** The code as lines of text (no trailing newline), each `size` characters wide. */
export function qrLines(payload: string | Uint8Array, options: { readonly color: boolean }): string[] {
  const modules = qrModules(payload)
  const lines: string[] = []
  for (let y = 0; y < modules.length; y += 2) {
    const top = modules[y]!
    // An odd count leaves the last line's lower half empty (light).
    const bottom = modules[y + 1]
    const text = top.map((dark, x) => cell(dark, bottom?.[x] ?? false)).join('')
    lines.push(options.color ? `${BLACK_ON_WHITE}${text}${RESET}` : text)
  }
  return lines
}
