import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { connectAsync, type MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { connectPacket, oversizedPublishHeader } from '../support/raw-mqtt.ts'

/*
 * The embedded broker attacked over raw sockets while a display that behaves keeps working (issue 10,
 * "Limits that hold under abuse" and "Found by attacking it"): garbage, truncated and half-sent packets, a
 * 200 MB declared length trickled, a QoS 2 flood without PUBREL, sockets that never CONNECT, 500 half-open
 * connections and a `get` flood. Each attack must end with the broker closing the attacker's socket; the
 * healthy display must get its frames; memory must stay bounded.
 */

function remainingLength(n: number): Buffer {
  const bytes: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    bytes.push(byte)
  } while (n > 0)
  return Buffer.from(bytes)
}

function publishPacket(topic: string, payload: Buffer, qos: 0 | 1 | 2, packetId = 1): Buffer {
  const t = Buffer.from(topic)
  const head = Buffer.alloc(2)
  head.writeUInt16BE(t.length)
  const id = Buffer.alloc(2)
  id.writeUInt16BE(packetId)
  const body = Buffer.concat([head, t, qos > 0 ? id : Buffer.alloc(0), payload])
  return Buffer.concat([Buffer.from([0x30 | (qos << 1)]), remainingLength(body.length), body])
}

async function rawSocket(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port })
  // The broker resets some of these; that is the point.
  socket.on('error', () => undefined)
  await once(socket, 'connect')
  return socket
}

/** Resolves once the broker has closed the socket. */
const closed = (socket: Socket): Promise<void> =>
  socket.destroyed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()))

/** Reads until CONNACK arrived (4 bytes, 0x20 0x02). */
async function connected(socket: Socket, clientId: string): Promise<void> {
  socket.write(connectPacket(clientId))
  let seen = Buffer.alloc(0)
  await new Promise<void>((resolve) => {
    const onData = (data: Buffer) => {
      seen = Buffer.concat([seen, data])
      if (seen.length >= 4 && seen[0] === 0x20) {
        socket.off('data', onData)
        resolve()
      }
    }
    socket.on('data', onData)
  })
}

const nextMessage = (client: MqttClient) =>
  new Promise<void>((resolve) => client.once('message', () => resolve()))

const held = () => {
  const m = process.memoryUsage()
  return m.heapUsed + m.external + m.arrayBuffers
}

describe('the embedded broker under attack', () => {
  let bridge: TestBridge
  let display: TestDevice
  let memoryBefore = 0

  beforeAll(async () => {
    bridge = await startBridge({ MQTT_MAX_PACKET: 262_144 })
    display = await connectDevice(bridge.mqttUrl, 'healthy')
    await display.prompt('a calm lake')
    await display.waitForFrames(1)
    memoryBefore = held()
  })
  afterAll(async () => {
    await display?.close()
    await bridge?.stop()
  })

  it('survives every attack at once while the healthy display gets its frames', async () => {
    const port = bridge.mqttPort
    const attacks: Promise<unknown>[] = []

    // Garbage: bytes that are no MQTT packet at all.
    for (let i = 0; i < 20; i++) {
      attacks.push(
        rawSocket(port).then((s) => {
          s.write(Buffer.from([0xf0 + (i % 16), 0xff, 0xff, 0xff, 0xff, 0x7f, ...Buffer.alloc(64, i)]))
          return closed(s)
        }),
      )
    }
    // Truncated: a CONNECT, then all but the last byte of a 200 KB PUBLISH, never finished (keepalive 0).
    for (let i = 0; i < 20; i++) {
      attacks.push(
        rawSocket(port).then(async (s) => {
          await connected(s, `trunc-${i}`)
          const packet = publishPacket('pico/x/info', Buffer.alloc(200_000, 7), 0)
          s.write(packet.subarray(0, packet.length - 1))
          return closed(s)
        }),
      )
    }
    // 200 MB announced, then trickled a byte at a time.
    attacks.push(
      rawSocket(port).then(async (s) => {
        await connected(s, 'trickle')
        s.write(oversizedPublishHeader(200 * 1024 * 1024))
        const trickle = setInterval(() => s.writable && s.write(Buffer.from([0x41])), 5)
        await closed(s)
        clearInterval(trickle)
      }),
    )
    // QoS 2 without PUBREL: fresh ids until the broker has had enough.
    attacks.push(
      rawSocket(port).then(async (s) => {
        await connected(s, 'qos2-flood')
        const payload = Buffer.alloc(60_000, 1)
        for (let id = 1; id <= 200 && !s.destroyed; id++) s.write(publishPacket('abuse/qos2', payload, 2, id))
        return closed(s)
      }),
    )
    // Sockets that never send CONNECT.
    for (let i = 0; i < 10; i++) attacks.push(rawSocket(port).then(closed))
    // 500 half-open connections: one byte of a packet each, then nothing.
    for (let i = 0; i < 500; i++) {
      attacks.push(
        rawSocket(port).then((s) => {
          s.write(Buffer.from([0x10]))
          return closed(s)
        }),
      )
    }

    // A get flood from a client that watches the display's frames: it must not be sent one frame per get.
    const flooder = await connectAsync(bridge.mqttUrl, {
      protocolVersion: 4,
      reconnectPeriod: 0,
      clientId: 'flooder',
    })
    let floodFrames = 0
    flooder.on('message', () => floodFrames++)
    await flooder.subscribeAsync('pico/healthy/frame', { qos: 0 })
    const gets = []
    for (let i = 0; i < 2000; i++) gets.push(flooder.publishAsync('pico/healthy/get', '', { qos: 0 }))
    await Promise.all(gets)

    // Meanwhile, the display that behaves.
    await display.prompt('a boat on the lake')
    const frames = await display.waitForFrames(2)
    expect(frames).toHaveLength(2)

    await Promise.all(attacks)
    // A round trip after the flood: every get before it has been handled.
    await flooder.publishAsync('pico/healthy/info', '{}', { qos: 1 })
    await flooder.endAsync()
    // One frame on subscribing plus the get bucket's burst (3) at most, each in 12 bands (one per chunk).
    const chunksPerFrame = display.chunks.length / display.frames.length
    expect(floodFrames / chunksPerFrame).toBeLessThanOrEqual(5)

    // And after all that, it still serves.
    await display.prompt('a heron')
    await display.waitForFrames(3)
    const lines = bridge.logs.filter((l) => typeof l.msg === 'string')
    expect(lines.some((l) => l.msg === 'MQTT packet too large')).toBe(true)
    expect(lines.some((l) => l.msg === 'MQTT connection dropped: a packet held too long or too much')).toBe(
      true,
    )
    // Generous: 500 connections and the attackers' buffers are gone; what is left is the heap's own slack.
    expect(held() - memoryBefore).toBeLessThan(256 * 1024 * 1024)
  }, 60_000)
})

