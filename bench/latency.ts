import { Pool } from 'undici'
import { startFakeA1111 } from '../test/support/fake-a1111.ts'
import {
  type Bench,
  type Bridge,
  daemonNote,
  ms,
  NO_RATE_LIMIT,
  SUMMARY_HEADERS,
  startBridge,
  summarize,
  summaryRow,
  table,
  tally,
} from './lib.ts'
import { connectTimedDevice, type TimedDevice } from './timed-device.ts'
import { type FloorSample, floorOnce } from './workloads.ts'

/*
 * Prompt-to-frame latency of the daemon in its own process, against the floor: the work no bridge can skip
 * (fetch the picture from A1111, parse, base64-decode, resize and pack), done in this process. The two are
 * interleaved, one of each per iteration, so both see the same machine state.
 */

const WARMUP = 10
const FRAME_TIMEOUT_MS = 30_000

/** What the bridge asks A1111 for a plain-text prompt: the generation defaults of CONTRACT section 3. */
const FLOOR_PAYLOAD = {
  prompt: 'a lighthouse at dusk',
  negative_prompt: '',
  seed: -1,
  steps: 20,
  cfg_scale: 7,
  width: 512,
  height: 512,
  batch_size: 1,
  n_iter: 1,
}

export const latency: Bench = async ({ quick }) => {
  const iterations = quick ? 30 : 200
  const fake = await startFakeA1111({ noise: true })
  const pool = new Pool(fake.url, { connections: 1 })
  let bridge: Bridge | undefined
  let device: TimedDevice | undefined
  const bridgeMs: number[] = []
  const floor: FloorSample[] = []
  let doneMissing = 0
  let exitCode: number | null = null
  try {
    bridge = await startBridge({ A1111_BASE_URL: fake.url, ...NO_RATE_LIMIT })
    device = await connectTimedDevice(bridge.url, 'bench')
    const body = JSON.stringify(FLOOR_PAYLOAD)
    for (let i = 0; i < WARMUP + iterations; i++) {
      const f = await floorOnce(pool, body)
      const b = await device.prompt(`a lighthouse at dusk ${i}`, FRAME_TIMEOUT_MS)
      if (!(await device.waitDone(5_000))) doneMissing++
      if (i < WARMUP) continue
      floor.push(f)
      bridgeMs.push(b.frameMs)
    }
  } finally {
    await device?.close()
    exitCode = (await bridge?.stop()) ?? null
    await pool.close()
    await fake.close()
  }

  const b = summarize(bridgeMs)
  const f = summarize(floor.map((s) => s.totalMs))
  const ratio = b.p50 / f.p50
  const notes = [
    `**p50 / floor p50 = ${ratio.toFixed(2)}** (target <= 1.2: ${ratio <= 1.2 ? 'met' : 'NOT met'}); ` +
      `the bridge adds ${ms(b.p50 - f.p50)} ms at p50.`,
    `${iterations} iterations after ${WARMUP} warm-up; each prompt waited for its \`done\` status before the next.`,
    `\`done\` missing 5 s after the frame: ${doneMissing}; \`done\` before the last band: ${device?.doneBeforeFrame ?? 0}; ` +
      `error/cancelled statuses: ${device?.failures.length ?? 0}${device?.failures.length ? ` (${tally(device.failures)})` : ''}.`,
    daemonNote(bridge, exitCode),
  ]
  return {
    title: 'Latency: prompt to last band, one device',
    method:
      'fake A1111 (`noise: true`, answers at once, ~500 KB 512x512 PNG) in the bench process, daemon spawned; one ' +
      'mqtt.js device (QoS 1) sends sequential prompts, timed from just before PUBLISH to the 12th band; the floor ' +
      '(undici POST txt2img + JSON.parse + base64 + imageToRgb565 240x240 cover) runs in the bench process, interleaved.',
    body: [
      table(
        ['measurement (ms)', ...SUMMARY_HEADERS],
        [
          summaryRow('bridge: prompt -> last band', b),
          summaryRow('floor: fetch + decode + convert', f),
          summaryRow(
            'floor, of which fake A1111 (X-Process-Time)',
            summarize(floor.map((s) => s.upstreamMs)),
          ),
          summaryRow('floor, of which imageToRgb565', summarize(floor.map((s) => s.convertMs))),
          summaryRow('bridge: last band -> `done` status', summarize(device?.doneLagsMs.slice(WARMUP) ?? [])),
        ],
      ),
      '',
      ...notes.map((n) => `- ${n}`),
    ].join('\n'),
  }
}
