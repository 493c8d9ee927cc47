import { Box } from 'ink'
import type { ContactView } from '../../shared/client/chat-client.js'
import { contactLine } from '../view.js'
import { Text } from './text.js'

export interface ContactListProps {
  readonly contacts: readonly ContactView[]
  readonly openChat: string | undefined
  readonly width: number
}

/** The sidebar: presence, name, unread count, verified or key-changed badge. */
export function ContactList({ contacts, openChat, width }: ContactListProps) {
  return (
    <Box flexDirection="column" width={width} marginRight={1}>
      <Text bold underline>
        Contacts
      </Text>
      {contacts.length === 0 ? <Text dimColor>none yet</Text> : null}
      {contacts.map((contact) => {
        const line = contactLine(contact)
        return (
          <Box key={contact.username}>
            <Text color={line.online ? 'green' : 'gray'}>{line.presence} </Text>
            <Text
              bold={contact.username === openChat}
              inverse={contact.username === openChat}
              wrap="truncate"
            >
              {line.username}
            </Text>
            {line.unread ? <Text color="cyan"> {line.unread}</Text> : null}
            {line.badge ? <Text color={line.warning ? 'red' : 'green'}> {line.badge}</Text> : null}
          </Box>
        )
      })}
    </Box>
  )
}
