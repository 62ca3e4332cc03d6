import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'

/*
 * The last finished frame of each device, kept in DATA_DIR/frames so that a display that reboots, or a
 * daemon that restarts, can show the last picture at once. One file per device: a small JSON header and the
 * RGB565 pixels, written to a temporary file, fsync'd and renamed over the old one, so a crash leaves either
 * the old frame or the new one, never half of each.
 */

const MAGIC = Buffer.from('PFS1')

export interface FrameMeta {
  deviceId: string
  frameId: number
  width: number
  height: number
  format: 'rgb565-be' | 'rgb565-le'
  seed: number
  jobId: string
  prompt: string
  finishedAt: string
}

export interface StoredFrame extends FrameMeta {
  pixels: Buffer
}

export interface FrameStore {
  /** Reads the headers of every stored frame; bad files are reported and skipped. */
  load(): Promise<void>
  meta(deviceId: string): FrameMeta | undefined
  all(): FrameMeta[]
  /** Reads one device's frame from disk; undefined when there is none (or it became unreadable). */
  read(deviceId: string): Promise<StoredFrame | undefined>
  save(frame: StoredFrame): Promise<void>
  /** The frame id the device's next frame gets: +1 per frame, wrapping at 65535 (docs/protocol.md, "Frames"). */
  nextFrameId(deviceId: string): number
}

export function createFrameStore(dataDir: string, deps: { log: Logger }): FrameStore {
  const dir = join(dataDir, 'frames')
  const metas = new Map<string, FrameMeta>()
  const lastIds = new Map<string, number>()
  const fileOf = (deviceId: string) => join(dir, `${deviceId}.frame`)

  async function readFrameFile(path: string): Promise<StoredFrame> {
    const buf = await readFile(path)
    if (buf.length < 8 || !buf.subarray(0, 4).equals(MAGIC)) throw new Error('not a frame file')
    const metaLength = buf.readUInt32BE(4)
    if (8 + metaLength > buf.length) throw new Error('truncated header')
    const meta = JSON.parse(buf.subarray(8, 8 + metaLength).toString('utf8')) as FrameMeta
    const pixels = buf.subarray(8 + metaLength)
    if (pixels.length !== meta.width * meta.height * 2) throw new Error('truncated pixels')
    return { ...meta, pixels }
  }

  return {
    async load() {
      await mkdir(dir, { recursive: true })
      for (const name of await readdir(dir)) {
        if (name.endsWith('.tmp')) {
          await rm(join(dir, name), { force: true })
          continue
        }
        if (!name.endsWith('.frame')) continue
        try {
          const { pixels: _pixels, ...meta } = await readFrameFile(join(dir, name))
          metas.set(meta.deviceId, meta)
          lastIds.set(meta.deviceId, meta.frameId)
        } catch (err) {
          deps.log.warn({ err, file: join(dir, name) }, 'stored frame unreadable; ignoring it')
        }
      }
    },

    meta: (deviceId) => metas.get(deviceId),
    all: () => [...metas.values()],

    async read(deviceId) {
      if (!metas.has(deviceId)) return undefined
      try {
        return await readFrameFile(fileOf(deviceId))
      } catch (err) {
        deps.log.warn({ err, deviceId }, 'stored frame unreadable')
        return undefined
      }
    },

    async save(frame) {
      const { pixels, ...meta } = frame
      const header = Buffer.from(JSON.stringify(meta), 'utf8')
      const length = Buffer.alloc(4)
      length.writeUInt32BE(header.length)
      const path = fileOf(frame.deviceId)
      const tmp = `${path}.tmp`
      const handle = await open(tmp, 'w')
      try {
        await handle.writeFile(Buffer.concat([MAGIC, length, header, pixels]))
        await handle.sync()
      } finally {
        await handle.close()
      }
      await rename(tmp, path)
      metas.set(frame.deviceId, meta)
    },

    nextFrameId(deviceId) {
      const next = ((lastIds.get(deviceId) ?? 0) + 1) & 0xffff
      lastIds.set(deviceId, next)
      return next
    },
  }
}
