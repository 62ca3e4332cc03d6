import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { createDemoGenerator } from '../../src/generator/demo.ts'
import type { GenerateProgress } from '../../src/generator/types.ts'

const hooks = () => ({ signal: new AbortController().signal })

async function rawPixels(png: Buffer): Promise<Buffer> {
  return sharp(png).removeAlpha().raw().toBuffer()
}

/** Pixels that are nearly white: the text (the gradients are dark, see pickGradient). */
async function whitePixels(png: Buffer): Promise<number> {
  const raw = await rawPixels(png)
  let white = 0
  for (let i = 0; i < raw.length; i += 3) if (raw[i]! > 230 && raw[i + 1]! > 230 && raw[i + 2]! > 230) white++
  return white
}

// Text needs a font; machines without one still get the gradient, and these checks do not apply there.
const hasFonts = await sharp({ text: { text: 'x' } })
  .toBuffer({ resolveWithObject: true })
  .then(({ info }) => info.width > 1)
  .catch(() => false)

describe('demo generator', () => {
  it('is a generator named demo whose check and close resolve', async () => {
    const gen = createDemoGenerator()
    expect(gen.name).toBe('demo')
    await expect(gen.check()).resolves.toBeUndefined()
    await expect(gen.close()).resolves.toBeUndefined()
    await expect(gen.close()).resolves.toBeUndefined()
  })

  it('draws the same PNG for the same seed and a different picture for another seed', async () => {
    const gen = createDemoGenerator()
    const a = await gen.generate({ prompt: 'a red fox', seed: 42 }, hooks())
    const b = await gen.generate({ prompt: 'a red fox', seed: 42 }, hooks())
    const c = await gen.generate({ prompt: 'a red fox', seed: 43 }, hooks())
    expect(a.seed).toBe(42)
    expect(b.image.equals(a.image)).toBe(true)
    expect(c.seed).toBe(43)
    expect((await rawPixels(c.image)).equals(await rawPixels(a.image))).toBe(false)
  })

  it('makes a PNG of the payload size, 512x512 by default', async () => {
    const gen = createDemoGenerator()
    const sized = await gen.generate({ prompt: 'wide', seed: 1, width: 768, height: 320 }, hooks())
    const meta = await sharp(sized.image).metadata()
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 768, 320])
    const plain = await sharp((await gen.generate({ prompt: 'square', seed: 1 }, hooks())).image).metadata()
    expect([plain.width, plain.height]).toEqual([512, 512])
  })

  it('picks a seed for -1 (or no seed), reports it, and that seed draws the same picture again', async () => {
    const gen = createDemoGenerator()
    const first = await gen.generate({ prompt: 'lucky', seed: -1 }, hooks())
    expect(Number.isInteger(first.seed)).toBe(true)
    expect(first.seed).toBeGreaterThanOrEqual(0)
    expect(first.seed).toBeLessThanOrEqual(4294967295)
    const again = await gen.generate({ prompt: 'lucky', seed: first.seed }, hooks())
    expect(again.image.equals(first.image)).toBe(true)
    const unset = await gen.generate({ prompt: 'lucky' }, hooks())
    expect(unset.seed).toBeGreaterThanOrEqual(0)
  })

  it('answers in the shape of A1111: images, parameters, info as a JSON string', async () => {
    const payload = { prompt: 'a lighthouse', seed: 7, steps: 12, width: 256, height: 384 }
    const result = await createDemoGenerator().generate(payload, hooks())
    expect(result.upstream.images).toEqual([result.image.toString('base64')])
    expect(result.upstream.parameters).toBe(payload)
    expect(typeof result.upstream.info).toBe('string')
    expect(JSON.parse(result.upstream.info as string)).toMatchObject({
      seed: 7,
      all_seeds: [7],
      prompt: 'a lighthouse',
      width: 256,
      height: 384,
      steps: 12,
    })
  })

  it.skipIf(!hasFonts)('draws the words in large white letters', async () => {
    const gen = createDemoGenerator()
    const withText = await gen.generate({ prompt: 'a red fox', seed: 5 }, hooks())
    const without = await gen.generate({ prompt: '', seed: 5 }, hooks())
    expect(await whitePixels(without.image)).toBe(0)
    // Large enough to survive the downscale to 240x240: well over 2% of the picture.
    expect(await whitePixels(withText.image)).toBeGreaterThan(512 * 512 * 0.02)
  })

  it.skipIf(!hasFonts)('draws markup characters as text instead of failing on them', async () => {
    const prompt = '<b>fish & "chips"</b> \'n\' <span foreground="red">peas'
    const result = await createDemoGenerator().generate({ prompt, seed: 9 }, hooks())
    expect(await whitePixels(result.image)).toBeGreaterThan(0)
  })

  it('draws a very long prompt without failing', async () => {
    const prompt = 'word '.repeat(800)
    const result = await createDemoGenerator().generate({ prompt, seed: 3, width: 256, height: 256 }, hooks())
    expect((await sharp(result.image).metadata()).width).toBe(256)
  })

  it('reports progress once per step with stepMs, ending at 1', async () => {
    const seen: GenerateProgress[] = []
    const gen = createDemoGenerator({ stepMs: 1 })
    const signal = new AbortController().signal
    await gen.generate({ prompt: 'slow', seed: 1, steps: 4 }, { signal, onProgress: (p) => seen.push(p) })
    expect(seen.map((p) => p.progress)).toEqual([0.25, 0.5, 0.75, 1])
    expect(seen.map((p) => p.etaS)).toEqual([0.003, 0.002, 0.001, 0])
    expect(seen.every((p) => p.preview === undefined)).toBe(true)
  })

  it('rejects with the signal reason when aborted during the pretend sampling', async () => {
    const controller = new AbortController()
    const reason = new Error('superseded')
    const gen = createDemoGenerator({ stepMs: 1000 })
    const job = gen.generate(
      { prompt: 'never finished', seed: 1, steps: 150 },
      { signal: controller.signal, onProgress: () => {} },
    )
    queueMicrotask(() => controller.abort(reason))
    await expect(job).rejects.toBe(reason)
  })

  it('rejects at once when the signal is already aborted', async () => {
    const reason = new Error('cancelled')
    const gen = createDemoGenerator({ stepMs: 1000 })
    await expect(gen.generate({ prompt: 'x' }, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    await expect(
      createDemoGenerator().generate({ prompt: 'x' }, { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason)
  })
})
