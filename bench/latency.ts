import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
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
 * back through Mosquitto). A second floor process does the same and also writes to disk what the daemon writes
 * for a frame (a durable journal line, the frame's file, the journal's end line), so the report can say how
 * much of the daemon's cost is its disk. All ask the same fake A1111, which answers at once with one cached
 * body (a noisy 512x512 PNG in 660 KB of JSON), so none measures the fake drawing a picture. They are
 * interleaved, one of each per iteration, in an order that turns each iteration, so all see the same machine
 * state.
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

async function startFloor(
  mqttUrl: string,
  a1111Url: string,
  deviceId: string,
  dataDir?: string,
): Promise<FloorProcess> {
  const args = [...START_FLAGS, FLOOR_SCRIPT, mqttUrl, a1111Url, deviceId, ...(dataDir ? [dataDir] : [])]
  const child: ChildProcess = spawn(process.execPath, args, {
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
  name: 'bridge' | 'floor' | 'floor with disk'
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
  /**
   * The process's CPU over the whole measured run, its gaps included (work V8 or libuv leave for after `done`
   * lands there), less what it spends with nothing to do (idleMsPerMs x the run's length).
   */
  runCpuMs: number
  idleMsPerMs: number
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
  let diskFloor: FloorProcess | undefined
  let bridge: Bridge | undefined
  const sides: Side[] = []
  let exitCode: number | null = null
  let floorExit: number | null = null
  let diskFloorExit: number | null = null
  const diskDir = await mkdtemp(join(tmpdir(), 'pab-floor-'))
  try {
    mosquitto = await startMosquitto('allow_anonymous true', { logTypes: 'error warning' })
    floor = await startFloor(mosquitto.url, fake.url, 'floor')
    diskFloor = await startFloor(mosquitto.url, fake.url, 'floordisk', diskDir)
    bridge = await startBridge({ A1111_BASE_URL: fake.url, ...NO_RATE_LIMIT })
    const fresh = () => ({
      frameMs: [],
      toA1111Ms: [],
      doneMissing: 0,
      cpuMs: 0,
      runCpuMs: 0,
      idleMsPerMs: 0,
      brokerCpuMs: 0,
      threads: new Map<string, number>(),
    })
    const brokerPid = await mosquittoPid(mosquitto.dir)
    sides.push(
      { name: 'bridge', device: await connectTimedDevice(bridge.url, 'bench'), pid: bridge.pid, ...fresh() },
      {
        name: 'floor',
        device: await connectTimedDevice(mosquitto.url, 'floor'),
        pid: floor.pid,
        brokerPid,
        ...fresh(),
      },
      {
        name: 'floor with disk',
        device: await connectTimedDevice(mosquitto.url, 'floordisk'),
        pid: diskFloor.pid,
        brokerPid,
        ...fresh(),
      },
    )
    let runStarted = 0
    let cpuAtStart: number[] = []
    for (let i = 0; i < WARMUP + iterations; i++) {
      if (i === WARMUP) {
        await measureIdle(sides)
        runStarted = performance.now()
        cpuAtStart = await Promise.all(sides.map((side) => cpuTimeMs(side.pid)))
      }
      // Each side goes first, second and last in turn.
      const order = sides.map((_, k) => sides[(i + k) % sides.length]!)
      for (const side of order) await oneFrame(side, i, i >= WARMUP)
    }
    const runMs = performance.now() - runStarted
    const cpuAtEnd = await Promise.all(sides.map((side) => cpuTimeMs(side.pid)))
    sides.forEach((side, k) => {
      side.runCpuMs = cpuAtEnd[k]! - cpuAtStart[k]! - side.idleMsPerMs * runMs
    })
  } finally {
    await Promise.allSettled(sides.map((s) => s.device.close()))
    exitCode = (await bridge?.stop()) ?? null
    floorExit = (await floor?.stop()) ?? null
    diskFloorExit = (await diskFloor?.stop()) ?? null
    await mosquitto?.stop()
    await fake.close()
    await rm(diskDir, { recursive: true, force: true })
  }

  const [bridgeSide, floorSide, diskSide] = sides as [Side, Side, Side]
  const b = summarize(bridgeSide.frameMs)
  const f = summarize(floorSide.frameMs)
  const ratio = b.p50 / f.p50
  const cpuBridge = bridgeSide.cpuMs / iterations
  const cpuFloorAlone = floorSide.cpuMs / iterations
  // The bridge's figure includes its broker's work: the floor's includes Mosquitto's for its frames.
  const cpuMosquitto = floorSide.brokerCpuMs / iterations
  const cpuFloor = cpuFloorAlone + cpuMosquitto
  const cpuRatio = cpuBridge / cpuFloor
  const cpuDiskFloor = (diskSide.cpuMs + diskSide.brokerCpuMs) / iterations
  const cpuDiskRatio = cpuBridge / cpuDiskFloor
  // Mosquitto serves both floors, so its share stays the one measured in their windows.
  const run = (side: Side) => side.runCpuMs / iterations + side.brokerCpuMs / iterations
  const [runBridge, runFloor, runDisk] = [run(bridgeSide), run(floorSide), run(diskSide)]
  const idle = (side: Side) => `${(side.idleMsPerMs * 1000).toFixed(1)}`
  const d = summarize(diskSide.frameMs)
  const phases = (floor?.phases ?? []).slice(WARMUP)
  const phase = (key: keyof FloorPhases) => summarize(phases.map((p) => p[key]))
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met')
  const failures = sides.flatMap((s) => s.device.failures)
  const notes = [
    `**p50 / floor p50 = ${ratio.toFixed(2)}** (target <= 1.15: ${verdict(ratio <= 1.15)}); the bridge adds ` +
      `${ms(b.p50 - f.p50)} ms at p50.`,
    `**CPU per finished frame: bridge ${ms(runBridge)} ms, floor ${ms(runFloor)} ms = ` +
      `${(runBridge / runFloor).toFixed(2)}x** (target <= 1.2: ${verdict(runBridge / runFloor <= 1.2)}): all ` +
      "of each process's CPU from the first measured prompt to the last `done` (utime + stime from " +
      '/proc/<pid>/stat, every thread: event loop, libuv pool, libvips, answer workers), less what it spends ' +
      `idle over as long (${idle(bridgeSide)} / ${idle(floorSide)} / ${idle(diskSide)} ms a second for bridge / ` +
      `floor / floor with disk, schedstat over ${IDLE_MEASURE_MS / 1000} s with nothing to do after the ` +
      "warm-up), per frame; the floors' include Mosquitto's share for their frames, as the bridge's includes " +
      `its embedded broker (${ms(cpuMosquitto)} ms, measured in the floor's windows, since one Mosquitto serves ` +
      'both floors).',
    `Counted only between each prompt and its \`done\` (the windows the table by thread is made of): bridge ` +
      `${ms(cpuBridge)} ms, floor ${ms(cpuFloor)} ms = ${cpuRatio.toFixed(2)}x (the floor's process alone ` +
      `${ms(cpuFloorAlone)} ms). This misses what a process leaves for after \`done\`, V8 finishing its ` +
      `collections in the pause above all: ${ms(runBridge - cpuBridge)} ms a frame for the bridge, ` +
      `${ms(runFloor - cpuFloor)} ms for the floor.`,
    `**With the daemon's disk writes** (a journal line made durable before the txt2img, the frame's file with ` +
      `fsync and rename, the journal's end line) the floor takes ${ms(runDisk)} ms a frame: the bridge is ` +
      `**${(runBridge / runDisk).toFixed(2)}x** of it (${cpuDiskRatio.toFixed(2)}x in the windows; p50 ` +
      `${ms(d.p50)} ms to the last band, ${(b.p50 / d.p50).toFixed(2)}x). No target is set against it: it ` +
      "says what is left of the difference when the daemon's durability is counted on both sides.",
    `${iterations} iterations after ${WARMUP} warm-up, bridge and the two floors taking turns at going first; each ` +
      `prompt after a ${PAUSE_MS} ms pause (the client leaves Nagle on) and after the last one's \`done\`.`,
    `\`done\` missing 5 s after the frame: bridge ${bridgeSide.doneMissing}, floor ${floorSide.doneMissing}, ` +
      `floor with disk ${diskSide.doneMissing}; ` +
      `\`done\` before the last band (bridge): ${bridgeSide.device.doneBeforeFrame}; error/cancelled statuses: ` +
      `${failures.length}${failures.length ? ` (${tally(failures)})` : ''}.`,
    `Floor processes: ${floorNote(floor, floorExit)}; with disk, ${floorNote(diskFloor, diskFloorExit)}. ` +
      daemonNote(bridge, exitCode),
  ]
  return {
    title: 'Latency: prompt to last band, one display, against the floor through Mosquitto',
    method:
      'fake A1111 (`cachedAnswer`: answers at once with one cached noisy 512x512 PNG in 660 KB of JSON) in the ' +
      'bench process; daemon spawned as `npm start` runs it; floor = bench/floor-bridge.ts in its own process ' +
      '(Mosquitto in, undici POST + JSON.parse + base64 + renderFrame 240x240 RGB565 + 12 QoS 1 bands out through ' +
      'Mosquitto), and a second one that also writes what the daemon writes to disk for a frame; one mqtt.js display client on each (QoS 1, CRC-checked reassembly) times PUBLISH of the prompt ' +
      `to the 12th band; interleaved, ${PAUSE_MS} ms pause before each prompt; CPU from /proc/<pid>/stat.`,
    body: [
      table(
        ['measurement (ms)', ...SUMMARY_HEADERS],
        [
          summaryRow('bridge: prompt -> last band', b),
          summaryRow('floor: prompt -> last band (through Mosquitto)', f),
          summaryRow("floor with the daemon's disk writes: prompt -> last band", d),
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
      threadTable(bridgeSide, floorSide, diskSide, iterations),
      '',
      ...notes.map((n) => `- ${n}`),
    ].join('\n'),
  }
}

/** How long each process is left alone before and while its idle CPU is measured. */
const IDLE_SETTLE_MS = 1000
const IDLE_MEASURE_MS = 3000

/**
 * Each process's CPU with nothing to do (the daemon's timers, keepalives), from schedstat: after the warm-up,
 * a pause for what the last frames left behind, then a quiet stretch measured.
 */
async function measureIdle(sides: Side[]): Promise<void> {
  await sleep(IDLE_SETTLE_MS)
  const total = async (pid: number) => [...(await threadCpuMs(pid)).values()].reduce((a, b) => a + b, 0)
  const before = await Promise.all(sides.map((s) => total(s.pid)))
  const started = performance.now()
  await sleep(IDLE_MEASURE_MS)
  const after = await Promise.all(sides.map((s) => total(s.pid)))
  const elapsed = performance.now() - started
  sides.forEach((side, k) => {
    side.idleMsPerMs = Math.max(0, after[k]! - before[k]!) / elapsed
  })
}

function floorNote(floor: FloorProcess | undefined, exit: number | null): string {
  const err = floor?.stderr().trim()
  return `exit code ${exit}${err ? `, stderr \`${err.slice(0, 200)}\`` : ''}`
}

/**
 * CPU per frame by kind of thread, bridge beside the two floors (schedstat, so finer than the ticks of
 * /proc/<pid>/stat).
 */
function threadTable(bridge: Side, floor: Side, disk: Side, iterations: number): string {
  const names = [...new Set([...bridge.threads.keys(), ...floor.threads.keys(), ...disk.threads.keys()])]
  const per = (side: Side, name: string) => (side.threads.get(name) ?? 0) / iterations
  const rows = names
    .map((name) => [name, per(bridge, name), per(floor, name), per(disk, name)] as const)
    .filter(([, b, f, k]) => b >= 0.05 || f >= 0.05 || k >= 0.05)
    .sort((x, y) => y[1] + y[2] - (x[1] + x[2]))
    .map(([name, b, f, k]) => [name, ms(b), ms(f), ms(b - f), ms(k), ms(b - k)])
  return table(
    ['CPU per frame by thread (ms)', 'bridge', 'floor', 'bridge - floor', 'floor with disk', 'bridge - it'],
    rows,
  )
}
