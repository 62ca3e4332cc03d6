import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  DEFAULT_PALETTES,
  DITHER_METHODS,
  type DitherMethod,
  linearToSrgb,
  nearestIndex,
  type Palette,
  quantize,
  srgbToLinear,
} from '../../src/image/dither.ts'
import { packedBandBytes, packIndexed } from '../../src/image/pack.ts'
import { INDEXED_COLOURS, type IndexedFormat } from '../../src/image/pixel-format.ts'

const FORMATS: IndexedFormat[] = ['mono', 'gray4', 'palette7']
const SEED = 15

function flat(width: number, height: number, colour: readonly number[]): Uint8Array {
  const rgb = new Uint8Array(width * height * 3)
  for (let i = 0; i < width * height; i++) rgb.set(colour, i * 3)
  return rgb
}

/** The colour the eye sees from afar: the inks' mean in linear light, back in 8-bit sRGB. */
function seenColour(indices: Uint8Array, palette: Palette): number[] {
  const sum = [0, 0, 0]
  for (const k of indices) for (let c = 0; c < 3; c++) sum[c]! += srgbToLinear(palette[k]![c]!)
  return sum.map((s) => linearToSrgb(s / indices.length))
}

/** A colour the panel can show as a mix: inks in these shares, mixed in linear light. */
function mix(palette: Palette, shares: number[]): number[] {
  return [0, 1, 2].map((c) =>
    linearToSrgb(shares.reduce((s, w, i) => s + w * srgbToLinear(palette[i]![c]!), 0)),
  )
}

const GREYS = [
  [40, 40, 40],
  [100, 100, 100],
  [128, 128, 128],
  [200, 200, 200],
  [230, 230, 230],
]
const P7 = DEFAULT_PALETTES.palette7
const TARGETS: Record<IndexedFormat, number[][]> = {
  mono: GREYS,
  gray4: GREYS,
  palette7: [
    mix(P7, [0.5, 0.5]),
    mix(P7, [0, 0.3, 0, 0, 0.7]),
    mix(P7, [0.2, 0.2, 0.2, 0.2, 0.2]),
    mix(P7, [0, 0, 0.5, 0, 0, 0.5]),
    mix(P7, [0.1, 0.6, 0, 0, 0, 0, 0.3]),
  ],
}

describe('quantize keeps the colour of a flat area', () => {
  // Floyd-Steinberg and ordered keep the mean in linear light (up to what leaves the 64x64 edges); 8 levels of
  // 255 is the bar. Atkinson spreads only 3/4 of each error by design, so it crushes shadows and highlights on
  // two inks; on gray4's four levels it stays within 10.
  const cases: [DitherMethod, IndexedFormat, number][] = [
    ['floyd-steinberg', 'mono', 8],
    ['floyd-steinberg', 'gray4', 8],
    ['floyd-steinberg', 'palette7', 8],
    ['ordered', 'mono', 8],
    ['ordered', 'gray4', 8],
    ['ordered', 'palette7', 8],
    ['atkinson', 'gray4', 10],
  ]
  for (const [dither, format, tolerance] of cases) {
    it(`${dither} on ${format}, within ${tolerance} levels`, () => {
      for (const target of TARGETS[format]) {
        const seen = seenColour(
          quantize(flat(64, 64, target), 64, 64, 3, { format, dither }),
          DEFAULT_PALETTES[format],
        )
        for (let c = 0; c < 3; c++)
          expect(Math.abs(seen[c]! - target[c]!), `${target} seen as ${seen}`).toBeLessThanOrEqual(tolerance)
      }
    })
  }

  it('atkinson keeps mid-grey on mono, and none does not dither at all', () => {
    const seen = seenColour(
      quantize(flat(64, 64, [128, 128, 128]), 64, 64, 3, { format: 'mono', dither: 'atkinson' }),
      DEFAULT_PALETTES.mono,
    )
    expect(Math.abs(seen[0]! - 128)).toBeLessThanOrEqual(25)
    const none = quantize(flat(8, 8, [128, 128, 128]), 8, 8, 3, { format: 'mono', dither: 'none' })
    expect(new Set(none).size).toBe(1)
  })

  it('uses the palette it is given: a panel whose white is cream', () => {
    const cream: Palette = [
      [20, 20, 20],
      [240, 230, 200],
    ]
    const target = mix(cream, [0.4, 0.6])
    const seen = seenColour(
      quantize(flat(64, 64, target), 64, 64, 3, {
        format: 'mono',
        dither: 'floyd-steinberg',
        palette: cream,
      }),
      cream,
    )
    for (let c = 0; c < 3; c++) expect(Math.abs(seen[c]! - target[c]!)).toBeLessThanOrEqual(8)
  })
})

