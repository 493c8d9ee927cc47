/**
 * The load generator for bench/server.ts, run as a child process so that it has its own event loop
 * (and core) and the server's measurements are the server's alone. It takes commands over IPC and
 * answers each with one result message:
 *
 * - relay: N WebSocket clients in pairs, each keeping `window` messages in flight to its partner;
 *   counts deliveries per second after a warm-up and records send→deliver latency. Mode `server`
 *   speaks the real protocol (auth, send, accepted, deliver, cumulative ack once per turn); mode
 *   `bare` sends the same send frames through the bare relay, which forwards them to the partner.
 * - relay.devices: the same with every user's devices connected (users in pairs), each device
 *   sending `send.devices` to the partner's devices with sent copies for its own others; the bare
 *   relay forwards each envelope to its device.
 * - drain: queues messages for an offline user, then times that user's drain on connect.
 * - drain.devices: the same for every device of one user, drained by all of them at once.
 * - hold: opens and authenticates many idle connections and keeps them until `release`.
 * - logins: concurrent POST /login requests.
 *
 * Clients mask with a zero key (ws then skips the XOR) and skip UTF-8 validation: the generator's
 * own costs should not decide the comparison. Both relays see exactly the same client code.
 */
import { randomBytes } from 'node:crypto'
import { Agent, request } from 'node:https'
import type { Socket } from 'node:net'
import WebSocket from 'ws'

interface Client {
  readonly index: number
  readonly ws: WebSocket
  /** Send times of messages in flight to the partner, oldest first. */
  readonly sendTimes: number[]
  /** Their ids, in the same order (a delivery must bring the oldest one). */
  readonly sendIds: string[]
  sendHead: number
  inFlight: number
  /** Highest `deliver` seq received and not yet acknowledged. */
  ackUpTo: number
  ackScheduled: boolean
  pumpScheduled: boolean
  counter: number
  readonly idBytes: Buffer
  readonly prefix: string
}

export type LoadCommand =
  | {
      cmd: 'relay'
      mode: 'server' | 'bare'
      url: string
      /** A URL per client (clients spread over several nodes); `url` for every client without. */
      urls?: string[]
      ca: string
      tokens: string[]
      names: string[]
      window: number
      warmupMs: number
      durationMs: number
    }
  | {
      cmd: 'relay.devices'
      mode: 'server' | 'bare'
      url: string
      ca: string
      /** Users in pairs (0 with 1, 2 with 3, ...), each with a session token per device, device 1 first. */
      users: { name: string; tokens: string[] }[]
      window: number
      warmupMs: number
      durationMs: number
    }
  | {
      cmd: 'drain'
      url: string
      ca: string
      sender: string
      recipient: string
      recipientName: string
      count: number
    }
  | {
      cmd: 'drain.devices'
      url: string
      ca: string
      sender: string
      /** One session token per device of the offline recipient, device 1 first. */
      recipients: string[]
      recipientName: string
      count: number
    }
  | { cmd: 'hold'; url: string; ca: string; tokens: string[]; concurrency: number }
  | { cmd: 'release' }
  | { cmd: 'logins'; origin: string; ca: string; users: { username: string; loginSecret: string }[] }
  | { cmd: 'exit' }

export interface RelayResult {
  /** Messages delivered in the whole run, warm-up and wind-down included (for CPU per message). */
  total: number
  delivered: number
  seconds: number
  msgsPerSec: number
  p50Ms: number
  p99Ms: number
  errors: number
  /** The load generator's own CPU per message, µs (to see which side limits a run). */
  clientCpuMicros: number
  /** Messages sent in the whole run. */
  sent: number
  /** Sent but never delivered (the wind-down gave up waiting for them). */
  undelivered: number
  /** Deliveries that were not the oldest message in flight on that pair: lost, repeated or out of order. */
  mismatched: number
}

/** The wind-down waits for what is in flight as long as deliveries keep coming at least this often. */
const WIND_DOWN_STALL_MS = 10_000
/** A message id as clients make them: 16 bytes in base64url. */
const ID_LENGTH = 22
const ID_MARKER = Buffer.from('"id":"')

