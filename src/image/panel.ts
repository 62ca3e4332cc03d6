import type { Config } from '../config/schema.ts'
import { encodeFrame } from '../protocol/frame.ts'
import { decodeToRgb, type ResizeFit } from './convert.ts'
import type { DitherMethod, Palette } from './dither.ts'
import { packPixels } from './pack.ts'
import { INDEXED_COLOURS, isIndexedFormat, type PixelFormat } from './pixel-format.ts'

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
  /** Indexed formats: the inks as the panel shows them; unset, the format's DEFAULT_PALETTES. */
  palette?: Palette
  /** Indexed formats: colourfulness before quantising (image/tone.ts); unset, 1. */
  saturation?: number
  /** Indexed formats: contrast before quantising; unset, 1. */
  contrast?: number
}

/** The panel fields a display's `info` or its DEVICES entry may set (config/devices.ts, protocol/info.ts). */
export interface PanelOverride {
  width?: number
  height?: number
  format?: PixelFormat
  band_rows?: number
  fit?: ResizeFit
  dither?: DitherMethod
  invert?: boolean
  compress?: boolean
  palette?: Palette
  saturation?: number
  contrast?: number
}

/**
 * A display's panel: its DEVICES entry over its `info` over the settings' defaults, field by field
 * (docs/protocol.md, "Display info"). The dither, unless one of them names it, follows the format:
 * floyd-steinberg for the indexed formats. A palette that does not fit the format is left out.
 */
export function resolvePanel(
  defaults: PanelProfile,
  info: PanelOverride | undefined,
  device: PanelOverride | undefined,
): PanelProfile {
  const o = { ...info, ...device }
  const format = o.format ?? defaults.format
  const indexed = isIndexedFormat(format)
  const panel: PanelProfile = {
    width: o.width ?? defaults.width,
    height: o.height ?? defaults.height,
    format,
    fit: o.fit ?? defaults.fit,
    invert: o.invert ?? defaults.invert,
    bandRows: o.band_rows ?? defaults.bandRows,
    compress: o.compress ?? defaults.compress,
    dither: o.dither ?? (indexed ? 'floyd-steinberg' : 'none'),
  }
  if (indexed && o.palette && o.palette.length <= INDEXED_COLOURS[format]) panel.palette = o.palette
  if (indexed && o.saturation !== undefined) panel.saturation = o.saturation
  if (indexed && o.contrast !== undefined) panel.contrast = o.contrast
  return panel
}

/**
 * What, beyond its size and format, decides a frame's pixels: a kept frame whose look differs from the
 * panel's (another palette, dither or tone) is rendered anew from its picture, not sent as it was.
 * Band rows and compression are left out: they change only how the same pixels are sent.
 */
export function panelLook(panel: PanelProfile): string {
  const indexed = isIndexedFormat(panel.format)
  return JSON.stringify({
    fit: panel.fit,
    invert: panel.invert,
    ...(indexed && {
      dither: panel.dither,
      palette: panel.palette ?? null,
      saturation: panel.saturation ?? 1,
      contrast: panel.contrast ?? 1,
    }),
  })
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
    palette: panel.palette,
    saturation: panel.saturation,
    contrast: panel.contrast,
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
