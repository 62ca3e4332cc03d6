import type { Logger } from 'pino'
import type { Config } from '../config/schema.ts'
import type { GenerateResult, Txt2ImgPayload } from '../generator/types.ts'
import { imageToRgb565 } from '../image/convert.ts'
import { encodeFrame, FORMAT_RGB565_BE, FORMAT_RGB565_LE } from '../protocol/frame.ts'
import type { PromptRequest } from '../protocol/prompt.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { FrameStore, StoredFrame } from '../store/frame-store.ts'
import type { CompleteContext, Job } from './queue.ts'

/*
 * A job for one device: its picture becomes a frame on `<base>/<id>/frame`, and the frame is kept as the
 * device's last one (sent again on `get`, on subscribe and after a restart).
 */

export interface DeviceJobDeps {
  config: Config
  store: FrameStore
  /** Reports a status change to the device's status topic. */
  publishStatus(deviceId: string, job: Job, event: StatusEvent): void
  /** Hands a frame's chunks to every subscriber of the device's frame topic. */
  sendFrame(deviceId: string, chunks: Buffer[]): void
  now(): Date
  log: Logger
  /** Called with the time spent converting each picture (for metrics). */
  onConverted?(ms: number): void
}

/** Maps a validated prompt to the A1111 txt2img body. */
export function promptToPayload(prompt: PromptRequest): Txt2ImgPayload {
  const payload: Txt2ImgPayload = {
    prompt: prompt.prompt,
    negative_prompt: prompt.negativePrompt,
    seed: prompt.seed,
    steps: prompt.steps,
    cfg_scale: prompt.cfgScale,
    width: prompt.width,
    height: prompt.height,
    batch_size: 1,
    n_iter: 1,
  }
  if (prompt.samplerName !== undefined) payload.sampler_name = prompt.samplerName
  return payload
}

export function createDeviceJob(
  deps: DeviceJobDeps,
  id: string,
  deviceId: string,
  prompt: PromptRequest,
): Job {
  const job: Job = {
    id,
    deviceId,
    payload: promptToPayload(prompt),
    requestId: prompt.requestId,
    report: (event) => deps.publishStatus(deviceId, job, event),
    complete: (result, ctx) => deliver(deps, job, deviceId, prompt, result, ctx),
  }
  return job
}

async function deliver(
  deps: DeviceJobDeps,
  job: Job,
  deviceId: string,
  prompt: PromptRequest,
  result: GenerateResult,
  ctx: CompleteContext,
): Promise<void> {
  const { config } = deps
  const started = performance.now()
  const pixels = await imageToRgb565(result.image, {
    width: config.TARGET_WIDTH,
    height: config.TARGET_HEIGHT,
    fit: prompt.fit ?? config.RESIZE_FIT,
    format: config.PIXEL_FORMAT,
    invert: config.LUMINANCE_INVERT,
  })
  deps.onConverted?.(performance.now() - started)
  if (!ctx.claim()) return
  const frameId = deps.store.nextFrameId(deviceId)
  const chunks = encodeFrame({
    frameId,
    width: config.TARGET_WIDTH,
    height: config.TARGET_HEIGHT,
    pixels,
    format: config.PIXEL_FORMAT === 'rgb565-le' ? FORMAT_RGB565_LE : FORMAT_RGB565_BE,
    bandRows: config.BAND_ROWS,
    compress: config.FRAME_COMPRESS,
    preview: false,
  })
  ctx.report({ state: 'sending', frame_id: frameId, chunks: chunks.length })
  deps.sendFrame(deviceId, chunks)
  const stored: StoredFrame = {
    deviceId,
    frameId,
    width: config.TARGET_WIDTH,
    height: config.TARGET_HEIGHT,
    format: config.PIXEL_FORMAT,
    seed: result.seed,
    jobId: job.id,
    prompt: prompt.prompt,
    finishedAt: deps.now().toISOString(),
    pixels,
  }
  try {
    await deps.store.save(stored)
  } catch (err) {
    // The device has its frame; only the copy for later resends is lost, so the job still succeeds.
    deps.log.error({ err, deviceId, jobId: job.id }, 'could not keep the last frame in DATA_DIR')
  }
  ctx.report({ state: 'done', frame_id: frameId, seed: result.seed })
}
