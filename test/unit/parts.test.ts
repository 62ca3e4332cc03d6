import { Writable } from 'node:stream'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { createEventBus } from '../../src/events.ts'
import { type Part, startParts } from '../../src/parts.ts'

function capture() {
  const lines: Record<string, unknown>[] = []
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _e, cb) {
        lines.push(JSON.parse(String(chunk)) as Record<string, unknown>)
        cb()
      },
    }),
  )
  return { log, lines }
}

describe('parts', () => {
  const journal: string[] = []
  const part = (name: string, opts: { failStart?: boolean; failStop?: boolean } = {}): Part => ({
    name,
    start() {
      if (opts.failStart) throw new Error(`${name} cannot start`)
      journal.push(`start ${name}`)
    },
    async stop() {
      journal.push(`stop ${name}`)
      if (opts.failStop) throw new Error(`${name} cannot stop`)
    },
  })

  it('start in order and stop in reverse, every stop run even when one fails', async () => {
    journal.length = 0
    const { log, lines } = capture()
    const running = await startParts(
      [part('lock'), part('journal'), part('http', { failStop: true }), part('jobs')],
      log,
    )
    await running.stop()
    expect(journal).toEqual([
      'start lock',
      'start journal',
      'start http',
      'start jobs',
      'stop jobs',
      'stop http',
      'stop journal',
      'stop lock',
    ])
    const failed = lines.find((l) => l.msg === 'a part failed to stop; stopping the others')
    expect(failed).toMatchObject({ part: 'http', err: { message: 'http cannot stop' } })
  })

  it('stop what started when a later part cannot start, and rethrow', async () => {
    journal.length = 0
    const { log } = capture()
    await expect(
      startParts([part('lock'), part('broker', { failStart: true }), part('jobs')], log),
    ).rejects.toThrow('broker cannot start')
    expect(journal).toEqual(['start lock', 'stop lock'])
  })
})

describe('the event bus', () => {
  it('gives every listener the event, whatever another one throws', () => {
    const { log, lines } = capture()
    const events = createEventBus(log)
    const seen: number[] = []
    events.on('chunk.sent', () => {
      throw new Error('listener bug')
    })
    const off = events.on('chunk.sent', ({ bytes }) => seen.push(bytes))
    events.emit('chunk.sent', { bytes: 9624 })
    off()
    events.emit('chunk.sent', { bytes: 1 })
    expect(seen).toEqual([9624])
    expect(lines.filter((l) => l.msg === 'event listener failed')).toHaveLength(2)
  })
})
