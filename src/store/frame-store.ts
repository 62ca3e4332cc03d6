import { mkdir, open, readFile, rm, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { AppError } from '../errors.ts'
import { isDeviceId } from '../protocol/device-id.ts'
import { writeFileAtomic } from './atomic-file.ts'
import { scanFrameDir } from './frame-dir.ts'
import {
  encodeFrameFile,
  type FrameMeta,
  keepsSource,
  readFrameFile,
  readFrameSource,
  type StoredFrame,
} from './frame-file.ts'
import { storageReason } from './job-journal.ts'

export type { FrameMeta, StoredFrame } from './frame-file.ts'

/*
 * The last finished frame of each device, kept in DATA_DIR/frames so that a display that reboots, or a
 * daemon that restarts, can show the last picture at once. One file per device: a small JSON header and the
 * packed pixels, written to a temporary file, fsync'd and renamed over the old one, so a crash leaves either
 * the old frame or the new one, never half of each.
 *
 * Any device id can leave a file here, so the store is bounded (issue 13): a display whose frame was neither
 * made nor sent for FRAME_KEEP_DAYS is forgotten, and past FRAME_STORE_MAX_BYTES the least recently used go
 * first. With each frame the store keeps the picture it was made from (the PNG A1111 sent), so a display whose
 * panel changes gets it rendered anew (issue 15); it counts in the bytes and goes with it. It is in the frame's
 * own file, after the pixels: one write and one fsync a frame, and a crash never parts a frame from its
 * picture. Frames kept before that have it in `<id>.source` beside, which is read as before and replaced by
 * the next frame.
 */

const DAY_MS = 24 * 3600 * 1000

export interface FrameStoreLimits {
  /** Days a display's frame is kept after it was last made or sent (FRAME_KEEP_DAYS). */
  keepDays: number
  /** Bytes of frame files kept in all (FRAME_STORE_MAX_BYTES); the least recently used go first. */
  maxBytes: number
}

export const DEFAULT_FRAME_STORE_LIMITS: FrameStoreLimits = { keepDays: 30, maxBytes: 256 * 1024 * 1024 }

export interface FrameStore {
  /** Reads the headers of every stored frame; bad files are reported and skipped. */
  load(): Promise<void>
  meta(deviceId: string): FrameMeta | undefined
  all(): FrameMeta[]
  /** Reads one device's frame from disk; undefined when there is none (or it became unreadable). */
  read(deviceId: string): Promise<StoredFrame | undefined>
  /**
   * Keeps the device's frame, and with `source` the picture it was made from (without, the kept source
   * stays); rejects with E_STORAGE when DATA_DIR cannot take it.
   */
  save(frame: StoredFrame, source?: Buffer): Promise<void>
  /** The picture the device's frame was made from; undefined when none was kept (or it became unreadable). */
  readSource(deviceId: string): Promise<Buffer | undefined>
  /** The frame id the device's next frame gets: +1 per frame, wrapping at 65535 (docs/protocol.md, "Frames"). */
  nextFrameId(deviceId: string): number
  /** Another bridge sent the device this frame id (MQTT_URL): the next one here is numbered after it if newer. */
  seenFrameId(deviceId: string, frameId: number): void
  /** The frame was sent from the copy in memory (last-frame.ts): that counts as use, as a read does. */
  touch(deviceId: string): Promise<void>
  /** Removes the device's frame file and everything the store knows of it. False when there was nothing. */
  forget(deviceId: string): Promise<boolean>
  /** Forgets displays unused for longer than keepDays, then the least recently used past maxBytes. */
  sweep(now: Date): Promise<{ forgotten: string[] }>
  /** Bytes of the frame files kept. */
  bytes(): number
}

interface Kept {
  meta: FrameMeta
  /** Bytes of its file, and of a `.source` file beside it (kept before sources went into the frame's file). */
  bytes: number
  /** When the frame was last made or sent (ms since the epoch), for keepDays and least recently used. */
  usedAt: number
}

/** Devices whose last frame id is remembered, at most (seenFrameId adds the ones other bridges served). */
const MAX_FRAME_IDS = 50_000

export function createFrameStore(
  dataDir: string,
  deps: { log: Logger; now?: () => Date },
  limits: FrameStoreLimits = DEFAULT_FRAME_STORE_LIMITS,
): FrameStore {
  const dir = join(dataDir, 'frames')
  const now = deps.now ?? (() => new Date())
  /** In least recently used order: a frame made or sent moves to the end. */
  const kept = new Map<string, Kept>()
  const lastIds = new Map<string, number>()
  let totalBytes = 0
  const fileOf = (deviceId: string) => join(dir, `${deviceId}.frame`)
  const sourceOf = (deviceId: string) => join(dir, `${deviceId}.source`)
  /**
   * Where each kept source picture is: in the frame's file (`inFrame`) or in a `.source` file beside it,
   * which frames kept before sources went into the frame's file have. Its bytes are in its frame's Kept.bytes.
   */
  const sources = new Map<string, { bytes: number; inFrame: boolean }>()

  /** Writes to a temporary file, fsyncs and renames it over `path`: a crash leaves the old file or the new. */
  async function writeAtomic(path: string, body: readonly Buffer[]): Promise<void> {
    try {
      await writeFileAtomic(path, body)
    } catch (err) {
      const reason = storageReason(err)
      throw new AppError('E_STORAGE', `DATA_DIR cannot be written (${reason}) while keeping ${path}`, {
        cause: err,
      })
    }
  }

  function keep(deviceId: string, entry: Kept): void {
    drop(deviceId)
    kept.set(deviceId, entry)
    totalBytes += entry.bytes
  }

  function drop(deviceId: string): void {
    const old = kept.get(deviceId)
    if (!old) return
    kept.delete(deviceId)
    totalBytes -= old.bytes
  }

  /** A frame made or sent: it moves to the back of the least recently used, on disk too (its file's time). */
  async function used(deviceId: string): Promise<void> {
    const entry = kept.get(deviceId)
    if (!entry) return
    const at = now()
    const before = entry.usedAt
    entry.usedAt = at.getTime()
    kept.delete(deviceId)
    kept.set(deviceId, entry)
    // The file's time carries the use across a restart; to the hour is enough for FRAME_KEEP_DAYS. Either
    // way: a store's clock (deps.now) may be behind the file's.
    if (Math.abs(entry.usedAt - before) < 3_600_000) return
    await utimes(fileOf(deviceId), at, at).catch((err: unknown) =>
      deps.log.debug({ err, deviceId }, 'frame file time not updated'),
    )
  }

  /** The picture the device's frame was made from, from wherever it is kept. */
  async function readSource(deviceId: string): Promise<Buffer | undefined> {
    const where = sources.get(deviceId)
    if (!kept.has(deviceId) || where === undefined || !isDeviceId(deviceId)) return undefined
    try {
      if (!where.inFrame) return await readFile(sourceOf(deviceId))
      const handle = await open(fileOf(deviceId), 'r')
      try {
        return await readFrameSource(handle, deviceId)
      } finally {
        await handle.close()
      }
    } catch (err) {
      deps.log.warn({ err, deviceId }, 'stored source picture unreadable')
      return undefined
    }
  }

  async function forget(deviceId: string): Promise<boolean> {
    const had = kept.has(deviceId)
    drop(deviceId)
    lastIds.delete(deviceId)
    sources.delete(deviceId)
    if (!isDeviceId(deviceId)) return had
    await rm(fileOf(deviceId), { force: true })
    await rm(sourceOf(deviceId), { force: true })
    return had
  }

  /** Forgets the least recently used frames (never `spare`) until the files fit in maxBytes. */
  async function trim(spare?: string): Promise<string[]> {
    const gone: string[] = []
    for (const deviceId of [...kept.keys()]) {
      if (totalBytes <= limits.maxBytes) break
      if (deviceId === spare) continue
      await forget(deviceId)
      gone.push(deviceId)
    }
    return gone
  }

  return {
    async load() {
      await mkdir(dir, { recursive: true })
      const { frames, beside } = await scanFrameDir(dir, deps.log)
      frames.sort((a, b) => a.usedAt - b.usedAt)
      for (const { deviceId, sourceBytes, ...entry } of frames) {
        // A frame with its source in its own file has no use for one beside it (a crash came between the
        // two), which is removed with the orphans below.
        const size = sourceBytes === undefined ? beside.get(deviceId) : undefined
        if (size !== undefined) beside.delete(deviceId)
        if (sourceBytes !== undefined) sources.set(deviceId, { bytes: sourceBytes, inFrame: true })
        else if (size !== undefined) sources.set(deviceId, { bytes: size, inFrame: false })
        keep(deviceId, { ...entry, bytes: entry.bytes + (size ?? 0) })
        lastIds.set(deviceId, entry.meta.frameId)
      }
      // A source whose frame is gone (or was refused) would never be used or counted.
      for (const deviceId of beside.keys())
        if (isDeviceId(deviceId)) await rm(sourceOf(deviceId), { force: true })
    },

    meta: (deviceId) => kept.get(deviceId)?.meta,
    touch: used,
    all: () => [...kept.values()].map((k) => k.meta),

    async read(deviceId) {
      if (!kept.has(deviceId) || !isDeviceId(deviceId)) return undefined
      try {
        const handle = await open(fileOf(deviceId), 'r')
        try {
          const frame = await readFrameFile(handle, deviceId)
          await used(deviceId)
          return frame
        } finally {
          await handle.close()
        }
      } catch (err) {
        deps.log.warn({ err, deviceId }, 'stored frame unreadable')
        return undefined
      }
    },

    async save(frame, given) {
      const id = frame.deviceId
      // A frame saved without its picture keeps the one its device's frame has.
      let source = given ?? (kept.has(id) ? await readSource(id) : undefined)
      if (source !== undefined && !keepsSource(source)) source = undefined
      // Checked as it would be when read, so the store never writes what it would refuse.
      const { meta, parts, bytes } = encodeFrameFile(frame, source)
      await writeAtomic(fileOf(id), parts)
      const before = sources.get(id)
      if (source !== undefined) sources.set(id, { bytes: source.length, inFrame: true })
      else sources.delete(id)
      // A picture beside the frame, kept before sources went into its file, is replaced by this one; the
      // frame is on disk first, so a crash between the two leaves it beside a frame that needs it no more.
      if (before !== undefined && !before.inFrame) await rm(sourceOf(id), { force: true })
      // Written just now, the file has the system's time: used() sets it only if the store's clock differs.
      keep(id, { meta, bytes, usedAt: Date.now() })
      await used(id)
      const gone = await trim(meta.deviceId)
      if (gone.length > 0)
        deps.log.info(
          { forgotten: gone.length, bytes: totalBytes },
          'frame store over its size; oldest frames forgotten',
        )
    },

    readSource,

    nextFrameId(deviceId) {
      const next = ((lastIds.get(deviceId) ?? 0) + 1) & 0xffff
      lastIds.set(deviceId, next)
      return next
    },

    seenFrameId(deviceId, frameId) {
      const last = lastIds.get(deviceId)
      // Anyone may write a status on an open broker: ids heard of are bounded like a broker's sessions.
      if (last === undefined && lastIds.size >= MAX_FRAME_IDS) return
      // Newer as a display compares them: ahead by less than half the 16-bit range (docs/protocol.md).
      if (last === undefined || ((frameId - last) & 0xffff) < 0x8000) lastIds.set(deviceId, frameId & 0xffff)
    },

    forget,

    async sweep(at) {
      const forgotten: string[] = []
      const before = at.getTime() - limits.keepDays * DAY_MS
      for (const [deviceId, entry] of [...kept]) {
        if (entry.usedAt >= before) continue
        await forget(deviceId)
        forgotten.push(deviceId)
      }
      forgotten.push(...(await trim()))
      if (forgotten.length > 0)
        deps.log.info(
          { forgotten: forgotten.length, bytes: totalBytes },
          'frames of displays not seen lately forgotten',
        )
      return { forgotten }
    },

    bytes: () => totalBytes,
  }
}
