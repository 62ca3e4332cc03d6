import { crc32 } from 'node:zlib'
import type { Color } from 'sharp'
import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { AppError } from '../../src/errors.ts'
import { type ConvertOptions, imageToRgb565, rgb565ToPng } from '../../src/image/convert.ts'
import { unpackRgb565 } from '../../src/image/rgb565.ts'

const PANEL: ConvertOptions = { width: 240, height: 240, fit: 'cover', format: 'rgb565-be', invert: false }

const RED = 0xf800
const GREEN = 0x07e0
const BLUE = 0x001f
const BLACK = 0x0000

/** 512x256 with vertical bands red | green | blue of 128 | 256 | 128 columns (seed-proxy research §2). */
async function bandsPng(): Promise<Buffer> {
  const raw = Buffer.alloc(512 * 256 * 3)
  for (let y = 0; y < 256; y++) {
    for (let x = 0; x < 512; x++) {
      const channel = x < 128 ? 0 : x < 384 ? 1 : 2
      raw[(y * 512 + x) * 3 + channel] = 255
    }
  }
  return sharp(raw, { raw: { width: 512, height: 256, channels: 3 } })
    .png()
    .toBuffer()
}

function solidPng(width: number, height: number, background: Color, channels: 3 | 4 = 3) {
  return sharp({ create: { width, height, channels, background } }).png().toBuffer()
}

/** The big-endian RGB565 word at (x, y) of a frame. */
function wordAt(frame: Buffer, x: number, y: number, width = 240): number {
  return frame.readUInt16BE((y * width + x) * 2)
}

function row(frame: Buffer, y: number, width = 240): number[] {
  return Array.from({ length: width }, (_, x) => wordAt(frame, x, y, width))
}

function column(frame: Buffer, x: number, height = 240, width = 240): number[] {
  return Array.from({ length: height }, (_, y) => wordAt(frame, x, y, width))
}

const count = (words: number[], word: number) => words.filter((w) => w === word).length

async function expectBadImage(image: Buffer): Promise<AppError> {
  const err = await imageToRgb565(image, PANEL).catch((e: unknown) => e)
  expect(err).toBeInstanceOf(AppError)
  expect((err as AppError).code).toBe('E_BAD_IMAGE')
  expect((err as AppError).message).toMatch(/^the picture could not be decoded: /)
  return err as AppError
}

describe('imageToRgb565 fit', () => {
  it('cover crops the centre: a 512x256 red|green|blue picture becomes mostly green', async () => {
    const frame = await imageToRgb565(await bandsPng(), { ...PANEL, fit: 'cover' })
    expect(frame).toHaveLength(240 * 240 * 2)
    // Scaled to 480x240, the centre 240 columns are source columns 128..383: exactly the green band.
    for (const y of [0, 120, 239]) {
      const words = row(frame, y)
      // The outermost columns may take a trace of the neighbouring bands from the Lanczos kernel.
      expect(count(words, GREEN)).toBeGreaterThanOrEqual(236)
      expect(count(words, RED) + count(words, BLUE)).toBe(0)
    }
  })

  it('contain letterboxes on black: bars above and below, the bands in between', async () => {
    const frame = await imageToRgb565(await bandsPng(), { ...PANEL, fit: 'contain' })
    // 512x256 scaled to 240x120, centred: rows 0..59 and 180..239 are black.
    for (const y of [0, 59, 180, 239]) expect(count(row(frame, y), BLACK)).toBe(240)
    const middle = row(frame, 120)
    expect(middle[10]).toBe(RED)
    expect(middle[120]).toBe(GREEN)
    expect(middle[230]).toBe(BLUE)
    expect(count(middle, GREEN)).toBeGreaterThan(110)
    expect(
      column(frame, 120)
        .slice(62, 178)
        .every((w) => w === GREEN),
    ).toBe(true)
  })

  it('fill stretches: every row has all three bands in the proportions 1:2:1', async () => {
    const frame = await imageToRgb565(await bandsPng(), { ...PANEL, fit: 'fill' })
    for (const y of [0, 120, 239]) {
      const words = row(frame, y)
      expect(count(words, RED)).toBeGreaterThanOrEqual(56)
      expect(count(words, GREEN)).toBeGreaterThanOrEqual(114)
      expect(count(words, BLUE)).toBeGreaterThanOrEqual(56)
      expect(count(words, BLACK)).toBe(0)
    }
  })

  it('makes a frame of the requested size whatever the input shape', async () => {
    const frame = await imageToRgb565(await solidPng(64, 300, '#ffffff'), {
      ...PANEL,
      width: 320,
      height: 172,
    })
    expect(frame).toHaveLength(320 * 172 * 2)
    expect(count(row(frame, 86, 320), 0xffff)).toBe(320)
  })
})

