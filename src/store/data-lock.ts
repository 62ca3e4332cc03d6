import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { uptime } from 'node:os'
import { join } from 'node:path'

/*
 * One daemon per DATA_DIR. A second one started on the same folder (a second `npm start`, a service and a
 * manual run) would rewrite the job journal under the first one's feet, and the first one's records would
 * go to a file that no longer exists. The lock is a pid file created exclusively; a file left by a daemon
 * that died is taken over.
 */

export interface DataLock {
  release(): void
}

export class DataDirInUse extends Error {
  readonly pid: number
  constructor(dir: string, pid: number) {
    super(
      `DATA_DIR ${dir} is in use by another pico-a1111-bridge (pid ${pid}); stop it or use another DATA_DIR`,
    )
    this.name = 'DataDirInUse'
    this.pid = pid
  }
}

export function lockDataDir(dir: string, pid: number = process.pid): DataLock {
  const path = join(dir, 'daemon.pid')
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, `${pid}\n`, { flag: 'wx' })
      return {
        release() {
          if (readPid(path) === pid) rmSync(path, { force: true })
        },
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = readPid(path)
      if (holder !== undefined && holder !== pid && !fromBeforeBoot(path) && isBridge(holder)) {
        throw new DataDirInUse(dir, holder)
      }
      // Left by a daemon that is gone (a crash, a power cut): take it over.
      rmSync(path, { force: true })
    }
  }
  throw new Error(`could not lock ${path}`)
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** A pid file written before the machine last booted belongs to no running process, whatever its number. */
function fromBeforeBoot(path: string): boolean {
  try {
    return statSync(path).mtimeMs < Date.now() - uptime() * 1000
  } catch {
    return true
  }
}

/** Whether `pid` is a running pico-a1111-bridge (after a reboot the number may belong to anything). */
function isBridge(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('pico-a1111-bridge')
  } catch {
    return true // no /proc to ask: a live process with that pid is taken to be the bridge
  }
}
