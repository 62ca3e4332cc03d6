import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { z } from 'zod'
import { isDeviceId } from '../protocol/device-id.ts'
import { writeFileAtomic } from '../store/atomic-file.ts'
import { TELEMETRY_KEYS, type TelemetryKey } from './discovery.ts'

/*
 * The displays Home Assistant has been told about, kept in DATA_DIR/home-assistant.json so that they are
 * still there after a restart (a display that is off at the time still has its device in Home Assistant).
 * Bounded: past MAX_DISPLAYS the one heard from least recently is dropped (and its discovery emptied by the
 * caller). Written whole to a temporary file, fsync'd and renamed, one write at a time; a write that comes
 * while one runs is folded into the next.
 */

export const MAX_DISPLAYS = 1000
const FILE = 'home-assistant.json'

const displaySchema = z.object({
  id: z.string().refine(isDeviceId),
  panel: z.string().max(64).optional(),
  fw: z.string().max(64).optional(),
  telemetry: z.array(z.enum(TELEMETRY_KEYS)).default([]),
})
const fileSchema = z.object({ version: z.literal(1), displays: z.array(displaySchema) })

export interface KnownDisplay {
  id: string
  panel?: string | undefined
  fw?: string | undefined
  telemetry: TelemetryKey[]
}

export interface KnownDisplays {
  load(): Promise<void>
  get(id: string): KnownDisplay | undefined
  all(): KnownDisplay[]
  /**
   * Adds or updates a display (it becomes the most recently heard from). Returns whether anything changed,
   * and the display dropped to stay within MAX_DISPLAYS, if one was.
   */
  put(display: KnownDisplay): { changed: boolean; dropped: string | undefined }
  /** Marks a display as heard from now, without changing it. */
  touch(id: string): void
  forget(id: string): boolean
  /** Resolves once what was put so far is on disk. */
  flush(): Promise<void>
}

export function createKnownDisplays(dataDir: string, log: Logger): KnownDisplays {
  const path = join(dataDir, FILE)
  const displays = new Map<string, KnownDisplay>()
  let writing: Promise<void> | null = null
  let dirty = false

  async function write(): Promise<void> {
    while (dirty) {
      dirty = false
      const body = JSON.stringify({ version: 1, displays: [...displays.values()] })
      await writeFileAtomic(path, body)
    }
  }

  function save(): void {
    dirty = true
    writing ??= write()
      .catch((err: unknown) => log.error({ err }, 'could not keep the Home Assistant displays in DATA_DIR'))
      .finally(() => {
        writing = null
      })
  }

  return {
    async load() {
      let text: string
      try {
        text = await readFile(path, 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
        throw err
      }
      let parsed: z.infer<typeof fileSchema>
      try {
        parsed = fileSchema.parse(JSON.parse(text))
      } catch (err) {
        // The file only spares Home Assistant some rediscovery; a bad one is reported and started over.
        log.warn(
          { code: 'E_STORAGE', reason: (err as Error).message, file: path },
          'Home Assistant displays file ignored',
        )
        return
      }
      for (const d of parsed.displays.slice(-MAX_DISPLAYS)) displays.set(d.id, d)
    },
    get: (id) => displays.get(id),
    all: () => [...displays.values()],
    put(display) {
      const old = displays.get(display.id)
      const changed = old === undefined || JSON.stringify(old) !== JSON.stringify(display)
      displays.delete(display.id)
      displays.set(display.id, display)
      let dropped: string | undefined
      if (displays.size > MAX_DISPLAYS) {
        dropped = displays.keys().next().value!
        displays.delete(dropped)
      }
      if (changed || dropped !== undefined) save()
      return { changed, dropped }
    },
    touch(id) {
      const old = displays.get(id)
      if (!old) return
      displays.delete(id)
      displays.set(id, old)
    },
    forget(id) {
      if (!displays.delete(id)) return false
      save()
      return true
    },
    async flush() {
      while (writing) await writing
    },
  }
}
