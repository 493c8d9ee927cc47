import { Box, type Key, useInput } from 'ink'
import { useRef, useState } from 'react'
import { Text } from './text.js'
import { useReady } from './use-ready.js'

/** Earlier lines kept for ↑/↓ recall. */
export const MAX_INPUT_HISTORY = 200

export interface LineInputProps {
  /** Shown before the text, once the input takes keystrokes. */
  readonly prompt: string
  readonly promptColor?: string
  readonly placeholder?: string
  /** Show this character per typed one instead of the text (passwords). */
  readonly mask?: string
  /** Keep submitted lines for ↑/↓ recall (never for passwords). */
  readonly remember?: boolean
  readonly onSubmit: (line: string) => void
  readonly onCancel?: () => void
}

interface Editing {
  /** The line, one entry per code point (so the cursor never splits an emoji's surrogate pair). */
  chars: string[]
  cursor: number
  history: string[]
  /** Index into history while recalling; history.length while editing a new line. */
  position: number
  /** The unsent line put aside by ↑, given back by ↓ past the newest entry. */
  draft: string
}

const LINE_BREAK = /\r\n|\r|\n/

/** Printable text only: a terminal sequence Ink did not recognise must not end up in a message. */
function printable(text: string): string {
  let out = ''
  for (const char of text) {
    const code = char.codePointAt(0) as number
    if (code >= 0x20 && !(code >= 0x7f && code <= 0x9f)) out += char
  }
  return out
}

/**
 * A one-line editor: typing, ←/→, Home/End (Ctrl+A/E), Backspace, Ctrl+U/K/W, ↑/↓ history, Enter
 * to submit, Esc to cancel. A chunk like "text\r" (keys arriving together, as over SSH or tmux)
 * submits rather than being inserted as text, and several key events in one tick keep their state.
 *
 * Only the first line of such a chunk is submitted; what follows stays in the editor unsent, so
 * nothing typed after Enter (say, a password meant for the prompt that Enter opens) is ever sent
 * without another Enter.
 */
export function LineInput({
  prompt,
  promptColor = 'cyan',
  placeholder = '',
  mask,
  remember = false,
  onSubmit,
  onCancel,
}: LineInputProps) {
  // Key events can arrive several per tick: the editor state lives in a ref, React only renders it.
  const state = useRef<Editing>({ chars: [], cursor: 0, history: [], position: 0, draft: '' })
  const [, setRevision] = useState(0)
  const render = () => setRevision((revision) => revision + 1)

  const insert = (text: string) => {
    const editing = state.current
    const added = Array.from(text)
    editing.chars.splice(editing.cursor, 0, ...added)
    editing.cursor += added.length
  }

  const set = (line: string) => {
    const editing = state.current
    editing.chars = Array.from(line)
    editing.cursor = editing.chars.length
  }

  const submit = () => {
    const editing = state.current
    const line = editing.chars.join('')
    if (remember && line.trim() !== '' && editing.history.at(-1) !== line) {
      editing.history = [...editing.history, line].slice(-MAX_INPUT_HISTORY)
    }
    editing.position = editing.history.length
    editing.draft = ''
    set('')
    onSubmit(line)
  }

  const recall = (to: number) => {
    const editing = state.current
    if (editing.position === editing.history.length) editing.draft = editing.chars.join('')
    editing.position = to
    set(to === editing.history.length ? editing.draft : (editing.history[to] ?? ''))
  }

  const handle = (input: string, key: Key) => {
    const editing = state.current
    if (key.return) {
      submit()
    } else if (key.escape) {
      onCancel?.()
    } else if (key.upArrow) {
      if (remember && editing.position > 0) recall(editing.position - 1)
    } else if (key.downArrow) {
      if (remember && editing.position < editing.history.length) recall(editing.position + 1)
    } else if (key.leftArrow) {
      editing.cursor = Math.max(0, editing.cursor - 1)
    } else if (key.rightArrow) {
      editing.cursor = Math.min(editing.chars.length, editing.cursor + 1)
    } else if (key.home || (key.ctrl && input === 'a')) {
      editing.cursor = 0
    } else if (key.end || (key.ctrl && input === 'e')) {
      editing.cursor = editing.chars.length
    } else if (key.backspace || key.delete) {
      // Most terminals send DEL (0x7f) for Backspace, which Ink calls "delete".
      if (editing.cursor > 0) {
        editing.chars.splice(editing.cursor - 1, 1)
        editing.cursor--
      }
    } else if (key.ctrl && input === 'u') {
      editing.chars.splice(0, editing.cursor)
      editing.cursor = 0
    } else if (key.ctrl && input === 'k') {
      editing.chars.splice(editing.cursor)
    } else if (key.ctrl && input === 'w') {
      const before = Array.from(
        editing.chars
          .slice(0, editing.cursor)
          .join('')
          .replace(/\S+\s*$/, ''),
      )
      editing.chars.splice(0, editing.cursor, ...before)
      editing.cursor = before.length
    } else if (!key.ctrl && !key.meta && !key.tab && input !== '') {
      const [first = '', ...rest] = input.split(LINE_BREAK)
      insert(printable(first))
      if (rest.length > 0) {
        submit()
        insert(printable(rest.join(' ')))
      }
    } else {
      return
    }
    render()
  }

  useInput(handle)
  const ready = useReady()

  const { chars, cursor } = state.current
  const shown = mask === undefined ? chars : chars.map(() => mask)
  const placeholderChars = Array.from(placeholder)
  return (
    <Box>
      <Text color={promptColor}>{ready ? prompt : ' '.repeat(prompt.length)}</Text>
      {shown.length === 0 ? (
        <Text>
          <Text inverse>{placeholderChars[0] ?? ' '}</Text>
          <Text dimColor>{placeholderChars.slice(1).join('')}</Text>
        </Text>
      ) : (
        <Text>
          {shown.slice(0, cursor).join('')}
          <Text inverse>{shown[cursor] ?? ' '}</Text>
          {shown.slice(cursor + 1).join('')}
        </Text>
      )}
    </Box>
  )
}
