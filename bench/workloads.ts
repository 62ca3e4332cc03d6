import { performance } from 'node:perf_hooks'
import type { Pool } from 'undici'
import { imageToRgb565 } from '../src/image/convert.ts'
import { sleep } from './lib.ts'
import type { TimedDevice } from './timed-device.ts'

/*
 * Pieces of work that several benches repeat: the floor (what no bridge can skip) and a device that
 * prompts again as soon as its frame is complete.
 */

/** The panel frame the bridge makes by default. */
export const CONVERT = { width: 240, height: 240, fit: 'cover', format: 'rgb565-be', invert: false } as const

export interface FloorSample {
  totalMs: number
  /** A1111's own time (X-Process-Time): the fake making and encoding its noisy PNG. */
  upstreamMs: number
  convertMs: number
}

/** The work no bridge can skip: fetch from A1111, JSON.parse, base64, imageToRgb565. */
export async function floorOnce(pool: Pool, body: string): Promise<FloorSample> {
  const started = performance.now()
  const res = await pool.request({
    method: 'POST',
    path: '/sdapi/v1/txt2img',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body,
  })
  const json = JSON.parse(await res.body.text()) as { images: string[] }
  if (res.statusCode !== 200) throw new Error(`floor: fake A1111 answered ${res.statusCode}`)
  const png = Buffer.from(json.images[0]!, 'base64')
  const fetched = performance.now()
  await imageToRgb565(png, CONVERT)
  const finished = performance.now()
  return {
    totalMs: finished - started,
    upstreamMs: Number(res.headers['x-process-time']) * 1000,
    convertMs: finished - fetched,
  }
}

/** Past this many prompts without a frame a bench gives up: the bridge is broken, not slow. */
export const MAX_ERRORS = 200
/** A device whose prompt failed waits this long before the next, so a failing bridge is not flooded. */
const ERROR_PAUSE_MS = 100

/** One device prompts again as soon as its frame is complete, until `deadline`. */
export async function promptLoop(
  device: TimedDevice,
  options: { deadline: number; frameTimeoutMs: number; prompt: (n: number) => string },
  out: { done: number[]; frameMs: number[]; errors: string[] },
): Promise<void> {
  for (
    let n = 0;
    performance.now() < options.deadline && out.errors.length < MAX_ERRORS && n < 100_000;
    n++
  ) {
    try {
      const t = await device.prompt(options.prompt(n), options.frameTimeoutMs)
      out.done.push(performance.now())
      out.frameMs.push(t.frameMs)
    } catch (err) {
      out.errors.push((err as Error).message.replace(/^device \S+: /, ''))
      await sleep(ERROR_PAUSE_MS)
    }
  }
}
