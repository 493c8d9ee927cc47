/**
 * Message text as both UIs show it: the one rule for bidirectional controls, applied by the PWA
 * (client-web/src/ui) and the terminal (client-terminal/view.ts) alike.
 *
 * The explicit bidirectional formatting characters, embeddings (U+202A LRE, U+202B RLE), overrides
 * (U+202D LRO, U+202E RLO), their terminator (U+202C PDF) and isolates (U+2066 LRI, U+2067 RLI,
 * U+2068 FSI, U+2069 PDI), are invisible and reorder what follows them: "invoice<U+202E>fdp.exe" reads as
 * "invoiceexe.pdf" (the "Trojan Source" attack, CVE-2021-42574), and in a terminal the reordering
 * can run on past the message into the line around it. Ordinary writing never needs them (each
 * message already gets its direction from its own first strong letter), so each is shown as
 * U+FFFD: visibly, where it was, rather than silently dropped.
 *
 * The implicit marks (U+200E LRM, U+200F RLM, U+061C ALM) stay: they are how right-to-left
 * writers place punctuation and numbers (keyboards insert them), they cannot reverse letters, and
 * what they do reach is confined to the message (a block of its own in the PWA, a line of its own
 * in the terminal).
 *
 * Knows nothing of terminals or HTML: the terminal's control characters are view.ts's concern,
 * and the PWA only ever binds text (never parses it as HTML).
 */

/** What stands in for a character that must not take effect. */
export const SHOWN_INSTEAD = '\uFFFD'

/** The explicit bidirectional embeddings, overrides, isolates and terminators (see above). */
export const BIDI_CONTROLS: readonly string[] = [
  '\u202A',
  '\u202B',
  '\u202C',
  '\u202D',
  '\u202E',
  '\u2066',
  '\u2067',
  '\u2068',
  '\u2069',
]

const BIDI_CONTROL_PATTERN = /[\u202A-\u202E\u2066-\u2069]/g

/** Whether `char` (one code point) is one of BIDI_CONTROLS. */
export function isBidiControl(char: string): boolean {
  return char.length === 1 && BIDI_CONTROLS.includes(char)
}

/** `text` with each explicit bidirectional control shown as U+FFFD; everything else unchanged. */
export function displayText(text: string): string {
  return text.replace(BIDI_CONTROL_PATTERN, SHOWN_INSTEAD)
}