const progress = (text: string) => process.stderr.write(`  [load] ${text}\n`)
const zeroMask = (mask: Buffer) => mask.fill(0)
const BODY = randomBytes(218).toString('base64url')
/** `{"v":1,"type":"` is 15 characters: the byte after it tells the frame type. */
const TYPE_OFFSET = 15
const DELIVER_SEQ_OFFSET = '{"v":1,"type":"deliver","seq":'.length

function socketOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket
}

function open(url: string, ca: string): WebSocket {
  return new WebSocket(url, {
    ca,
    perMessageDeflate: false,
    skipUTF8Validation: true,
    generateMask: zeroMask,
    maxPayload: 1024 * 1024,
  })
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!
}

/** Opens a socket and, for the real server, authenticates it; resolves on `ready` (or `ok` when bare). */
function connectClient(
  url: string,
  ca: string,
  hello: string,
  onFrame?: (data: Buffer) => void,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = open(url, ca)
    let ready = false
    ws.once('open', () => ws.send(hello))
    ws.on('message', (data: Buffer) => {
      if (!ready) {
        ready = true
        resolve(ws)
        return
      }
      onFrame?.(data)
    })
    ws.once('error', (error) => {
      if (!ready) reject(error)
    })
    ws.once('close', (code) => {
      if (!ready) reject(new Error(`closed with ${code} before ready`))
    })
  })
}

