import { describe, expect, it } from 'vitest'
import { packRgb565, unpackRgb565 } from '../../src/image/rgb565.ts'

const BE = { littleEndian: false, invert: false }
const LE = { littleEndian: true, invert: false }

const pack = (rgb: number[], options = BE) => [...packRgb565(Uint8Array.from(rgb), options)]

describe('packRgb565', () => {
  // Words computed by hand: r5 << 11 | g6 << 5 | b5, with v5 = floor((v*31 + 127) / 255), v6 likewise with 63.
  const golden: Array<[string, number[], number[]]> = [
    ['black', [0, 0, 0], [0x00, 0x00]],
    ['white', [255, 255, 255], [0xff, 0xff]],
    ['red', [255, 0, 0], [0xf8, 0x00]],
    ['green', [0, 255, 0], [0x07, 0xe0]],
    ['blue', [0, 0, 255], [0x00, 0x1f]],
    // 128 -> r5 16, g6 32, b5 16: 0x8410
    ['mid grey', [128, 128, 128], [0x84, 0x10]],
    // Truncation (the older proxy) gives 0x0000 here; rounding gives r5 1, g6 1, b5 1.
    ['near black (7,3,7) rounds up', [7, 3, 7], [0x08, 0x21]],
    // Just below the rounding threshold: 4 -> 0, 2 -> 0.
    ['(4,2,4) rounds down', [4, 2, 4], [0x00, 0x00]],
    // Just above: 5 -> r5 1, 3 -> g6 1 (truncation gives 0 for both).
    ['(5,3,5) rounds up', [5, 3, 5], [0x08, 0x21]],
    // 251: r5 = floor((7781+127)/255) = 31; 252: g6 = floor((15876+127)/255) = 62 -> 0xffdf
    ['(251,252,251)', [251, 252, 251], [0xff, 0xdf]],
  ]

  for (const [name, rgb, be] of golden) {
    it(`packs ${name} big-endian`, () => {
      expect(pack(rgb, BE)).toEqual(be)
    })
    it(`packs ${name} little-endian`, () => {
      expect(pack(rgb, LE)).toEqual([be[1], be[0]])
    })
  }

  it('packs several pixels in order, two bytes each', () => {
    expect(pack([255, 0, 0, 0, 255, 0, 0, 0, 255])).toEqual([0xf8, 0x00, 0x07, 0xe0, 0x00, 0x1f])
    expect(pack([255, 0, 0, 0, 255, 0, 0, 0, 255], LE)).toEqual([0x00, 0xf8, 0xe0, 0x07, 0x1f, 0x00])
  })

  it('inverts to the colour negative before packing', () => {
    const invert = { littleEndian: false, invert: true }
    expect(pack([255, 0, 0], invert)).toEqual([0x07, 0xff]) // red -> cyan
    expect(pack([255, 255, 255], invert)).toEqual([0x00, 0x00])
    expect(pack([0, 0, 0], invert)).toEqual([0xff, 0xff])
    // 255-248 = 7, 255-252 = 3: the near-black edge case again
    expect(pack([248, 252, 248], invert)).toEqual([0x08, 0x21])
    expect(pack([255, 0, 0], { littleEndian: true, invert: true })).toEqual([0xff, 0x07])
  })

  it('returns 2 bytes per pixel for a whole frame', () => {
    expect(packRgb565(new Uint8Array(240 * 240 * 3), BE)).toHaveLength(240 * 240 * 2)
    expect(packRgb565(new Uint8Array(0), BE)).toHaveLength(0)
  })

  it('refuses input that is not whole pixels', () => {
    expect(() => packRgb565(new Uint8Array(4), BE)).toThrow(RangeError)
  })
})

describe('unpackRgb565', () => {
  it('expands with bit replication', () => {
    expect([...unpackRgb565(Uint8Array.from([0xf8, 0x00]), false)]).toEqual([255, 0, 0])
    expect([...unpackRgb565(Uint8Array.from([0x07, 0xe0]), false)]).toEqual([0, 255, 0])
    expect([...unpackRgb565(Uint8Array.from([0x1f, 0x00]), true)]).toEqual([0, 0, 255])
    // 0x8410: r5 16 -> 128|4 = 132, g6 32 -> 128|2 = 130
    expect([...unpackRgb565(Uint8Array.from([0x84, 0x10]), false)]).toEqual([132, 130, 132])
    expect([...unpackRgb565(Uint8Array.from([0x08, 0x21]), false)]).toEqual([8, 4, 8])
  })

  it('gives back every one of the 65,536 words when packed again, in both byte orders', () => {
    const words = new Uint8Array(65536 * 2)
    for (let w = 0; w < 65536; w++) {
      words[w * 2] = w >>> 8
      words[w * 2 + 1] = w & 0xff
    }
    expect(packRgb565(unpackRgb565(words, false), BE).equals(words)).toBe(true)
    expect(packRgb565(unpackRgb565(words, true), LE).equals(words)).toBe(true)
  })

  it('returns 3 bytes per pixel and refuses an odd length', () => {
    expect(unpackRgb565(new Uint8Array(240 * 240 * 2), false)).toHaveLength(240 * 240 * 3)
    expect(() => unpackRgb565(new Uint8Array(3), false)).toThrow(RangeError)
  })
})
