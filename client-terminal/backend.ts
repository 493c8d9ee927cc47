/**
 * The interactive client's AccountBackend: real local accounts (accounts.ts) with the Node
 * transports, and certificate notices passed to the UI.
 */
import {
  type ClientSettings,
  ensureLoggedIn,
  openAccount,
  registerAccount,
  reinstallAccount,
  removeLocalAccount,
} from './accounts.js'
import type { AccountBackend, ChatApi } from './controller.js'
import { localAccounts } from './paths.js'

export function localBackend(settings: ClientSettings, defaultUser: string | undefined): AccountBackend {
  return {
    serverUrl: settings.serverUrl,
    defaultUser,
    listAccounts: () => localAccounts(settings.dataDir, settings.serverUrl),
    register: (username, password): Promise<ChatApi> => registerAccount(settings, username, password),
    reinstall: (username, password): Promise<ChatApi> => reinstallAccount(settings, username, password),
    removeLocal: (username) => removeLocalAccount(settings, username),
    async open(username, password): Promise<ChatApi> {
      const client = await openAccount(settings, username, password)
      try {
        await ensureLoggedIn(client, password)
      } catch (error) {
        await client.close()
        throw error
      }
      return client
    },
  }
}