async function relay(command: Extract<LoadCommand, { cmd: 'relay' }>): Promise<RelayResult> {
  const count = command.tokens.length
  const clients: Client[] = []
  const samples = new Float64Array(4_000_000)
  let sampleCount = 0
  let measuring = false
  let running = true
  let delivered = 0
  let total = 0
  let errors = 0
  let sent = 0
  let mismatched = 0
  const runPrefix = randomBytes(4)

  const partnerOf = (client: Client) => clients[client.index ^ 1]!

  const pump = (client: Client) => {
    client.pumpScheduled = false
    if (!running || client.ws.readyState !== WebSocket.OPEN) return
    const partnerName = command.names[client.index ^ 1]
    const socket = socketOf(client.ws)
    socket.cork()
    while (client.inFlight < command.window) {
      client.counter += 1
      // Ids as clients make them (shared/message-id.ts): the time first, then bytes unique to this
      // client and run, and a counter in place of the rest of the random part.
      client.idBytes.writeUIntBE(Date.now(), 0, 6)
      client.idBytes.writeUInt32BE(client.counter, 12)
      const id = client.idBytes.toString('base64url')
      client.ws.send(`{"v":1,"type":"send","id":"${id}","to":"${partnerName}","body":"${BODY}"}`)
      client.sendTimes.push(performance.now())
      client.sendIds.push(id)
      client.inFlight += 1
      sent += 1
    }
    socket.uncork()
    if (client.sendHead > 4096) {
      client.sendTimes.splice(0, client.sendHead)
      client.sendIds.splice(0, client.sendHead)
      client.sendHead = 0
    }
  }

  const schedulePump = (client: Client) => {
    if (client.pumpScheduled) return
    client.pumpScheduled = true
    setImmediate(() => pump(client))
  }

  const flushAck = (client: Client) => {
    client.ackScheduled = false
    if (client.ackUpTo > 0 && client.ws.readyState === WebSocket.OPEN) {
      client.ws.send(`{"v":1,"type":"ack","upTo":${client.ackUpTo}}`)
      client.ackUpTo = 0
    }
  }

  const received = (client: Client, data: Buffer) => {
    const kind = data[TYPE_OFFSET]
    // 's': a forwarded send (bare relay); 'd': deliver (server). Both are a message from the partner.
    if (kind === 0x73 || kind === 0x64) {
      const sender = partnerOf(client)
      const sentAt = sender.sendTimes[sender.sendHead]!
      const at = data.indexOf(ID_MARKER)
      const id =
        at < 0 ? '' : data.toString('latin1', at + ID_MARKER.length, at + ID_MARKER.length + ID_LENGTH)
      if (sender.inFlight <= 0 || id !== sender.sendIds[sender.sendHead]) {
        mismatched += 1
        if (mismatched <= 3) progress(`unexpected delivery: ${data.toString().slice(0, 120)}`)
      }
      sender.sendHead += 1
      sender.inFlight -= 1
      total += 1
      if (measuring) {
        delivered += 1
        if (sampleCount < samples.length) samples[sampleCount++] = performance.now() - sentAt
      }
      schedulePump(sender)
      if (kind === 0x64) {
        let seq = 0
        for (let i = DELIVER_SEQ_OFFSET; i < data.length; i++) {
          const digit = data[i]! - 0x30
          if (digit < 0 || digit > 9) break
          seq = seq * 10 + digit
        }
        client.ackUpTo = seq
        if (!client.ackScheduled) {
          client.ackScheduled = true
          setImmediate(() => flushAck(client))
        }
      }
    } else if (kind === 0x65) {
      errors += 1
      if (errors <= 3) progress(`error frame: ${data.toString().slice(0, 200)}`)
    }
  }

  progress(`${command.mode}: connecting ${count} clients`)
  for (let start = 0; start < count; start += 50) {
    await Promise.all(
      command.tokens.slice(start, start + 50).map(async (token, offset) => {
        const index = start + offset
        const idBytes = Buffer.alloc(16)
        runPrefix.copy(idBytes, 6)
        idBytes.writeUInt16BE(index, 10)
        const client: Client = {
          index,
          ws: undefined as unknown as WebSocket,
          sendTimes: [],
          sendIds: [],
          sendHead: 0,
          inFlight: 0,
          ackUpTo: 0,
          ackScheduled: false,
          pumpScheduled: false,
          counter: 0,
          idBytes,
          prefix: '',
        }
        clients[index] = client
        const hello =
          command.mode === 'server' ? JSON.stringify({ v: 1, type: 'auth', token }) : `pair:${index}`
        ;(client as { ws: WebSocket }).ws = await connectClient(
          command.urls?.[index] ?? command.url,
          command.ca,
          hello,
          (data) => received(client, data),
        )
      }),
    )
  }
  progress(`${command.mode}: warming up for ${command.warmupMs} ms`)
  const cpuStart = process.cpuUsage()
  for (const client of clients) schedulePump(client)
  await new Promise((resolve) => setTimeout(resolve, command.warmupMs))
  measuring = true
  const started = performance.now()
  progress(`${command.mode}: measuring for ${command.durationMs} ms`)
  await new Promise((resolve) => setTimeout(resolve, command.durationMs))
  measuring = false
  const seconds = (performance.now() - started) / 1000
  running = false
  // Let everything in flight arrive (and be acknowledged) before closing; a message still missing
  // when deliveries have stopped for WIND_DOWN_STALL_MS counts as undelivered.
  await new Promise<void>((resolve) => {
    let lastTotal = total
    let lastProgress = performance.now()
    const check = () => {
      if (total !== lastTotal) {
        lastTotal = total
        lastProgress = performance.now()
      }
      if (clients.every((client) => client.inFlight <= 0)) resolve()
      else if (performance.now() - lastProgress > WIND_DOWN_STALL_MS) resolve()
      else setTimeout(check, 20)
    }
    check()
  })
  const undelivered = clients.reduce((sum, client) => sum + Math.max(0, client.inFlight), 0)
  if (undelivered > 0) progress(`${command.mode}: ${undelivered} messages never delivered`)
  await new Promise((resolve) => setTimeout(resolve, 50))
  await Promise.all(
    clients.map(
      (client) =>
        new Promise<void>((resolve) => {
          client.ws.once('close', () => resolve())
          client.ws.close(1000)
        }),
    ),
  )
  const cpu = process.cpuUsage(cpuStart)
  const sorted = samples.subarray(0, sampleCount).sort()
  return {
    clientCpuMicros: round((cpu.user + cpu.system) / Math.max(1, total), 1),
    total,
    delivered,
    seconds,
    msgsPerSec: Math.round(delivered / seconds),
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    errors,
    sent,
    undelivered,
    mismatched,
  }
}

const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits

