import { packedRowBytes } from './pack.ts'
import { DEFAULT_PALETTES, type Palette } from './palette.ts'
import { isIndexedFormat, PIXEL_FORMATS, type PixelFormat } from './pixel-format.ts'
import { unpackRgb565 } from './rgb565.ts'

/*
 * A packed frame back to the colours a panel shows (the inverse of pack.ts): RGB565 words expanded to 8 bits,
 * indexed pixels as their palette's inks. For frame.png and the simulated device. Pure.
 */

/**
 * 8-bit RGB (3 bytes a pixel) of a frame packed in `format`. Indexed pixels take the colour of their ink in
 * `palette` (default the format's own); an index past the palette shows as its last ink.
 *
 * @throws RangeError when `pixels` is not the packed size of a width x height frame.
 */
export function unpackToRgb(
  pixels: Uint8Array,
  width: number,
  height: number,
  format: PixelFormat,
  palette?: Palette,
): Buffer {
  const rowBytes = packedRowBytes(format, width)
  if (pixels.length !== rowBytes * height) {
    throw new RangeError(
      `a ${width}x${height} ${format} frame is ${rowBytes * height} bytes, got ${pixels.length}`,
    )
  }
  if (!isIndexedFormat(format)) return unpackRgb565(pixels, format === 'rgb565-le')
  const inks = palette ?? DEFAULT_PALETTES[format]
  const bits = PIXEL_FORMATS[format].bitsPerPixel
  const mask = (1 << bits) - 1
  const out = Buffer.alloc(width * height * 3)
  for (let y = 0, o = 0; y < height; y++) {
    const row = y * rowBytes
    for (let x = 0; x < width; x++, o += 3) {
      const bit = x * bits
      const v = (pixels[row + (bit >> 3)]! >> (8 - bits - (bit & 7))) & mask
      const ink = inks[Math.min(v, inks.length - 1)]!
      out[o] = ink[0]
      out[o + 1] = ink[1]
      out[o + 2] = ink[2]
    }
  }
  return out
}