describe('error diffusion stays inside its row ends', () => {
  // Each row: black on the left, mid-grey at the right end. The grey's error (it becomes black or white) must
  // go down and to the left, never round the end of the row into the next row's first pixels.
  const width = 24
  const height = 40
  const rgb = new Uint8Array(width * height * 3)
  for (let y = 0; y < height; y++) rgb.set([128, 128, 128], (y * width + width - 1) * 3)
  for (const dither of ['floyd-steinberg', 'atkinson'] as const) {
    for (const serpentine of [true, false]) {
      for (const format of FORMATS) {
        it(`${dither}${serpentine ? '' : ' left to right'} on ${format}: the left columns stay black`, () => {
          const out = quantize(rgb, width, height, 3, { format, dither, serpentine })
          for (let y = 0; y < height; y++) {
            expect([out[y * width], out[y * width + 1]], `row ${y}`).toEqual([0, 0])
          }
          // ... and the grey column was really dithered, so there was error to leak.
          const column = Array.from({ length: height }, (_, y) => out[y * width + width - 1])
          expect(new Set(column).size).toBeGreaterThan(1)
        })
      }
    }
  }

  it('the mirror image: white on the right, and a grey first column; the right columns stay white', () => {
    const mirrored = new Uint8Array(width * height * 3).fill(255)
    for (let y = 0; y < height; y++) mirrored.set([60, 60, 60], y * width * 3)
    for (const format of FORMATS) {
      const out = quantize(mirrored, width, height, 3, { format, dither: 'floyd-steinberg' })
      const white = format === 'gray4' ? 3 : 1
      for (let y = 0; y < height; y++) expect(out[y * width + width - 1], `${format} row ${y}`).toBe(white)
    }
  })
})

/** An independent nearest ink: sRGB decode with Math.pow, OKLab from its published matrices, brute force. */
function referenceNearest(rgb: readonly number[], palette: Palette): number {
  const lab = (c: readonly number[]) => {
    const [r, g, b] = c.map((v) => {
      const s = v / 255
      return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4
    }) as [number, number, number]
    const l = Math.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b)
    const m = Math.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b)
    const s = Math.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
    return [
      0.2104542553 * l + 0.793617785 * m - 0.0040720468 * s,
      1.9779984951 * l - 2.428592205 * m + 0.4505937099 * s,
      0.0259040371 * l + 0.7827717662 * m - 0.808675766 * s,
    ]
  }
  const p = lab(rgb)
  const d = palette.map((ink) => lab(ink).reduce((s, v, i) => s + (v - p[i]!) ** 2, 0))
  return d.indexOf(Math.min(...d))
}

describe('none is the nearest ink', () => {
  it('matches a brute-force OKLab search for every pixel (property, fixed seed)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FORMATS),
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 255 }),
            fc.integer({ min: 0, max: 255 }),
            fc.integer({ min: 0, max: 255 }),
          ),
          { minLength: 1, maxLength: 64 },
        ),
        (format, pixels) => {
          const rgb = Uint8Array.from(pixels.flat())
          const out = quantize(rgb, pixels.length, 1, 3, { format, dither: 'none' })
          const palette = DEFAULT_PALETTES[format]
          expect([...out]).toEqual(pixels.map((p) => referenceNearest(p, palette)))
          expect([...out]).toEqual(pixels.map(([r, g, b]) => nearestIndex(r, g, b, palette, format)))
        },
      ),
      { seed: SEED, numRuns: 200 },
    )
  })

  it('picks blue ink for a dark blue, not black', () => {
    expect(nearestIndex(40, 40, 140, P7, 'palette7')).toBe(3)
    expect(nearestIndex(230, 120, 40, P7, 'palette7')).toBe(6)
  })
})

