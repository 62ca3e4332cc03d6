import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { connect, type MqttClient } from 'mqtt'
import { pino } from 'pino'
import { createBrokerAccess } from '../src/broker/access.ts'
import { createEmbeddedBroker } from '../src/broker/embedded.ts'
import { configSchema } from '../src/config/schema.ts'
import { encodePanelFrame, panelFromConfig } from '../src/image/panel.ts'
import { createTopics } from '../src/protocol/topics.ts'
import { startFakeA1111 } from '../test/support/fake-a1111.ts'
import { startMosquitto } from '../test/support/mosquitto.ts'
import { idleSession, mosquittoPid } from './idle-rss.ts'
import {
  type Bench,
  type Bridge,
  cpuTimeMs,
  daemonNote,
  machineInfo,
  ms,
  NO_RATE_LIMIT,
  SUMMARY_HEADERS,
  sleep,
  startBridge,
  summarize,
  summaryRow,
  table,
  within,
} from './lib.ts'
import { connectTimedDevice, type TimedDevice } from './timed-device.ts'

/*
 * What the broker costs as displays add up (issue 14, goal 2):
 * (a) prompt -> last band of one display with 5,000 idle displays connected, against the same with none:
 *     blocks of prompts take turns (none, 5,000, none, 5,000, ...) on one daemon, so both see the same
 *     machine; the daemon's CPU per frame is read from /proc for each block too.
 * (b) broker CPU per 12-chunk frame delivered to 50 displays, the embedded broker against Mosquitto. The
 *     displays (and, for Mosquitto, the publisher) run in a child process, so what is counted is the broker:
 *     process.cpuUsage() of this process while its embedded broker delivers, /proc/<pid>/stat of Mosquitto.
 * Run alone: node bench/broker-scale.ts [--quick]
 */

const IDLE = 5_000
const BATCH = 50
const FRAME_TIMEOUT_MS = 30_000
const PAUSE_MS = 50
const DISPLAYS = 50
const log = pino({ level: 'silent' })
const topics = createTopics('pico')

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

async function connectIdle(port: number, count: number, offset: number): Promise<Socket[]> {
  const sockets: Socket[] = []
  for (let i = 0; i < count; i += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, count - i) }, (_, k) =>
      idleSession(port, offset + i + k),
    )
    sockets.push(...(await within(Promise.all(batch), 15_000, `connecting idle sessions ${i}..`)))
  }
  return sockets
}

async function closeIdle(sockets: Socket[]): Promise<void> {
  // DISCONNECT (MQTT 3.1.1 section 3.14), then wait for each socket to be closed by the daemon.
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.closed) return resolve()
          s.once('close', () => resolve())
          s.end(Buffer.from([0xe0, 0x00]))
        }),
    ),
  )
}

interface Block {
  idle: number
  frameMs: number[]
  cpuMsPerFrame: number
}

