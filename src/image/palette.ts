import { INDEXED_COLOURS, type IndexedFormat } from './pixel-format.ts'

/*
 * A panel's inks and the colour spaces they are compared in (docs/protocol.md, "Pixel formats"; issue 15). Pure.
 *
 * - Light adds up linearly, so errors are measured and spread in linear light: a 50 % mix of black and white
 *   ink looks like sRGB 188, not 128. Dithering the sRGB numbers darkens every mid-tone.
 * - "Nearest ink" is decided in OKLab (Björn Ottosson, "A perceptual color space for image processing", 2020,
 *   https://bottosson.github.io/posts/oklab/), whose distances follow perceived difference far better than
 *   RGB distances do; so a mid blue goes to the blue ink rather than to black.
 */

/** An 8-bit sRGB colour: what the ink looks like. */
export type Rgb = readonly [r: number, g: number, b: number]
/** The inks of a panel, in the order of their index on the wire. */
export type Palette = readonly Rgb[]

/**
 * The default inks of each indexed format.
 *
 * - `palette7`: the colours of the 7-colour ACeP panels (UC8159 controller: Pimoroni Inky Impression 5.7" and
 *   Inky Frame 5.7") as Pimoroni measured them, `SATURATED_PALETTE` in pimoroni/inky
 *   `library/inky/inky_uc8159.py`. Order as on the wire: black, white, green, blue, red, yellow, orange.
 *   Other 7-colour panels (Waveshare 7.3" F, Inky Frame 7.3") are close; a panel's own numbers belong in its
 *   settings.
 * - `gray4`: four levels evenly spaced in sRGB (0, 85, 170, 255), nominal rather than measured: the grey a
 *   4-grey waveform gives depends on the panel's lookup table and its temperature.
 * - `mono`: black and white.
 */
export const DEFAULT_PALETTES: Readonly<Record<IndexedFormat, Palette>> = {
  palette7: [
    [57, 48, 57],
    [255, 255, 255],
    [58, 91, 70],
    [61, 59, 94],
    [156, 72, 75],
    [208, 190, 71],
    [177, 106, 73],
  ],
  gray4: [
    [0, 0, 0],
    [85, 85, 85],
    [170, 170, 170],
    [255, 255, 255],
  ],
  mono: [
    [0, 0, 0],
    [255, 255, 255],
  ],
}

/** sRGB transfer function (IEC 61966-2-1), 8-bit code to linear light in [0, 1]. */
export function srgbToLinear(v8: number): number {
  const c = v8 / 255
  return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4
}

/** Linear light in [0, 1] to an 8-bit sRGB code (rounded). */
export function linearToSrgb(v: number): number {
  const c = v <= 0 ? 0 : v >= 1 ? 1 : v
  const s = c <= 0.0031308 ? c * 12.92 : 1.055 * c ** (1 / 2.4) - 0.055
  return Math.round(s * 255)
}

/** srgbToLinear of every 8-bit code. */
export const SRGB_TO_LINEAR = Float32Array.from({ length: 256 }, (_, v) => srgbToLinear(v))

/** Writes the OKLab coordinates of linear-light (r, g, b) to out[o..o+2]. */
function linearToOklab(r: number, g: number, b: number, out: Float64Array, o: number): void {
  const l = Math.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b)
  const m = Math.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b)
  const s = Math.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
  out[o] = 0.2104542553 * l + 0.793617785 * m - 0.0040720468 * s
  out[o + 1] = 1.9779984951 * l - 2.428592205 * m + 0.4505937099 * s
  out[o + 2] = 0.0259040371 * l + 0.7827717662 * m - 0.808675766 * s
}

/** A palette checked against its format, with each ink in linear light and in OKLab. */
export interface PreparedPalette {
  size: number
  /** Linear-light r, g, b per ink. */
  linear: Float64Array
  /** OKLab L, a, b per ink. */
  lab: Float64Array
}

export function preparePalette(palette: Palette, format: IndexedFormat): PreparedPalette {
  const max = INDEXED_COLOURS[format]
  if (palette.length < 2 || palette.length > max) {
    throw new RangeError(`a ${format} palette has 2 to ${max} colours, got ${palette.length}`)
  }
  const size = palette.length
  const linear = new Float64Array(size * 3)
  const lab = new Float64Array(size * 3)
  palette.forEach((colour, i) => {
    for (let c = 0; c < 3; c++) {
      const v = colour[c]!
      if (!Number.isInteger(v) || v < 0 || v > 255) {
        throw new RangeError(`palette colour ${i} has channel ${v}; channels are whole numbers 0-255`)
      }
      linear[i * 3 + c] = SRGB_TO_LINEAR[v]!
    }
    linearToOklab(linear[i * 3]!, linear[i * 3 + 1]!, linear[i * 3 + 2]!, lab, i * 3)
  })
  return { size, linear, lab }
}

/** Index of the ink nearest to linear-light (r, g, b) in OKLab. `scratch` holds 3 numbers. */
export function nearestOklab(
  r: number,
  g: number,
  b: number,
  p: PreparedPalette,
  scratch: Float64Array,
): number {
  linearToOklab(r, g, b, scratch, 0)
  const L = scratch[0]!
  const A = scratch[1]!
  const B = scratch[2]!
  const lab = p.lab
  let best = 0
  let bestD = Number.POSITIVE_INFINITY
  for (let i = 0, o = 0; i < p.size; i++, o += 3) {
    const dl = L - lab[o]!
    const da = A - lab[o + 1]!
    const db = B - lab[o + 2]!
    const d = dl * dl + da * da + db * db
    if (d < bestD) {
      bestD = d
      best = i
    }
  }
  return best
}

/**
 * The index of the ink nearest to an 8-bit sRGB colour, by OKLab distance: what `dither: 'none'` picks for
 * every pixel (with no saturation or contrast change). Ties go to the lower index.
 */
export function nearestIndex(
  r: number,
  g: number,
  b: number,
  palette: Palette,
  format: IndexedFormat,
): number {
  const p = preparePalette(palette, format)
  return nearestOklab(SRGB_TO_LINEAR[r]!, SRGB_TO_LINEAR[g]!, SRGB_TO_LINEAR[b]!, p, new Float64Array(3))
}
