import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { isDeviceId } from '../protocol/device-id.ts'
import { type DisplayInfoMessage, parseInfoJson } from '../protocol/info.ts'
import { writeFileAtomic } from './atomic-file.ts'

/*
 * The displays' last `info` messages, kept in DATA_DIR/displays.json so that a display's panel survives a
 * restart of the bridge (the embedded broker keeps retained messages in memory only). The file is input like
 * any other: each entry is checked as an info message is, and a bad one is reported and skipped. Writes go to
 * a temporary file, fsync'd and renamed over the old one, one at a time; a write asked for while one runs
 * writes the state as it is then, once.
 */

const FILE = 'displays.json'
/** Far above what 1000 displays' info takes (about 300 bytes each). */
const MAX_FILE_BYTES = 4 * 1024 * 1024

export interface KeptInfo {
  info: DisplayInfoMessage
  /** When it arrived (ISO 8601). */
  at: string
}

export interface DisplayInfoFile {
  /** The kept entries, oldest first; a missing file is an empty one. */
  load(): Promise<[string, KeptInfo][]>
  /** Writes `entries()` soon; failures are logged (the info stays in memory). */
  save(): void
  /** Resolves once every write asked for has ended. */
  flush(): Promise<void>
}

export function createDisplayInfoFile(
  dataDir: string,
  entries: () => Iterable<[string, KeptInfo]>,
  log: Logger,
): DisplayInfoFile {
  const path = join(dataDir, FILE)
  let writing: Promise<void> = Promise.resolve()
  let wanted = false

  async function write(): Promise<void> {
    wanted = false
    const body = Buffer.from(JSON.stringify({ version: 1, displays: Object.fromEntries(entries()) }))
    try {
      await writeFileAtomic(path, body)
    } catch (err) {
      log.error({ err, file: path }, 'could not keep the displays’ info in DATA_DIR')
    }
  }

  return {
    async load() {
      let text: string
      try {
        const raw = await readFile(path)
        if (raw.length > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`)
        text = raw.toString('utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
        log.warn({ err, file: path }, 'displays’ info unreadable; starting without it')
        return []
      }
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch (err) {
        log.warn({ err, file: path }, 'displays’ info is not JSON; starting without it')
        return []
      }
      const displays = (json as { displays?: unknown } | null)?.displays
      if (typeof displays !== 'object' || displays === null) return []
      const out: [string, KeptInfo][] = []
      for (const [deviceId, entry] of Object.entries(displays)) {
        try {
          if (!isDeviceId(deviceId)) throw new Error('not a device id')
          const at = (entry as { at?: unknown }).at
          if (typeof at !== 'string' || Number.isNaN(Date.parse(at))) throw new Error('no time')
          out.push([deviceId, { info: parseInfoJson((entry as { info?: unknown }).info), at }])
        } catch (err) {
          log.warn(
            { file: path, deviceId: deviceId.slice(0, 64), reason: (err as Error).message },
            'kept info skipped',
          )
        }
      }
      return out.sort((a, b) => Date.parse(a[1].at) - Date.parse(b[1].at))
    },
    save() {
      if (wanted) return
      wanted = true
      writing = writing.then(write)
    },
    flush: () => writing,
  }
}
