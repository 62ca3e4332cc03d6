import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { connectAsync, type MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import {
  connectPacket,
  oversizedPublishHeader,
  remainingLength,
  subscribePacket,
} from '../support/raw-mqtt.ts'

/*
 * The embedded broker attacked over raw sockets while a display that behaves keeps working (issue 10,
 * "Limits that hold under abuse" and "Found by attacking it"): garbage, truncated and half-sent packets, a
 * 200 MB declared length trickled, a QoS 2 flood without PUBREL, sockets that never CONNECT, 500 half-open
 * connections and a `get` flood. Each attack must end with the broker closing the attacker's socket; the
 * healthy display must get its frames; memory must stay bounded.
 */

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

/** Resolves once `n` log lines, logged already or still to come, match. */
function lines(bridge: TestBridge, match: (line: Record<string, unknown>) => boolean, n: number) {
  let seen = 0
  return bridge.line((line) => match(line) && ++seen >= n)
}

const anyClient = (bridge: TestBridge, clientId?: string) =>
  connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0, ...(clientId && { clientId }) })

/** The SUBACK's return codes; mqtt.js rejects a SUBACK that refuses a filter, with the packet on the error. */
async function grants(client: MqttClient, filters: string[]): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filters, { qos: 1 })).map((g) => g.qos)
  } catch (err) {
    const codes = (err as { packet?: { granted?: number[] } }).packet?.granted
    if (codes) return codes
    throw err
  }
}

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

  it('drops a socket that sends no CONNECT within MQTT_CONNECT_TIMEOUT', async () => {
    const bridge = await startBridge({ MQTT_CONNECT_TIMEOUT: 1 })
    try {
      const started = performance.now()
      const silent = await rawSocket(bridge.mqttPort)
      await closed(silent)
      // Aedes on its own would wait 30 s.
      expect(performance.now() - started).toBeLessThan(10_000)
    } finally {
      await bridge.stop()
    }
  }, 15_000)

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

describe('floods that ask the bridge for work', () => {
  it('answers gets past GET_BURST with nothing until GET_INTERVAL has passed', async () => {
    const bridge = await startBridge({ GET_BURST: 3, GET_INTERVAL: 600 })
    try {
      const display = await connectDevice(bridge.mqttUrl, 'asker')
      await display.prompt('a pier')
      await display.waitForStatus((st) => st.state === 'done')
      for (let i = 0; i < 10; i++) await display.publish('get')
      const isGet = (l: Record<string, unknown>) =>
        l.deviceId === 'asker' &&
        (l.msg === 'last frame requested' || l.msg === 'get ignored: asked too often')
      await lines(bridge, isGet, 10)
      const answered = bridge.logs.filter((l) => isGet(l) && l.msg === 'last frame requested')
      expect(answered).toHaveLength(3)
      // The first one answered is a whole frame to the asker, after the one it made.
      await display.waitForFrames(2)
      await display.close()
    } finally {
      await bridge.stop()
    }
  })

  it('queues a frame once for a client that does not read it, however many gets ask for it again', async () => {
    // 8 MB, more than the socket buffers of a client that never reads can take: the frame stays on its way.
    const bridge = await startBridge({ GET_BURST: 1000, TARGET_WIDTH: 2048, TARGET_HEIGHT: 2048 })
    try {
      const maker = await connectDevice(bridge.mqttUrl, 'big')
      await maker.prompt('a wide sea')
      // Done: stored, so there is a last frame to send again (the frame reaches the display before that).
      await maker.waitForStatus((st) => st.state === 'done')
      await maker.close()
      // Subscribes and never reads a byte.
      const mark = bridge.logs.length
      const frozen = await rawSocket(bridge.mqttPort)
      frozen.pause()
      frozen.write(Buffer.concat([connectPacket('frozen'), subscribePacket('pico/big/frame', 0)]))
      await bridge.line(
        (l) => l.msg === 'frame topic subscribed; sending the last frame' && l.clientId === 'frozen',
      )
      const asker = await anyClient(bridge)
      // Gets from a client that does not watch the frame (the copy goes to every subscriber), then from the
      // frozen client itself (the copy goes to the asker alone).
      for (let i = 0; i < 50; i++) await asker.publishAsync('pico/big/get', '', { qos: 1 })
      for (let i = 0; i < 20; i++) frozen.write(publishPacket('pico/big/get', Buffer.alloc(0), 0))
      // Each get and the subscription hand the frame to delivery once: 71 times, one copy queued in all.
      const queued = (l: Record<string, unknown>) => l.deviceId === 'big' && l.msg === 'frame queued'
      await lines(bridge, (l) => bridge.logs.indexOf(l) >= mark && queued(l), 71)
      const copies = bridge.logs
        .slice(mark)
        .filter(queued)
        .map((l) => l.clients as number)
      expect(copies).toHaveLength(71)
      expect(copies.reduce((a, b) => a + b, 0)).toBe(1)
      const asked = (l: Record<string, unknown>) => l.deviceId === 'big' && l.msg === 'last frame requested'
      await lines(bridge, asked, 70)
      expect(bridge.logs.filter((l) => asked(l) && l.clientId === 'frozen')).toHaveLength(20)
      await asker.endAsync()
      frozen.destroy()
    } finally {
      await bridge.stop()
    }
  }, 60_000)

  it('limits prompts per connection and per address, over all the ids they use (RATE_LIMIT_SENDER)', async () => {
    const bridge = await startBridge({ RATE_LIMIT: 30, RATE_LIMIT_SENDER: 5 })
    try {
      const queued = () => bridge.logs.filter((l) => l.msg === 'prompt queued').length
      const refused = (from: string) =>
        bridge.logs.filter(
          (l) => l.msg === 'prompt refused' && l.code === 'E_RATE_LIMITED' && String(l.reason).includes(from),
        ).length
      // Every status the bridge publishes, on every id.
      const watcher = await anyClient(bridge)
      const statuses: string[] = []
      watcher.on('message', (topic, payload) => {
        if (topic.endsWith('/status')) statuses.push(`${topic} ${JSON.parse(String(payload)).state}`)
      })
      await watcher.subscribeAsync('pico/+/status', { qos: 1 })
      const rotor = await anyClient(bridge, 'rotor')
      // 40 invented ids, one prompt each: the per-device limit alone lets every one through.
      for (let i = 0; i < 40; i++) await rotor.publishAsync(`pico/rotated-${i}/prompt`, 'a cat', { qos: 1 })
      expect([queued(), refused('this connection')]).toEqual([5, 35])
      // Another connection from the same address is counted with the first; malformed prompts count too.
      const second = await anyClient(bridge, 'second')
      for (let i = 0; i < 10; i++) await second.publishAsync(`pico/bad-${i}/prompt`, '{', { qos: 1 })
      await second.publishAsync('pico/fresh/prompt', 'a dog', { qos: 1 })
      // Its first five had their connection's budget and not the address's; the rest had neither.
      expect([queued(), refused('this address'), refused('this connection')]).toEqual([5, 5, 41])
      // A marker round trip: every status the bridge sent is in by now.
      await watcher.subscribeAsync('free/marker', { qos: 1 })
      const marked = new Promise((resolve) => watcher.on('message', (t) => t === 'free/marker' && resolve(t)))
      await rotor.publishAsync('free/marker', 'm', { qos: 1 })
      await marked
      // The refused ones were answered with nothing: no retained error on each invented id.
      const errors = statuses.filter((s) => s.endsWith(' error'))
      expect(errors).toEqual([])
      expect(new Set(statuses.map((s) => s.split(' ')[0])).size).toBeLessThanOrEqual(5)
      await Promise.all([rotor.endAsync(), second.endAsync(), watcher.endAsync()])
    } finally {
      await bridge.stop()
    }
  })
})

