/**
 * Keys bound to names (issue 10, item 7), end to end through the real server: eve, under her own
 * name and with her own keys, takes bob's first message to alice and sends it on to alice as her
 * own. The server stamps it "from eve"; alice's client binds "eve" into the key agreement, so the
 * message does not open, and nothing of bob's reaches alice as eve's.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signUp, startServer, type TestServer } from '../server/test/harness.js'
import { connect } from '../server/test/ws-client.js'
import { toBase64Url } from '../shared/bytes.js'
import type { ChatClient, MessageView } from '../shared/client/chat-client.js'
import { FRAME_VERSION } from '../shared/codec/frames.js'
import { registerClient, tappedWebSocketFactory } from './client-helpers.js'

let server: TestServer

beforeAll(async () => {
  server = await startServer()
})

afterAll(async () => {
  await server.close()
})

function nextIncoming(client: ChatClient, from: string): Promise<MessageView> {
  return new Promise((resolve) => {
    const stop = client.events.on('message', (message) => {
      if (message.direction !== 'in' || message.peer !== from) return
      stop()
      resolve(message)
    })
  })
}

describe('a session relayed between two other names', () => {
  it("bob's first message to alice, sent on by eve as hers, does not open at alice", async () => {
    const { client: alice } = await registerClient(server)
    const bobSocket = tappedWebSocketFactory(server)
    const { client: bob } = await registerClient(server, { webSocket: bobSocket.factory })
    const eve = await signUp(server)
    // Bob's send to alice is taken off the wire (eve has it; alice never gets bob's own copy).
    const captured = new Promise<{ body: string }>((resolve) => {
      bobSocket.tap.filter = ({ direction, frame }) => {
        if (direction !== 'sent' || frame.type !== 'send.devices') return 'pass'
        resolve(frame.messages[0]!)
        return 'drop'
      }
    })
    for (const client of [alice, bob]) client.connect()
    await Promise.all([alice.waitUntilOnline(), bob.waitUntilOnline()])
    void bob.send(alice.username, 'the vault code is 1234')
    const { body } = await captured
    await bob.close()

    const undecryptable: { peer: string; reason: string; kind: string }[] = []
    alice.events.on('undecryptable', ({ peer, reason, kind }) => undecryptable.push({ peer, reason, kind }))
    const arriving = nextIncoming(alice, eve.client.username)
    const eveSocket = await connect(server, eve.token, 'eve')
    eveSocket.send({
      v: FRAME_VERSION,
      type: 'send',
      id: toBase64Url(randomBytes(16)),
      to: alice.username,
      body,
    })
    await eveSocket.next('accepted')

    const notice = await arriving
    expect(notice).toMatchObject({ peer: eve.client.username, kind: 'undecryptable', text: '' })
    expect(undecryptable).toEqual([
      { peer: eve.client.username, reason: 'E2E_ERR_DECRYPTION_FAILED', kind: 'undecryptable' },
    ])
    // Nothing of bob's text reached alice, under either name.
    const history = [...(await alice.history(eve.client.username)), ...(await alice.history(bob.username))]
    expect(history.map((message) => message.text).join('')).not.toContain('vault')
    await eveSocket.close()
    await alice.close()
  })
})
