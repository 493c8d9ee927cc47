/**
 * Where the terminal client keeps its files:
 *
 *   <data dir>/                       $XDG_DATA_HOME/secure-chat, by default ~/.local/share/secure-chat
 *     <host>_<port>/                  one directory per server (mode 0700)
 *       <username>.sqlite             one database per account (mode 0600)
 *       certificates.json             server certificate fingerprints seen before
 *
 * Usernames are normalised (a–z, 0–9, '.', '_', '-', starting with a letter or digit), so they
 * are safe as file names; the host part keeps only such characters too.
 */
import { readdirSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { USERNAME_PATTERN } from '../shared/username.js'

export const ACCOUNT_FILE_SUFFIX = '.sqlite'
export const CERTIFICATES_FILE = 'certificates.json'

/** The data directory: an explicit one, else $XDG_DATA_HOME/secure-chat, else ~/.local/share/secure-chat. */
export function dataDirectory(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit) return explicit
  // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
  const xdg = env.XDG_DATA_HOME
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.local', 'share')
  return join(base, 'secure-chat')
}

/** "localhost_8443", "127.0.0.1_8443", "--1_8443" for [::1]: one directory name per server origin. */
export function serverDirectoryName(serverUrl: string): string {
  const url = new URL(serverUrl)
  const host = url.hostname
    .replace(/^\[|\]$/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
  return `${host}_${url.port || '443'}`
}

export function serverDirectory(dataDir: string, serverUrl: string): string {
  return join(dataDir, serverDirectoryName(serverUrl))
}

export function accountFile(dataDir: string, serverUrl: string, username: string): string {
  return join(serverDirectory(dataDir, serverUrl), `${username}${ACCOUNT_FILE_SUFFIX}`)
}

export function certificatesFile(dataDir: string, serverUrl: string): string {
  return join(serverDirectory(dataDir, serverUrl), CERTIFICATES_FILE)
}

/** Usernames that have a database for this server, sorted. */
export function localAccounts(dataDir: string, serverUrl: string): string[] {
  let names: string[]
  try {
    names = readdirSync(serverDirectory(dataDir, serverUrl))
  } catch {
    return []
  }
  return names
    .filter((name) => name.endsWith(ACCOUNT_FILE_SUFFIX))
    .map((name) => name.slice(0, -ACCOUNT_FILE_SUFFIX.length))
    .filter((name) => USERNAME_PATTERN.test(name))
    .sort()
}
