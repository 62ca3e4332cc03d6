import { crc32 } from 'node:zlib'
import sharp from 'sharp'
import { seededRandom } from '../../src/generator/demo.ts'

/**
 * Pictures for the fake A1111: real PNGs made with sharp, deterministic from the seed, so tests can decode
 * them and benchmarks move realistic byte counts.
 */

export interface PictureOptions {
  seed: number
  width: number
  height: number
  /** Heavy noise: a 512x512 picture of about 500 KB, like real Stable Diffusion output. */
  noise: boolean
  /** How far denoising got, 0..1: an interrupted job answers with a partial picture (research §3). */
  done: number
  /** The infotext A1111 puts in the PNG's `parameters` text chunk (research §1.2). */
  infotext?: string | undefined
  /** Previews are made in a hurry, as A1111's "Approx NN" decode is cheap. */
  fast?: boolean
}

/** A gradient tinted by the seed, plus seeded noise; the less `done`, the greyer (a half-denoised latent). */
function pixels(o: PictureOptions): Buffer {
  const random = seededRandom(o.seed)
  const tint = Math.floor(random() * 256)
  const amplitude = o.noise ? 20 : o.fast ? 0 : 4
  const done = Math.min(1, Math.max(0, o.done))
  const raw = Buffer.alloc(o.width * o.height * 3)
  let i = 0
  for (let y = 0; y < o.height; y++) {
    for (let x = 0; x < o.width; x++) {
      const base = [(x * 255) / o.width, (y * 255) / o.height, tint]
      for (const channel of base) {
        const noisy = channel + (amplitude === 0 ? 0 : (random() - 0.5) * amplitude)
        raw[i++] = Math.max(0, Math.min(255, Math.round(128 + (noisy - 128) * done)))
      }
    }
  }
  return raw
}

/** Benchmarks ask for the same seed again and again; a few finished pictures are kept. */
const cache = new Map<string, Promise<Buffer>>()
const CACHE_SIZE = 8

/** Encodes a seeded picture as PNG, with A1111's `parameters` text chunk when an infotext is given. */
export function makePng(o: PictureOptions): Promise<Buffer> {
  const key = JSON.stringify([o.seed, o.width, o.height, o.noise, o.done, o.infotext, o.fast])
  let png = cache.get(key)
  if (png === undefined) {
    png = encode(o)
    cache.set(key, png)
    png.catch(() => cache.delete(key))
    if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value as string)
  }
  return png
}

async function encode(o: PictureOptions): Promise<Buffer> {
  const png = await sharp(pixels(o), { raw: { width: o.width, height: o.height, channels: 3 } })
    .png({ compressionLevel: o.fast ? 1 : 6, adaptiveFiltering: true })
    .toBuffer()
  return o.infotext === undefined ? png : withTextChunk(png, 'parameters', o.infotext)
}

/**
 * Inserts a text chunk after IHDR. A1111 (PIL) writes tEXt for Latin-1 text and iTXt otherwise (research
 * §1.2); sharp has no option for either, so the chunk is built by hand.
 */
export function withTextChunk(png: Buffer, keyword: string, text: string): Buffer {
  const latin1 = ![...text].some((c) => c.charCodeAt(0) > 0xff)
  const data = latin1
    ? Buffer.concat([Buffer.from(`${keyword}\0`, 'latin1'), Buffer.from(text, 'latin1')])
    : Buffer.concat([Buffer.from(`${keyword}\0\0\0\0\0`, 'latin1'), Buffer.from(text, 'utf8')])
  const type = Buffer.from(latin1 ? 'tEXt' : 'iTXt', 'latin1')
  const chunk = Buffer.alloc(12 + data.length)
  chunk.writeUInt32BE(data.length, 0)
  type.copy(chunk, 4)
  data.copy(chunk, 8)
  chunk.writeUInt32BE(crc32(Buffer.concat([type, data])), 8 + data.length)
  // 8-byte signature + IHDR (4 length + 4 type + 13 data + 4 crc).
  const afterIhdr = 8 + 25
  return Buffer.concat([png.subarray(0, afterIhdr), chunk, png.subarray(afterIhdr)])
}