async function idleLatency(quick: boolean) {
  const perBlock = quick ? 15 : 40
  const rounds = quick ? 1 : 3
  const fake = await startFakeA1111({ cachedAnswer: true })
  let bridge: Bridge | undefined
  let device: TimedDevice | undefined
  let exitCode: number | null = null
  const blocks: Block[] = []
  let sockets: Socket[] = []
  let connectMs = 0
  try {
    // Room for the idle displays past MQTT_MAX_CONNECTIONS' default of 2,000.
    const room = { MQTT_MAX_CONNECTIONS: String(IDLE + 100) }
    bridge = await startBridge({ A1111_BASE_URL: fake.url, ...NO_RATE_LIMIT, ...room })
    const port = Number(new URL(bridge.url).port)
    device = await connectTimedDevice(bridge.url, 'bench')
    const prompt = (n: number) => device!.prompt(`a lighthouse at dusk ${n}`, FRAME_TIMEOUT_MS)
    let n = 0
    for (let i = 0; i < 10; i++) await prompt(n++)
    const run = async (idle: number) => {
      const frameMs: number[] = []
      const cpuBefore = await cpuTimeMs(bridge!.pid)
      for (let i = 0; i < perBlock; i++) {
        // mqtt.js leaves Nagle on: a pause lets the last PUBACKs be acknowledged, so the prompt is not held.
        await sleep(PAUSE_MS)
        frameMs.push((await prompt(n++)).frameMs)
        await device!.waitDone(5_000)
      }
      const cpuMsPerFrame = ((await cpuTimeMs(bridge!.pid)) - cpuBefore) / perBlock
      blocks.push({ idle, frameMs, cpuMsPerFrame })
    }
    for (let round = 0; round < rounds; round++) {
      // Every other round begins with the idle displays, so neither kind always runs first.
      const order = round % 2 === 0 ? [0, IDLE] : [IDLE, 0]
      for (const idle of order) {
        if (idle > 0 && sockets.length === 0) {
          const started = performance.now()
          sockets = await connectIdle(port, IDLE, round * IDLE)
          connectMs = performance.now() - started
          await sleep(1_000)
        } else if (idle === 0 && sockets.length > 0) {
          await closeIdle(sockets)
          sockets = []
          await sleep(1_000)
        }
        await run(idle)
      }
    }
  } finally {
    for (const s of sockets) s.destroy()
    await device?.close()
    exitCode = (await bridge?.stop()) ?? null
    await fake.close()
  }
  const of = (idle: number) => blocks.filter((b) => b.idle === idle)
  const none = summarize(of(0).flatMap((b) => b.frameMs))
  const many = summarize(of(IDLE).flatMap((b) => b.frameMs))
  const ratio = many.p50 / none.p50
  const cpu = (idle: number) => median(of(idle).map((b) => b.cpuMsPerFrame))
  return {
    ratio,
    body: [
      table(
        ['prompt -> last band (ms)', ...SUMMARY_HEADERS],
        [summaryRow('no idle displays', none), summaryRow(`${IDLE} idle displays`, many)],
      ),
      '',
      `- **${IDLE} idle / none at p50 = ${ratio.toFixed(2)}x** (goal <= 1.1x: ${ratio <= 1.1 ? 'met' : 'NOT met'}); ` +
        `${ms(many.p50 - none.p50)} ms more at p50.`,
      `- Daemon CPU per frame (utime+stime from /proc, median of blocks): ${ms(cpu(0))} ms with none, ` +
        `${ms(cpu(IDLE))} ms with ${IDLE} idle.`,
      `- ${rounds * 2} blocks of ${perBlock} prompts taking turns after 10 warm-up prompts; connecting ` +
        `${IDLE} sessions took ${(connectMs / 1000).toFixed(1)} s.`,
      `- ${daemonNote(bridge, exitCode)}`,
    ].join('\n'),
  }
}

/* ---- (b) broker CPU per frame: the displays live in a child process (this file with --displays) ---- */

function makeFrames(count: number): Buffer[][] {
  const panel = panelFromConfig(configSchema.parse({}))
  return Array.from({ length: count }, (_, i) =>
    encodePanelFrame(randomBytes(240 * 240 * 2), panel, { frameId: i + 1, preview: false }),
  )
}

type ChildMessage = { ready: true } | { got: number; frame: number } | { done: true }

/** The child: DISPLAYS mqtt.js displays; with `publish`, also the one plain publisher of their frames. */
async function displays(url: string, frames: number, publish: boolean): Promise<void> {
  const load = publish ? makeFrames(frames) : []
  const chunksPerFrame = Number(process.env.BENCH_CHUNKS_PER_FRAME)
  const clients: MqttClient[] = []
  let publisher: MqttClient | undefined
  if (publish) {
    publisher = connect(url, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'cpu-publisher' })
    await new Promise((resolve) => publisher!.once('connect', resolve))
  }
  const sendNext = (i: number, k: number) => {
    if (publisher) {
      for (const chunk of load[k]!) publisher.publish(topics.device(`d${i}`, 'frame'), chunk, { qos: 1 })
    } else process.send!({ got: i, frame: k } satisfies ChildMessage)
  }
  let finished = 0
  for (let i = 0; i < DISPLAYS; i++) {
    const client = connect(url, { protocolVersion: 4, clean: true, reconnectPeriod: 0, clientId: `cpu-${i}` })
    await client.subscribeAsync(topics.device(`d${i}`, 'frame'), { qos: 1 })
    let got = 0
    client.on('message', () => {
      got++
      if (got % chunksPerFrame !== 0) return
      const next = got / chunksPerFrame
      if (next < frames) sendNext(i, next)
      else if (++finished === DISPLAYS) process.send!({ done: true } satisfies ChildMessage)
    })
    clients.push(client)
  }
  process.on('message', (m: { start?: true; stop?: true }) => {
    if (m.start) for (let i = 0; i < DISPLAYS; i++) sendNext(i, 0)
    if (m.stop)
      void Promise.all([...clients, ...(publisher ? [publisher] : [])].map((c) => c.endAsync(true))).then(
        () => process.exit(0),
      )
  })
  process.send!({ ready: true } satisfies ChildMessage)
}