describe('imageToRgb565 input', () => {
  it('flattens transparency onto black instead of showing the hidden colour', async () => {
    const transparentRed = await solidPng(64, 64, { r: 255, g: 0, b: 0, alpha: 0 }, 4)
    const frame = await imageToRgb565(transparentRed, PANEL)
    expect(count(row(frame, 120), BLACK)).toBe(240)
    const opaqueRed = await imageToRgb565(await solidPng(64, 64, { r: 255, g: 0, b: 0, alpha: 1 }, 4), PANEL)
    expect(count(row(opaqueRed, 120), RED)).toBe(240)
  })

  it('reads greyscale and 16-bit pictures as three 8-bit channels', async () => {
    const grey = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#808080' } })
      .toColourspace('b-w')
      .png()
      .toBuffer()
    expect((await sharp(grey).metadata()).channels).toBe(1)
    expect(wordAt(await imageToRgb565(grey, PANEL), 100, 100)).toBe(0x8410)

    const deep = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#0000ff' } })
      .toColourspace('rgb16')
      .png()
      .toBuffer()
    expect((await sharp(deep).metadata()).depth).toBe('ushort')
    expect(wordAt(await imageToRgb565(deep, PANEL), 100, 100)).toBe(BLUE)
  })

  it('reads JPEG and WEBP', async () => {
    const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#ffffff' } })
      .jpeg()
      .toBuffer()
    expect(wordAt(await imageToRgb565(jpeg, PANEL), 120, 120)).toBe(0xffff)
    const webp = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#ff0000' } })
      .webp({ lossless: true })
      .toBuffer()
    expect(wordAt(await imageToRgb565(webp, PANEL), 120, 120)).toBe(RED)
  })

  it('refuses corrupt bytes, an empty buffer and a truncated PNG with E_BAD_IMAGE', async () => {
    await expectBadImage(Buffer.from('this is not a picture at all'))
    expect((await expectBadImage(Buffer.alloc(0))).message).toMatch(/empty/)
    const png = await bandsPng()
    await expectBadImage(png.subarray(0, Math.floor(png.length / 2)))
  })

  it('refuses an SVG, which is a program to render, not a picture from a generator', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    expect((await expectBadImage(svg)).message).toMatch(/svg/)
  })

  it('refuses a decompression bomb before decoding it', async () => {
    // A real 16x16 PNG whose header claims 20000x20000 pixels (the IHDR CRC fixed up to match).
    const png = Buffer.from(await solidPng(16, 16, '#000000'))
    png.writeUInt32BE(20000, 16)
    png.writeUInt32BE(20000, 20)
    png.writeUInt32BE(crc32(png.subarray(12, 29)), 29)
    expect((await expectBadImage(png)).message).toMatch(/larger than/)
  })
})

describe('imageToRgb565 output options', () => {
  it('rgb565-le swaps the two bytes of every pixel', async () => {
    const png = await bandsPng()
    const be = await imageToRgb565(png, { ...PANEL, fit: 'fill', format: 'rgb565-be' })
    const le = await imageToRgb565(png, { ...PANEL, fit: 'fill', format: 'rgb565-le' })
    expect(le.equals(be)).toBe(false)
    expect(Buffer.from(le).swap16().equals(be)).toBe(true)
  })

  it('invert sends the colour negative', async () => {
    const frame = await imageToRgb565(await solidPng(32, 32, '#ff0000'), { ...PANEL, invert: true })
    expect(count(row(frame, 0), 0x07ff)).toBe(240) // cyan
  })
})

describe('rgb565ToPng', () => {
  it('encodes a frame as a PNG that decodes back to the same RGB565 words', async () => {
    const frame = await imageToRgb565(await bandsPng(), { ...PANEL, fit: 'fill', format: 'rgb565-le' })
    const png = await rgb565ToPng(frame, 240, 240, true)
    const meta = await sharp(png).metadata()
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 240, 240])
    const again = await imageToRgb565(png, { ...PANEL, fit: 'fill', format: 'rgb565-le' })
    expect(again.equals(frame)).toBe(true)
    const raw = await sharp(png).raw().toBuffer()
    expect(raw.equals(unpackRgb565(frame, true))).toBe(true)
  })

  it('refuses pixels that do not match the size', async () => {
    await expect(rgb565ToPng(new Uint8Array(10), 240, 240, false)).rejects.toThrow(RangeError)
  })
})
