import type { PreparedPalette } from './palette.ts'
import { type PixelSource, readPixel } from './tone.ts'

/*
 * Ordered dithering (dither.ts picks it for `ordered`): a fixed threshold pattern instead of spread error, so
 * a flat area comes out as a regular pattern that does not change when a neighbouring area does. Pure.
 */

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
 * Ordered dithering that keeps the mean in linear light: each pixel is drawn as a mix of two inks, the pair whose
 * line (in linear RGB) passes closest to the pixel's colour, in the ratio that lands nearest to it; the Bayer
 * threshold of the position decides which of the two this pixel takes. A flat area becomes a fixed, regular
 * pattern, which e-paper shows without the crawl of diffusion noise. Greys on gray4 and mono are kept exactly;
 * a colour that needs three inks comes out as the nearest two-ink mix.
 */
export function quantizeOrdered(
  src: PixelSource,
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