/** Starts the child's displays on `url`; `start()` resolves when every display has every frame. */
async function childDisplays(url: string, frames: number, chunksPerFrame: number, publish: boolean) {
  const child = fork(
    fileURLToPath(import.meta.url),
    ['--displays', url, String(frames), publish ? '1' : '0'],
    {
      env: { ...process.env, BENCH_CHUNKS_PER_FRAME: String(chunksPerFrame) },
    },
  )
  const listeners = new Set<(m: ChildMessage) => void>()
  child.on('message', (m: ChildMessage) => {
    for (const l of [...listeners]) l(m)
  })
  const next = (match: (m: ChildMessage) => boolean) =>
    new Promise<ChildMessage>((resolve, reject) => {
      const l = (m: ChildMessage) => {
        if (!match(m)) return
        listeners.delete(l)
        resolve(m)
      }
      listeners.add(l)
      child.once('exit', (code) => reject(new Error(`displays exited with ${code}`)))
    })
  await within(
    next((m) => 'ready' in m),
    30_000,
    'displays ready',
  )
  return {
    onFrame(handler: (i: number, k: number) => void) {
      listeners.add((m) => 'got' in m && handler(m.got, m.frame))
    },
    async run(): Promise<void> {
      const done = next((m) => 'done' in m)
      child.send({ start: true })
      await within(done, 120_000, 'frames to every display')
    },
    async stop(): Promise<void> {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.send({ stop: true })
      await exited
    },
  }
}

async function embeddedCpu(frames: Buffer[][]): Promise<number> {
  const access = createBrokerAccess(
    { baseTopic: 'pico', passwordFile: undefined, aclFile: undefined, allowAnonymous: true, adminUsers: [] },
    { log },
  )
  const broker = createEmbeddedBroker({ host: '127.0.0.1', port: 0, maxPacketBytes: 262_144 } as never, {
    ...{ log, topics, access },
  })
  await broker.open({ inbound: async () => {}, frameSubscribed() {} })
  const { port } = await broker.listen()
  const child = await childDisplays(`mqtt://127.0.0.1:${port}`, frames.length, frames[0]!.length, false)
  try {
    child.onFrame((i, k) => broker.sendFrame(`d${i}`, frames[k]!))
    const before = process.cpuUsage()
    // The child asks for each display's first frame too, as for every next one.
    await child.run()
    const used = process.cpuUsage(before)
    return (used.user + used.system) / 1000
  } finally {
    await child.stop()
    await broker.close()
  }
}

async function mosquittoCpu(
  url: string,
  pid: number,
  frames: number,
  chunksPerFrame: number,
): Promise<number> {
  const child = await childDisplays(url, frames, chunksPerFrame, true)
  try {
    const before = await cpuTimeMs(pid)
    await child.run()
    return (await cpuTimeMs(pid)) - before
  } finally {
    await child.stop()
  }
}

