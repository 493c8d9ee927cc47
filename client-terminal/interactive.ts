/**
 * Starts the interactive Ink client (main.ts loads this only when no command is given, so the
 * script commands do not pay for loading Ink and React).
 */
import { render } from 'ink'
import { createElement } from 'react'
import { normalizedUsername, TEST_KDF_ITERATIONS_ENV } from './accounts.js'
import { App } from './app.js'
import type { GlobalOptions } from './args.js'
import { localBackend } from './backend.js'
import { describeCertificateNotice, KnownCertificates } from './certificates.js'
import { clientSettings } from './cli.js'
import { Controller } from './controller.js'
import { ExitCode, UsageError } from './exit-codes.js'
import { certificatesFile } from './paths.js'
import { describeNetworkError } from './transport.js'

export async function interactive(options: GlobalOptions): Promise<number> {
  if (!process.stdin.isTTY) {
    throw new UsageError(
      'the interactive client needs a terminal; for scripts use a command (secure-chat help)',
    )
  }
  let controller: Controller | undefined
  let certificates: KnownCertificates | undefined
  let lastSocketProblem: string | undefined
  const settings = clientSettings(options, process.env, {
    onCertificate: (certificate) => {
      const notice = certificates?.observe(certificate)
      if (notice) controller?.notify('warning', describeCertificateNotice(notice, settings.serverUrl))
    },
    // The core retries quietly; say once why the connection keeps failing.
    onSocketError: (error) => {
      const problem = describeNetworkError(settings.serverUrl, error)
      if (problem !== lastSocketProblem) controller?.notify('error', problem)
      lastSocketProblem = problem
    },
  })
  certificates = new KnownCertificates(certificatesFile(settings.dataDir, settings.serverUrl))
  const defaultUser = options.user === undefined ? undefined : normalizedUsername(options.user)
  controller = new Controller(localBackend(settings, defaultUser))
  if (process.env[TEST_KDF_ITERATIONS_ENV]) {
    controller.notify('warning', `${TEST_KDF_ITERATIONS_ENV} is set: weak key derivation, for tests only`)
  }
  controller.start()
  const instance = render(createElement(App, { controller }), { exitOnCtrlC: false })
  await instance.waitUntilExit()
  return ExitCode.Ok
}
