import { Box } from 'ink'
import type { Notice, NoticeLevel } from '../controller.js'
import { Text } from './text.js'

const COLORS: Record<NoticeLevel, string | undefined> = { info: undefined, warning: 'yellow', error: 'red' }
const PREFIX: Record<NoticeLevel, string> = { info: '·', warning: '⚠', error: '✗' }

/** The last few things the client has to say. */
export function Notices({ notices }: { readonly notices: readonly Notice[] }) {
  return (
    <Box flexDirection="column">
      {notices.map((notice) => (
        <Text key={notice.id} color={COLORS[notice.level]} dimColor={notice.level === 'info'}>
          {PREFIX[notice.level]} {notice.text}
        </Text>
      ))}
    </Box>
  )
}
