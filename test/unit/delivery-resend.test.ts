import type { Client } from 'aedes'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { createFrameDelivery } from '../../src/broker/delivery.ts'
import { createSubscriptionIndex } from '../../src/broker/subscription-index.ts'

/*
 * A resend of the frame a client is still being sent (broker/delivery.ts): skipped while chunks of it wait,
 * and sent once more when asked for after its last chunk was handed to the socket but before the writes were
 * done (the client may hold the whole frame by then and be asking again). The client here is a stand-in
 * for Aedes' own: it records what is published and finishes each write when the test says.
 */

const TOPIC = 'pico/den/frame'

function standIn(id: string) {
  const written: string[] = []
  const unfinished: (() => void)[] = []
  const client = {
    id,
    clean: true,
    closed: false,
    subscriptions: { [TOPIC]: { qos: 1 } },
    publish(packet: { payload: Buffer }, done: (err?: Error) => void) {
      written.push(String(packet.payload))
      unfinished.push(() => done())
    },
  }
  /** Finishes the writes handed over so far, in order (each may hand over the next). */
  const finish = () => {
    while (unfinished.length > 0) unfinished.shift()!()
  }
  return { client: client as unknown as Client, written, finish, unfinished }
}

function setUp() {
  const subscribers = createSubscriptionIndex<Client>()
  const delivery = createFrameDelivery({ subscribers, log: pino({ level: 'silent' }) })
  const den = standIn('den')
  subscribers.add(den.client, TOPIC)
  return { delivery, den }
}

const frame = (name: string, n: number) => Array.from({ length: n }, (_, i) => Buffer.from(`${name}${i}`))

describe('a resend of the frame on its way', () => {
  it('is not queued while chunks of it still wait', () => {
    const { delivery, den } = setUp()
    // Six chunks: four go to the socket at once, two wait.
    expect(delivery.sendTo(den.client, TOPIC, frame('a', 6), 'den:1')).toBe(true)
    expect(den.written).toEqual(['a0', 'a1', 'a2', 'a3'])
    expect(delivery.sendTo(den.client, TOPIC, frame('a', 6), 'den:1')).toBe(false)
    den.finish()
    expect(den.written).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'a5'])
    expect(den.unfinished).toHaveLength(0)
  })

  it('goes once more when asked for after its last chunk was handed over, before the writes were done', () => {
    const { delivery, den } = setUp()
    delivery.sendTo(den.client, TOPIC, frame('a', 3), 'den:1')
    expect(den.written).toEqual(['a0', 'a1', 'a2'])
    // The client has all three and asks again, twice, before the broker heard the writes were done.
    expect(delivery.sendTo(den.client, TOPIC, frame('a', 3), 'den:1')).toBe(false)
    expect(delivery.send(TOPIC, frame('a', 3), 'den:1')).toBe(0)
    den.finish()
    expect(den.written).toEqual(['a0', 'a1', 'a2', 'a0', 'a1', 'a2'])
  })

  it('holds one frame at most for a client whose writes never finish', () => {
    const { delivery, den } = setUp()
    delivery.sendTo(den.client, TOPIC, frame('a', 3), 'den:1')
    for (let i = 0; i < 100; i++) delivery.sendTo(den.client, TOPIC, frame('a', 3), 'den:1')
    expect(den.written).toHaveLength(3)
    // The three in flight, and nothing more waiting.
    expect(delivery.queuedChunks()).toBe(3)
  })

  it('is dropped when a newer frame takes its place', () => {
    const { delivery, den } = setUp()
    delivery.sendTo(den.client, TOPIC, frame('a', 3), 'den:1')
    delivery.sendTo(den.client, TOPIC, frame('a', 3), 'den:1')
    // A new picture (untagged, as a finished job sends it) replaces the resend asked for.
    delivery.send(TOPIC, frame('b', 2))
    den.finish()
    expect(den.written).toEqual(['a0', 'a1', 'a2', 'b0', 'b1'])
  })
})
