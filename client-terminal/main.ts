/**
 * Entry point of `secure-chat` (and `npm run chat`): no command starts the interactive Ink client;
 * a command (register, reinstall, send, read, verify, accept-key) runs once for scripts. See args.ts for the
 * usage and exit-codes.ts for the exit codes.
 */
import { parseInvocation, USAGE } from './args.js'
import { describeFailure, ExitCode, exitCodeFor, UsageError } from './exit-codes.js'

async function main(): Promise<number> {
  try {
    const invocation = parseInvocation(process.argv.slice(2), process.env)
    if (invocation.command === 'help') {
      process.stdout.write(`${USAGE}\n`)
      return ExitCode.Ok
    }
    if (invocation.command === 'interactive') {
      // Ink renders only a final frame when it believes it runs in CI (it reads CI when loaded).
      // A person at a terminal is interactive whatever the environment says.
      if (process.stdout.isTTY) delete process.env.CI
      const { interactive } = await import('./interactive.js')
      return await interactive(invocation.options)
    }
    const { runCli } = await import('./cli.js')
    return await runCli(invocation, {
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
    })
  } catch (error) {
    const hint = error instanceof UsageError ? ' (secure-chat help shows the usage)' : ''
    process.stderr.write(`secure-chat: ${describeFailure(error)}${hint}\n`)
    return exitCodeFor(error)
  }
}

process.exitCode = await main()
