/** The in-process relay bus against the contract in relay-bus.ts (pure logic: no sockets). */
import type { FastifyBaseLogger } from 'fastify'
import { describe, expect, it } from 'vitest'
import { InProcessRelayBus } from './in-process-bus.js'
import { type Address, primaryAddress, type RelayEvent, type RelayListener } from './relay-bus.js'

function collectingLog() {
  const errors: unknown[] = []
  const log = { error: (object: unknown) => errors.push(object) } as unknown as Pick<
    FastifyBaseLogger,
    'error'
  >
  return { log, errors }
}

function recorder(): { listener: RelayListener; events: RelayEvent[] } {
  const events: RelayEvent[] = []
  return { listener: (event) => events.push(event), events }
}

function presence(address: Address, online = true): RelayEvent {
  return { kind: 'presence.changed', address, username: `user${address.userId}`, online }
}

describe('InProcessRelayBus', () => {
  it('hands an event to the listeners of its address only, before publish returns', async () => {
    const bus = new InProcessRelayBus(collectingLog().log)
    const alice = recorder()
    const bob = recorder()
    await bus.subscribe(primaryAddress(1), alice.listener)
    await bus.subscribe(primaryAddress(2), bob.listener)

    const event = presence(primaryAddress(1))
    const published = bus.publish(event)
    expect(alice.events).toEqual([event])
    expect(bob.events).toEqual([])
    await published

    // Another device of the same user is another address.
    await bus.publish(presence({ userId: 1, deviceId: 2 }))
    expect(alice.events).toHaveLength(1)
  })

  it('delivers once to a listener subscribed twice, and to every listener of the address', async () => {
    const bus = new InProcessRelayBus(collectingLog().log)
    const first = recorder()
    const second = recorder()
    await bus.subscribe(primaryAddress(7), first.listener)
    await bus.subscribe(primaryAddress(7), first.listener)
    await bus.subscribe(primaryAddress(7), second.listener)
    await bus.publish(presence(primaryAddress(7)))
    expect(first.events).toHaveLength(1)
    expect(second.events).toHaveLength(1)
  })

  it('stops delivering to a listener once it unsubscribes, and only to that one', async () => {
    const bus = new InProcessRelayBus(collectingLog().log)
    const first = recorder()
    const second = recorder()
    await bus.subscribe(primaryAddress(3), first.listener)
    await bus.subscribe(primaryAddress(3), second.listener)
    await bus.unsubscribe(primaryAddress(3), first.listener)
    await bus.publish(presence(primaryAddress(3)))
    expect(first.events).toEqual([])
    expect(second.events).toHaveLength(1)

    await bus.unsubscribe(primaryAddress(3), second.listener)
    await bus.publish(presence(primaryAddress(3)))
    expect(second.events).toHaveLength(1)
  })

  it('logs a listener that throws, still delivers to the others, and resolves the publish', async () => {
    const { log, errors } = collectingLog()
    const bus = new InProcessRelayBus(log)
    const after = recorder()
    await bus.subscribe(primaryAddress(4), () => {
      throw new Error('listener bug')
    })
    await bus.subscribe(primaryAddress(4), after.listener)
    await expect(bus.publish(presence(primaryAddress(4)))).resolves.toBeUndefined()
    expect(after.events).toHaveLength(1)
    expect(errors).toEqual([expect.objectContaining({ event: 'presence.changed' })])
  })

  it('delivers nothing after close, even to a listener that subscribes afterwards', async () => {
    const bus = new InProcessRelayBus(collectingLog().log)
    const before = recorder()
    const after = recorder()
    await bus.subscribe(primaryAddress(5), before.listener)
    await bus.close()
    await bus.subscribe(primaryAddress(5), after.listener)
    await bus.publish(presence(primaryAddress(5)))
    expect(before.events).toEqual([])
    expect(after.events).toEqual([])
  })
})
