import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import type { GenerateProgress, Generator } from '../../src/generator/types.ts'
import { JobCancelled } from '../../src/jobs/job.ts'

/*
 * What the queue relies on from every generator (src/generator/types.ts), as one suite each implementation
 * runs: the A1111 client against the fake, the demo generator, and the generators the tests use.
 */

export interface ContractSubject {
  generator: Generator
  /** Whether this generator reports progress while it works. */
  reportsProgress: boolean
  /** Called after each test. */
  reset?(): Promise<void> | void
}

const PAYLOAD = { prompt: 'a lighthouse at dusk', steps: 6, width: 64, height: 48, seed: 7, cfg_scale: 7 }

export function generatorContract(name: string, make: () => Promise<ContractSubject>): void {
  describe(`the generator contract: ${name}`, () => {
    it('has a name for logs that holds no password, and answers check() when it is there', async () => {
      const { generator } = await make()
      expect(generator.name.length).toBeGreaterThan(0)
      expect(generator.name).not.toMatch(/:[^@/]*@/)
      await expect(generator.check()).resolves.toBeUndefined()
      await generator.close()
    })

    it('turns a txt2img body into a picture sharp decodes, with the seed and the upstream answer', async () => {
      const subject = await make()
      const progress: GenerateProgress[] = []
      const result = await subject.generator.generate(PAYLOAD, {
        signal: new AbortController().signal,
        onProgress: (p) => progress.push(p),
      })
      const meta = await sharp(result.image).metadata()
      expect(meta.width).toBeGreaterThan(0)
      expect(Number.isSafeInteger(result.seed) && result.seed >= -1).toBe(true)
      expect(Array.isArray(result.upstream.images)).toBe(true)
      expect(result.upstream.images.every((s) => typeof s === 'string')).toBe(true)
      for (const p of progress) {
        expect(p.progress).toBeGreaterThanOrEqual(0)
        expect(p.progress).toBeLessThanOrEqual(1)
        if (p.etaS !== undefined) expect(p.etaS).toBeGreaterThanOrEqual(0)
      }
      const values = progress.map((p) => p.progress)
      expect([...values].sort((a, b) => a - b)).toEqual(values)
      if (subject.reportsProgress) expect(progress.length).toBeGreaterThan(0)
      await subject.generator.close()
      await subject.reset?.()
    })

    it('rejects with the signal reason, without a picture, when the job was cancelled before it ran', async () => {
      const { generator, reset } = await make()
      const controller = new AbortController()
      const reason = new JobCancelled('requested')
      controller.abort(reason)
      await expect(generator.generate(PAYLOAD, { signal: controller.signal })).rejects.toBe(reason)
      await generator.close()
      await reset?.()
    })

    it('stops and rejects with the signal reason when the job is cancelled while it runs', async () => {
      const subject = await make()
      const controller = new AbortController()
      const reason = new JobCancelled('superseded')
      const running = subject.generator.generate(
        { ...PAYLOAD, steps: 40 },
        {
          signal: controller.signal,
          onProgress: () => controller.abort(reason),
        },
      )
      if (!subject.reportsProgress) controller.abort(reason)
      await expect(running).rejects.toBe(reason)
      await subject.generator.close()
      await subject.reset?.()
    })

    it('can be closed twice', async () => {
      const { generator } = await make()
      await generator.close()
      await expect(generator.close()).resolves.toBeUndefined()
    })
  })
}
