import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { encodePanelFrame, type PanelProfile, panelLook, renderFrame } from '../image/panel.ts'
import type { FrameStore, StoredFrame } from '../store/frame-store.ts'
import type { DeviceOutput } from './output.ts'

/*
 * A device's last finished frame, sent again: once to a client whose subscription covers the device's frame
 * topic (as a retained message would arrive), and on `get` to the client that asked when the broker can
 * tell which one that is. The encoded chunks are kept in memory (bounded in bytes, least recently used
 * forgotten first), so a resend does no disk read and no re-encoding.
 *
 * A kept frame made for another panel (the display reported another size, format, palette, dither or tone
 * since) is not sent as it is: the picture it was made from is rendered anew for the panel, with what its
 * prompt chose (fit, dither) kept, and sent (issue 15).
 */

export interface LastFrame {
  /** Sends the last frame; resolves with how many clients get it (0 when the device has none). */
  resend(deviceId: string, onlyClientId?: string): Promise<number>
  /** A new frame of the device was kept: its chunks are what a resend sends from now on. */
  remember(deviceId: string, frameId: number, chunks: readonly Buffer[]): void
  /**
   * The device's panel changed: its last picture is rendered anew from the kept source and sent to every
   * subscriber. Resolves with how many clients get it (0 when there is no picture to render).
   */
  panelChanged(deviceId: string): Promise<number>
}

/** Encoded last frames kept in memory, over all devices (115 KB each at 240x240 RGB565). */
const CACHE_BYTES = 32 * 1024 * 1024

export function createLastFrame(deps: {
  store: FrameStore
  output: DeviceOutput
  panelOf(deviceId: string): PanelProfile
  clock: Clock
  log: Logger
}): LastFrame {
  const cache = new Map<
    string,
    { frameId: number; panel: string; chunks: readonly Buffer[]; bytes: number }
  >()
  let cachedBytes = 0

  function put(deviceId: string, frameId: number, panel: string, chunks: readonly Buffer[]): void {
    drop(deviceId)
    const bytes = chunks.reduce((n, c) => n + c.length, 0)
    cache.set(deviceId, { frameId, panel, chunks, bytes })
    cachedBytes += bytes
    for (const [id, entry] of cache) {
      if (cachedBytes <= CACHE_BYTES) break
      cache.delete(id)
      cachedBytes -= entry.bytes
    }
  }

  function drop(deviceId: string): void {
    const old = cache.get(deviceId)
    if (!old) return
    cache.delete(deviceId)
    cachedBytes -= old.bytes
  }

  /** One render at a time per device, so a resend and a panel change cannot make two frames of one picture. */
  const busy = new Map<string, Promise<unknown>>()
  function oneAtATime<T>(deviceId: string, run: () => Promise<T>): Promise<T> {
    const next = (busy.get(deviceId) ?? Promise.resolve()).then(run, run)
    const settled = next.catch(() => undefined)
    busy.set(deviceId, settled)
    void settled.then(() => busy.get(deviceId) === settled && busy.delete(deviceId))
    return next
  }

  /** The kept picture rendered for the panel as a new frame, kept in place of the old one. */
  async function rerender(
    deviceId: string,
    panel: PanelProfile,
    old: StoredFrame | undefined,
  ): Promise<{ frameId: number; chunks: readonly Buffer[] } | undefined> {
    const meta = old ?? deps.store.meta(deviceId)
    const source = meta && (await deps.store.readSource(deviceId))
    if (!meta || !source) {
      deps.log.info(
        { deviceId },
        'last frame was made for another panel and its picture is not kept; not resent',
      )
      return undefined
    }
    const frameId = deps.store.nextFrameId(deviceId)
    const made = asMade(meta, panel)
    const { pixels, chunks } = await renderFrame(source, made, { frameId, preview: false })
    const { width, height, format } = panel
    const frame: StoredFrame = { ...meta, frameId, width, height, format, look: panelLook(made), pixels }
    frame.finishedAt = deps.clock.now().toISOString()
    await deps.store.save(frame, source)
    put(deviceId, frameId, JSON.stringify(panel), chunks)
    deps.log.info({ deviceId, frameId, width, height, format }, 'last picture rendered for the new panel')
    return { frameId, chunks }
  }

  async function chunksOf(
    deviceId: string,
  ): Promise<{ frameId: number; chunks: readonly Buffer[] } | undefined> {
    const meta = deps.store.meta(deviceId)
    if (!meta) return undefined
    const panel = deps.panelOf(deviceId)
    const panelKey = JSON.stringify(panel)
    const hit = cache.get(deviceId)
    if (hit && hit.frameId === meta.frameId && hit.panel === panelKey) {
      cache.delete(deviceId)
      cache.set(deviceId, hit)
      await deps.store.touch(deviceId)
      return hit
    }
    const frame = await deps.store.read(deviceId)
    if (!frame) return undefined
    // A kept frame is sent as it was made; a panel of another size or format gets the picture re-rendered.
    if (!fits(frame, panel)) return rerender(deviceId, panel, frame)
    const chunks = encodePanelFrame(frame.pixels, panel, { frameId: frame.frameId, preview: false })
    put(deviceId, frame.frameId, panelKey, chunks)
    return { frameId: frame.frameId, chunks }
  }

  return {
    async resend(deviceId, onlyClientId) {
      const frame = await oneAtATime(deviceId, () => chunksOf(deviceId))
      if (!frame) return 0
      const tag = `${deviceId}:${frame.frameId}`
      return deps.output.frame(deviceId, frame.chunks, { preview: false, tag, onlyClientId })
    },
    remember(deviceId, frameId, chunks) {
      put(deviceId, frameId, JSON.stringify(deps.panelOf(deviceId)), chunks)
    },
    async panelChanged(deviceId) {
      const frame = await oneAtATime(deviceId, async () => {
        const meta = deps.store.meta(deviceId)
        const panel = deps.panelOf(deviceId)
        // Same size, format and look: the kept frame is still right (a resend re-encodes it for the new bands).
        if (!meta) return undefined
        if (fits(meta, panel)) return chunksOf(deviceId)
        return rerender(deviceId, panel, undefined)
      })
      if (!frame) return 0
      const tag = `${deviceId}:${frame.frameId}`
      return deps.output.frame(deviceId, frame.chunks, { preview: false, tag })
    },
  }
}

type MadeFor = Pick<StoredFrame, 'width' | 'height' | 'format' | 'look' | 'fit' | 'dither'>

/** The panel as the frame's prompt used it: its own fit and dither over the panel's. */
function asMade(frame: MadeFor, panel: PanelProfile): PanelProfile {
  return { ...panel, fit: frame.fit ?? panel.fit, dither: frame.dither ?? panel.dither }
}

/** Whether the kept frame's pixels are what the panel would show; a frame kept without a look, by size and format. */
function fits(frame: MadeFor, panel: PanelProfile): boolean {
  const same = frame.width === panel.width && frame.height === panel.height && frame.format === panel.format
  return same && (frame.look === undefined || frame.look === panelLook(asMade(frame, panel)))
}
