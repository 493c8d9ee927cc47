/**
 * The interactive client: Ink components over the Controller's state. Layout, top to bottom:
 * header (account, server, connection), contacts beside the open conversation (or the last
 * command's output), the key-change warning when it applies, the latest notices, and the input
 * line (or a password / yes-no prompt in its place).
 */
import { Box, useApp, useInput, useStdout } from 'ink'
import { useEffect, useSyncExternalStore } from 'react'
import { CommandInput } from './components/command-input.js'
import { ContactList } from './components/contact-list.js'
import { Header } from './components/header.js'
import { AccountDeletedNotice, KeyChangeWarning } from './components/key-change-warning.js'
import { MessageList } from './components/message-list.js'
import { Notices } from './components/notices.js'
import { PanelView } from './components/panel.js'
import { PromptInput } from './components/prompt-input.js'
import { Text } from './components/text.js'
import { type Controller, promptLabel } from './controller.js'
import { accountDeletedWarning, keyChangeWarning, rowsFor } from './view.js'

/** Notices shown under the conversation. */
export const VISIBLE_NOTICES = 4
const CONTACTS_WIDTH = 24
/** Rows around the messages: header, its margin, conversation title, notices' margin, input. */
const CHROME_ROWS = 5

export interface AppProps {
  readonly controller: Controller
  /** The clock for "today" in timestamps. */
  readonly now?: () => number
  /** Time zone for timestamps (default: the local one). */
  readonly timeZone?: string
}

export function App({ controller, now = Date.now, timeZone }: AppProps) {
  const state = useSyncExternalStore(controller.subscribe, controller.getState)
  const { exit } = useApp()
  const { stdout } = useStdout()
  const rows = stdout.rows ?? 24
  const columns = stdout.columns ?? 80

  useEffect(() => {
    if (state.closed) exit()
  }, [state.closed, exit])

  useInput((input, key) => {
    if (key.ctrl && input === 'c') void controller.quit()
  })

  const openContact = state.contacts.find((contact) => contact.username === state.openChat)
  const warning = openContact?.identityChanged ? openContact.username : undefined
  const deleted = openContact?.accountDeleted ? openContact.username : undefined
  const notices = state.notices.slice(-VISIBLE_NOTICES)
  const noticeRows = notices.reduce((sum, notice) => sum + rowsFor(`· ${notice.text}`, columns), 0)
  // The warning box: two border rows, its title, and the wrapped explanation.
  const warningRows =
    (warning ? 3 + rowsFor(keyChangeWarning(warning), columns - 4) : 0) +
    (deleted ? 3 + rowsFor(accountDeletedWarning(deleted), columns - 4) : 0)
  const messageRows = Math.max(3, rows - CHROME_ROWS - noticeRows - warningRows)

  return (
    <Box flexDirection="column">
      <Header
        serverUrl={state.serverUrl}
        username={state.username}
        connection={state.connection}
        busy={state.busy}
      />
      <Box flexDirection="row" marginTop={1}>
        {state.username ? (
          <ContactList contacts={state.contacts} openChat={state.openChat} width={CONTACTS_WIDTH} />
        ) : null}
        <Box flexDirection="column" flexGrow={1}>
          {state.panel ? (
            <PanelView panel={state.panel} />
          ) : state.openChat ? (
            <MessageList
              peer={state.openChat}
              verified={openContact?.verified ?? false}
              messages={state.messages}
              maxRows={messageRows}
              width={Math.max(20, columns - CONTACTS_WIDTH - 1)}
              now={now()}
              timeZone={timeZone}
            />
          ) : state.username ? (
            <Text dimColor>{'No conversation open: /chat <user> opens one, /help lists the commands.'}</Text>
          ) : null}
        </Box>
      </Box>
      {deleted ? <AccountDeletedNotice peer={deleted} /> : null}
      {warning ? <KeyChangeWarning peer={warning} /> : null}
      <Box marginTop={1}>
        <Notices notices={notices} />
      </Box>
      {state.closed ? null : state.prompt ? (
        <PromptInput
          key={`${state.prompt.purpose}:${state.prompt.username}`}
          label={promptLabel(state.prompt)}
          masked={state.prompt.kind === 'password'}
          onSubmit={(value) => controller.answerPrompt(value)}
          onCancel={() => controller.cancelPrompt()}
        />
      ) : (
        <CommandInput
          onSubmit={(line) => controller.submit(line)}
          placeholder={
            state.openChat ? `message ${state.openChat}, or a /command` : 'a /command (/help lists them)'
          }
        />
      )}
    </Box>
  )
}
