import { connect, type MqttClient } from 'mqtt'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTopicOutbox } from '../../src/broker/external-outbox.ts'
import { configSchema } from '../../src/config/schema.ts'
import { encodePanelFrame, panelFromConfig } from '../../src/image/panel.ts'
import { decodeHeader } from '../../src/protocol/frame.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * The external adapter's frame outbox (src/broker/external-outbox.ts) with a real mqtt.js client on a real
 * Mosquitto: a frame goes out whole, in order, at QoS 1; a newer frame replaces only what has not gone out,
 * and a chunk counts as queued until Mosquitto acknowledged it.
 */

const TOPIC = 'pico/wall/frame'
const panel = panelFromConfig(configSchema.parse({}))
const frame = (id: number) =>
  encodePanelFrame(Buffer.alloc(panel.width * panel.height * 2, id), panel, { frameId: id, preview: false })

describe('the external outbox on Mosquitto', () => {
  let mosquitto: RunningMosquitto
  let bridge: MqttClient
  let display: MqttClient

  beforeAll(async () => {
    mosquitto = await startMosquitto('allow_anonymous true')
    bridge = connect(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'outbox-bridge' })
    display = connect(mosquitto.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'outbox-display' })
    await Promise.all([bridge, display].map((c) => new Promise((resolve) => c.once('connect', resolve))))
    await display.subscribeAsync(TOPIC, { qos: 1 })
  })
  afterAll(async () => {
    await Promise.all([bridge, display].map((c) => c?.endAsync(true)))
    await mosquitto?.stop()
  })

  it('sends a frame whole without waiting between chunks; a newer frame replaces only what still waits', async () => {
    let handedOver = 0
    const acknowledged: number[] = []
    let allAcknowledged: () => void = () => {}
    const drained = new Promise<void>((resolve) => {
      allAcknowledged = resolve
    })
    const outbox = createTopicOutbox({
      publish(topic, payload, done) {
        handedOver++
        bridge.publish(topic, payload, { qos: 1 }, (err) => {
          acknowledged.push(decodeHeader(payload).frameId)
          done(err)
          if (outbox.queuedChunks() === 0) allAcknowledged()
        })
      },
      connected: () => bridge.connected,
      log: pino({ level: 'silent' }),
    })
    const received: string[] = []
    const [f1, f2, f3, f4] = [frame(1), frame(2), frame(3), frame(4)]
    const chunkCount = f1.length
    const allReceived = new Promise<void>((resolve) =>
      display.on('message', (_topic, payload) => {
        const h = decodeHeader(payload)
        received.push(`${h.frameId}:${h.chunkIndex}`)
        if (received.length === 2 * chunkCount) resolve()
      }),
    )

    expect(outbox.send(TOPIC, f1, 'one')).toBe(true)
    // Every chunk of the first frame is with mqtt.js at once; none can have been acknowledged yet.
    expect(handedOver).toBe(chunkCount)
    expect(outbox.queuedChunks()).toBe(chunkCount)
    // Sent before any acknowledgement came back: each newer one replaces the one that waits.
    expect(outbox.send(TOPIC, f2, 'two')).toBe(true)
    expect(outbox.send(TOPIC, f3, 'three')).toBe(true)
    expect(outbox.send(TOPIC, f4, 'four')).toBe(true)
    expect(outbox.send(TOPIC, f4, 'four')).toBe(false)
    expect(handedOver).toBe(chunkCount)
    expect(outbox.queuedChunks()).toBe(2 * chunkCount)

    await Promise.all([allReceived, drained])
    const indices = Array.from({ length: chunkCount }, (_, i) => i)
    expect(received).toEqual([...indices.map((i) => `1:${i}`), ...indices.map((i) => `4:${i}`)])
    expect(acknowledged).toEqual([...indices.map(() => 1), ...indices.map(() => 4)])
    expect(outbox.queuedChunks()).toBe(0)
    expect(outbox.topics()).toEqual([])
  })

  it('holds chunks while the link is down and sends them once resumed', async () => {
    let up = false
    let handedOver = 0
    const outbox = createTopicOutbox({
      publish(topic, payload, done) {
        handedOver++
        bridge.publish(topic, payload, { qos: 1 }, done)
      },
      connected: () => up && bridge.connected,
      log: pino({ level: 'silent' }),
    })
    const f5 = frame(5)
    const got: number[] = []
    const whole = new Promise<void>((resolve) =>
      display.on('message', (_topic, payload) => {
        const h = decodeHeader(payload)
        if (h.frameId !== 5) return
        got.push(h.chunkIndex)
        if (got.length === f5.length) resolve()
      }),
    )
    outbox.send(TOPIC, f5)
    expect(handedOver).toBe(0)
    expect(outbox.queuedChunks()).toBe(f5.length)
    up = true
    outbox.resume()
    expect(handedOver).toBe(f5.length)
    await whole
    expect(got).toEqual(f5.map((_, i) => i))
  })
})