async function drain(command: Extract<LoadCommand, { cmd: 'drain' }>) {
  let accepted = 0
  let sendErrors = 0
  const senderDone = new Promise<void>((resolve) => {
    const check = () => {
      if (accepted + sendErrors >= command.count) resolve()
    }
    connectClient(
      command.url,
      command.ca,
      JSON.stringify({ v: 1, type: 'auth', token: command.sender }),
      (data) => {
        if (data[TYPE_OFFSET] === 0x61) accepted += 1
        else if (data[TYPE_OFFSET] === 0x65) {
          sendErrors += 1
          if (sendErrors <= 3) progress(`drain send error: ${data.toString().slice(0, 200)}`)
        }
        check()
      },
    ).then((ws) => {
      const idBytes = randomBytes(16)
      idBytes.writeUIntBE(Date.now(), 0, 6)
      const socket = socketOf(ws)
      socket.cork()
      for (let i = 0; i < command.count; i++) {
        idBytes.writeUInt32BE(i, 12)
        ws.send(
          `{"v":1,"type":"send","id":"${idBytes.toString('base64url')}","to":"${command.recipientName}","body":"${BODY}"}`,
        )
      }
      socket.uncork()
    })
  })
  progress(`drain: queueing ${command.count} messages for an offline user`)
  await senderDone
  progress(`drain: ${accepted} accepted; connecting the recipient`)

  const result = await new Promise<{
    seconds: number
    fromReadySeconds: number
    received: number
    queued: number
  }>((resolve, reject) => {
    const ws = open(command.url, command.ca)
    let started = 0
    let readyAt = 0
    let received = 0
    let queued = 0
    let ackUpTo = 0
    let ackScheduled = false
    ws.once('open', () => {
      started = performance.now()
      ws.send(JSON.stringify({ v: 1, type: 'auth', token: command.recipient }))
    })
    ws.on('message', (data: Buffer) => {
      const kind = data[TYPE_OFFSET]
      if (kind === 0x72) {
        readyAt = performance.now()
        queued = JSON.parse(data.toString()).queued
        return
      }
      if (kind !== 0x64) return
      received += 1
      let seq = 0
      for (let i = DELIVER_SEQ_OFFSET; i < data.length; i++) {
        const digit = data[i]! - 0x30
        if (digit < 0 || digit > 9) break
        seq = seq * 10 + digit
      }
      ackUpTo = seq
      if (received === queued) {
        const done = performance.now()
        ws.send(`{"v":1,"type":"ack","upTo":${ackUpTo}}`)
        ws.close(1000)
        resolve({
          seconds: (done - started) / 1000,
          fromReadySeconds: (done - readyAt) / 1000,
          received,
          queued,
        })
        return
      }
      if (!ackScheduled) {
        ackScheduled = true
        setImmediate(() => {
          ackScheduled = false
          ws.send(`{"v":1,"type":"ack","upTo":${ackUpTo}}`)
        })
      }
    })
    ws.once('error', reject)
  })
  return { accepted, sendErrors, ...result }
}

export interface DevicesRelayResult {
  /** Copies delivered to the recipients' devices in the measured window, per second (the headline). */
  recipientCopiesPerSec: number
  /** Sent copies delivered to the senders' other devices in the measured window, per second. */
  ownCopiesPerSec: number
  /** `send.devices` frames whose every copy arrived in the measured window, per second. */
  sendsPerSec: number
  /** Send → the first of the recipient's devices has it. */
  firstP50Ms: number
  firstP99Ms: number
  /** Send → every device of the recipient has it. */
  allP50Ms: number
  allP99Ms: number
  /** Copies delivered in the whole run, warm-up and wind-down included (for CPU per copy). */
  totalRecipientCopies: number
  errors: number
  clientCpuMicros: number
  sent: number
  /** Copies never delivered (the wind-down gave up waiting for them). */
  undelivered: number
  /** Deliveries of no message in flight, or more copies of one than it was sent with. */
  mismatched: number
}

interface DeviceClient {
  readonly user: number
  readonly device: number
  readonly ws: WebSocket
  inFlight: number
  ackUpTo: number
  ackScheduled: boolean
  pumpScheduled: boolean
  counter: number
  readonly idBytes: Buffer
}

