// Browser tests need Debian's Chromium. Fail loudly, never skip silently, when it is missing.
import { accessSync, constants } from 'node:fs'

const path = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
try {
  accessSync(path, constants.X_OK)
} catch {
  console.error(
    `Browser tests need Chromium at ${path} (Debian: sudo apt-get install -y chromium), ` +
      'or set CHROMIUM_PATH to another Chromium binary.',
  )
  process.exit(1)
}
