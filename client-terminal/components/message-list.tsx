import { Box } from 'ink'
import type { MessageView } from '../../shared/client/chat-client.js'
import { messageLine, messageLineText, NOTICE_MARK, newestThatFit } from '../view.js'
import { Text } from './text.js'

export interface MessageListProps {
  readonly peer: string
  readonly verified: boolean
  readonly messages: readonly MessageView[]
  /** Rows the messages may take; older ones stay in history (/history). */
  readonly maxRows: number
  /** Columns the conversation has, to count wrapped lines. */
  readonly width: number
  readonly now: number
  readonly timeZone?: string | undefined
}

/**
 * A line's time. It keeps its width: a long text beside it wraps in its own column, where the
 * row would otherwise take the room from the time and its space.
 */
function Time({ time }: { time: string }) {
  return (
    <Box flexShrink={0}>
      <Text dimColor>{time} </Text>
    </Box>
  )
}

/**
 * The open conversation: time, author, text and, for our messages, the delivery mark; a notice in
 * place of a message is the time and its sentence after a ⚠, in yellow italics.
 */
export function MessageList({ peer, verified, messages, maxRows, width, now, timeZone }: MessageListProps) {
  const lines = messages.map((message) => messageLine(message, now, timeZone))
  // One row is kept for the "… earlier" line when not everything fits.
  let count = newestThatFit(lines.map(messageLineText), maxRows, width)
  if (count < lines.length) count = newestThatFit(lines.map(messageLineText), maxRows - 1, width)
  const shown = lines.slice(lines.length - count)
  return (
    <Box flexDirection="column">
      <Text bold>
        Conversation with {peer}
        {verified ? (
          <Text color="green"> ✔ verified</Text>
        ) : (
          <Text dimColor> (not verified: /verify {peer})</Text>
        )}
      </Text>
      {messages.length === 0 ? <Text dimColor>no messages yet: type to write to {peer}</Text> : null}
      {messages.length > shown.length ? (
        <Text dimColor>… {messages.length - shown.length} earlier (scroll back with /history)</Text>
      ) : null}
      {shown.map((line) =>
        line.notice ? (
          // A notice in a message's place: the sentence says who sent what, so no author before it.
          <Box key={line.key}>
            <Time time={line.time} />
            <Text color="yellow" italic>
              {NOTICE_MARK} {line.text}
            </Text>
          </Box>
        ) : (
          <Box key={line.key}>
            <Time time={line.time} />
            <Box flexShrink={0}>
              <Text color={line.outgoing ? 'blue' : 'magenta'} bold>
                {line.author}:
              </Text>
            </Box>
            <Text> {line.text}</Text>
            {line.mark ? <Text color={line.failed ? 'red' : 'gray'}> {line.mark}</Text> : null}
          </Box>
        ),
      )}
    </Box>
  )
}
