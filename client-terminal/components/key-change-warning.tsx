import { Box } from 'ink'
import { keyChangeWarning } from '../view.js'
import { Text } from './text.js'

/** A blocking warning: shown while the open contact's new identity key is not yet acknowledged. */
export function KeyChangeWarning({ peer }: { readonly peer: string }) {
  return (
    <Box borderStyle="double" borderColor="red" paddingX={1} flexDirection="column">
      <Text color="red" bold>
        ⚠ SAFETY NUMBER CHANGED
      </Text>
      <Text color="red">{keyChangeWarning(peer)}</Text>
    </Box>
  )
}
