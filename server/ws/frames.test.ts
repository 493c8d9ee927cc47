/**
 * The relay's hand-written frame code against the shared schemas: what it writes decodes with
 * `decodeServerFrame` to the same values, its fast `send` parser agrees with `decodeClientFrame`
 * on every input it accepts, and its WebSocket framing is what a WebSocket receiver reads.
 */
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as wsModule from 'ws'
import { decodeClientFrame, decodeServerFrame } from '../../shared/codec/frames.js'
import { MAX_ENVELOPE_BYTES } from '../../shared/limits.js'
import {
  acceptedFrame,
  deliverFrame,
  errorFrame,
  preKeysLowFrame,
  presenceFrame,
  readyFrame,
} from './frames.js'
import { parseCanonicalSend, parseClientFrame } from './parse.js'
import { encodeTextFrames } from './wire.js'

const base64url = (min: number, max: number) =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((bytes) => Buffer.from(bytes).toString('base64url'))
const messageId = base64url(16, 16)
const username = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]$/)
const timestamp = fc.nat({ max: 2 ** 52 })
const seq = fc.integer({ min: 1, max: 2 ** 52 })

/** The schema's reading, with a send's body as its bytes, as the relay keeps it (parse.ts SendRequest). */
function slowParse(data: Buffer): unknown {
  try {
    const frame = decodeClientFrame(JSON.parse(data.toString('utf8')))
    return frame.type === 'send' ? { ...frame, body: Buffer.from(frame.body, 'utf8') } : frame
  } catch {
    return 'refused'
  }
}

describe('server frames', () => {
  it('decode with the shared schema to the values they were built from', () => {
    fc.assert(
      fc.property(
        seq,
        messageId,
        username,
        base64url(1, 400),
        timestamp,
        fc.boolean(),
        fc.nat(),
        (s, id, from, body, ts, online, n) => {
          expect(decodeServerFrame(JSON.parse(acceptedFrame(id, ts)))).toEqual({
            v: 1,
            type: 'accepted',
            id,
            ts,
          })
          const deliver = { v: 1, type: 'deliver', seq: s, id, from, body, ts }
          expect(decodeServerFrame(JSON.parse(deliverFrame(s, id, from, body, ts)))).toEqual(deliver)
          const asBytes = deliverFrame(s, id, from, Buffer.from(body), ts)
          expect(decodeServerFrame(JSON.parse(asBytes.toString('latin1')))).toEqual(deliver)
          expect(decodeServerFrame(JSON.parse(readyFrame(from, n)))).toEqual({
            v: 1,
            type: 'ready',
            username: from,
            queued: n,
          })
          expect(decodeServerFrame(JSON.parse(presenceFrame(from, online)))).toEqual({
            v: 1,
            type: 'presence',
            username: from,
            online,
          })
          expect(decodeServerFrame(JSON.parse(preKeysLowFrame(n)))).toEqual({
            v: 1,
            type: 'prekeys.low',
            remaining: n,
          })
        },
      ),
    )
  })

  it('error frames carry any message safely, in ASCII, within the schema’s length', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 3000, unit: 'binary' }),
        fc.option(messageId, { nil: undefined }),
        (message, id) => {
          const text = errorFrame('E2E_ERR_BAD_FRAME', message, id)
          expect([...text].every((char) => char.charCodeAt(0) < 0x80)).toBe(true)
          const frame = decodeServerFrame(JSON.parse(text))
          expect(frame).toMatchObject({ type: 'error', code: 'E2E_ERR_BAD_FRAME', ...(id ? { id } : {}) })
          if (message.length <= 1024) expect(frame).toMatchObject({ message })
        },
      ),
    )
  })
})

