import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { startFakeA1111 } from '../test/support/fake-a1111.ts'
import { type RunningMosquitto, startMosquitto } from '../test/support/mosquitto.ts'
import { mosquittoPid } from './idle-rss.ts'
import {
  addThreadCpu,
  type Bench,
  type Bridge,
  cpuTimeMs,
  daemonNodeOptions,
  daemonNote,
  mainThreadSchedMs,
  ms,
  NO_RATE_LIMIT,
  SUMMARY_HEADERS,
  sleep,
  startBridge,
  summarize,
  summaryRow,
  table,
  tally,
  threadCpuMs,
  within,
} from './lib.ts'
import { connectTimedDevice, type TimedDevice } from './timed-device.ts'

/*
 * Prompt-to-frame latency of the daemon against its floor, both in processes of their own and measured the
 * same way: one display client (mqtt.js, QoS 1) publishes a prompt and times it to the 12th band. For the
 * bridge the prompt goes to the daemon's embedded broker; for the floor to a Mosquitto, where
 * bench/floor-bridge.ts does the least any bridge must (fetch, JSON.parse, base64, sharp resize, pack, 12 bands
 * back through Mosquitto). Both ask the same fake A1111, which answers at once with one cached body (a noisy
 * 512x512 PNG in 660 KB of JSON), so neither measures the fake drawing a picture. The two are interleaved, one
 * of each per iteration, in alternating order, so both see the same machine state.
 */

const WARMUP = 10
const FRAME_TIMEOUT_MS = 30_000
/**
 * mqtt.js, like paho and the Pico's lwIP, leaves Nagle's algorithm on (no TCP_NODELAY): a prompt published
 * while the client's acknowledgements of the last frame are still unanswered by the peer's delayed ACK waits up
 * to 40 ms. A pause longer than that before each prompt keeps this out of both figures.
 */
const PAUSE_MS = 60
const FLOOR_SCRIPT = fileURLToPath(new URL('./floor-bridge.ts', import.meta.url))
/** The daemon's V8 flags under `npm start` (test/support/spawn.ts), so both run with the same heap. */
const START_FLAGS = ['--max-semi-space-size=1', '--no-concurrent-marking']

interface FloorPhases {
  fetchMs: number
  parseMs: number
  renderMs: number
  publishMs: number
}

interface FloorProcess {
  pid: number
  phases: FloorPhases[]
  stderr(): string
  stop(): Promise<number | null>
}

async function startFloor(mqttUrl: string, a1111Url: string): Promise<FloorProcess> {
  const child: ChildProcess = spawn(process.execPath, [...START_FLAGS, FLOOR_SCRIPT, mqttUrl, a1111Url], {
    env: { ...process.env, ...daemonNodeOptions() },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const phases: FloorPhases[] = []
  let err = ''
  let pending = ''
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    onReady = resolve
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    pending += d
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl)
      pending = pending.slice(nl + 1)
      if (line === 'ready') onReady()
      else if (line.startsWith('{')) phases.push(JSON.parse(line) as FloorPhases)
    }
  })
  const exited = once(child, 'exit')
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const [code] = await exited
    return code as number | null
  }
  try {
    await within(
      Promise.race([ready, exited.then(() => Promise.reject(new Error(`floor process exited: ${err}`)))]),
      15_000,
      'floor process start',
    )
  } catch (e) {
    await stop()
    throw e
  }
  return { pid: child.pid!, phases, stderr: () => err, stop }
}

interface Side {
  name: 'bridge' | 'floor'
  device: TimedDevice
  pid: number
  /** The broker's process when it is not the side's own (Mosquitto for the floor). */
  brokerPid?: number
  brokerCpuMs: number
  frameMs: number[]
  /** From the prompt's publish to its txt2img reaching the fake A1111 (its body read). */
  toA1111Ms: number[]
  doneMissing: number
  cpuMs: number
  /** CPU of the measured frames by thread name. */
  threads: Map<string, number>
}

/** When the fake A1111 last received a txt2img (performance.now(), this process's clock). */
let lastTxt2imgAt = Number.NaN

