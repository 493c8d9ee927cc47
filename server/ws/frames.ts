/**
 * Server → client frames as JSON text, written by hand for the hot ones (`accepted`, `deliver`):
 * every interpolated value is an integer, unpadded base64url, or a normalised username
 * ([a-z0-9._-], shared/username.ts), none of which JSON needs to escape. frames.test.ts checks
 * that every output decodes with shared/codec/frames.ts `decodeServerFrame` to the same values.
 * Frames that carry free text (errors) go through JSON.stringify, with anything beyond ASCII
 * escaped: every frame is ASCII, so wire.ts can take a string's length as its byte length.
 */
import { FRAME_VERSION, type ServerFrame } from '../../shared/codec/frames.js'

/** ErrorFrame's `message` maxLength. */
const ERROR_MESSAGE_MAX = 1024

export function acceptedFrame(id: string, ts: number): string {
  return `{"v":${FRAME_VERSION},"type":"accepted","id":"${id}","ts":${ts}}`
}

/** A frame as the relay writes it: JSON text of ASCII characters only, as a string or as its bytes. */
export type OutgoingFrame = string | Uint8Array

/**
 * With the body as a string (read from the queue), the frame is a string; with the body as the
 * base64url bytes a send arrived with (the live path), the frame is built as bytes around them,
 * which spares building and flattening a long string for every message relayed.
 */
export function deliverFrame(
  seq: number,
  id: string,
  from: string,
  body: string,
  ts: number,
  device?: number,
): string
export function deliverFrame(
  seq: number,
  id: string,
  from: string,
  body: Uint8Array,
  ts: number,
  device?: number,
): Buffer
export function deliverFrame(
  seq: number,
  id: string,
  from: string,
  body: string | Uint8Array,
  ts: number,
  device = 1,
): OutgoingFrame {
  // The sending device only when it is not device 1: clients from before devices know no `device`.
  const sender = device === 1 ? `"from":"${from}"` : `"from":"${from}","device":${device}`
  const head = `{"v":${FRAME_VERSION},"type":"deliver","seq":${seq},"id":"${id}",${sender},"body":"`
  const tail = `","ts":${ts}}`
  if (typeof body === 'string') return head + body + tail
  const frame = Buffer.allocUnsafe(head.length + body.length + tail.length)
  frame.write(head, 0, 'latin1')
  frame.set(body, head.length)
  frame.write(tail, head.length + body.length, 'latin1')
  return frame
}

/** How one list of devices in a send differs from the account's (shared/codec/frames.ts). */
export interface DeviceListDifference {
  readonly missing: readonly number[]
  readonly extra: readonly number[]
  readonly stale: readonly number[]
}

export function devicesMismatchFrame(
  id: string,
  recipient: DeviceListDifference,
  own: DeviceListDifference,
): string {
  const list = (difference: DeviceListDifference) =>
    `{"missing":[${difference.missing.join(',')}],"extra":[${difference.extra.join(',')}],"stale":[${difference.stale.join(',')}]}`
  return `{"v":${FRAME_VERSION},"type":"devices.mismatch","id":"${id}","recipient":${list(recipient)},"own":${list(own)}}`
}

export function readyFrame(username: string, queued: number): string {
  return `{"v":${FRAME_VERSION},"type":"ready","username":"${username}","queued":${queued}}`
}

export function presenceFrame(username: string, online: boolean): string {
  return `{"v":${FRAME_VERSION},"type":"presence","username":"${username}","online":${online}}`
}

export function identityChangedFrame(username: string): string {
  return `{"v":${FRAME_VERSION},"type":"identity.changed","username":"${username}"}`
}

export function preKeysLowFrame(remaining: number): string {
  return `{"v":${FRAME_VERSION},"type":"prekeys.low","remaining":${remaining}}`
}

const NON_ASCII = /[\u0080-\uffff]/g

export function errorFrame(code: string, message: string, id?: string): string {
  const frame: Extract<ServerFrame, { type: 'error' }> = {
    v: FRAME_VERSION,
    type: 'error',
    code,
    message: message.length > ERROR_MESSAGE_MAX ? `${message.slice(0, ERROR_MESSAGE_MAX - 3)}...` : message,
    ...(id === undefined ? {} : { id }),
  }
  // Every frame the relay writes is ASCII (wire.ts relies on it): escape anything else the JSON way.
  return JSON.stringify(frame).replace(
    NON_ASCII,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}
