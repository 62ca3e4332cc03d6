import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { setPriority } from 'node:os'

/*
 * The event loop answers MQTT, /health, the dashboard and every HTTP request; converting pictures (libvips,
 * driven from libuv's thread pool) and reading A1111's answers (worker threads) are background work that can
 * wait a moment. On a small machine running several conversions at once, these threads took the CPU from the
 * event loop and /health answered in 30-80 ms instead of 2 (issue 14, goal 4). Linux gives every thread a nice
 * value of its own, so the background threads get a higher one: when the CPU is short the event loop runs
 * first, and when it is not nothing changes. Elsewhere (no /proc) this does nothing.
 */

/** The nice value of background threads: a tenth of the event loop's share when both want a CPU. */
export const BACKGROUND_NICE = 10
/** Threads named so are background work: libuv's pool (sharp's pipelines, file writes) and libvips' own. */
const BACKGROUND_NAMES = /^(libuv-worker|libvips)/
/** Threads come and go rarely; their list is read again at most this often. */
const RESCAN_MS = 1000

const lowered = new Set<number>()
let lastScan = Number.NEGATIVE_INFINITY

/** Gives libuv's and libvips' threads of this process the background nice value, once each. Never throws. */
export function lowerBackgroundThreads(now = performance.now()): void {
  if (now - lastScan < RESCAN_MS) return
  lastScan = now
  let tids: string[]
  try {
    tids = readdirSync('/proc/self/task')
  } catch {
    return
  }
  const live = new Set<number>()
  for (const name of tids) {
    const tid = Number(name)
    live.add(tid)
    if (tid === process.pid || lowered.has(tid)) continue
    try {
      if (!BACKGROUND_NAMES.test(readFileSync(`/proc/self/task/${name}/comm`, 'utf8'))) continue
      setPriority(tid, BACKGROUND_NICE)
      lowered.add(tid)
    } catch {
      // The thread ended meanwhile, or the system refuses: it keeps its priority.
    }
  }
  // A thread id of an ended thread may be given to a new thread later.
  for (const tid of lowered) if (!live.has(tid)) lowered.delete(tid)
}

/** Gives the calling thread (a worker thread, never the main one) the background nice value. Never throws. */
export function lowerThisThread(): void {
  try {
    // "<pid>/task/<tid>": the thread's own id, which os.setPriority takes on Linux.
    const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1))
    if (Number.isInteger(tid) && tid !== process.pid) setPriority(tid, BACKGROUND_NICE)
  } catch {
    // No /proc, or the system refuses: the thread keeps its priority.
  }
}
