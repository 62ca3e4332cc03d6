import { Session } from 'node:inspector/promises'

/*
 * A deterministic measure of work: how many times V8 entered each function and block of one source file
 * while `work` ran, from V8's precise coverage (the counters c8 and vitest's v8 coverage read). Unlike a
 * stopwatch it gives the same number on a busy machine, so a test can say "twice the input, about twice the
 * work" without a time threshold.
 *
 * V8 counts blocks only in functions compiled after precise coverage started, so the file is imported
 * afresh for each measurement (a new query string makes a new module instance).
 */

let instances = 0

/** Imports `file` (an absolute file URL) anew, runs `work` with it and returns the blocks executed in it. */
export async function executedBlocks<M>(file: URL, work: (mod: M) => unknown): Promise<number> {
  const session = new Session()
  session.connect()
  try {
    await session.post('Profiler.enable')
    await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true })
    const mod = (await import(`${file.href}?measure=${++instances}`)) as M
    // Taking the coverage resets the counters: what is counted next is `work` alone.
    await session.post('Profiler.takePreciseCoverage')
    await work(mod)
    const { result } = await session.post('Profiler.takePreciseCoverage')
    let count = 0
    for (const script of result) {
      if (!script.url.includes(file.pathname)) continue
      for (const fn of script.functions) for (const range of fn.ranges) count += range.count
    }
    return count
  } finally {
    await session.post('Profiler.stopPreciseCoverage')
    session.disconnect()
  }
}
