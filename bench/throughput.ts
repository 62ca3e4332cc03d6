import { startFakeA1111 } from '../test/support/fake-a1111.ts'
import {
  type Bench,
  type Bridge,
  cpuTimeMs,
  daemonNote,
  mb,
  memoryKb,
  NO_RATE_LIMIT,
  SUMMARY_HEADERS,
  sleep,
  startBridge,
  summarize,
  summaryRow,
  table,
  tally,
  within,
} from './lib.ts'
import { connectTimedDevice, type TimedDevice } from './timed-device.ts'
import { promptLoop } from './workloads.ts'

/*
 * Frames per second with many devices, each sending its next prompt as soon as its last frame is complete,
 * against one fake A1111 that answers at once. The bridge runs one generation at a time per generator, so
 * this is the whole pipeline behind a single A1111, not the broker alone.
 */

const DEVICES = 50
const CONNECT_BATCH = 10
/** Every device waits behind up to 49 others; far more than that means a frame was lost. */
const FRAME_TIMEOUT_MS = 60_000

interface Window {
  startAt: number
  endAt: number
  cpuMs: number
  benchCpuMs: number
  rssKb: number
}

export const throughput: Bench = async ({ quick }) => {
  const durationMs = quick ? 5_000 : 20_000
  const fake = await startFakeA1111({ noise: true })
  // When the fake A1111 is generating (making its PNG), to tell its share of the time from the bridge's.
  const fakeBusy: { begin: number; end: number }[] = []
  let begunAt = 0
  fake.events.on('begin', () => {
    begunAt = performance.now()
  })
  fake.events.on('end', () => fakeBusy.push({ begin: begunAt, end: performance.now() }))
  let bridge: Bridge | undefined
  const devices: TimedDevice[] = []
  const completedAt: number[] = []
  const frameMs: number[] = []
  const errors: string[] = []
  let exitCode: number | null = null
  let window: Window = { startAt: 0, endAt: 0, cpuMs: 0, benchCpuMs: 0, rssKb: 0 }
  let hwmKb = Number.NaN
  try {
    bridge = await startBridge({ A1111_BASE_URL: fake.url, ...NO_RATE_LIMIT })
    for (let i = 0; i < DEVICES; i += CONNECT_BATCH) {
      const ids = Array.from({ length: Math.min(CONNECT_BATCH, DEVICES - i) }, (_, k) => `tp${i + k}`)
      const batch = ids.map((id) => connectTimedDevice(bridge!.url, id))
      devices.push(...(await within(Promise.all(batch), 10_000, 'connecting devices')))
    }
    const pid = bridge.pid
    const cpuBefore = await cpuTimeMs(pid)
    const benchBefore = process.cpuUsage()
    const startAt = performance.now()
    const loops = devices.map((d) =>
      promptLoop(
        d,
        {
          deadline: startAt + durationMs,
          frameTimeoutMs: FRAME_TIMEOUT_MS,
          prompt: (n) => `${d.id} picture ${n}`,
        },
        { done: completedAt, frameMs, errors },
      ),
    )
    // Read the daemon at the end of the window, before the jobs still in line drain.
    await sleep(durationMs)
    const endAt = performance.now()
    const bench = process.cpuUsage(benchBefore)
    const cpuMs = (await cpuTimeMs(pid)) - cpuBefore
    window = {
      startAt,
      endAt,
      cpuMs,
      benchCpuMs: (bench.user + bench.system) / 1000,
      rssKb: (await memoryKb(pid)).rssKb,
    }
    await within(Promise.all(loops), FRAME_TIMEOUT_MS + 5_000, 'draining the queue')
    await Promise.all(devices.map((d) => d.waitDone(5_000)))
    hwmKb = (await memoryKb(pid)).hwmKb
  } finally {
    await Promise.allSettled(devices.map((d) => d.close()))
    exitCode = (await bridge?.stop()) ?? null
    await fake.close()
  }

  if (completedAt.length === 0) {
    throw new Error(
      `no frame completed; ${errors.length} prompts failed (${tally(errors)}); ${daemonNote(bridge, exitCode)}`,
    )
  }
  const windowMs = window.endAt - window.startAt
  const inWindow = completedAt.filter((t) => t <= window.endAt).length
  const percentOf = (partMs: number) => `${((partMs / windowMs) * 100).toFixed(0)} %`
  const busyMs = fakeBusy
    .map(({ begin, end }) => Math.min(end, window.endAt) - Math.max(begin, window.startAt))
    .reduce((sum, d) => sum + Math.max(0, d), 0)
  const failures = devices.flatMap((d) => d.failures)
  const doneBeforeFrame = devices.reduce((n, d) => n + d.doneBeforeFrame, 0)
  const jobs = (bridge?.daemon.lines ?? []).filter((l) => l.msg === 'job done')
  const statuses = new Map<string, number>()
  for (const d of devices)
    for (const [state, n] of d.statusCounts) statuses.set(state, (statuses.get(state) ?? 0) + n)
  const statusTotal = [...statuses.values()].reduce((a, b) => a + b, 0)
  const byState = [...statuses].map(([state, n]) => `${state} ${n}`).join(', ')
  return {
    title: `Throughput: ${DEVICES} devices, one A1111`,
    method:
      `${DEVICES} mqtt.js devices (QoS 1) each send the next prompt as soon as their last frame is complete, for ` +
      `${durationMs / 1000} s, against the fake A1111 (\`noise: true\`, answers at once) in the bench process; daemon ` +
      'CPU from /proc/<pid>/stat (utime+stime) over the window, peak RSS = VmHWM after the run.',
    body: [
      table(
        [
          'frames/s',
          'frames',
          'daemon CPU',
          'daemon CPU per frame',
          'bench process CPU',
          'RSS at end',
          'peak RSS',
        ],
        [
          [
            ((inWindow * 1000) / windowMs).toFixed(1),
            inWindow,
            `${percentOf(window.cpuMs)} of one core`,
            `${(window.cpuMs / inWindow).toFixed(1)} ms`,
            `${percentOf(window.benchCpuMs)} (fake A1111 + ${DEVICES} devices)`,
            `${mb(window.rssKb)} MB`,
            `${mb(hwmKb)} MB`,
          ],
        ],
      ),
      '',
      table(
        ['under load (ms)', ...SUMMARY_HEADERS],
        [
          summaryRow('prompt -> last band', summarize(frameMs)),
          summaryRow(
            'daemon log `job done`: genMs (A1111 call)',
            summarize(jobs.map((l) => Number(l.genMs))),
          ),
          summaryRow(
            'daemon log `job done`: ms (A1111 call to done)',
            summarize(jobs.map((l) => Number(l.ms))),
          ),
          summaryRow('last band -> `done` status', summarize(devices.flatMap((d) => d.doneLagsMs))),
        ],
      ),
      '',
      `- The fake A1111 was busy generating ${percentOf(busyMs)} of the window (${fakeBusy.length} generations in all).`,
      `- Frames completed including the drain after the window: ${completedAt.length}; prompts that got no frame: ` +
        `${errors.length}${errors.length ? ` (${tally(errors)})` : ''}.`,
      `- Status messages received: ${statusTotal}, ${(statusTotal / Math.max(1, completedAt.length)).toFixed(1)} ` +
        `per frame (${byState}).`,
      `- error/cancelled statuses: ${failures.length}${failures.length ? ` (${tally(failures)})` : ''}; ` +
        `\`done\` before the last band: ${doneBeforeFrame}.`,
      `- ${daemonNote(bridge, exitCode)}`,
    ].join('\n'),
  }
}
