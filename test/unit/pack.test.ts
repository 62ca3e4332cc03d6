import { describe, expect, it } from 'vitest'
import { packedBandBytes, packedRowBytes, packIndexed, packPixels } from '../../src/image/pack.ts'
import { PIXEL_FORMATS, pixelFormatFromCode } from '../../src/image/pixel-format.ts'
import { packRgb565 } from '../../src/image/rgb565.ts'

const bytes = (b: Uint8Array) => [...b]

describe('PIXEL_FORMATS', () => {
  it('gives each format its header code and size (docs/protocol.md, "Pixel formats")', () => {
    expect(Object.entries(PIXEL_FORMATS).map(([name, f]) => [name, f.code, f.bitsPerPixel])).toEqual([
      ['rgb565-be', 0, 16],
      ['rgb565-le', 1, 16],
      ['gray4', 2, 2],
      ['mono', 3, 1],
      ['palette7', 4, 4],
    ])
    expect([0, 1, 2, 3, 4, 5].map(pixelFormatFromCode)).toEqual([
      'rgb565-be',
      'rgb565-le',
      'gray4',
      'mono',
      'palette7',
      undefined,
    ])
  })
})

describe('packedRowBytes and packedBandBytes', () => {
  it('round each row up to a whole byte', () => {
    expect(packedRowBytes('rgb565-be', 240)).toBe(480)
    expect(packedRowBytes('gray4', 5)).toBe(2)
    expect(packedRowBytes('gray4', 4)).toBe(1)
    expect(packedRowBytes('mono', 9)).toBe(2)
    expect(packedRowBytes('mono', 128)).toBe(16)
    expect(packedRowBytes('palette7', 5)).toBe(3)
    expect(packedBandBytes('rgb565-le', 240, 20)).toBe(9600)
    expect(packedBandBytes('mono', 296, 20)).toBe(37 * 20)
    expect(packedBandBytes('palette7', 800, 20)).toBe(8000)
    expect(packedBandBytes('gray4', 5, 3)).toBe(6)
  })
})

describe('packIndexed: golden bytes, worked by hand', () => {
  it('gray4 3x2: 2 bits a pixel, leftmost pixel in the top bits', () => {
    // row 0: 00 01 10 | 00 pad = 0x18; row 1: 11 11 01 | 00 = 0xf4
    expect(bytes(packIndexed(Uint8Array.of(0, 1, 2, 3, 3, 1), 3, 2, 'gray4'))).toEqual([0x18, 0xf4])
  })

  it('gray4 5x1: the fifth pixel starts a second byte, padded with zero bits', () => {
    // 11 10 01 00 = 0xe4, then 11 000000 = 0xc0
    expect(bytes(packIndexed(Uint8Array.of(3, 2, 1, 0, 3), 5, 1, 'gray4'))).toEqual([0xe4, 0xc0])
  })

  it('mono 3x2 and 5x1: 1 bit a pixel, 1 white', () => {
    // 101 00000 = 0xa0, 010 00000 = 0x40
    expect(bytes(packIndexed(Uint8Array.of(1, 0, 1, 0, 1, 0), 3, 2, 'mono'))).toEqual([0xa0, 0x40])
    // 10110 000 = 0xb0
    expect(bytes(packIndexed(Uint8Array.of(1, 0, 1, 1, 0), 5, 1, 'mono'))).toEqual([0xb0])
  })

  it('mono 9x2: each row starts on its own byte, not where the last one ended', () => {
    const rows = Uint8Array.of(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1)
    expect(bytes(packIndexed(rows, 9, 2, 'mono'))).toEqual([0xff, 0x80, 0x00, 0x80])
  })

  it('palette7 3x2 and 5x1: 4 bits a pixel', () => {
    expect(bytes(packIndexed(Uint8Array.of(0, 1, 2, 3, 4, 5), 3, 2, 'palette7'))).toEqual([
      0x01, 0x20, 0x34, 0x50,
    ])
    expect(bytes(packIndexed(Uint8Array.of(6, 5, 4, 3, 2), 5, 1, 'palette7'))).toEqual([0x65, 0x43, 0x20])
  })

  it('refuses an index the format cannot name, and a buffer of the wrong size', () => {
    expect(() => packIndexed(Uint8Array.of(0, 7), 2, 1, 'palette7')).toThrow(/palette7 has 7 colours/)
    expect(() => packIndexed(Uint8Array.of(4), 1, 1, 'gray4')).toThrow(RangeError)
    expect(() => packIndexed(Uint8Array.of(2), 1, 1, 'mono')).toThrow(RangeError)
    expect(() => packIndexed(Uint8Array.of(0, 1, 0), 2, 2, 'mono')).toThrow(/2x2 picture is 4 pixels, got 3/)
  })
})

describe('packPixels', () => {
  it('quantises RGB to the nearest ink and packs it', () => {
    // black, white, near-white, near-black, then a 5th pixel: 0110 0 000
    const rgb = Uint8Array.of(0, 0, 0, 255, 255, 255, 250, 240, 245, 10, 5, 0, 3, 3, 3)
    expect(bytes(packPixels(rgb, 5, 1, 3, 'mono', { dither: 'none' }))).toEqual([0x60])
    // gray4: 0 black, 3 white, 3, 0, 0 -> 00 11 11 00 | 00 000000
    expect(bytes(packPixels(rgb, 5, 1, 3, 'gray4', { dither: 'none' }))).toEqual([0x3c, 0x00])
    // palette7: black 0, white 1, white 1, black 0, black 0
    expect(bytes(packPixels(rgb, 5, 1, 3, 'palette7', { dither: 'none' }))).toEqual([0x01, 0x10, 0x00])
  })

  it('packs RGBA for RGB565 as the RGB alone, in either byte order', () => {
    const rgba = Uint8Array.of(255, 128, 0, 7, 0, 0, 255, 255)
    const rgb = Uint8Array.of(255, 128, 0, 0, 0, 255)
    expect(bytes(packPixels(rgba, 2, 1, 4, 'rgb565-be', { dither: 'none' }))).toEqual([
      0xfc, 0x00, 0x00, 0x1f,
    ])
    expect(packPixels(rgba, 2, 1, 4, 'rgb565-le', { dither: 'none', invert: true })).toEqual(
      packRgb565(rgb, { littleEndian: true, invert: true }),
    )
  })

  it('refuses a buffer that is not width x height x channels', () => {
    expect(() => packPixels(new Uint8Array(10), 2, 2, 3, 'mono', { dither: 'none' })).toThrow(
      /12 bytes, got 10/,
    )
  })
})
