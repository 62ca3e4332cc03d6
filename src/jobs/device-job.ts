import type { Logger } from 'pino'
import type { Config } from '../config/schema.ts'
import type { GenerateProgress, GenerateResult, Txt2ImgPayload } from '../generator/types.ts'
import { imageToRgb565 } from '../image/convert.ts'
import { encodeFrame, FORMAT_RGB565_BE, FORMAT_RGB565_LE } from '../protocol/frame.ts'
import type { PromptRequest } from '../protocol/prompt.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { FrameStore, StoredFrame } from '../store/frame-store.ts'
import type { CompleteContext, Job } from './queue.ts'

/*
 * A job for one device: its picture becomes a frame on `<base>/<id>/frame`, and the frame is kept as the
 * device's last one (sent again on `get`, on subscribe and after a restart). With previews on, the pictures
 * A1111 shows while it works go out as preview frames (flag bit 1) on the way.
 */

/** At most one preview frame this often: a Pico on Wi-Fi needs about a quarter second per frame. */
const PREVIEW_INTERVAL_MS = 2_000
/** A1111 decodes a preview every N steps only if asked (its default of 10 shows few on a 20-step job). */
const PREVIEW_EVERY_N_STEPS = 5

export interface DeviceJobDeps {
  config: Config
  store: FrameStore
  /** Reports a status change to the device's status topic. */
  publishStatus(deviceId: string, job: Pick<Job, 'id' | 'requestId'>, event: StatusEvent): void
  /** Hands a frame's chunks to every subscriber of the device's frame topic. */
  sendFrame(deviceId: string, chunks: Buffer[], preview: boolean): void
  now(): Date
  log: Logger
  /** Called with the time spent converting each picture (for metrics). */
  onConverted?(ms: number): void
}

/** Maps a validated prompt to the A1111 txt2img body. */
export function promptToPayload(prompt: PromptRequest, preview: boolean): Txt2ImgPayload {
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
  if (preview) payload.override_settings = { show_progress_every_n_steps: PREVIEW_EVERY_N_STEPS }
  return payload
}

export function createDeviceJob(
  deps: DeviceJobDeps,
  id: string,
  deviceId: string,
  prompt: PromptRequest,
): Job {
  const previews = prompt.preview ?? deps.config.PREVIEW_DEFAULT
  /** Set once the final frame is on its way or the job ended: no preview may follow it. */
  let over = false
  let lastPreview: { at: number; image: Buffer } | null = null
  let previewBusy = false

  function sendPreview(p: GenerateProgress): void {
    const image = p.preview
    if (!previews || !image || over || previewBusy) return
    const now = performance.now()
    // A1111 returns the same preview on every poll until the next N-step boundary.
    if (lastPreview && (now - lastPreview.at < PREVIEW_INTERVAL_MS || lastPreview.image.equals(image))) return
    lastPreview = { at: now, image }
    previewBusy = true
    toChunks(deps, deviceId, image, prompt, true)
      .then(({ chunks }) => {
        if (!over) deps.sendFrame(deviceId, chunks, true)
      })
      .catch((err: unknown) => deps.log.debug({ err, deviceId, jobId: id }, 'preview skipped'))
      .finally(() => {
        previewBusy = false
      })
  }

  const job: Job = {
    id,
    deviceId,
    owner: deviceId,
    durable: true,
    payload: promptToPayload(prompt, previews),
    requestId: prompt.requestId,
    report(event) {
      if (event.state === 'cancelled' || event.state === 'error') over = true
      deps.publishStatus(deviceId, job, event)
    },
    onProgress: sendPreview,
    complete: async (result, ctx) => {
      over = true
      await deliver(deps, job, deviceId, prompt, result, ctx)
    },
  }
  return job
}

async function toChunks(
  deps: DeviceJobDeps,
  deviceId: string,
  image: Buffer,
  prompt: PromptRequest,
  preview: boolean,
): Promise<{ chunks: Buffer[]; pixels: Buffer; frameId: number }> {
  const { config } = deps
  const started = performance.now()
  const pixels = await imageToRgb565(image, {
    width: config.TARGET_WIDTH,
    height: config.TARGET_HEIGHT,
    fit: prompt.fit ?? config.RESIZE_FIT,
    format: config.PIXEL_FORMAT,
    invert: config.LUMINANCE_INVERT,
  })
  if (!preview) deps.onConverted?.(performance.now() - started)
  const frameId = deps.store.nextFrameId(deviceId)
  const chunks = encodeFrame({
    frameId,
    width: config.TARGET_WIDTH,
    height: config.TARGET_HEIGHT,
    pixels,
    format: config.PIXEL_FORMAT === 'rgb565-le' ? FORMAT_RGB565_LE : FORMAT_RGB565_BE,
    bandRows: config.BAND_ROWS,
    compress: config.FRAME_COMPRESS,
    preview,
  })
  return { chunks, pixels, frameId }
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
  const { chunks, pixels, frameId } = await toChunks(deps, deviceId, result.image, prompt, false)
  if (!ctx.claim()) return
  ctx.report({ state: 'sending', frame_id: frameId, chunks: chunks.length })
  deps.sendFrame(deviceId, chunks, false)
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
