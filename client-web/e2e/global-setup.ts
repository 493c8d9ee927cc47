/**
 * Builds the production PWA once before the browser tests (Vite's build API, the repository's
 * vite.config.ts): the tests drive exactly what `npm start` serves, with production key-derivation
 * settings. Fails loudly without Chromium, like the other browser tests.
 */
import { accessSync, constants } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { build } from 'vite'
import { chromiumPath } from './browser.js'

export default async function setup(): Promise<void> {
  try {
    accessSync(chromiumPath(), constants.X_OK)
  } catch {
    throw new Error(
      `The web app tests need Chromium at ${chromiumPath()} (Debian: apt-get install -y chromium), or CHROMIUM_PATH.`,
    )
  }
  // Vitest sets NODE_ENV=test, which would make Vite build with development conditions (Lit's
  // dev mode, for one); the tests must drive the production build, so build as production.
  const nodeEnv = process.env.NODE_ENV
  process.env.NODE_ENV = 'production'
  try {
    await build({
      configFile: fileURLToPath(new URL('../../vite.config.ts', import.meta.url)),
      mode: 'production',
      logLevel: 'warn',
    })
  } finally {
    process.env.NODE_ENV = nodeEnv
  }
}