/** A `send.devices` in flight: who sent it, when, and how many of its copies have yet to arrive. */
interface PendingSend {
  readonly sender: DeviceClient
  readonly sentAt: number
  recipientLeft: number
  ownLeft: number
}

/** `{"v":1,"type":"de` + `l`: deliver, not devices.mismatch (both begin with `de`). */
const isDeliver = (data: Buffer) => data[TYPE_OFFSET] === 0x64 && data[TYPE_OFFSET + 2] === 0x6c

/**
 * Every user's devices connected at once, users in pairs; each device keeps `window` messages in
 * flight to its partner. Mode `server` sends `send.devices` (an envelope per device of the partner
 * and a sent copy per other device of the sender); each device acknowledges its own queue. Mode
 * `bare` sends the same envelopes as one frame of lines, which the bare relay splits and forwards
 * one line to each device (bench/relay-kit.ts), so that both relays carry the same bytes in and
 * out. A message leaves the sender's window once every copy of it has arrived.
 */
async function relayDevices(
  command: Extract<LoadCommand, { cmd: 'relay.devices' }>,
): Promise<DevicesRelayResult> {
  const devicesPerUser = command.users[0]?.tokens.length ?? 0
  const clients: DeviceClient[][] = []
  const firstSamples = new Float64Array(2_000_000)
  const allSamples = new Float64Array(2_000_000)
  let firstCount = 0
  let allCount = 0
  let measuring = false
  let running = true
  let recipientCopies = 0
  let ownCopies = 0
  let completedSends = 0
  let totalRecipientCopies = 0
  let totalCopies = 0
  let errors = 0
  let sent = 0
  let mismatched = 0
  const pending = new Map<string, PendingSend>()
  const runPrefix = randomBytes(4)

  const frameFor = (client: DeviceClient, id: string): string => {
    const partner = command.users[client.user ^ 1]!.name
    const own: number[] = []
    for (let device = 1; device <= devicesPerUser; device++) if (device !== client.device) own.push(device)
    if (command.mode === 'bare') {
      // Partner's devices in order, then the sender's others: the order the bare relay forwards in.
      const lines: string[] = []
      for (let device = 1; device <= devicesPerUser; device++) {
        lines.push(`{"v":1,"type":"send.devices","id":"${id}","device":${device},"body":"${BODY}"}`)
      }
      for (const device of own) {
        lines.push(`{"v":1,"type":"send.devices","id":"${id}","device":${device},"body":"${BODY}"}`)
      }
      return lines.join('\n')
    }
    const messages: string[] = []
    for (let device = 1; device <= devicesPerUser; device++)
      messages.push(`{"device":${device},"body":"${BODY}"}`)
    const copies = own.map((device) => `{"device":${device},"body":"${BODY}"}`)
    return `{"v":1,"type":"send.devices","id":"${id}","to":"${partner}","messages":[${messages.join(',')}],"own":[${copies.join(',')}]}`
  }

  const pump = (client: DeviceClient) => {
    client.pumpScheduled = false
    if (!running || client.ws.readyState !== WebSocket.OPEN) return
    const socket = socketOf(client.ws)
    socket.cork()
    while (client.inFlight < command.window) {
      client.counter += 1
      client.idBytes.writeUIntBE(Date.now(), 0, 6)
      client.idBytes.writeUInt32BE(client.counter, 12)
      const id = client.idBytes.toString('base64url')
      client.ws.send(frameFor(client, id))
      pending.set(id, {
        sender: client,
        sentAt: performance.now(),
        recipientLeft: devicesPerUser,
        ownLeft: devicesPerUser - 1,
      })
      client.inFlight += 1
      sent += 1
    }
    socket.uncork()
  }

  const schedulePump = (client: DeviceClient) => {
    if (client.pumpScheduled) return
    client.pumpScheduled = true
    setImmediate(() => pump(client))
  }

  const flushAck = (client: DeviceClient) => {
    client.ackScheduled = false
    if (client.ackUpTo > 0 && client.ws.readyState === WebSocket.OPEN) {
      client.ws.send(`{"v":1,"type":"ack","upTo":${client.ackUpTo}}`)
      client.ackUpTo = 0
    }
  }

  const received = (client: DeviceClient, data: Buffer) => {
    const kind = data[TYPE_OFFSET]
    const deliver = isDeliver(data)
    // 's': a forwarded line (bare relay); deliver (server). Both are one copy of a message.
    if (kind === 0x73 || deliver) {
      const at = data.indexOf(ID_MARKER)
      const id =
        at < 0 ? '' : data.toString('latin1', at + ID_MARKER.length, at + ID_MARKER.length + ID_LENGTH)
      const send = pending.get(id)
      const now = performance.now()
      if (!send) {
        mismatched += 1
        if (mismatched <= 3) progress(`unexpected delivery: ${data.toString().slice(0, 120)}`)
      } else if (send.sender.user === client.user) {
        send.ownLeft -= 1
        totalCopies += 1
        if (measuring) ownCopies += 1
        if (send.ownLeft < 0) mismatched += 1
      } else {
        send.recipientLeft -= 1
        totalCopies += 1
        totalRecipientCopies += 1
        if (measuring) {
          recipientCopies += 1
          if (send.recipientLeft === devicesPerUser - 1 && firstCount < firstSamples.length) {
            firstSamples[firstCount++] = now - send.sentAt
          }
          if (send.recipientLeft === 0 && allCount < allSamples.length)
            allSamples[allCount++] = now - send.sentAt
        }
        if (send.recipientLeft < 0) mismatched += 1
      }
      if (send && send.recipientLeft <= 0 && send.ownLeft <= 0) {
        pending.delete(id)
        if (measuring) completedSends += 1
        send.sender.inFlight -= 1
        schedulePump(send.sender)
      }
      if (deliver) {
        let seq = 0
        for (let i = DELIVER_SEQ_OFFSET; i < data.length; i++) {
          const digit = data[i]! - 0x30
          if (digit < 0 || digit > 9) break
          seq = seq * 10 + digit
        }
        client.ackUpTo = seq
        if (!client.ackScheduled) {
          client.ackScheduled = true
          setImmediate(() => flushAck(client))
        }
      }
    } else if (kind === 0x65 || kind === 0x64) {
      // An error frame, or devices.mismatch: the device lists were wrong.
      errors += 1
      if (errors <= 3) progress(`error frame: ${data.toString().slice(0, 200)}`)
    }
  }

  const count = command.users.length * devicesPerUser
  progress(`${command.mode}, ${devicesPerUser} devices: connecting ${count} devices`)
  const slots = command.users.flatMap((user, index) =>
    user.tokens.map((token, offset) => ({ user: index, device: offset + 1, token })),
  )
  for (let start = 0; start < slots.length; start += 50) {
    await Promise.all(
      slots.slice(start, start + 50).map(async ({ user, device, token }) => {
        const idBytes = Buffer.alloc(16)
        runPrefix.copy(idBytes, 6)
        idBytes.writeUInt16BE(user * devicesPerUser + device, 10)
        const client: DeviceClient = {
          user,
          device,
          ws: undefined as unknown as WebSocket,
          inFlight: 0,
          ackUpTo: 0,
          ackScheduled: false,
          pumpScheduled: false,
          counter: 0,
          idBytes,
        }
        clients[user] ??= []
        clients[user][device - 1] = client
        const hello =
          command.mode === 'server'
            ? JSON.stringify({ v: 1, type: 'auth', token })
            : `devices:${user}:${device}:${devicesPerUser}`
        ;(client as { ws: WebSocket }).ws = await connectClient(command.url, command.ca, hello, (data) =>
          received(client, data),
        )
      }),
    )
  }
  const all = clients.flat()
  progress(`${command.mode}, ${devicesPerUser} devices: warming up for ${command.warmupMs} ms`)
  const cpuStart = process.cpuUsage()
  for (const client of all) schedulePump(client)
  await new Promise((resolve) => setTimeout(resolve, command.warmupMs))
  measuring = true
  const started = performance.now()
  progress(`${command.mode}, ${devicesPerUser} devices: measuring for ${command.durationMs} ms`)
  await new Promise((resolve) => setTimeout(resolve, command.durationMs))
  measuring = false
  const seconds = (performance.now() - started) / 1000
  running = false
  await new Promise<void>((resolve) => {
    let lastTotal = totalCopies
    let lastProgress = performance.now()
    const check = () => {
      if (totalCopies !== lastTotal) {
        lastTotal = totalCopies
        lastProgress = performance.now()
      }
      if (pending.size === 0) resolve()
      else if (performance.now() - lastProgress > WIND_DOWN_STALL_MS) resolve()
      else setTimeout(check, 20)
    }
    check()
  })
  let undelivered = 0
  for (const send of pending.values())
    undelivered += Math.max(0, send.recipientLeft) + Math.max(0, send.ownLeft)
  if (undelivered > 0)
    progress(`${command.mode}, ${devicesPerUser} devices: ${undelivered} copies never delivered`)
  await new Promise((resolve) => setTimeout(resolve, 50))
  await Promise.all(
    all.map(
      (client) =>
        new Promise<void>((resolve) => {
          client.ws.once('close', () => resolve())
          client.ws.close(1000)
        }),
    ),
  )
  const cpu = process.cpuUsage(cpuStart)
  const first = firstSamples.subarray(0, firstCount).sort()
  const every = allSamples.subarray(0, allCount).sort()
  return {
    recipientCopiesPerSec: Math.round(recipientCopies / seconds),
    ownCopiesPerSec: Math.round(ownCopies / seconds),
    sendsPerSec: Math.round(completedSends / seconds),
    firstP50Ms: round(percentile(first, 50)),
    firstP99Ms: round(percentile(first, 99)),
    allP50Ms: round(percentile(every, 50)),
    allP99Ms: round(percentile(every, 99)),
    totalRecipientCopies,
    errors,
    clientCpuMicros: round((cpu.user + cpu.system) / Math.max(1, totalRecipientCopies), 1),
    sent,
    undelivered,
    mismatched,
  }
}

