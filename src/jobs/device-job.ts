import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { EventBus } from '../events.ts'
import type { GenerateProgress, GenerateResult, Txt2ImgPayload } from '../generator/types.ts'
import { type PanelProfile, panelLook, renderFrame } from '../image/panel.ts'
import type { PromptRequest } from '../protocol/prompt.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { FrameStore, StoredFrame } from '../store/frame-store.ts'
import type { CompleteContext, Job } from './job.ts'
import type { DeviceOutput } from './output.ts'

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
  /** The panel a device's frames are rendered for. */
  panelOf(deviceId: string): PanelProfile
  previewDefault: boolean
  store: FrameStore
  output: DeviceOutput
  /** A frame was kept as the device's last: its chunks serve later resends. */
  remember(deviceId: string, frameId: number, chunks: readonly Buffer[]): void
  events: EventBus
  clock: Clock
  log: Logger
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
  /** The prompt's journal write, when the job is queued before it is done: its statuses wait for it. */
  recorded?: Promise<void>,
): Job {
  const previews = prompt.preview ?? deps.previewDefault
  const panel = (): PanelProfile => {
    const base = deps.panelOf(deviceId)
    // A prompt's fit and dither are for this picture only (docs/protocol.md, "Prompts").
    return { ...base, fit: prompt.fit ?? base.fit, dither: prompt.dither ?? base.dither }
  }
  /** Set once the final frame is on its way or the job ended: no preview may follow it. */
  let over = false
  let lastPreview: { at: number; image: Buffer } | null = null
  let previewBusy = false
  /**
   * Statuses held while the prompt is not yet on disk: nothing is promised before it is. Sent once it is;
   * dropped, with any later ones, if it cannot be (the intake answers with E_STORAGE instead).
   */
  let held: StatusEvent[] | undefined
  let refused = false
  if (recorded !== undefined) {
    held = []
    recorded.then(
      // After the generator's own continuation, which sends the job to A1111: the held statuses are not on
      // the way to the picture. Statuses reported meanwhile join the held ones, in order.
      () =>
        setImmediate(() => {
          const events = held ?? []
          held = undefined
          for (const event of events) deps.output.status(deviceId, job, event)
        }),
      () => {
        held = undefined
        refused = true
        over = true
      },
    )
  }

  function sendPreview(p: GenerateProgress): void {
    const image = p.preview
    if (!previews || !image || over || previewBusy) return
    const now = deps.clock.monotonic()
    // A1111 returns the same preview on every poll until the next N-step boundary.
    if (lastPreview && (now - lastPreview.at < PREVIEW_INTERVAL_MS || lastPreview.image.equals(image))) return
    lastPreview = { at: now, image }
    previewBusy = true
    renderFrame(image, panel(), { frameId: deps.store.nextFrameId(deviceId), preview: true })
      .then(({ chunks }) => {
        if (!over) deps.output.frame(deviceId, chunks, { preview: true })
      })
      .catch((err: unknown) =>
        deps.log.debug({ deviceId, jobId: id, reason: (err as Error).message }, 'preview skipped'),
      )
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
    recorded,
    report(event) {
      if (event.state === 'cancelled' || event.state === 'error') over = true
      if (refused) return
      if (held !== undefined) held.push(event)
      else deps.output.status(deviceId, job, event)
    },
    onProgress: sendPreview,
    complete: async (result, ctx) => {
      over = true
      await deliver(deps, job, panel(), prompt, result, ctx)
    },
  }
  return job
}

async function deliver(
  deps: DeviceJobDeps,
  job: Job,
  panel: PanelProfile,
  prompt: PromptRequest,
  result: GenerateResult,
  ctx: CompleteContext,
): Promise<void> {
  const deviceId = job.deviceId!
  const started = deps.clock.monotonic()
  const frameId = deps.store.nextFrameId(deviceId)
  const { pixels, chunks } = await renderFrame(result.image, panel, { frameId, preview: false })
  deps.events.emit('frame.converted', { ms: deps.clock.monotonic() - started, via: 'mqtt' })
  if (!ctx.claim()) return
  ctx.report({ state: 'sending', frame_id: frameId, chunks: chunks.length })
  deps.output.frame(deviceId, chunks, { preview: false, tag: `${deviceId}:${frameId}` })
  const stored: StoredFrame = {
    deviceId,
    frameId,
    width: panel.width,
    height: panel.height,
    format: panel.format as StoredFrame['format'],
    seed: result.seed,
    jobId: job.id,
    prompt: prompt.prompt,
    finishedAt: deps.clock.now().toISOString(),
    look: panelLook(panel),
    pixels,
  }
  // What the prompt chose for this picture stays its own when the picture is rendered for a new panel.
  if (prompt.fit !== undefined) stored.fit = prompt.fit
  if (prompt.dither !== undefined) stored.dither = prompt.dither
  try {
    // The picture itself is kept too, so that a change of panel renders it anew (issue 15).
    await deps.store.save(stored, result.image)
    deps.remember(deviceId, frameId, chunks)
  } catch (err) {
    // The device has its frame; only the copy for later resends is lost, so the job still succeeds.
    deps.log.error({ err, deviceId, jobId: job.id }, 'could not keep the last frame in DATA_DIR')
  }
  ctx.report({ state: 'done', frame_id: frameId, seed: result.seed })
}