async function oneFrame(side: Side, i: number, record: boolean): Promise<void> {
  await sleep(PAUSE_MS)
  const before = record ? await cpuTimeMs(side.pid) : 0
  const brokerBefore = record && side.brokerPid ? (await mainThreadSchedMs(side.brokerPid)).onCpuMs : 0
  const threadsBefore = record ? await threadCpuMs(side.pid) : undefined
  const t = await side.device.prompt(`a lighthouse at dusk ${i}`, FRAME_TIMEOUT_MS)
  if (!(await side.device.waitDone(5_000))) side.doneMissing++
  if (!record) return
  side.cpuMs += (await cpuTimeMs(side.pid)) - before
  if (side.brokerPid) side.brokerCpuMs += (await mainThreadSchedMs(side.brokerPid)).onCpuMs - brokerBefore
  addThreadCpu(side.threads, threadsBefore!, await threadCpuMs(side.pid))
  side.frameMs.push(t.frameMs)
  side.toA1111Ms.push(lastTxt2imgAt - t.startedAt)
}

export const latency: Bench = async ({ quick }) => {
  const iterations = quick ? 30 : 200
  const fake = await startFakeA1111({ cachedAnswer: true })
  fake.events.on('request', (r: { path: string }) => {
    if (r.path === '/sdapi/v1/txt2img') lastTxt2imgAt = performance.now()
  })
  let mosquitto: RunningMosquitto | undefined
  let floor: FloorProcess | undefined
  let bridge: Bridge | undefined
  const sides: Side[] = []
  let exitCode: number | null = null
  let floorExit: number | null = null
  try {
    mosquitto = await startMosquitto('allow_anonymous true', { logTypes: 'error warning' })
    floor = await startFloor(mosquitto.url, fake.url)
    bridge = await startBridge({ A1111_BASE_URL: fake.url, ...NO_RATE_LIMIT })
    const fresh = () => ({
      frameMs: [],
      toA1111Ms: [],
      doneMissing: 0,
      cpuMs: 0,
      brokerCpuMs: 0,
      threads: new Map<string, number>(),
    })
    sides.push(
      { name: 'bridge', device: await connectTimedDevice(bridge.url, 'bench'), pid: bridge.pid, ...fresh() },
      {
        name: 'floor',
        device: await connectTimedDevice(mosquitto.url, 'floor'),
        pid: floor.pid,
        brokerPid: await mosquittoPid(mosquitto.dir),
        ...fresh(),
      },
    )
    for (let i = 0; i < WARMUP + iterations; i++) {
      const order = i % 2 === 0 ? sides : [...sides].reverse()
      for (const side of order) await oneFrame(side, i, i >= WARMUP)
    }
  } finally {
    await Promise.allSettled(sides.map((s) => s.device.close()))
    exitCode = (await bridge?.stop()) ?? null
    floorExit = (await floor?.stop()) ?? null
    await mosquitto?.stop()
    await fake.close()
  }

  const [bridgeSide, floorSide] = sides as [Side, Side]
  const b = summarize(bridgeSide.frameMs)
  const f = summarize(floorSide.frameMs)
  const ratio = b.p50 / f.p50
  const cpuBridge = bridgeSide.cpuMs / iterations
  const cpuFloorAlone = floorSide.cpuMs / iterations
  // The bridge's figure includes its broker's work: the floor's includes Mosquitto's for its frames.
  const cpuMosquitto = floorSide.brokerCpuMs / iterations
  const cpuFloor = cpuFloorAlone + cpuMosquitto
  const cpuRatio = cpuBridge / cpuFloor
  const phases = (floor?.phases ?? []).slice(WARMUP)
  const phase = (key: keyof FloorPhases) => summarize(phases.map((p) => p[key]))
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met')
  const failures = sides.flatMap((s) => s.device.failures)
  const notes = [
    `**p50 / floor p50 = ${ratio.toFixed(2)}** (target <= 1.15: ${verdict(ratio <= 1.15)}); the bridge adds ` +
      `${ms(b.p50 - f.p50)} ms at p50.`,
    `**CPU per finished frame: bridge ${ms(cpuBridge)} ms, floor ${ms(cpuFloor)} ms = ${cpuRatio.toFixed(2)}x** ` +
      `(target <= 1.2: ${verdict(cpuRatio <= 1.2)}); the floor's is its process, ${ms(cpuFloorAlone)} ms ` +
      `(${(cpuBridge / cpuFloorAlone).toFixed(2)}x), and Mosquitto's for its frames, ${ms(cpuMosquitto)} ms, as ` +
      "the bridge's includes its embedded broker: utime + stime of each process from /proc/<pid>/stat, from " +
      'before its prompt to its `done`, summed over the measured iterations (all threads: event loop, libuv ' +
      'pool, sharp, answer workers).',
    `${iterations} iterations after ${WARMUP} warm-up, bridge and floor alternating which goes first; each ` +
      `prompt after a ${PAUSE_MS} ms pause (the client leaves Nagle on) and after the last one's \`done\`.`,
    `\`done\` missing 5 s after the frame: bridge ${bridgeSide.doneMissing}, floor ${floorSide.doneMissing}; ` +
      `\`done\` before the last band (bridge): ${bridgeSide.device.doneBeforeFrame}; error/cancelled statuses: ` +
      `${failures.length}${failures.length ? ` (${tally(failures)})` : ''}.`,
    `Floor process: exit code ${floorExit}${floor?.stderr().trim() ? `, stderr \`${floor.stderr().trim().slice(0, 200)}\`` : ''}. ` +
      daemonNote(bridge, exitCode),
  ]
  return {
    title: 'Latency: prompt to last band, one display, against the floor through Mosquitto',
    method:
      'fake A1111 (`cachedAnswer`: answers at once with one cached noisy 512x512 PNG in 660 KB of JSON) in the ' +
      'bench process; daemon spawned as `npm start` runs it; floor = bench/floor-bridge.ts in its own process ' +
      '(Mosquitto in, undici POST + JSON.parse + base64 + renderFrame 240x240 RGB565 + 12 QoS 1 bands out through ' +
      'Mosquitto); one mqtt.js display client on each (QoS 1, CRC-checked reassembly) times PUBLISH of the prompt ' +
      `to the 12th band; interleaved, ${PAUSE_MS} ms pause before each prompt; CPU from /proc/<pid>/stat.`,
    body: [
      table(
        ['measurement (ms)', ...SUMMARY_HEADERS],
        [
          summaryRow('bridge: prompt -> last band', b),
          summaryRow('floor: prompt -> last band (through Mosquitto)', f),
          summaryRow('bridge, of which prompt -> txt2img at A1111', summarize(bridgeSide.toA1111Ms)),
          summaryRow('floor, of which prompt -> txt2img at A1111', summarize(floorSide.toA1111Ms)),
          summaryRow('floor, of which POST + answer read (fake A1111 included)', phase('fetchMs')),
          summaryRow('floor, of which JSON.parse + base64', phase('parseMs')),
          summaryRow('floor, of which renderFrame (sharp + pack + bands)', phase('renderMs')),
          summaryRow('floor, of which publishing the 12 bands and `done`', phase('publishMs')),
          summaryRow(
            'bridge: last band -> `done` status',
            summarize(bridgeSide.device.doneLagsMs.slice(WARMUP)),
          ),
        ],
      ),
      '',
      threadTable(bridgeSide, floorSide, iterations),
      '',
      ...notes.map((n) => `- ${n}`),
    ].join('\n'),
  }
}

/** CPU per frame by kind of thread, bridge beside floor (schedstat, so finer than the ticks of /proc/<pid>/stat). */
function threadTable(bridge: Side, floor: Side, iterations: number): string {
  const names = [...new Set([...bridge.threads.keys(), ...floor.threads.keys()])]
  const per = (side: Side, name: string) => (side.threads.get(name) ?? 0) / iterations
  const rows = names
    .map((name) => [name, per(bridge, name), per(floor, name)] as const)
    .filter(([, b, f]) => b >= 0.05 || f >= 0.05)
    .sort((x, y) => y[1] + y[2] - (x[1] + x[2]))
    .map(([name, b, f]) => [name, ms(b), ms(f), ms(b - f)])
  return table(['CPU per frame by thread (ms)', 'bridge', 'floor', 'bridge - floor'], rows)
}
