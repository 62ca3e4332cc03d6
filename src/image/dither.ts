import { INDEXED_COLOURS, type IndexedFormat } from './pixel-format.ts'

/*
 * Quantising a picture to a panel's few inks (docs/protocol.md, "Pixel formats"; issue 15). Pure: typed arrays
 * in, palette indices out, no sharp, no I/O.
 *
 * - Light adds up linearly, so errors are measured and spread in linear light: a 50 % mix of black and white
 *   ink looks like sRGB 188, not 128. Dithering the sRGB numbers darkens every mid-tone.
 * - "Nearest ink" is decided in OKLab (Björn Ottosson, "A perceptual color space for image processing", 2020,
 *   https://bottosson.github.io/posts/oklab/), whose distances follow perceived difference far better than
 *   RGB distances do; so a mid blue goes to the blue ink rather than to black.
 * - Values that error diffusion pushes more than one whole step outside [0, 1] are clamped. The measured inks do
 *   not reach pure black or a saturated green, and without a bound the error of a region the panel cannot show
 *   piles up and smears into its neighbours. The bound must not be [0, 1] itself: with a perceptual choice of
 *   ink a pixel just above 1/8 linear already takes white, and clamping the large negative error that follows
 *   would lighten every dark grey (a flat sRGB 40 came out as 67 on mono).
 */

export type DitherMethod = 'floyd-steinberg' | 'atkinson' | 'ordered' | 'none'
export const DITHER_METHODS = [
  'floyd-steinberg',
  'atkinson',
  'ordered',
  'none',
] as const satisfies readonly DitherMethod[]

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

export interface QuantizeOptions {
  format: IndexedFormat
  /** The panel's inks in wire order; at most as many as the format can name. Default: {@link DEFAULT_PALETTES}. */
  palette?: Palette
  dither: DitherMethod
  /** Colourfulness before quantising: 0 grey, 1 as is (default), 1.5 half as much again. Done in linear light. */
  saturation?: number
  /** Contrast about mid-grey on the sRGB scale before quantising: 1 as is (default), 1.2 stronger. */
  contrast?: number
  /**
   * Error diffusion runs each row in the opposite direction of the last (default true). A fixed left-to-right
   * scan always pushes error rightwards, which draws diagonal "worms" across flat areas; alternating the
   * direction (serpentine, Ulichney, "Digital Halftoning", 1987) cancels that drift. Ignored by ordered/none.
   */
  serpentine?: boolean
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

const SRGB_TO_LINEAR = Float32Array.from({ length: 256 }, (_, v) => srgbToLinear(v))

/** Writes the OKLab coordinates of linear-light (r, g, b) to out[o..o+2]. */
function linearToOklab(r: number, g: number, b: number, out: Float64Array, o: number): void {
  const l = Math.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b)
  const m = Math.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b)
  const s = Math.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
  out[o] = 0.2104542553 * l + 0.793617785 * m - 0.0040720468 * s
  out[o + 1] = 1.9779984951 * l - 2.428592205 * m + 0.4505937099 * s
  out[o + 2] = 0.0259040371 * l + 0.7827717662 * m - 0.808675766 * s
}

interface PreparedPalette {
  size: number
  /** Linear-light r, g, b per ink. */
  linear: Float64Array
  /** OKLab L, a, b per ink. */
  lab: Float64Array
}