async function brokerCpu(quick: boolean) {
  const framesEach = quick ? 10 : 40
  const rounds = quick ? 1 : 5
  const frames = makeFrames(framesEach)
  const chunksPerFrame = frames[0]!.length
  const mosquitto = await startMosquitto('allow_anonymous true', { logTypes: 'error warning notice' })
  const pid = await mosquittoPid(mosquitto.dir)
  const results = { embedded: [] as number[], mosquitto: [] as number[] }
  try {
    const run = {
      embedded: () => embeddedCpu(frames),
      mosquitto: () => mosquittoCpu(mosquitto.url, pid, framesEach, chunksPerFrame),
    }
    // An untimed pass of each, then turns in alternating order.
    await run.embedded()
    await run.mosquitto()
    for (let round = 0; round < rounds; round++) {
      const order =
        round % 2 === 0 ? (['embedded', 'mosquitto'] as const) : (['mosquitto', 'embedded'] as const)
      for (const path of order) results[path].push(await run[path]())
    }
  } finally {
    await mosquitto.stop()
  }
  const delivered = DISPLAYS * framesEach
  const perFrame = (xs: number[]) => median(xs) / delivered
  const e = perFrame(results.embedded)
  const m = perFrame(results.mosquitto)
  const ratio = e / m
  const kb = frames[0]!.reduce((n, c) => n + c.length, 0) / 1000
  return {
    ratio,
    chunksPerFrame,
    body: [
      table(
        ['broker', 'CPU ms per frame delivered', 'each round (ms of CPU for all frames)'],
        [
          [
            'embedded (Aedes + delivery.ts), in this process',
            e.toFixed(3),
            results.embedded.map(Math.round).join(', '),
          ],
          [
            'Mosquitto (receives the publish, fans it out)',
            m.toFixed(3),
            results.mosquitto.map(Math.round).join(', '),
          ],
        ],
      ),
      '',
      `- **embedded / Mosquitto = ${ratio.toFixed(2)}x** (goal <= 2x: ${ratio <= 2 ? 'met' : 'NOT met'}).`,
      `- ${DISPLAYS} displays x ${framesEach} frames of ${chunksPerFrame} chunks (${kb.toFixed(1)} kB) = ${delivered} ` +
        `frames delivered per round; median of ${rounds} round(s) after an untimed pass of each.`,
      '- The embedded figure also holds this process handing each display its next frame on an IPC message ' +
        "from the child; Mosquitto's holds reading the publisher's copy of every frame.",
    ].join('\n'),
  }
}

export const brokerScale: Bench = async ({ quick }) => {
  const a = await idleLatency(quick)
  const b = await brokerCpu(quick)
  return {
    title: 'The broker as displays add up: idle displays, and CPU per frame against Mosquitto',
    method:
      `(a) daemon spawned with an instant fake A1111 (cached noisy 512x512 answer); one mqtt.js display prompts ` +
      `in turns of blocks with 0 and ${IDLE} raw idle MQTT sessions (each subscribed to its own frame and status ` +
      'topics) connected; (b) an in-process embedded broker, or Mosquitto, delivering frames of random pixels ' +
      `(QoS 1) to ${DISPLAYS} mqtt.js displays in a child process, each display getting its next frame once it has ` +
      'the last; broker CPU from process.cpuUsage() or /proc/<pid>/stat',
    body: [
      `### (a) Frame latency with ${IDLE} idle displays`,
      '',
      a.body,
      '',
      `### (b) Broker CPU per ${b.chunksPerFrame}-chunk frame, ${DISPLAYS} displays`,
      '',
      b.body,
    ].join('\n'),
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf('--displays')
  if (at >= 0) {
    const [url, frames, publish] = process.argv.slice(at + 1)
    await displays(url!, Number(frames), publish === '1')
  } else {
    const quick = process.argv.includes('--quick')
    const only = process.argv.includes('--cpu') ? 'cpu' : process.argv.includes('--idle') ? 'idle' : undefined
    if (only) {
      const part = only === 'cpu' ? await brokerCpu(quick) : await idleLatency(quick)
      process.stdout.write(`${await machineInfo()}\n\n${part.body}\n`)
    } else {
      const result = await brokerScale({ quick })
      process.stdout.write(
        `${await machineInfo()}\n\n## ${result.title}\n\nmethod: ${result.method}\n\n${result.body}\n`,
      )
    }
  }
}
