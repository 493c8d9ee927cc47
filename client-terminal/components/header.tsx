import { Box } from 'ink'
import type { ConnectionState } from '../../shared/client/chat-client.js'
import { CONNECTION_WORDS } from '../view.js'
import { Text } from './text.js'

const CONNECTION_COLORS: Record<ConnectionState, string> = {
  online: 'green',
  connecting: 'yellow',
  offline: 'red',
  'logged-out': 'red',
}

export interface HeaderProps {
  readonly serverUrl: string
  readonly username: string | undefined
  readonly connection: ConnectionState
  readonly busy: string | undefined
}

/** One line: who, where, and whether we are connected. */
export function Header({ serverUrl, username, connection, busy }: HeaderProps) {
  return (
    <Box>
      <Text bold>secure-chat</Text>
      <Text> · {username ? `${username} @ ${serverUrl}` : `${serverUrl} · signed out`}</Text>
      {username ? (
        <Text color={CONNECTION_COLORS[connection]}> · ● {CONNECTION_WORDS[connection]}</Text>
      ) : null}
      {busy ? <Text color="yellow"> · {busy}</Text> : null}
    </Box>
  )
}