describe('what a client may make the broker keep', () => {
  it('answers a message for an id that breaks the device-id rule with no status, only a log line', async () => {
    const bridge = await startBridge()
    try {
      const watcher = await anyClient(bridge)
      const seen: string[] = []
      watcher.on('message', (topic) => seen.push(topic))
      await watcher.subscribeAsync(['pico/#', 'free/marker'], { qos: 1 })
      const sender = await anyClient(bridge)
      for (const id of ['z'.repeat(65), 'a b', 'bad.id', 'ünï'])
        await sender.publishAsync(`pico/${id}/prompt`, 'a cat', { qos: 1 })
      const marked = new Promise((resolve) => watcher.on('message', (t) => t === 'free/marker' && resolve(t)))
      await sender.publishAsync('free/marker', 'm', { qos: 1 })
      await marked
      // The prompts themselves, and nothing the bridge said back about them.
      expect(seen.filter((t) => !t.endsWith('/prompt'))).toEqual(['pico/bridge/state', 'free/marker'])
      await lines(bridge, (l) => l.msg === 'message for an invalid device id ignored', 4)
      expect(bridge.logs.some((l) => l.msg === 'prompt queued')).toBe(false)
      await Promise.all([watcher.endAsync(), sender.endAsync()])
    } finally {
      await bridge.stop()
    }
  })

  it('refuses a will on a bridge-owned topic with code 5, on the open broker too', async () => {
    const bridge = await startBridge()
    try {
      const will = (topic: string) => ({
        protocolVersion: 4 as const,
        reconnectPeriod: 0,
        will: { topic, payload: Buffer.from('{"state":"offline"}'), qos: 1 as const, retain: true },
      })
      for (const topic of ['pico/bridge/state', 'pico/kitchen/status', 'pico/kitchen/frame']) {
        const err = await connectAsync(bridge.mqttUrl, will(topic)).catch((e: { code?: number }) => e)
        expect([topic, (err as { code?: number }).code]).toEqual([topic, 5])
      }
      // A will on a topic a client may write is kept, and the bridge's state is still its own.
      const fine = await connectAsync(bridge.mqttUrl, will('free/gone'))
      fine.end(true)
      const reader = await anyClient(bridge)
      const state = new Promise<string>((resolve) => reader.once('message', (_t, p) => resolve(String(p))))
      await reader.subscribeAsync('pico/bridge/state', { qos: 1 })
      expect(JSON.parse(await state)).toEqual({ state: 'online' })
      await reader.endAsync()
    } finally {
      await bridge.stop()
    }
  })

  it('keeps client retains within MQTT_MAX_RETAINED and MQTT_MAX_RETAINED_BYTES, and delivers the rest unkept', async () => {
    const bridge = await startBridge({ MQTT_MAX_RETAINED: 3, MQTT_MAX_RETAINED_BYTES: 4096 })
    try {
      const writer = await anyClient(bridge)
      for (let i = 0; i < 6; i++) await writer.publishAsync(`free/count/${i}`, 'x', { qos: 1, retain: true })
      // An emptied retain makes room; a big one does not fit the bytes.
      await writer.publishAsync('free/count/0', '', { qos: 1, retain: true })
      await writer.publishAsync('free/count/big', Buffer.alloc(5000, 1), { qos: 1, retain: true })
      // The topic is kept with the message and counts as well.
      await writer.publishAsync(`free/count/${'t'.repeat(5000)}`, 'z', { qos: 1, retain: true })
      await writer.publishAsync('free/count/late', 'y', { qos: 1, retain: true })
      await bridge.line((l) => l.msg === 'MQTT retain not kept: store full')
      const reader = await anyClient(bridge)
      const got: string[] = []
      reader.on('message', (topic) => got.push(topic))
      await reader.subscribeAsync(['free/count/#', 'marker'], { qos: 1 })
      const marked = nextMessage(reader)
      await writer.publishAsync('marker', 'm', { qos: 1 })
      await marked
      expect(got.sort()).toEqual(['free/count/1', 'free/count/2', 'free/count/late', 'marker'])
      await Promise.all([reader.endAsync(), writer.endAsync()])
    } finally {
      await bridge.stop()
    }
  })

  it('grants nothing (0x80) past MQTT_MAX_SUBSCRIPTIONS, and refuses a topic deeper than MQTT_MAX_TOPIC_LEVELS', async () => {
    const bridge = await startBridge({ MQTT_MAX_SUBSCRIPTIONS: 4, MQTT_MAX_TOPIC_LEVELS: 5 })
    try {
      const client = await anyClient(bridge)
      const filters = Array.from({ length: 6 }, (_, i) => `free/sub/${i}`)
      expect(await grants(client, filters)).toEqual([1, 1, 1, 1, 128, 128])
      // One given up makes room for one more.
      await client.unsubscribeAsync('free/sub/0')
      expect(await grants(client, ['free/sub/6', 'free/sub/7'])).toEqual([1, 128])
      await bridge.line((l) => l.msg === 'MQTT subscription refused: too many' && l.limit === 4)
      await client.endAsync()
      // Their bytes too: 256 for each filter allowed (1 KB here), however they are shared out.
      const wordy = await anyClient(bridge)
      const long = (c: string) => `free/${c.repeat(600)}`
      expect(await grants(wordy, [long('f'), long('g'), 'free/short'])).toEqual([1, 128, 1])
      await bridge.line((l) => l.msg === 'MQTT subscription refused: filters too long' && l.limit === 1024)
      await wordy.unsubscribeAsync(long('f'))
      expect(await grants(wordy, [long('g')])).toEqual([1])
      await wordy.endAsync()
      // Aedes closes the connection of a client whose topic has too many levels.
      const deep = await anyClient(bridge)
      const gone = new Promise<void>((resolve) => deep.once('close', () => resolve()))
      deep.subscribe('a/b/c/d/e/f/g')
      await gone
      deep.end(true)
    } finally {
      await bridge.stop()
    }
  })

  it('drops the connection that holds most of MQTT_PARTIAL_BYTES in half-sent packets, and only that one', async () => {
    const settings = { MQTT_MAX_PACKET: 32_768, MQTT_PARTIAL_BYTES: 65_536, MQTT_PACKET_TIMEOUT: 600 }
    const bridge = await startBridge(settings)
    try {
      const part = (size: number) => {
        const packet = publishPacket('free/part', Buffer.alloc(size, 1), 0)
        return packet.subarray(0, packet.length - 1)
      }
      const [small, mid, big] = await Promise.all([1, 2, 3].map(() => rawSocket(bridge.mqttPort)))
      for (const [socket, id, size] of [
        [small!, 'small', 10_000],
        [mid!, 'mid', 30_000],
        [big!, 'big', 31_000],
      ] as const) {
        await connected(socket, id)
        await bridge.line((l) => l.msg === 'client connected' && l.clientId === id)
        socket.write(part(size))
      }
      await closed(big!)
      const line = await bridge.line(
        (l) => l.msg === 'MQTT connection dropped: a packet held too long or too much',
      )
      expect(line).toMatchObject({ reason: 'over budget' })
      // 71 KB held: the one holding most went, and the other two are still connected.
      expect([small!.destroyed, mid!.destroyed]).toEqual([false, false])
      small!.destroy()
      mid!.destroy()
    } finally {
      await bridge.stop()
    }
  })
})