/**
 * Queues `count` messages for every device of an offline user (one `send.devices` each, from a
 * one-device sender), then connects all of its devices at once and times them from the first
 * socket's open to the last device's last message.
 */
async function drainDevices(command: Extract<LoadCommand, { cmd: 'drain.devices' }>) {
  let accepted = 0
  let sendErrors = 0
  const envelopes = command.recipients.map((_, index) => `{"device":${index + 1},"body":"${BODY}"}`).join(',')
  await new Promise<void>((resolve) => {
    const check = () => {
      if (accepted + sendErrors >= command.count) resolve()
    }
    connectClient(
      command.url,
      command.ca,
      JSON.stringify({ v: 1, type: 'auth', token: command.sender }),
      (data) => {
        if (data[TYPE_OFFSET] === 0x61) accepted += 1
        else if (data[TYPE_OFFSET] === 0x65 || data[TYPE_OFFSET] === 0x64) {
          sendErrors += 1
          if (sendErrors <= 3) progress(`drain send error: ${data.toString().slice(0, 200)}`)
        }
        check()
      },
    ).then((ws) => {
      const idBytes = randomBytes(16)
      idBytes.writeUIntBE(Date.now(), 0, 6)
      const socket = socketOf(ws)
      socket.cork()
      for (let i = 0; i < command.count; i++) {
        idBytes.writeUInt32BE(i, 12)
        ws.send(
          `{"v":1,"type":"send.devices","id":"${idBytes.toString('base64url')}","to":"${command.recipientName}","messages":[${envelopes}],"own":[]}`,
        )
      }
      socket.uncork()
    })
  })
  progress(
    `drain, ${command.recipients.length} devices: ${accepted} accepted; connecting the recipient's devices`,
  )

  const started = performance.now()
  const perDevice = await Promise.all(
    command.recipients.map(
      (token) =>
        new Promise<{ done: number; received: number; queued: number }>((resolve, reject) => {
          const ws = open(command.url, command.ca)
          let received = 0
          let queued = -1
          let ackUpTo = 0
          let ackScheduled = false
          const finish = () => {
            ws.send(`{"v":1,"type":"ack","upTo":${ackUpTo}}`)
            ws.close(1000)
            resolve({ done: performance.now(), received, queued })
          }
          ws.once('open', () => ws.send(JSON.stringify({ v: 1, type: 'auth', token })))
          ws.on('message', (data: Buffer) => {
            if (data[TYPE_OFFSET] === 0x72) {
              queued = JSON.parse(data.toString()).queued
              if (queued === 0) finish()
              return
            }
            if (!isDeliver(data)) return
            received += 1
            let seq = 0
            for (let i = DELIVER_SEQ_OFFSET; i < data.length; i++) {
              const digit = data[i]! - 0x30
              if (digit < 0 || digit > 9) break
              seq = seq * 10 + digit
            }
            ackUpTo = seq
            if (received === queued) {
              finish()
              return
            }
            if (!ackScheduled) {
              ackScheduled = true
              setImmediate(() => {
                ackScheduled = false
                if (ws.readyState === WebSocket.OPEN) ws.send(`{"v":1,"type":"ack","upTo":${ackUpTo}}`)
              })
            }
          })
          ws.once('error', reject)
        }),
    ),
  )
  const done = Math.max(...perDevice.map((device) => device.done))
  return {
    accepted,
    sendErrors,
    seconds: (done - started) / 1000,
    received: perDevice.reduce((sum, device) => sum + device.received, 0),
    queued: perDevice.reduce((sum, device) => sum + device.queued, 0),
    devices: perDevice.length,
  }
}

