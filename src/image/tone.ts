import { SRGB_TO_LINEAR } from './palette.ts'

/*
 * The tone steps before a picture is quantised (dither.ts): contrast on the sRGB scale, then saturation in
 * linear light, applied to each pixel as it is read. Pure.
 */

/** A picture as the quantisers read it: the bytes, and the tone steps to apply. */
export interface PixelSource {
  rgb: Uint8Array
  channels: number
  /** 8-bit code to linear light, contrast included: see inputTable. */
  table: Float32Array
  saturation: number
}

/** 8-bit code to linear light with the contrast step folded in, so it costs nothing per pixel. */
export function inputTable(contrast: number): Float32Array {
  if (contrast === 1) return SRGB_TO_LINEAR
  const table = new Float32Array(256)
  for (let v = 0; v < 256; v++) {
    const c = Math.min(1, Math.max(0, (v / 255 - 0.5) * contrast + 0.5))
    table[v] = c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4
  }
  return table
}

/** Linear light of pixel i after the saturation step, into px[0..2]. */
export function readPixel(src: PixelSource, i: number, px: Float64Array): void {
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
