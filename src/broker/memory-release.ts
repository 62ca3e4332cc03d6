import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { Logger } from 'pino'

/*
 * Gives memory back after a surge of connections (issue 14, goal 3). While thousands of displays connect,
 * V8 grows its heap and keeps the pages: with 5,000 idle displays the daemon's RSS grew 20 KB per display of
 * which 10 KB were live, and neither time nor V8's ordinary collections (nor --optimize-for-size) gave the
 * rest back. A memory-reducing collection (V8's last-resort flavour: it compacts and releases free pages)
 * does: measured, 9-10 KB per display afterwards. It pauses the process (some 230 ms with 5,000 sessions), so
 * it runs once per surge, after the connections have been quiet for a while, and not while frames are queued.
 */

export interface MemoryReleaseOptions {
  /** New connections since the last release that make a surge. */
  afterConnections: number
  /** How long no new connection has come before the release runs. */
  quietMs: number
  /** True while the broker is busy (frames queued): the release waits another `quietMs`. */
  busy(): boolean
  log: Logger
  /** The collection itself; unset, V8's memory-reducing one. */
  release?: () => void
}

export interface MemoryRelease {
  /** A connection was taken. */
  connected(): void
  stop(): void
}

export function createMemoryRelease(options: MemoryReleaseOptions): MemoryRelease {
  let since = 0
  let timer: NodeJS.Timeout | null = null
  let release = options.release

  function schedule(): void {
    if (timer) clearTimeout(timer)
    timer = setTimeout(run, options.quietMs)
    timer.unref()
  }

  function run(): void {
    timer = null
    if (options.busy()) {
      schedule()
      return
    }
    release ??= memoryReducingGc()
    const started = performance.now()
    release()
    const connections = since
    since = 0
    const ms = Math.round(performance.now() - started)
    options.log.info({ connections, ms }, 'memory released after a surge of connections')
  }

  return {
    connected() {
      since++
      if (since >= options.afterConnections) schedule()
    },
    stop() {
      if (timer) clearTimeout(timer)
      timer = null
    },
  }
}

type Gc = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void

/** V8's collector as `gc()` with options (V8's gc extension), taken from a fresh context; nothing global changes. */
function memoryReducingGc(): () => void {
  const exposed = (globalThis as { gc?: Gc }).gc
  if (!exposed) setFlagsFromString('--expose-gc')
  const gc = exposed ?? (runInNewContext('gc') as Gc)
  return () => gc({ type: 'major', execution: 'sync', flavor: 'last-resort' })
}
