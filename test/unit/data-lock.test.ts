import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DataDirInUse, lockDataDir } from '../../src/store/data-lock.ts'

describe('the DATA_DIR lock', () => {
  it('writes the pid and removes it on release', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pab-lock-'))
    const lock = lockDataDir(dir)
    expect(readFileSync(join(dir, 'daemon.pid'), 'utf8')).toBe(`${process.pid}\n`)
    lock.release()
    expect(() => readFileSync(join(dir, 'daemon.pid'))).toThrow()
  })

  it('refuses a folder held by a running bridge, and takes over one left by a dead or pre-reboot holder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pab-lock-'))
    // A live process whose command line names the bridge, standing in for a running daemon.
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'pico-a1111-bridge'])
    await once(other, 'spawn')
    try {
      lockDataDir(dir, other.pid!)
      expect(() => lockDataDir(dir)).toThrow(DataDirInUse)
      expect(() => lockDataDir(dir)).toThrow(`pid ${other.pid}`)

      // The same file, written before the machine last booted: its pid means nothing now.
      const longAgo = new Date(Date.now() - 400 * 24 * 3600 * 1000)
      utimesSync(join(dir, 'daemon.pid'), longAgo, longAgo)
      lockDataDir(dir).release()
    } finally {
      other.kill()
    }
    await once(other, 'exit')
    writeFileSync(join(dir, 'daemon.pid'), `${other.pid}\n`)
    lockDataDir(dir).release()
  })
})
