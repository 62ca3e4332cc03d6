import type { Config } from '../config/schema.ts'
import { encodeFrame } from '../protocol/frame.ts'
import { decodeToRgb, type ResizeFit } from './convert.ts'
import type { DitherMethod } from './dither.ts'
import { packPixels } from './pack.ts'
import { isIndexedFormat, type PixelFormat } from './pixel-format.ts'

/*
 * What a display's panel needs, in one place: its size, pixel format, how a picture fits it, and how its
 * frames travel (band height, compression). Every path that makes a frame (device jobs, the last-frame
 * resend, the HTTP passthrough, the benchmarks) renders through here, so they cannot disagree.
 */

export interface PanelProfile {
  width: number
  height: number
  format: PixelFormat
  /** cover = crop the centre, contain = letterbox on black, fill = stretch. */
  fit: ResizeFit
  /** Colour negative, for LCDs left in INVON mode (LUMINANCE_INVERT); RGB565 only. */
  invert: boolean
  /** Rows per frame chunk (BAND_ROWS). */
  bandRows: number
  /** zlib-compress each band (FRAME_COMPRESS). */
  compress: boolean
  /** How indexed formats are dithered; RGB565 ignores it. */
  dither: DitherMethod
}

/** The settings' panel: the default for every display. */
export function panelFromConfig(config: Config): PanelProfile {
  const format: PixelFormat = config.PIXEL_FORMAT
  return {
    width: config.TARGET_WIDTH,
    height: config.TARGET_HEIGHT,
    format,
    fit: config.RESIZE_FIT,
    invert: config.LUMINANCE_INVERT,
    bandRows: config.BAND_ROWS,
    compress: config.FRAME_COMPRESS,
    dither: isIndexedFormat(format) ? 'floyd-steinberg' : 'none',
  }
}

/**
 * An encoded picture (PNG, JPEG, WEBP, ...) as the panel's pixels, packed in its format.
 *
 * @throws AppError E_BAD_IMAGE when the bytes are not a picture that can be decoded (image/convert.ts).
 */
export async function renderPixels(image: Buffer, panel: PanelProfile): Promise<Buffer> {
  const rgb = await decodeToRgb(image, panel)
  return packPixels(rgb, panel.width, panel.height, 3, panel.format, {
    dither: panel.dither,
    invert: panel.invert,
  })
}

/** Packed pixels (a fresh render or a kept frame) as the chunks of one frame for this panel. */
export function encodePanelFrame(
  pixels: Uint8Array,
  panel: PanelProfile,
  frame: { frameId: number; preview: boolean },
): Buffer[] {
  return encodeFrame({
    frameId: frame.frameId,
    width: panel.width,
    height: panel.height,
    pixels,
    format: panel.format,
    bandRows: panel.bandRows,
    compress: panel.compress,
    preview: frame.preview,
  })
}

/** A picture as one frame for the panel: its packed pixels and the chunks that carry them. */
export async function renderFrame(
  image: Buffer,
  panel: PanelProfile,
  frame: { frameId: number; preview: boolean },
): Promise<{ pixels: Buffer; chunks: Buffer[] }> {
  const pixels = await renderPixels(image, panel)
  return { pixels, chunks: encodePanelFrame(pixels, panel, frame) }
}
