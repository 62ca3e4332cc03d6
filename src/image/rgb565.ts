/*
 * RGB565 packing (docs/protocol.md, "Frames"): one 16-bit word per pixel, bit layout RRRRRGGG GGGBBBBB. Big-endian (high
 * byte first) is what ST7789/GC9A01 drivers push to the panel unchanged; little-endian suits drivers that hand
 * the framebuffer to the SPI peripheral as native uint16 words. Pure: no I/O, no sharp.
 */

export interface PackOptions {
  /** Low byte first (frame format 1) instead of high byte first (format 0). */
  littleEndian: boolean
  /** Colour negative (255 - v per channel), for panels left in INVON mode by their driver. */
  invert: boolean
}

/** Rounds an 8-bit channel to `bits` bits: floor((v * max + 127) / 255), i.e. to the nearest level. */
function roundChannel(v: number, bits: number): number {
  const max = (1 << bits) - 1
  return Math.floor((v * max + 127) / 255)
}

/**
 * Per-channel lookup tables, already shifted into place, so the hot loop is three loads and two ORs per pixel
 * instead of three divisions. Index = the 8-bit channel value; the inverted set is indexed the same way.
 */
function buildTable(bits: number, shift: number, invert: boolean): Uint16Array {
  const table = new Uint16Array(256)
  for (let v = 0; v < 256; v++) table[v] = roundChannel(invert ? 255 - v : v, bits) << shift
  return table
}

const PLAIN = { r: buildTable(5, 11, false), g: buildTable(6, 5, false), b: buildTable(5, 0, false) }
const INVERTED = { r: buildTable(5, 11, true), g: buildTable(6, 5, true), b: buildTable(5, 0, true) }

/**
 * Packs RGB888 pixels (3 bytes each, row-major) into RGB565, 2 bytes per pixel.
 *
 * Channels are rounded to the nearest 5/6-bit level rather than truncated (the older proxy shifted right,
 * which darkens every colour by up to one level and turns near-black (7,3,7) into pure black).
 *
 * @throws RangeError when `rgb.length` is not a multiple of 3 (a bug in the caller, not a bad picture).
 */
export function packRgb565(rgb: Uint8Array, options: PackOptions): Buffer {
  if (rgb.length % 3 !== 0) {
    throw new RangeError(`RGB888 input must be a multiple of 3 bytes, got ${rgb.length}`)
  }
  const { r, g, b } = options.invert ? INVERTED : PLAIN
  const out = Buffer.allocUnsafe((rgb.length / 3) * 2)
  // Byte offsets of the high and low byte within each 2-byte pixel.
  const hi = options.littleEndian ? 1 : 0
  const lo = 1 - hi
  for (let i = 0, o = 0; i < rgb.length; i += 3, o += 2) {
    const word = r[rgb[i]!]! | g[rgb[i + 1]!]! | b[rgb[i + 2]!]!
    out[o + hi] = word >>> 8
    out[o + lo] = word & 0xff
  }
  return out
}

/**
 * Expands RGB565 pixels back to RGB888 (for PNG previews of frames and the simulated device). Uses bit
 * replication (r8 = r5 << 3 | r5 >> 2), so 0 maps to 0 and the top level to 255, and packing the result again
 * gives back the same words.
 *
 * @throws RangeError when `pixels.length` is odd.
 */
export function unpackRgb565(pixels: Uint8Array, littleEndian: boolean): Buffer {
  if (pixels.length % 2 !== 0) {
    throw new RangeError(`RGB565 input must be a multiple of 2 bytes, got ${pixels.length}`)
  }
  const out = Buffer.allocUnsafe((pixels.length / 2) * 3)
  const hi = littleEndian ? 1 : 0
  const lo = 1 - hi
  for (let i = 0, o = 0; i < pixels.length; i += 2, o += 3) {
    const word = (pixels[i + hi]! << 8) | pixels[i + lo]!
    const r5 = word >>> 11
    const g6 = (word >>> 5) & 0x3f
    const b5 = word & 0x1f
    out[o] = (r5 << 3) | (r5 >>> 2)
    out[o + 1] = (g6 << 2) | (g6 >>> 4)
    out[o + 2] = (b5 << 3) | (b5 >>> 2)
  }
  return out
}