describe('parsing client frames', () => {
  const canonical = fc
    .record({ id: messageId, to: username, body: base64url(1, 600) })
    .map((fields) => JSON.stringify({ v: 1, type: 'send', ...fields }))

  it('takes the fast path for every frame clients write, with the schema’s result', () => {
    fc.assert(
      fc.property(canonical, (text) => {
        const data = Buffer.from(text)
        expect(parseCanonicalSend(data)).toEqual(slowParse(data))
      }),
    )
  })

  it('never accepts on the fast path what the schema refuses, nor reads it differently', () => {
    // Canonical frames with one byte changed, inserted or removed, and arbitrary JSON and bytes.
    const mutated = fc
      .tuple(
        canonical,
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        fc.constantFrom('replace', 'insert', 'delete'),
      )
      .map(([text, at, byte, how]) => {
        const data = Buffer.from(text)
        const index = at % data.length
        if (how === 'replace') data[index] = byte
        const before = data.subarray(0, index)
        const after = data.subarray(how === 'delete' ? index + 1 : index)
        return how === 'replace'
          ? data
          : Buffer.concat([before, ...(how === 'insert' ? [Buffer.from([byte])] : []), after])
      })
    const anything = fc.oneof(
      mutated,
      fc.jsonValue().map((value) => Buffer.from(JSON.stringify(value))),
      fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
      fc
        .record({ id: fc.string(), to: fc.string(), body: fc.string() })
        .map((fields) => Buffer.from(JSON.stringify({ v: 1, type: 'send', ...fields }))),
    )
    fc.assert(
      fc.property(anything, (data) => {
        const fast = parseCanonicalSend(data)
        if (fast !== undefined) expect(fast).toEqual(slowParse(data))
      }),
      { numRuns: 20_000 },
    )
  })

  it('sends other frames, and non-canonical sends, through the schema', () => {
    const spaced = Buffer.from(
      '{ "v":1,"type":"send","id":"AAAAAAAAAAAAAAAAAAAAAA","to":"alice","body":"AAAA"}',
    )
    expect(parseCanonicalSend(spaced)).toBeUndefined()
    expect(parseClientFrame(spaced)).toMatchObject({ type: 'send', to: 'alice' })
    const upper = Buffer.from(
      '{"v":1,"type":"send","id":"AAAAAAAAAAAAAAAAAAAAAA","to":"Alice","body":"AAAA"}',
    )
    expect(parseCanonicalSend(upper)).toBeUndefined()
    expect(parseClientFrame(upper)).toMatchObject({ to: 'Alice' })
    expect(parseClientFrame(Buffer.from('{"v":1,"type":"ack","upTo":3}'))).toEqual({
      v: 1,
      type: 'ack',
      upTo: 3,
    })
    const claimed = Buffer.from(
      '{"v":1,"type":"send","id":"AAAAAAAAAAAAAAAAAAAAAA","to":"alice","body":"AAAA","from":"bob"}',
    )
    expect(parseCanonicalSend(claimed)).toBeUndefined()
    expect(() => parseClientFrame(claimed)).toThrow(/send frame/)
    const longest = Buffer.from(
      JSON.stringify({
        v: 1,
        type: 'send',
        id: 'A'.repeat(22),
        to: 'alice',
        body: randomBytes(MAX_ENVELOPE_BYTES).toString('base64url'),
      }),
    )
    expect(parseCanonicalSend(longest)).toBeDefined()
    const tooLong = Buffer.from(
      JSON.stringify({
        v: 1,
        type: 'send',
        id: 'A'.repeat(22),
        to: 'alice',
        body: randomBytes(MAX_ENVELOPE_BYTES + 1).toString('base64url'),
      }),
    )
    expect(parseCanonicalSend(tooLong)).toBeUndefined()
    expect(() => parseClientFrame(tooLong)).toThrow()
  })
})

/** ws's frame parser (exported at run time, not in @types/ws). */
interface FrameReceiver {
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void
  write(chunk: Buffer, callback: (error?: Error | null) => void): void
}
const { Receiver } = wsModule as unknown as {
  Receiver: new (options: { isServer: boolean }) => FrameReceiver
}

describe('WebSocket framing', () => {
  it('encodes text frames of every header size that a WebSocket receiver reads back', async () => {
    const texts = [0, 1, 125, 126, 127, 65_535, 65_536, 100_000].map((length) => 'x'.repeat(length))
    texts.push(errorFrame('E2E_ERR_BAD_FRAME', 'naïve – ✓ 🔑'))
    // Frames given as bytes are framed the same way.
    const asBytes = [0, 125, 126, 70_000].map((length) => 'y'.repeat(length))
    texts.push(...asBytes)
    const receiver = new Receiver({ isServer: false })
    const received: string[] = []
    receiver.on('message', (data, isBinary) => {
      expect(isBinary).toBe(false)
      received.push(data.toString('utf8'))
    })
    const encoded = encodeTextFrames([
      ...texts.slice(0, texts.length - asBytes.length),
      ...asBytes.map((text) => Buffer.from(text, 'latin1')),
    ])
    // Fed in odd-sized pieces, as TCP may deliver it.
    for (let offset = 0; offset < encoded.length; offset += 7_919) {
      await new Promise<void>((resolve, reject) =>
        receiver.write(encoded.subarray(offset, offset + 7_919), (error?: Error | null) =>
          error ? reject(error) : resolve(),
        ),
      )
    }
    expect(received).toEqual(texts)
    expect(JSON.parse(received.at(-1 - asBytes.length)!).message).toBe('naïve – ✓ 🔑')
  })
})
