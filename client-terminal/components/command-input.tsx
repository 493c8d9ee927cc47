import { LineInput } from './line-input.js'

export interface CommandInputProps {
  readonly onSubmit: (line: string) => void
  readonly placeholder?: string
}

/** The command line, with ↑/↓ to recall earlier lines (passwords never pass through here). */
export function CommandInput({ onSubmit, placeholder }: CommandInputProps) {
  return <LineInput prompt="> " remember onSubmit={onSubmit} placeholder={placeholder ?? ''} />
}