function preparePalette(palette: Palette, format: IndexedFormat): PreparedPalette {
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
function nearestOklab(r: number, g: number, b: number, p: PreparedPalette, scratch: Float64Array): number {
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

/** 8-bit code to linear light with the contrast step folded in, so it costs nothing per pixel. */
function inputTable(contrast: number): Float32Array {
  if (contrast === 1) return SRGB_TO_LINEAR
  const table = new Float32Array(256)
  for (let v = 0; v < 256; v++) {
    const c = Math.min(1, Math.max(0, (v / 255 - 0.5) * contrast + 0.5))
    table[v] = c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4
  }
  return table
}

/** Error-diffusion kernels as [dx, dy, weight] taps, dx for a left-to-right scan. */
const KERNELS = {
  // Floyd & Steinberg, "An adaptive algorithm for spatial greyscale", Proc. SID 17/2, 1976.
  'floyd-steinberg': [
    [1, 0, 7 / 16],
    [-1, 1, 3 / 16],
    [0, 1, 5 / 16],
    [1, 1, 1 / 16],
  ],
  // Bill Atkinson's (Apple MacPaint): 1/8 to six neighbours, so only 3/4 of the error travels. Highlights and
  // shadows come out cleaner and flatter than Floyd-Steinberg's, at the cost of some tone in them.
  atkinson: [
    [1, 0, 1 / 8],
    [2, 0, 1 / 8],
    [-1, 1, 1 / 8],
    [0, 1, 1 / 8],
    [1, 1, 1 / 8],
    [0, 2, 1 / 8],
  ],
} as const

/** Bounds of a pixel's value plus the error it received, in linear light (see the top of this file). */
const LOW = -1
const HIGH = 2

/** Columns of padding either side of an error row: the widest reach of a kernel. Taps into it are dropped. */
const PAD = 2

/** 8x8 Bayer matrix, thresholds 0..63 (Bayer, "An optimum method for two-level rendition", ICC 1973). */
const BAYER8 = (() => {
  const m = new Uint8Array(64)
  for (let y = 0; y < 8; y++) {
    for (let x = 0; x < 8; x++) {
      // Bit-interleave of x XOR y and y, reversed: the standard recursive construction.
      let v = 0
      const xy = x ^ y
      for (let bit = 0; bit < 3; bit++) {
        v = (v << 2) | (((xy >> bit) & 1) << 1) | ((y >> bit) & 1)
      }
      m[y * 8 + x] = v
    }
  }
  return m
})()

/**
 * Maps every pixel of an RGB or RGBA picture (row-major, `channels` bytes a pixel, as sharp's `.raw()` gives
 * it) to the index of one of the panel's inks. Alpha, if any, is ignored: flatten first. The result has one
 * byte per pixel; {@link packIndexed} in `pack.ts` puts it on the wire.
 *
 * @throws RangeError when the buffer does not hold width x height pixels, or the palette does not fit the format.
 */
export function quantize(
  rgb: Uint8Array,
  width: number,
  height: number,
  channels: 3 | 4,
  options: QuantizeOptions,
): Uint8Array {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) {
    throw new RangeError(`bad size ${width}x${height}`)
  }
  if (rgb.length !== width * height * channels) {
    throw new RangeError(
      `a ${width}x${height} picture of ${channels} channels is ${width * height * channels} bytes, got ${rgb.length}`,
    )
  }
  const palette = preparePalette(options.palette ?? DEFAULT_PALETTES[options.format], options.format)
  const table = inputTable(options.contrast ?? 1)
  const saturation = options.saturation ?? 1
  const out = new Uint8Array(width * height)
  const src: Source = { rgb, channels, table, saturation }
  switch (options.dither) {
    case 'none':
      quantizeNearest(src, out, palette)
      break
    case 'ordered':
      quantizeOrdered(src, width, height, out, palette)
      break
    default:
      diffuse(src, width, height, out, palette, KERNELS[options.dither], options.serpentine ?? true)
  }
  return out
}

interface Source {
  rgb: Uint8Array
  channels: number
  table: Float32Array
  saturation: number
}

/** Linear light of pixel i after the saturation step, into px[0..2]. */
function readPixel(src: Source, i: number, px: Float64Array): void {
  const o = i * src.channels
  const t = src.table
  let r = t[src.rgb[o]!]!
  let g = t[src.rgb[o + 1]!]!
  let b = t[src.rgb[o + 2]!]!
  const s = src.saturation
  if (s !== 1) {
    // Rec. 709 luminance (the sRGB primaries): scale each pixel's distance from its own grey.
    const y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    r = y + (r - y) * s
    g = y + (g - y) * s
    b = y + (b - y) * s
    r = r < 0 ? 0 : r > 1 ? 1 : r
    g = g < 0 ? 0 : g > 1 ? 1 : g
    b = b < 0 ? 0 : b > 1 ? 1 : b
  }
  px[0] = r
  px[1] = g
  px[2] = b
}

function quantizeNearest(src: Source, out: Uint8Array, p: PreparedPalette): void {
  const px = new Float64Array(3)
  const scratch = new Float64Array(3)
  for (let i = 0; i < out.length; i++) {
    readPixel(src, i, px)
    out[i] = nearestOklab(px[0]!, px[1]!, px[2]!, p, scratch)
  }
}

function diffuse(
  src: Source,
  width: number,
  height: number,
  out: Uint8Array,
  p: PreparedPalette,
  kernel: readonly (readonly [number, number, number])[],
  serpentine: boolean,
): void {
  const depth = Math.max(...kernel.map((tap) => tap[1])) + 1
  const stride = (width + 2 * PAD) * 3
  // One error row per row the kernel reaches, reused round-robin; each is cleared (padding included) before it
  // serves a new row, so error spilled past a row's end is dropped and never wraps into the next row.
  const rows = Array.from({ length: depth }, () => new Float64Array(stride))
  const taps = kernel.length
  const tapDx = Int32Array.from(kernel, (tap) => tap[0])
  const tapDy = Int32Array.from(kernel, (tap) => tap[1])
  const tapW = Float64Array.from(kernel, (tap) => tap[2])
  const px = new Float64Array(3)
  const scratch = new Float64Array(3)
  const lin = p.linear
  for (let y = 0; y < height; y++) {
    const reverse = serpentine && (y & 1) === 1
    const cur = rows[y % depth]!
    const start = reverse ? width - 1 : 0
    const step = reverse ? -1 : 1
    for (let n = 0, x = start; n < width; n++, x += step) {
      const i = y * width + x
      readPixel(src, i, px)
      const e = (x + PAD) * 3
      let r = px[0]! + cur[e]!
      let g = px[1]! + cur[e + 1]!
      let b = px[2]! + cur[e + 2]!
      r = r < LOW ? LOW : r > HIGH ? HIGH : r
      g = g < LOW ? LOW : g > HIGH ? HIGH : g
      b = b < LOW ? LOW : b > HIGH ? HIGH : b
      const k = nearestOklab(r, g, b, p, scratch)
      out[i] = k
      const er = r - lin[k * 3]!
      const eg = g - lin[k * 3 + 1]!
      const eb = b - lin[k * 3 + 2]!
      for (let t = 0; t < taps; t++) {
        const row = rows[(y + tapDy[t]!) % depth]!
        const o = (x + step * tapDx[t]! + PAD) * 3
        const w = tapW[t]!
        row[o] = row[o]! + er * w
        row[o + 1] = row[o + 1]! + eg * w
        row[o + 2] = row[o + 2]! + eb * w
      }
    }
    cur.fill(0)
  }
}

/**
 * Ordered dithering that keeps the mean in linear light: each pixel is drawn as a mix of two inks, the pair whose
 * line (in linear RGB) passes closest to the pixel's colour, in the ratio that lands nearest to it; the Bayer
 * threshold of the position decides which of the two this pixel takes. A flat area becomes a fixed, regular
 * pattern, which e-paper shows without the crawl of diffusion noise. Greys on gray4 and mono are kept exactly;
 * a colour that needs three inks comes out as the nearest two-ink mix.
 */
function quantizeOrdered(
  src: Source,
  width: number,
  height: number,
  out: Uint8Array,
  p: PreparedPalette,
): void {
  const lin = p.linear
  const pairs = (p.size * (p.size - 1)) / 2
  const from = new Uint8Array(pairs)
  const to = new Uint8Array(pairs)
  // Per pair: the first ink and the vector to the second, over its squared length (so t is one dot product).
  const base = new Float64Array(pairs * 3)
  const dir = new Float64Array(pairs * 3)
  const scaled = new Float64Array(pairs * 3)
  let n = 0
  for (let i = 0; i < p.size; i++) {
    for (let j = i + 1; j < p.size; j++, n++) {
      from[n] = i
      to[n] = j
      let len = 0
      for (let c = 0; c < 3; c++) {
        base[n * 3 + c] = lin[i * 3 + c]!
        dir[n * 3 + c] = lin[j * 3 + c]! - lin[i * 3 + c]!
        len += dir[n * 3 + c]! ** 2
      }
      for (let c = 0; c < 3; c++) scaled[n * 3 + c] = len === 0 ? 0 : dir[n * 3 + c]! / len
    }
  }
  const px = new Float64Array(3)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x
      readPixel(src, i, px)
      const r = px[0]!
      const g = px[1]!
      const b = px[2]!
      let best = 0
      let bestShare = 0
      let bestD = Number.POSITIVE_INFINITY
      for (let k = 0, o = 0; k < pairs; k++, o += 3) {
        const vr = r - base[o]!
        const vg = g - base[o + 1]!
        const vb = b - base[o + 2]!
        let t = vr * scaled[o]! + vg * scaled[o + 1]! + vb * scaled[o + 2]!
        t = t < 0 ? 0 : t > 1 ? 1 : t
        const dr = vr - t * dir[o]!
        const dg = vg - t * dir[o + 1]!
        const db = vb - t * dir[o + 2]!
        const d = dr * dr + dg * dg + db * db
        if (d < bestD) {
          bestD = d
          best = k
          bestShare = t
        }
      }
      const threshold = (BAYER8[(y & 7) * 8 + (x & 7)]! + 0.5) / 64
      out[i] = threshold < bestShare ? to[best]! : from[best]!
    }
  }
}
