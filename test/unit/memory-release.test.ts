import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { createMemoryRelease } from '../../src/broker/memory-release.ts'

const log = pino({ level: 'silent' })

describe('the memory release after a surge of connections', () => {
  it('runs once the surge is quiet, counts from zero again, and waits while the broker is busy', async () => {
    const runs: number[] = []
    let busyAsked = 0
    let done: () => void = () => {}
    let busy = true
    const release = createMemoryRelease({
      ...{ afterConnections: 3, quietMs: 5, log },
      busy: () => {
        busyAsked++
        const answer = busy
        busy = false
        return answer
      },
      release: () => {
        runs.push(busyAsked)
        done()
      },
    })
    const ran = () => new Promise<void>((resolve) => (done = resolve))
    let next = ran()
    for (let i = 0; i < 3; i++) release.connected()
    await next
    // Busy the first time it was due: it waited and ran at the second try.
    expect(runs).toEqual([2])
    next = ran()
    // Two connections are no surge; the third after the release is.
    release.connected()
    release.connected()
    expect(runs).toEqual([2])
    release.connected()
    await next
    expect(runs).toEqual([2, 3])
    release.stop()
  })

  it("gives memory back with V8's own collector, leaving no global gc behind, when none is given", async () => {
    const lines: Record<string, unknown>[] = []
    let done: () => void = () => {}
    const ran = new Promise<void>((resolve) => (done = resolve))
    const capture = pino(
      { level: 'info' },
      {
        write: (line: string) => {
          lines.push(JSON.parse(line))
          done()
        },
      },
    )
    const release = createMemoryRelease({ afterConnections: 1, quietMs: 1, log: capture, busy: () => false })
    release.connected()
    await ran
    expect(lines[0]).toMatchObject({ msg: 'memory released after a surge of connections', connections: 1 })
    expect(typeof lines[0]!.ms).toBe('number')
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined()
  })
})
