import { Box } from 'ink'
import { accountDeletedWarning, keyChangeWarning } from '../view.js'
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

/** Shown while the open conversation's contact has deleted their account: it stays, marked. */
export function AccountDeletedNotice({ peer }: { readonly peer: string }) {
  return (
    <Box borderStyle="round" borderColor="yellow" paddingX={1} flexDirection="column">
      <Text color="yellow" bold>
        ✕ ACCOUNT DELETED
      </Text>
      <Text color="yellow">{accountDeletedWarning(peer)}</Text>
    </Box>
  )
}
