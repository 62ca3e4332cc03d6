import { randomBytes } from 'node:crypto'
import { pathToFileURL } from 'node:url'
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
import { type Bench, machineInfo, table } from './lib.ts'

/*
 * Fan-out of frames at QoS 1 to 50 displays, 20 frames each (issue 11's benchmark), through (a) the embedded
 * broker's own delivery, (b) a bridge's external adapter on Mosquitto, (c) Mosquitto with one plain mqtt.js
 * publisher of the same bytes. Each display is an mqtt.js client at MQTT 3.1.1, QoS 1, clean session. The
 * clock runs from the first frame handed over to the last chunk received by the last display. The three
 * paths take turns, in a different order each round, so a busy moment of the machine falls on each alike;
 * medians of the rounds. Run alone: node bench/fanout.ts [--quick]
 */

const DISPLAYS = 50
const FRAMES = 20
const log = pino({ level: 'silent' })
const topics = createTopics('pico')

/** The frames every display gets, made when the bench runs (not when bench/run.ts loads this file). */
interface Load {
  frames: Buffer[][]
  chunksPerFrame: number
  bytesPerDisplay: number
}

function makeLoad(): Load {
  const panel = panelFromConfig(configSchema.parse({}))
  const frames = Array.from({ length: FRAMES }, (_, i) =>
    encodePanelFrame(randomBytes(240 * 240 * 2), panel, { frameId: i + 1, preview: false }),
  )
  return {
    frames,
    chunksPerFrame: frames[0]!.length,
    bytesPerDisplay: frames.reduce((n, f) => n + f.reduce((m, c) => m + c.length, 0), 0),
  }
}

/** Hands frame `k` for display `i` to the path under test. */
type SendFrame = (i: number, k: number) => void

/*
 * Each display gets its next frame once it has the whole previous one, as a display does when pictures
 * follow one another; both adapters replace a frame still waiting for a display with a newer one, so
 * sending all 20 at once would measure the dropping instead.
 */
async function timed(url: string, load: Load, send: SendFrame): Promise<number> {
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
          if (got === FRAMES * load.chunksPerFrame) resolve()
          else if (got % load.chunksPerFrame === 0) send(i, got / load.chunksPerFrame)
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
  (broker: BrokerPort, load: Load): SendFrame =>
  (i, k) => {
    broker.sendFrame(`d${i}`, load.frames[k]!)
  }

async function embedded(load: Load): Promise<number> {
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
    return await timed(`mqtt://127.0.0.1:${port}`, load, portSend(broker, load))
  } finally {
    await broker.close()
  }
}

async function external(url: string, load: Load): Promise<number> {
  const broker = createExternalBroker(
    { url, clientId: `fan-bridge-${randomBytes(3).toString('hex')}`, shareGroup: 'fan' },
    { log, topics, clock: systemClock },
  )
  await broker.open({ inbound: async () => {}, frameSubscribed() {} })
  await broker.listen()
  try {
    return await timed(url, load, portSend(broker, load))
  } finally {
    await broker.close()
  }
}

async function plain(url: string, load: Load): Promise<number> {
  const publisher = connect(url, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'fan-publisher' })
  await new Promise((resolve) => publisher.once('connect', resolve))
  try {
    return await timed(url, load, (i, k) => {
      for (const chunk of load.frames[k]!)
        publisher.publish(topics.device(`d${i}`, 'frame'), chunk, { qos: 1 }, (err) => {
          if (err) throw err
        })
    })
  } finally {
    await publisher.endAsync()
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

type Path = 'a' | 'b' | 'c'
/** Every order of the three: over six rounds each path runs first, second and last twice. */
const ORDERS: Path[][] = [
  ['c', 'a', 'b'],
  ['b', 'c', 'a'],
  ['a', 'b', 'c'],
  ['c', 'b', 'a'],
  ['a', 'c', 'b'],
  ['b', 'a', 'c'],
]

export const fanout: Bench = async ({ quick }) => {
  const rounds = quick ? 1 : ORDERS.length
  const load = makeLoad()
  // Packet logging (log_type all) would cost Mosquitto, and this process reading it, more than the frames.
  const mosquitto = await startMosquitto('allow_anonymous true', { logTypes: 'error warning notice' })
  const results: Record<Path, number[]> = { a: [], b: [], c: [] }
  const run: Record<Path, () => Promise<number>> = {
    a: () => embedded(load),
    b: () => external(mosquitto.url, load),
    c: () => plain(mosquitto.url, load),
  }
  try {
    // One untimed pass of each first: the JIT and the sockets are warm before the first timed run.
    for (const path of ORDERS[0]!) await run[path]()
    for (let round = 0; round < rounds; round++)
      for (const path of ORDERS[round % ORDERS.length]!) results[path].push(await run[path]())
  } finally {
    await mosquitto.stop()
  }

  const totalFrames = DISPLAYS * FRAMES
  const totalMb = (DISPLAYS * load.bytesPerDisplay) / 1e6
  // The ratio pairs each run with (c)'s run of the same round, moments apart, so that a round the machine
  // was busy for slows both sides of its ratio; the median of those ratios is the figure.
  const row = (name: string, xs: number[]) => {
    const m = median(xs)
    return [
      name,
      Math.round(m),
      Math.round(totalFrames / (m / 1000)),
      (totalMb / (m / 1000)).toFixed(1),
      median(xs.map((x, round) => results.c[round]! / x)).toFixed(2),
      xs.map((x) => Math.round(x)).join(', '),
    ]
  }
  const body = [
    table(
      ['path', 'ms', 'frames/s', 'MB/s', 'x of (c)', 'each round (ms)'],
      [
        row('(a) embedded broker delivery', results.a),
        row('(b) bridge on Mosquitto (MQTT_URL)', results.b),
        row('(c) Mosquitto, one plain publisher', results.c),
      ],
    ),
    '',
    'Goal: (a) at least 0.8x of (c), (b) at least 0.9x of (c).',
  ].join('\n')
  return {
    title: 'Frame fan-out to 50 displays: embedded broker, a bridge on Mosquitto, plain Mosquitto',
    method:
      `${DISPLAYS} mqtt.js displays (3.1.1, QoS 1, clean) x ${FRAMES} frames of ${load.chunksPerFrame} chunks ` +
      `(${(load.bytesPerDisplay / FRAMES / 1000).toFixed(1)} kB a frame), all in one process on loopback, each ` +
      'display sent its next frame once it has the last; Mosquitto logging errors, warnings and notices only; ' +
      'time from the first frame handed over to the last chunk received; after one untimed pass the paths ' +
      `take turns in a new order each round, median of ${rounds} round(s); ratio = median over the rounds of ` +
      "(c)'s time / this path's time in the same round",
    body,
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const quick = process.argv.includes('--quick')
  const result = await fanout({ quick })
  process.stdout.write(
    `${await machineInfo()}\n\n## ${result.title}\n\nmethod: ${result.method}\n\n${result.body}\n`,
  )
}
