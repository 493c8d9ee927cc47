import { LineInput } from './line-input.js'

export interface PromptInputProps {
  readonly label: string
  /** Show a star per character instead of the text (passwords). */
  readonly masked: boolean
  readonly onSubmit: (value: string) => void
  readonly onCancel: () => void
}

/** A one-off question: a password (masked, never echoed, never remembered) or a yes/no. Esc cancels. */
export function PromptInput({ label, masked, onSubmit, onCancel }: PromptInputProps) {
  return (
    <LineInput
      prompt={label}
      promptColor="yellow"
      onSubmit={onSubmit}
      onCancel={onCancel}
      {...(masked ? { mask: '*' } : {})}
    />
  )
}
