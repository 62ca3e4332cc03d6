import { pino } from 'pino'
import sharp from 'sharp'
import { afterAll } from 'vitest'
import { createA1111Generator } from '../../src/generator/a1111.ts'
import { createDemoGenerator } from '../../src/generator/demo.ts'
import type { Generator } from '../../src/generator/types.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { generatorContract } from '../support/generator-contract.ts'

const log = pino({ level: 'silent' })
const fakes: FakeA1111[] = []
afterAll(async () => {
  await Promise.all(fakes.map((f) => f.close()))
})

generatorContract('the A1111 client against the fake A1111', async () => {
  const fake = await startFakeA1111({ stepMs: 15 })
  fakes.push(fake)
  const generator = createA1111Generator(
    { baseUrl: fake.url, timeoutMs: 30_000, progressIntervalMs: 10 },
    { log },
  )
  return { generator, reportsProgress: true }
})

generatorContract('the demo generator', async () => ({
  generator: createDemoGenerator({ stepMs: 5 }),
  reportsProgress: true,
}))

/** The smallest generator that keeps the contract, as the queue tests use: one flat picture at once. */
function instantGenerator(): Generator {
  const picture = sharp({ create: { width: 8, height: 8, channels: 3, background: '#3a6' } })
    .png()
    .toBuffer()
  return {
    name: 'instant',
    async generate(_payload, hooks) {
      hooks.signal.throwIfAborted()
      const image = await picture
      hooks.signal.throwIfAborted()
      return { image, seed: 1, upstream: { images: [image.toString('base64')], parameters: {}, info: '{}' } }
    },
    async check() {},
    async close() {},
  }
}

generatorContract('the instant test generator', async () => ({
  generator: instantGenerator(),
  reportsProgress: false,
}))
