/**
 * `npm run fuzz`: the full fuzz campaign against the running server (test/fuzz/campaign.ts), by
 * default 100,000 inputs, a tenth of them against a server with the shipped limits. Prints a table
 * of outcomes per input kind, then one JSON line with the whole report; exits 1 if anything that
 * must never happen did (a 5xx, E2E_ERR_INTERNAL, a 1011 close, an error logged, an honest message
 * lost or out of order, data that does not add up).
 *
 *   npm run fuzz -- [--seed N] [--inputs N] [--shipped-share 0.1] [--concurrency N] [--honest N]
 *
 * The seed is printed first; the same seed regenerates the same inputs (failures name the index).
 */
import { parseArgs } from 'node:util'
import { formatReport, phaseFailures, runCampaign } from '../test/fuzz/campaign.js'

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    inputs: { type: 'string' },
    'shipped-share': { type: 'string' },
    concurrency: { type: 'string' },
    honest: { type: 'string' },
  },
})

const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed)
const inputs = Number(values.inputs ?? 100_000)
const shippedLimitsShare = Number(values['shipped-share'] ?? 0.1)
const concurrency = Number(values.concurrency ?? 8)
const honestMessagesPerPhase = Number(values.honest ?? 200)
for (const [name, value] of Object.entries({
  seed,
  inputs,
  shippedLimitsShare,
  concurrency,
  honestMessagesPerPhase,
})) {
  if (!Number.isFinite(value) || value < 0) {
    process.stderr.write(`--${name}: expected a non-negative number, got ${value}\n`)
    process.exit(2)
  }
}

process.stderr.write(`fuzz seed ${seed} (rerun with --seed ${seed})\n`)
const report = await runCampaign({
  seed,
  inputs,
  shippedLimitsShare,
  concurrency,
  honestMessagesPerPhase,
  progress: (line) => process.stderr.write(`${line}\n`),
})
process.stdout.write(`${formatReport(report)}\n`)
process.stdout.write(`${JSON.stringify(report)}\n`)
const failed = report.phases.flatMap(phaseFailures)
process.exit(failed.length === 0 ? 0 : 1)
