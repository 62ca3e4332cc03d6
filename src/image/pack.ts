import { type DitherMethod, type Palette, quantize } from './dither.ts'
import {
  INDEXED_COLOURS,
  type IndexedFormat,
  isIndexedFormat,
  PIXEL_FORMATS,
  type PixelFormat,
} from './pixel-format.ts'
import { packRgb565 } from './rgb565.ts'

/*
 * Packing pixels for the wire (docs/protocol.md, "Pixel formats"). Sub-byte formats put the leftmost pixel in
 * the most significant bits, and every row starts on a whole byte (the rest of a row's last byte is 0), so a
 * band of rows is a plain slice of the packed frame and a device can copy it straight into a MONO_HLSB-style
 * framebuffer. Pure.
 */

/** Bytes of one packed row: ceil(width * bits / 8). */
export function packedRowBytes(format: PixelFormat, width: number): number {
  return Math.ceil((width * PIXEL_FORMATS[format].bitsPerPixel) / 8)
}

/** Bytes of a packed band of `rows` rows: the pixel payload of one frame chunk. */
export function packedBandBytes(format: PixelFormat, width: number, rows: number): number {
  return packedRowBytes(format, width) * rows
}

/**
 * Packs one index or grey level a pixel (0..colours-1, row-major, as {@link quantize} returns them) into an
 * indexed format: `gray4` 2 bits (0 black .. 3 white), `mono` 1 bit (1 white), `palette7` 4 bits.
 *
 * @throws RangeError when `indices` is not width x height long or holds a value the format cannot name.
 */
export function packIndexed(
  indices: Uint8Array,
  width: number,
  height: number,
  format: IndexedFormat,
): Buffer {
  if (indices.length !== width * height) {
    throw new RangeError(`a ${width}x${height} picture is ${width * height} pixels, got ${indices.length}`)
  }
  const bits = PIXEL_FORMATS[format].bitsPerPixel
  const colours = INDEXED_COLOURS[format]
  const perByte = 8 / bits
  const rowBytes = packedRowBytes(format, width)
  const out = Buffer.alloc(rowBytes * height)
  for (let y = 0; y < height; y++) {
    const row = y * width
    let o = y * rowBytes
    for (let x = 0; x < width; x += perByte, o++) {
      let byte = 0
      const end = Math.min(perByte, width - x)
      for (let k = 0; k < end; k++) {
        const v = indices[row + x + k]!
        if (v >= colours) {
          throw new RangeError(`pixel (${x + k}, ${y}) is ${v}; ${format} has ${colours} colours`)
        }
        byte |= v << (8 - bits * (k + 1))
      }
      out[o] = byte
    }
  }
  return out
}

export interface PackPixelsOptions {
  /** Indexed formats: how to dither. Ignored for RGB565. */
  dither: DitherMethod
  /** Indexed formats: the panel's inks in wire order; default the format's own (dither.ts, DEFAULT_PALETTES). */
  palette?: Palette
  saturation?: number
  contrast?: number
  /** RGB565 only: the colour negative, for LCDs left in INVON mode. E-paper has no such mode. */
  invert?: boolean
}

/**
 * A whole frame in any pixel format, from the RGB or RGBA bytes sharp's `.raw()` gives: RGB565 words for the
 * `rgb565-*` formats, quantised and packed indices for the others. Band `i` of `bandRows` rows is then
 * `subarray(y * packedRowBytes(format, width), (y + h) * packedRowBytes(format, width))`.
 *
 * @throws RangeError when `raw` does not hold width x height pixels of `channels` bytes.
 */
export function packPixels(
  raw: Uint8Array,
  width: number,
  height: number,
  channels: 3 | 4,
  format: PixelFormat,
  options: PackPixelsOptions,
): Buffer {
  if (raw.length !== width * height * channels) {
    throw new RangeError(
      `a ${width}x${height} picture of ${channels} channels is ${width * height * channels} bytes, got ${raw.length}`,
    )
  }
  if (isIndexedFormat(format)) {
    const indices = quantize(raw, width, height, channels, { ...options, format })
    return packIndexed(indices, width, height, format)
  }
  const rgb = channels === 3 ? raw : dropAlpha(raw)
  return packRgb565(rgb, { littleEndian: format === 'rgb565-le', invert: options.invert ?? false })
}

function dropAlpha(rgba: Uint8Array): Uint8Array {
  const rgb = new Uint8Array((rgba.length / 4) * 3)
  for (let i = 0, o = 0; i < rgba.length; i += 4, o += 3) {
    rgb[o] = rgba[i]!
    rgb[o + 1] = rgba[i + 1]!
    rgb[o + 2] = rgba[i + 2]!
  }
  return rgb
}
