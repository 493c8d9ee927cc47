import { Text as InkText, type TextProps } from 'ink'
import { Children } from 'react'
import { safeText } from '../safe-text.js'

/**
 * Ink's Text, with every string in it made safe to print (view.ts's safeText, line breaks kept):
 * Ink writes what it is given as it is, escape sequences included. Every component takes Text from
 * here, never from ink (a test checks), so no name, error or message from the server or a peer
 * reaches the terminal raw, whichever view shows it.
 */
export function Text({ children, ...props }: TextProps) {
  return (
    <InkText {...props}>
      {Children.map(children, (child) =>
        typeof child === 'string' ? safeText(child, { keepNewlines: true }) : child,
      )}
    </InkText>
  )
}
