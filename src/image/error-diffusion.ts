import type { PreparedPalette } from './palette.ts'
import { nearestOklab } from './palette.ts'
import { type PixelSource, readPixel } from './tone.ts'

/*
 * Error diffusion (dither.ts picks it for `floyd-steinberg` and `atkinson`): each pixel takes its nearest ink and
 * hands what it missed by, in linear light, to the neighbours it has not reached yet. Pure.
 *
 * Values that error diffusion pushes more than one whole step outside [0, 1] are clamped. The measured inks do
 * not reach pure black or a saturated green, and without a bound the error of a region the panel cannot show
 * piles up and smears into its neighbours. The bound must not be [0, 1] itself: with a perceptual choice of
 * ink a pixel just above 1/8 linear already takes white, and clamping the large negative error that follows
 * would lighten every dark grey (a flat sRGB 40 came out as 67 on mono).
 */

/** Error-diffusion kernels as [dx, dy, weight] taps, dx for a left-to-right scan. */
export const KERNELS = {
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

export function diffuse(
  src: PixelSource,
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
