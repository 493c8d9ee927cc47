import { playwright } from '@vitest/browser-playwright'
import { defineConfig } from 'vitest/config'

// Flags that let Debian's Chromium run headless as root on a machine with a closed network
// (see ../shared/handbook/toolchain.md): without the background-networking ones it floods the
// network with refused connections.
export const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'node',
          environment: 'node',
          include: [
            'shared/**/*.test.ts',
            'server/**/*.test.ts',
            'client-terminal/**/*.test.ts',
            'client-terminal/**/*.test.tsx',
            'test/**/*.test.ts',
          ],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          // The PWA end to end: the production build (built once by the global setup) served by the
          // real server over TLS, driven in Debian's Chromium through playwright-core.
          name: 'web-e2e',
          environment: 'node',
          include: ['client-web/e2e/**/*.test.ts'],
          globalSetup: ['client-web/e2e/global-setup.ts'],
          // Each file starts its own server and browsers; one file at a time keeps two cores calm.
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          name: 'browser',
          // The protocol core must run unchanged in a browser: its tests run again in Chromium.
          include: ['shared/**/*.test.ts', 'client-web/src/**/*.browser.test.ts'],
          testTimeout: 120_000,
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({
              launchOptions: {
                executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
                args: chromiumArgs,
              },
            }),
            instances: [{ browser: 'chromium' }],
          },
        },
      },
    ],
  },
})
