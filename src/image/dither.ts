import { diffuse, KERNELS } from './error-diffusion.ts'
import { quantizeOrdered } from './ordered-dither.ts'
import {
  DEFAULT_PALETTES,
  nearestOklab,
  type Palette,
  type PreparedPalette,
  preparePalette,
} from './palette.ts'
import type { IndexedFormat } from './pixel-format.ts'
import { inputTable, type PixelSource, readPixel } from './tone.ts'

export {
  DEFAULT_PALETTES,
  linearToSrgb,
  nearestIndex,
  type Palette,
  type Rgb,
  srgbToLinear,
} from './palette.ts'

/*
 * Quantising a picture to a panel's few inks (docs/protocol.md, "Pixel formats"; issue 15). Pure: typed arrays
 * in, palette indices out, no sharp, no I/O. The inks and colour spaces are in palette.ts, the tone steps in
 * tone.ts, the methods in error-diffusion.ts and ordered-dither.ts; this file picks one.
 */

export type DitherMethod = 'floyd-steinberg' | 'atkinson' | 'ordered' | 'none'
export const DITHER_METHODS = [
  'floyd-steinberg',
  'atkinson',
  'ordered',
  'none',
] as const satisfies readonly DitherMethod[]

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
  const src: PixelSource = { rgb, channels, table, saturation }
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

function quantizeNearest(src: PixelSource, out: Uint8Array, p: PreparedPalette): void {
  const px = new Float64Array(3)
  const scratch = new Float64Array(3)
  for (let i = 0; i < out.length; i++) {
    readPixel(src, i, px)
    out[i] = nearestOklab(px[0]!, px[1]!, px[2]!, p, scratch)
  }
}
