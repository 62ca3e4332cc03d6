import { randomBytes } from 'node:crypto'
import { connect, type MqttClient } from 'mqtt'
import { pino } from 'pino'
import { createBrokerAccess } from '../src/broker/access.ts'
import { createEmbeddedBroker } from '../src/broker/embedded.ts'
import { createExternalBroker } from '../src/broker/external.ts'
import type { BrokerPort } from '../src/broker/port.ts'
import { systemClock } from '../src/clock.ts'
import { configSchema } from '../src/config/schema.ts'
import { encodePanelFrame, panelFromConfig } from '../src/image/panel.ts'
import { createTopics } from '../src/protocol/topics.ts'
import { startMosquitto } from '../test/support/mosquitto.ts'
import { machineInfo, table } from './lib.ts'

/*
 * Fan-out of frames at QoS 1 to 50 displays, 20 frames each (issue 11's benchmark), through (a) the embedded
 * broker's own delivery, (b) a bridge's external adapter on Mosquitto, (c) Mosquitto with one plain mqtt.js
 * publisher of the same bytes. Each display is an mqtt.js client at MQTT 3.1.1, QoS 1, clean session. The
 * clock runs from the first frame handed over to the last chunk received by the last display; medians of 3.
 * Run: node bench/fanout.ts
 */

const DISPLAYS = 50
const FRAMES = 20
const RUNS = 3
const PANEL = panelFromConfig(configSchema.parse({}))
const log = pino({ level: 'silent' })
const topics = createTopics('pico')

const frames = Array.from({ length: FRAMES }, (_, i) =>
  encodePanelFrame(randomBytes(240 * 240 * 2), PANEL, { frameId: i + 1, preview: false }),
)
const chunksPerFrame = frames[0]!.length
const bytesPerDisplay = frames.reduce((n, f) => n + f.reduce((m, c) => m + c.length, 0), 0)

/** Hands frame `k` for display `i` to the path under test. */
type SendFrame = (i: number, k: number) => void

/*
 * Each display gets its next frame once it has the whole previous one, as a display does when pictures
 * follow one another; both adapters replace a frame still waiting for a display with a newer one, so
 * sending all 20 at once would measure the dropping instead.
 */
async function timed(url: string, send: SendFrame): Promise<number> {
  const clients: MqttClient[] = []
  const done: Promise<void>[] = []
  for (let i = 0; i < DISPLAYS; i++) {
    const client = connect(url, { protocolVersion: 4, clean: true, reconnectPeriod: 0, clientId: `fan-${i}` })
    await client.subscribeAsync(topics.device(`d${i}`, 'frame'), { qos: 1 })
    let got = 0
    done.push(
      new Promise((resolve) =>
        client.on('message', () => {
          got++
          if (got === FRAMES * chunksPerFrame) resolve()
          else if (got % chunksPerFrame === 0) send(i, got / chunksPerFrame)
        }),
      ),
    )
    clients.push(client)
  }
  const started = performance.now()
  for (let i = 0; i < DISPLAYS; i++) send(i, 0)
  await Promise.all(done)
  const ms = performance.now() - started
  await Promise.all(clients.map((c) => c.endAsync(true)))
  return ms
}

const portSend =
  (broker: BrokerPort): SendFrame =>
  (i, k) => {
    broker.sendFrame(`d${i}`, frames[k]!)
  }

async function embedded(): Promise<number> {
  const access = createBrokerAccess(
    { baseTopic: 'pico', passwordFile: undefined, aclFile: undefined, allowAnonymous: true, adminUsers: [] },
    { log },
  )
  const broker = createEmbeddedBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 262_144 } as never, {
    log,
    topics,
    access,
  })
  await broker.open({ inbound: async () => {}, frameSubscribed() {} })
  const { port } = await broker.listen()
  try {
    return await timed(`mqtt://127.0.0.1:${port}`, portSend(broker))
  } finally {
    await broker.close()
  }
}

async function external(url: string): Promise<number> {
  const broker = createExternalBroker(
    { url, clientId: `fan-bridge-${randomBytes(3).toString('hex')}`, shareGroup: 'fan' },
    { log, topics, clock: systemClock },
  )
  await broker.open({ inbound: async () => {}, frameSubscribed() {} })
  await broker.listen()
  try {
    return await timed(url, portSend(broker))
  } finally {
    await broker.close()
  }
}

async function plain(url: string): Promise<number> {
  const publisher = connect(url, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'fan-publisher' })
  await new Promise((resolve) => publisher.once('connect', resolve))
  try {
    return await timed(url, (i, k) => {
      for (const chunk of frames[k]!)
        publisher.publish(topics.device(`d${i}`, 'frame'), chunk, { qos: 1 }, (err) => {
          if (err) throw err
        })
    })
  } finally {
    await publisher.endAsync()
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const mosquitto = await startMosquitto('allow_anonymous true')
const results: Record<'a' | 'b' | 'c', number[]> = { a: [], b: [], c: [] }
try {
  for (let run = 0; run < RUNS; run++) {
    results.c.push(await plain(mosquitto.url))
    results.a.push(await embedded())
    results.b.push(await external(mosquitto.url))
  }
} finally {
  await mosquitto.stop()
}

const totalFrames = DISPLAYS * FRAMES
const totalMb = (DISPLAYS * bytesPerDisplay) / 1e6
const c = median(results.c)
const row = (name: string, xs: number[]) => {
  const m = median(xs)
  return [
    name,
    Math.round(m),
    Math.round(totalFrames / (m / 1000)),
    (totalMb / (m / 1000)).toFixed(1),
    (c / m).toFixed(2),
  ]
}
process.stdout.write(`${await machineInfo()}\n`)
process.stdout.write(
  `method: ${DISPLAYS} mqtt.js displays (3.1.1, QoS 1, clean) x ${FRAMES} frames of ${chunksPerFrame} chunks ` +
    `(${(bytesPerDisplay / FRAMES / 1000).toFixed(1)} kB a frame), all in one process on loopback; time from the ` +
    `first frame handed over to the last chunk received; median of ${RUNS}; ratio = (c) time / this time\n`,
)
process.stdout.write(
  `${table(
    ['path', 'ms', 'frames/s', 'MB/s', 'x of (c)'],
    [
      row('(a) embedded broker delivery', results.a),
      row('(b) bridge on Mosquitto (MQTT_URL)', results.b),
      row('(c) Mosquitto, one plain publisher', results.c),
    ],
  )}\n`,
)
