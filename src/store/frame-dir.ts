import { open, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { isDeviceId } from '../protocol/device-id.ts'
import { type FrameMeta, readFrameHeader } from './frame-file.ts'

/*
 * What DATA_DIR/frames holds when the frame store loads (frame-store.ts): the header of each frame file that
 * can be read, and the size of each `.source` file (where earlier versions kept a frame's picture). Files
 * left half-written by a crash (`.tmp`) are removed; a frame file that cannot be read is reported and left.
 */

export interface FoundFrame {
  deviceId: string
  meta: FrameMeta
  /** Bytes of the file. */
  bytes: number
  /** The file's time (ms since the epoch): when the frame was last made or sent, to the hour. */
  usedAt: number
  /** Bytes of the source picture in the file, if it has one. */
  sourceBytes: number | undefined
}

export async function scanFrameDir(
  dir: string,
  log: Logger,
): Promise<{ frames: FoundFrame[]; beside: Map<string, number> }> {
  const frames: FoundFrame[] = []
  const beside = new Map<string, number>()
  for (const name of await readdir(dir)) {
    const file = join(dir, name)
    if (name.endsWith('.tmp')) {
      await rm(file, { force: true })
      continue
    }
    if (name.endsWith('.source')) {
      const size = await stat(file).then(
        (st) => st.size,
        () => undefined,
      )
      if (size !== undefined) beside.set(name.slice(0, -'.source'.length), size)
      continue
    }
    if (!name.endsWith('.frame')) continue
    const deviceId = name.slice(0, -'.frame'.length)
    try {
      if (!isDeviceId(deviceId)) throw new Error('file name is not a device id')
      const handle = await open(file, 'r')
      try {
        const { meta, sourceBytes } = await readFrameHeader(handle, deviceId)
        const { size, mtimeMs } = await handle.stat()
        frames.push({ deviceId, meta, bytes: size, usedAt: mtimeMs, sourceBytes })
      } finally {
        await handle.close()
      }
    } catch (err) {
      log.warn({ err, file }, 'stored frame unreadable; ignoring it')
    }
  }
  return { frames, beside }
}
