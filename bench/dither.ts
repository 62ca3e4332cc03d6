import { cpus } from 'node:os'
import sharp from 'sharp'
import { imageToRgb565 } from '../src/image/convert.ts'
import type { DitherMethod } from '../src/image/dither.ts'
import { packPixels } from '../src/image/pack.ts'
import type { PixelFormat } from '../src/image/pixel-format.ts'
import { packRgb565 } from '../src/image/rgb565.ts'
import { ms, summarize } from './lib.ts'

/*
 * How long the e-paper formats take on the event loop (quantise + pack, src/image/pack.ts packPixels), next to
 * the 240x240 RGB565 path that every LCD frame takes today. Issue 15 sets the bar: an 800x480 palette7 frame
 * well under 100 ms. Run: node bench/dither.ts [--runs N]
 */

const runsArg = process.argv.indexOf('--runs')
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 15
const WARMUP = 3

/** A picture with smooth gradients and texture, like a generated image rather than noise or a flat area. */
function picture(width: number, height: number): Uint8Array {
  const rgb = new Uint8Array(width * height * 3)
  let s = 12345
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0
      const n = (s >>> 27) - 16
      const o = (y * width + x) * 3
      rgb[o] = Math.max(0, Math.min(255, Math.round((255 * x) / width) + n))
      rgb[o + 1] = Math.max(0, Math.min(255, Math.round((255 * y) / height) + n))
      rgb[o + 2] = Math.max(0, Math.min(255, 128 + Math.round(100 * Math.sin((x + y) / 40)) + n))
    }
  }
  return rgb
}

async function time(fn: () => unknown): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await fn()
  const samples: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now()
    await fn()
    samples.push(performance.now() - start)
  }
  return samples
}

interface Case {
  name: string
  width: number
  height: number
  run: (rgb: Uint8Array) => unknown
}

const indexed = (format: PixelFormat, dither: DitherMethod) => (rgb: Uint8Array, w: number, h: number) =>
  packPixels(rgb, w, h, 3, format, { dither })

const png240 = await sharp(Buffer.from(picture(240, 240)), { raw: { width: 240, height: 240, channels: 3 } })
  .png()
  .toBuffer()

const cases: Case[] = [
  {
    name: 'palette7 floyd-steinberg',
    width: 800,
    height: 480,
    run: (p) => indexed('palette7', 'floyd-steinberg')(p, 800, 480),
  },
  {
    name: 'palette7 atkinson',
    width: 800,
    height: 480,
    run: (p) => indexed('palette7', 'atkinson')(p, 800, 480),
  },
  {
    name: 'palette7 ordered',
    width: 800,
    height: 480,
    run: (p) => indexed('palette7', 'ordered')(p, 800, 480),
  },
  {
    name: 'mono floyd-steinberg',
    width: 296,
    height: 128,
    run: (p) => indexed('mono', 'floyd-steinberg')(p, 296, 128),
  },
  {
    name: 'gray4 floyd-steinberg',
    width: 240,
    height: 240,
    run: (p) => indexed('gray4', 'floyd-steinberg')(p, 240, 240),
  },
  {
    name: 'rgb565-be packRgb565 (event loop)',
    width: 240,
    height: 240,
    run: (p) => packRgb565(p, { littleEndian: false, invert: false }),
  },
  {
    name: 'rgb565-be imageToRgb565 (PNG in, sharp)',
    width: 240,
    height: 240,
    run: () =>
      imageToRgb565(png240, { width: 240, height: 240, fit: 'cover', format: 'rgb565-be', invert: false }),
  },
]

console.log(
  `${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}; ${RUNS} runs after ${WARMUP} warm-up, ms`,
)
console.log('')
console.log('| case | size | median | p95 | min |')
console.log('|---|---|---:|---:|---:|')
for (const c of cases) {
  const rgb = picture(c.width, c.height)
  const s = summarize(await time(() => c.run(rgb)))
  console.log(`| ${c.name} | ${c.width}x${c.height} | ${ms(s.p50)} | ${ms(s.p95)} | ${ms(s.min)} |`)
}