describe('connection and client limits', () => {
  it('refuses connections past MQTT_MAX_CONNECTIONS at once and takes new ones when some close', async () => {
    const bridge = await startBridge({ MQTT_MAX_CONNECTIONS: 3 })
    try {
      const kept = await Promise.all([1, 2, 3].map(() => rawSocket(bridge.mqttPort)))
      await Promise.all(kept.map((s, i) => connected(s, `kept-${i}`)))
      const refused = await rawSocket(bridge.mqttPort)
      await closed(refused)
      await bridge.line((l) => l.msg === 'MQTT connection refused: MQTT_MAX_CONNECTIONS reached')
      kept[0]!.destroy()
      await bridge.line((l) => l.msg === 'client disconnected')
      const next = await rawSocket(bridge.mqttPort)
      await connected(next, 'next')
      for (const s of [...kept, next]) s.destroy()
    } finally {
      await bridge.stop()
    }
  })

  it('logs a client-id takeover with both addresses', async () => {
    const bridge = await startBridge()
    try {
      const first = await connectDevice(bridge.mqttUrl, 'kitchen', { clientId: 'kitchen' })
      const second = await connectDevice(bridge.mqttUrl, 'kitchen', { clientId: 'kitchen' })
      const line = await bridge.line((l) => l.msg === 'MQTT client id taken over')
      expect(line).toMatchObject({ clientId: 'kitchen', remote: '127.0.0.1', previousRemote: '127.0.0.1' })
      await second.close()
      await first.close()
    } finally {
      await bridge.stop()
    }
  })

  it("shows nobody Aedes' $SYS client lists and subscriptions", async () => {
    const bridge = await startBridge()
    try {
      const watcher = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      const seen: string[] = []
      watcher.on('message', (topic) => seen.push(topic))
      await watcher.subscribeAsync(['$SYS/#', 'marker'], { qos: 1 })
      const other = await connectDevice(bridge.mqttUrl, 'other')
      const marked = nextMessage(watcher)
      await watcher.publishAsync('marker', 'x', { qos: 1 })
      await marked
      expect(seen).toEqual(['marker'])
      await other.close()
      await watcher.endAsync()
    } finally {
      await bridge.stop()
    }
  })

  it('drops the retain flag on a topic the bridge reads', async () => {
    const bridge = await startBridge()
    try {
      const writer = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      await writer.publishAsync('pico/lake/info', '{"panel":"x"}', { qos: 1, retain: true })
      await writer.publishAsync('free/topic', 'kept', { qos: 1, retain: true })
      const reader = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      const got: string[] = []
      reader.on('message', (topic) => got.push(topic))
      const kept = nextMessage(reader)
      await reader.subscribeAsync(['pico/lake/info', 'free/topic'], { qos: 1 })
      await kept
      // The retained `free/topic` came; a retained `pico/lake/info` would have come before its SUBACK too.
      expect(got).toEqual(['free/topic'])
      await reader.endAsync()
      await writer.endAsync()
    } finally {
      await bridge.stop()
    }
  })
})
