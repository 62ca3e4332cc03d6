import type { Logger } from 'pino'
import { encodePanelFrame, type PanelProfile } from '../image/panel.ts'
import type { FrameStore } from '../store/frame-store.ts'
import type { DeviceOutput } from './output.ts'

/*
 * A device's last finished frame, sent again: once to a client whose subscription covers the device's frame
 * topic (as a retained message would arrive), and on `get` to the client that asked when the broker can
 * tell which one that is. The encoded chunks are kept in memory (bounded in bytes, least recently used
 * forgotten first), so a resend does no disk read and no re-encoding.
 */

export interface LastFrame {
  /** Sends the last frame; resolves with how many clients get it (0 when the device has none). */
  resend(deviceId: string, onlyClientId?: string): Promise<number>
  /** A new frame of the device was kept: its chunks are what a resend sends from now on. */
  remember(deviceId: string, frameId: number, chunks: readonly Buffer[]): void
}

/** Encoded last frames kept in memory, over all devices (115 KB each at 240x240 RGB565). */
const CACHE_BYTES = 32 * 1024 * 1024

export function createLastFrame(deps: {
  store: FrameStore
  output: DeviceOutput
  panelOf(deviceId: string): PanelProfile
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
      return hit
    }
    const frame = await deps.store.read(deviceId)
    if (!frame) return undefined
    // A kept frame is sent as it was made; a panel of another size or format gets it only once re-rendered.
    if (frame.width !== panel.width || frame.height !== panel.height || frame.format !== panel.format) {
      deps.log.info({ deviceId, frameId: frame.frameId }, 'last frame was made for another panel; not resent')
      return undefined
    }
    const chunks = encodePanelFrame(frame.pixels, panel, { frameId: frame.frameId, preview: false })
    put(deviceId, frame.frameId, panelKey, chunks)
    return { frameId: frame.frameId, chunks }
  }

  return {
    async resend(deviceId, onlyClientId) {
      const frame = await chunksOf(deviceId)
      if (!frame) return 0
      const tag = `${deviceId}:${frame.frameId}`
      return deps.output.frame(deviceId, frame.chunks, { preview: false, tag, onlyClientId })
    },
    remember(deviceId, frameId, chunks) {
      put(deviceId, frameId, JSON.stringify(deps.panelOf(deviceId)), chunks)
    },
  }
}
