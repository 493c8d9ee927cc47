/**
 * The terminal's edge: every string from elsewhere (a peer, the server) is made safe here before
 * it is printed. Kept apart from view.ts so the entry point (main.ts) can use it without loading
 * the client core.
 */
import { displayText, SHOWN_INSTEAD } from '../shared/display-text.js'

/**
 * Text made safe to print: the one function every string from elsewhere (a peer, the server)
 * passes through before it reaches the terminal. Ink's Text (components/text.tsx) applies it to
 * everything the interactive client renders, and script mode to everything it writes (cli.ts).
 *
 *   - C0 and C1 controls and DEL become U+FFFD, so no escape sequence (ESC [ …, OSC 8 links, a
 *     window title), bell or single-character CSI (U+009B) can act on the terminal;
 *   - a line break (LF, CR LF, a CR alone, U+2028, U+2029) becomes a space, or a "\n" with
 *     `keepNewlines`: a CR alone would otherwise return to the start of the line and overwrite it;
 *   - a tab becomes four spaces (its width would otherwise depend on the column);
 *   - the explicit bidirectional controls become U+FFFD, by the rule both UIs share
 *     (shared/display-text.ts);
 *   - a lone surrogate (not text at all) becomes U+FFFD.
 *
 * Idempotent: what it returns passes through it unchanged.
 */
export function safeText(text: string, options: { keepNewlines?: boolean } = {}): string {
  let out = ''
  for (const char of displayText(text).replace(/\r\n?|\u2028|\u2029/g, '\n')) {
    const code = char.codePointAt(0) as number
    if (char === '\n') out += options.keepNewlines ? '\n' : ' '
    else if (char === '\t') out += '    '
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f) || (code >= 0xd800 && code <= 0xdfff))
      out += SHOWN_INSTEAD
    else out += char
  }
  return out
}

/**
 * A JSON line for script output (`read --json`, `send --json`, `verify --json`): the same value a
 * script parses as JSON.stringify's, but with every character a terminal could act on written as a
 * \uXXXX escape. JSON.stringify escapes C0 controls and lone surrogates, not DEL, C1 controls,
 * the line separators or bidirectional controls, which would reach a terminal raw.
 */
export function terminalJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (char) => `\\u${(char.codePointAt(0) as number).toString(16).padStart(4, '0')}`,
  )
}