let held: WebSocket[] = []

async function hold(command: Extract<LoadCommand, { cmd: 'hold' }>) {
  const started = performance.now()
  const before = held.length
  let failed = 0
  let next = 0
  let lastReport = held.length
  const worker = async () => {
    while (next < command.tokens.length) {
      const token = command.tokens[next++]!
      try {
        held.push(await connectClient(command.url, command.ca, JSON.stringify({ v: 1, type: 'auth', token })))
      } catch (error) {
        failed += 1
        if (failed <= 3) progress(`hold: connection failed: ${(error as Error).message}`)
      }
      if (held.length - lastReport >= 2_000) {
        lastReport = held.length
        progress(`hold: ${held.length} connections authenticated`)
      }
    }
  }
  await Promise.all(Array.from({ length: command.concurrency }, worker))
  return { held: held.length - before, failed, seconds: round((performance.now() - started) / 1000) }
}

async function release() {
  const closing = held.map(
    (ws) =>
      new Promise<void>((resolve) => {
        ws.once('close', () => resolve())
        ws.terminate()
      }),
  )
  await Promise.all(closing)
  held = []
  return { released: closing.length }
}

async function logins(command: Extract<LoadCommand, { cmd: 'logins' }>) {
  const agent = new Agent({ ca: command.ca, keepAlive: false, maxSockets: command.users.length })
  const started = performance.now()
  const statuses = await Promise.all(
    command.users.map(
      (user) =>
        new Promise<number>((resolve, reject) => {
          const body = JSON.stringify(user)
          const req = request(
            new URL('/api/v1/login', command.origin),
            { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
            (res) => {
              res.resume()
              res.on('end', () => resolve(res.statusCode ?? 0))
            },
          )
          req.on('error', reject)
          req.end(body)
        }),
    ),
  )
  agent.destroy()
  return { statuses, seconds: round((performance.now() - started) / 1000) }
}

process.on('message', async (command: LoadCommand) => {
  try {
    let result: unknown
    switch (command.cmd) {
      case 'relay':
        result = await relay(command)
        break
      case 'relay.devices':
        result = await relayDevices(command)
        break
      case 'drain':
        result = await drain(command)
        break
      case 'drain.devices':
        result = await drainDevices(command)
        break
      case 'hold':
        result = await hold(command)
        break
      case 'release':
        result = await release()
        break
      case 'logins':
        result = await logins(command)
        break
      case 'exit':
        process.exit(0)
    }
    process.send?.({ ok: true, result })
  } catch (error) {
    process.send?.({ ok: false, error: (error as Error).stack ?? String(error) })
  }
})
process.send?.({ ok: true, result: 'started' })
