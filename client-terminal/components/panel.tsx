import { Box } from 'ink'
import type { Panel } from '../controller.js'
import { Text } from './text.js'

/** Output of the last command (help, contacts, users, a safety number), or a warning to read first. */
export function PanelView({ panel }: { readonly panel: Panel }) {
  const lines = panel.lines.map((line, index) => (
    // biome-ignore lint/suspicious/noArrayIndexKey: the lines are static text; their position is their identity
    <Text key={index}>{line === '' ? ' ' : line}</Text>
  ))
  if (panel.warning) {
    return (
      <Box borderStyle="round" borderColor="yellow" paddingX={1} flexDirection="column">
        <Text color="yellow" bold>
          {panel.title}
        </Text>
        {lines}
      </Box>
    )
  }
  return (
    <Box flexDirection="column">
      <Text bold>{panel.title}</Text>
      {lines}
    </Box>
  )
}