describe('saturation and contrast', () => {
  it('saturation 0 turns a red area into a grey mix of the same lightness', () => {
    const red = flat(64, 64, [200, 40, 40])
    const grey = seenColour(
      quantize(red, 64, 64, 3, { format: 'palette7', dither: 'floyd-steinberg', saturation: 0 }),
      P7,
    )
    const y = linearToSrgb(0.2126 * srgbToLinear(200) + 0.7874 * srgbToLinear(40))
    // Grey sits on the edge of what the inks can mix (the black-white line), where diffusion settles slower.
    for (let c = 0; c < 3; c++) expect(Math.abs(grey[c]! - y)).toBeLessThanOrEqual(12)
    const kept = seenColour(quantize(red, 64, 64, 3, { format: 'palette7', dither: 'floyd-steinberg' }), P7)
    expect(kept[0]! - kept[1]!).toBeGreaterThan(60)
  })

  it('contrast spreads the tones about mid-grey on the sRGB scale', () => {
    const levels = (contrast: number) => [
      ...quantize(Uint8Array.of(60, 60, 60, 128, 128, 128, 190, 190, 190), 3, 1, 3, {
        format: 'gray4',
        dither: 'none',
        contrast,
      }),
    ]
    expect(levels(1)).toEqual([1, 2, 2])
    // (60/255 - 0.5) * 2 + 0.5 = 0.97 / 255 ... black; 190 -> 252: white.
    expect(levels(2)).toEqual([0, 2, 3])
    expect(levels(0)).toEqual([2, 2, 2])
  })
})

describe('quantize on any picture (property, fixed seed)', () => {
  it('returns one in-range index a pixel, and packs to the packed size', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FORMATS),
        fc.constantFrom(...DITHER_METHODS),
        fc.integer({ min: 1, max: 19 }),
        fc.integer({ min: 1, max: 9 }),
        fc.constantFrom(3 as const, 4 as const),
        fc.integer(),
        fc.boolean(),
        (format, dither, width, height, channels, seed, serpentine) => {
          const rgb = new Uint8Array(width * height * channels)
          let s = seed >>> 0
          for (let i = 0; i < rgb.length; i++) {
            s = (Math.imul(s, 1664525) + 1013904223) >>> 0
            rgb[i] = s >>> 24
          }
          const out = quantize(rgb, width, height, channels, {
            format,
            dither,
            serpentine,
            saturation: 1.3,
            contrast: 1.1,
          })
          expect(out.length).toBe(width * height)
          expect(out.every((v) => v < INDEXED_COLOURS[format])).toBe(true)
          expect(packIndexed(out, width, height, format).length).toBe(packedBandBytes(format, width, height))
        },
      ),
      { seed: SEED, numRuns: 300 },
    )
  })

  it('uses only as many inks as a shorter palette has', () => {
    const rgb = Uint8Array.from({ length: 30 * 3 }, (_, i) => (i * 37) & 0xff)
    const out = quantize(rgb, 30, 1, 3, {
      format: 'palette7',
      dither: 'floyd-steinberg',
      palette: P7.slice(0, 3),
    })
    expect(Math.max(...out)).toBeLessThan(3)
  })

  it('refuses a palette too large for the format and a buffer of the wrong size', () => {
    expect(() =>
      quantize(new Uint8Array(3), 1, 1, 3, {
        format: 'mono',
        dither: 'none',
        palette: DEFAULT_PALETTES.gray4,
      }),
    ).toThrow(/2 to 2 colours/)
    expect(() =>
      quantize(new Uint8Array(3), 1, 1, 3, {
        format: 'mono',
        dither: 'none',
        palette: [
          [0, 0, 0],
          [256, 0, 0],
        ],
      }),
    ).toThrow(/0-255/)
    expect(() => quantize(new Uint8Array(5), 1, 1, 4, { format: 'mono', dither: 'none' })).toThrow(
      /4 bytes, got 5/,
    )
  })
})
