/**
 * A yes/no question of the non-interactive commands (`approve-link`'s "Approve? [y/N]"): asked on
 * standard error, answered on standard input, a line typed at a terminal (with echo) or the first
 * line piped in. Anything but "y" or "yes" is no, and so is no answer at all: a closed or empty
 * input (a script that pipes nothing, or already read the password from it) refuses.
 */
import { createInterface } from 'node:readline'

export interface QuestionInput {
  readonly stdin: NodeJS.ReadStream
  readonly stderr: { write(text: string): unknown }
}

/** Longer than any answer; stops reading a runaway pipe. */
const MAX_ANSWER_BYTES = 256

function firstLine(stdin: NodeJS.ReadStream): Promise<string> {
  if (stdin.readableEnded || stdin.destroyed) return Promise.resolve('')
  return new Promise((resolve) => {
    let text = ''
    const finish = () => {
      stdin.off('data', onData)
      stdin.off('end', finish)
      stdin.off('error', finish)
      stdin.pause()
      resolve(text.split(/\r?\n/)[0] ?? '')
    }
    const onData = (chunk: Buffer | string) => {
      text += String(chunk)
      if (text.includes('\n') || text.length > MAX_ANSWER_BYTES) finish()
    }
    stdin.on('data', onData)
    stdin.once('end', finish)
    stdin.once('error', finish)
    stdin.resume()
  })
}

function typedLine(input: QuestionInput, prompt: string): Promise<string> {
  const lines = createInterface({ input: input.stdin, output: input.stderr as NodeJS.WritableStream })
  return new Promise((resolve) => {
    lines.question(prompt, (answer) => {
      // Before closing: close() emits 'close' at once, whose '' would otherwise win.
      resolve(answer)
      lines.close()
    })
    // Ctrl+C or Ctrl+D at the prompt: no.
    lines.once('close', () => resolve(''))
  })
}

/** Asks `question` (" [y/N] " is added); true only for y or yes, in any case. */
export async function askYesNo(input: QuestionInput, question: string): Promise<boolean> {
  const prompt = `${question} [y/N] `
  let answer: string
  if (input.stdin.isTTY) {
    answer = await typedLine(input, prompt)
  } else {
    input.stderr.write(prompt)
    answer = await firstLine(input.stdin)
    input.stderr.write('\n')
  }
  return /^\s*(y|yes)\s*$/i.test(answer)
}
