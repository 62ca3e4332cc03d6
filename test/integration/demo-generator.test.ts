import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { afterAll, describe, expect, it } from 'vitest'
import { createDemoGenerator, DEMO_FONT_FILE, demoTextOptions } from '../../src/generator/demo.ts'
import { breakLines, layoutLines, MAX_LINE_CHARS } from '../../src/generator/demo-layout.ts'
import type { GenerateProgress } from '../../src/generator/types.ts'

const hooks = () => ({ signal: new AbortController().signal })

async function rawPixels(png: Buffer): Promise<Buffer> {
  return sharp(png).removeAlpha().raw().toBuffer()
}

/** Pixels that are nearly white: the text (the gradients are dark, see pickGradient). */
async function whitePixels(png: Buffer): Promise<number> {
  return (await whiteArea(png)).count
}

/** How many pixels are nearly white, and the box around them. */
async function whiteArea(png: Buffer) {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true })
  let count = 0
  const box = { left: info.width, top: info.height, right: -1, bottom: -1 }
  for (let i = 0; i < data.length; i += 3) {
    if (data[i]! <= 230 || data[i + 1]! <= 230 || data[i + 2]! <= 230) continue
    count++
    const x = (i / 3) % info.width
    const y = Math.floor(i / 3 / info.width)
    box.left = Math.min(box.left, x)
    box.right = Math.max(box.right, x)
    box.top = Math.min(box.top, y)
    box.bottom = Math.max(box.bottom, y)
  }
  return { count, box }
}

const scratch = mkdtempSync(join(tmpdir(), 'pab-demo-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

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

  it('draws the words in large white letters', async () => {
    const gen = createDemoGenerator()
    const withText = await gen.generate({ prompt: 'a red fox', seed: 5 }, hooks())
    const without = await gen.generate({ prompt: '', seed: 5 }, hooks())
    expect(await whitePixels(without.image)).toBe(0)
    // Large enough to survive the downscale to 240x240: well over 2% of the picture.
    expect(await whitePixels(withText.image)).toBeGreaterThan(512 * 512 * 0.02)
  })

  it('draws markup characters as text instead of failing on them', async () => {
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

describe('demo line breaks', () => {
  it('breaks between words, filling each line up to the width', () => {
    expect(breakLines('a red fox in the snow', 6)).toEqual(['a red', 'fox in', 'the', 'snow'])
    expect(breakLines('a red fox', 9)).toEqual(['a red fox'])
    expect(breakLines('  a\tred \n fox  ', 5)).toEqual(['a red', 'fox'])
    expect(breakLines('', 5)).toEqual([])
  })

  it('never breaks a word that fits on a line ("monk-/ey", "base6/4" in issue 13)', () => {
    expect(breakLines('monkey base64', 6)).toEqual(['monkey', 'base64'])
    expect(breakLines('a monkey', 7)).toEqual(['a', 'monkey'])
  })

  it('hyphenates only a word longer than a line, into pieces that fill the line', () => {
    expect(breakLines('abcdefghij', 4)).toEqual(['abc-', 'def-', 'ghij'])
    expect(breakLines('go abcdefgh now', 5)).toEqual(['go', 'abcd-', 'efgh', 'now'])
    expect(breakLines('abcd', 4)).toEqual(['abcd'])
  })

  it('counts characters, not UTF-16 units', () => {
    expect(breakLines('🦊🦊 éé', 5)).toEqual(['🦊🦊 éé'])
    expect(breakLines('🦊🦊🦊🦊🦊', 3)).toEqual(['🦊🦊-', '🦊🦊🦊'])
  })

  it('lays out a prompt with every word whole when the words fit on a line', () => {
    for (const prompt of [
      'a red fox in the snow',
      'a cat astronaut monkey with base64 encoded dreams, pixel art',
      'photorealistic',
      'a lighthouse at dusk, oil painting, dramatic clouds, golden hour, 35mm',
    ]) {
      const lines = layoutLines(prompt, 430, 358)
      expect(lines.join(' ')).toBe(prompt)
      expect(lines.every((l) => [...l].length <= MAX_LINE_CHARS)).toBe(true)
    }
  })

  it('uses several lines for a prompt of several words, so the text can be large', () => {
    expect(layoutLines('a red fox in the snow', 430, 358)).toEqual(['a red', 'fox in', 'the snow'])
  })

  it('hyphenates a word longer than any line, and the pieces join up again', () => {
    const blob = 'aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZA=='
    const lines = layoutLines(`see ${blob}`, 430, 358)
    expect(lines[0]).toBe('see')
    expect(lines.slice(1, -1).every((l) => l.endsWith('-'))).toBe(true)
    expect(
      lines
        .slice(1)
        .map((l) => l.replace(/-$/, ''))
        .join(''),
    ).toBe(blob)
    expect(lines.every((l) => [...l].length <= MAX_LINE_CHARS)).toBe(true)
  })
})

describe('the demo font', () => {
  it('is a TrueType file shipped with the dependencies and handed to sharp by path', () => {
    expect(DEMO_FONT_FILE).toMatch(/node_modules\/dejavu-fonts-ttf\/ttf\/DejaVuSans-Bold\.ttf$/)
    expect(existsSync(DEMO_FONT_FILE)).toBe(true)
    const options = demoTextOptions('a red fox in the snow', 512, 512)
    expect(options).toMatchObject({ fontfile: DEMO_FONT_FILE, font: 'DejaVu Sans Bold', wrap: 'none' })
    // The lines are broken here, not by Pango.
    expect(options?.text).toBe('<span foreground="white">a red\nfox in\nthe snow</span>')
    expect(demoTextOptions('   ', 512, 512)).toBeUndefined()
  })

  it('draws the same picture on a machine without any fonts installed', async () => {
    // fontconfig with no font directories at all, as on a minimal server image; it is read once per
    // process, so the picture is drawn by a child process.
    const conf = join(scratch, 'fonts.conf')
    writeFileSync(
      conf,
      `<?xml version="1.0"?>\n<fontconfig><cachedir>${join(scratch, 'cache')}</cachedir></fontconfig>\n`,
    )
    const demo = new URL('../../src/generator/demo.ts', import.meta.url).href
    const script = `import { createDemoGenerator } from ${JSON.stringify(demo)}
const r = await createDemoGenerator().generate({ prompt: 'a red fox', seed: 5 }, { signal: new AbortController().signal })
process.stdout.write(r.image.toString('base64'))`
    const drawn = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { PATH: process.env.PATH ?? '', FONTCONFIG_FILE: conf },
      encoding: 'utf8',
    })
    const here = await whiteArea(
      (await createDemoGenerator().generate({ prompt: 'a red fox', seed: 5 }, hooks())).image,
    )
    const there = await whiteArea(Buffer.from(drawn, 'base64'))
    // The same glyphs at the same size in the same place; the system's fontconfig rules (hinting,
    // antialiasing) may still shade their edges differently, so the counts need only be close.
    expect(there.count).toBeGreaterThan(512 * 512 * 0.02)
    expect(Math.abs(there.count - here.count) / here.count).toBeLessThan(0.05)
    for (const side of ['left', 'top', 'right', 'bottom'] as const) {
      expect(Math.abs(there.box[side] - here.box[side]), side).toBeLessThanOrEqual(2)
    }
  })
})
