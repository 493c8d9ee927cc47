/**
 * The shared rule for bidirectional controls in message text (shared/display-text.ts): the nine
 * explicit ones are shown as U+FFFD wherever they are, the implicit marks and everything else stay.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BIDI_CONTROLS, displayText, isBidiControl, SHOWN_INSTEAD } from '../display-text.js'

/** Any code point, with the bidirectional controls and marks often enough to meet each other. */
const characters = fc.oneof(
  fc.constantFrom(...BIDI_CONTROLS, '\u200E', '\u200F', '\u061C', 'a', 'ש', '1'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
)

describe('displayText', () => {
  it('shows each explicit bidirectional control as U+FFFD, where it was', () => {
    // "invoice<RLO>fdp.exe" would read as "invoiceexe.pdf".
    expect(displayText('invoice\u202Efdp.exe')).toBe('invoice\uFFFDfdp.exe')
    expect(displayText('\u2066a\u2067b\u2068c\u2069\u202Ad\u202Be\u202Cf\u202D')).toBe(
      '\uFFFDa\uFFFDb\uFFFDc\uFFFD\uFFFDd\uFFFDe\uFFFDf\uFFFD',
    )
    expect(BIDI_CONTROLS).toHaveLength(9)
    for (const control of BIDI_CONTROLS) expect(displayText(control)).toBe(SHOWN_INSTEAD)
  })

  it('keeps ordinary text, right-to-left writing and its implicit marks', () => {
    const hebrew = 'שלום\u200F, 123 \u200Eok'
    const arabic = 'مرحبا\u061C 42'
    for (const text of ['plain 😀 ünïcödé', hebrew, arabic, 'two\nlines', '']) {
      expect(displayText(text)).toBe(text)
    }
  })

  it('leaves no explicit bidirectional control in any string, and changes nothing else', () => {
    fc.assert(
      fc.property(fc.string({ unit: characters, maxLength: 200 }), (text) => {
        const shown = displayText(text)
        // One code unit for one: only the controls themselves are replaced.
        const expected = Array.from(text, (char) => (isBidiControl(char) ? SHOWN_INSTEAD : char)).join('')
        return shown === expected && !Array.from(shown).some(isBidiControl)
      }),
    )
  })
})
