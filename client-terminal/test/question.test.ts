/**
 * The scripts' yes/no question (question.ts), at a terminal and piped: only y or yes approves, and
 * no answer at all refuses.
 */
import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { askYesNo } from '../question.js'

function input(isTTY: boolean): { stdin: NodeJS.ReadStream; stream: PassThrough; asked: string[] } {
  const stream = new PassThrough()
  Object.assign(stream, { isTTY })
  const asked: string[] = []
  return { stdin: stream as unknown as NodeJS.ReadStream, stream, asked }
}

async function answer(isTTY: boolean, typed: string | undefined): Promise<{ yes: boolean; asked: string }> {
  const { stdin, stream, asked } = input(isTTY)
  const question = askYesNo({ stdin, stderr: { write: (text: string) => asked.push(text) } }, 'Approve?')
  if (typed === undefined) stream.end()
  else stream.write(typed)
  return { yes: await question, asked: asked.join('') }
}

describe('askYesNo', () => {
  for (const isTTY of [true, false]) {
    const where = isTTY ? 'at a terminal' : 'piped'
    it(`takes y and yes, in any case, ${where}`, async () => {
      for (const typed of ['y\n', 'yes\n', 'YES\n', ' Y \n']) {
        expect((await answer(isTTY, typed)).yes, typed).toBe(true)
      }
    })

    it(`refuses anything else, and no answer, ${where}`, async () => {
      for (const typed of ['n\n', 'no\n', '\n', 'yep\n', 'y es\n', undefined]) {
        expect((await answer(isTTY, typed)).yes, String(typed)).toBe(false)
      }
    })

    it(`asks on standard error, ${where}`, async () => {
      expect((await answer(isTTY, 'n\n')).asked).toContain('Approve? [y/N] ')
    })
  }
})
