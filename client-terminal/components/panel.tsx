import { Box, Text } from 'ink'
import type { Panel } from '../controller.js'

/** Output of the last command (help, contacts, users, a safety number). */
export function PanelView({ panel }: { readonly panel: Panel }) {
  return (
    <Box flexDirection="column">
      <Text bold>{panel.title}</Text>
      {panel.lines.map((line, index) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: the lines are static text; their position is their identity
        <Text key={index}>{line === '' ? ' ' : line}</Text>
      ))}
    </Box>
  )
}
