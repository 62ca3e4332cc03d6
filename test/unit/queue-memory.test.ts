import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { systemClock } from '../../src/clock.ts'
import { createEventBus } from '../../src/events.ts'
import type { GenerateResult, Generator } from '../../src/generator/types.ts'
import { createAwaitedJob } from '../../src/jobs/awaited-job.ts'
import { createJobQueue } from '../../src/jobs/queue.ts'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** A generator that answers at once with a large picture, like an A1111 answer of 1 MB. */
const bigPictures: Generator = {
  name: 'big',
  async generate() {
    const image = Buffer.alloc(1024 * 1024, 7)
    return { image, seed: 1, upstream: { images: [image.toString('base64')], parameters: {}, info: '' } }
  },
  async check() {},
  async close() {},
}

describe('finished jobs', () => {
  it('stay visible without keeping their pictures alive', async () => {
    const queue = createJobQueue({
      generators: [bigPictures],
      maxWaiting: 10,
      retries: 0,
      supersedeRunning: true,
      log: pino({ level: 'silent' }),
      clock: systemClock,
      events: createEventBus(pino({ level: 'silent' })),
      stateOf: () => 'up',
      idOf: () => 'big',
    })
    let ref: WeakRef<GenerateResult> | undefined
    const ids: string[] = []
    await (async () => {
      const { job, result } = createAwaitedJob(
        `job-${ids.length}`,
        'http:test',
        {},
        async (generated) => generated,
      )
      ids.push(job.id)
      queue.submit(job)
      ref = new WeakRef(await result)
    })()
    await new Promise((resolve) => setImmediate(resolve))
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    gc()
    expect(queue.view(ids[0]!)).toMatchObject({ state: 'done' })
    expect(ref!.deref()).toBeUndefined()
  })
})
