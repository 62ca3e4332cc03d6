import type { OutputInfo } from 'sharp'
import sharp from 'sharp'
import { AppError } from '../errors.ts'
import { lowerBackgroundThreads } from './background-threads.ts'
import type { Palette } from './palette.ts'
import type { PixelFormat } from './pixel-format.ts'
import { packRgb565, unpackRgb565 } from './rgb565.ts'
import { unpackToRgb } from './unpack.ts'

/*
 * The sharp adapter: encoded picture in, panel frame out. Decoding, alpha, resizing and colour conversion run in
 * libvips on libuv's thread pool; only the RGB565 packing (well under a millisecond per frame) runs on the event
 * loop.
 */

export type ResizeFit = 'cover' | 'contain' | 'fill'
export type Rgb565Format = 'rgb565-be' | 'rgb565-le'

export interface ConvertOptions {
  width: number
  height: number
  /** cover = crop the centre, contain = letterbox on black, fill = stretch. */
  fit: ResizeFit
  format: Rgb565Format
  /** Colour negative, for panels left in INVON mode (LUMINANCE_INVERT). */
  invert: boolean
}

/**
 * Larger inputs are refused before their pixels are decoded: a tiny PNG can claim 30,000 x 30,000 pixels
 * (a decompression bomb) and take gigabytes. 8192 x 8192 is far above anything A1111 produces, hires fix
 * included.
 */
export const MAX_INPUT_PIXELS = 8192 * 8192

/**
 * Formats A1111 and its forks send (`samples_format` png, jpg, webp; avif and gif in some forks), told by
 * their first bytes. Anything else, SVG and PDF in particular, is refused before sharp sees it: they run a
 * renderer, not a decoder, on bytes from the network. Reading the signature costs nothing, where asking
 * sharp for the metadata first cost a second pass over the header (1.6-2 ms a picture).
 */
export function sniffFormat(image: Uint8Array): string | undefined {
  const ascii = (from: number, to: number) => Buffer.from(image.subarray(from, to)).toString('latin1')
  if (image[0] === 0x89 && ascii(1, 4) === 'PNG') return 'png'
  if (image[0] === 0xff && image[1] === 0xd8 && image[2] === 0xff) return 'jpeg'
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp'
  if (ascii(0, 4) === 'GIF8') return 'gif'
  if (ascii(0, 4) === 'II*\u0000' || ascii(0, 4) === 'MM\u0000*') return 'tiff'
  if (ascii(4, 8) === 'ftyp' && /^(heic|heix|hevc|avif|avis|mif1|msf1)$/.test(ascii(8, 12))) return 'heif'
  return undefined
}

const BLACK = { r: 0, g: 0, b: 0, alpha: 1 }

/**
 * Turns an encoded picture (PNG, JPEG, WEBP, ...) into a `width` x `height` RGB565 frame. Transparent pixels are
 * flattened onto black (the older proxy dropped alpha and showed the hidden colour); resizing uses Lanczos-3.
 *
 * @throws AppError E_BAD_IMAGE when the bytes are not a picture sharp can decode, or one larger than
 *   {@link MAX_INPUT_PIXELS}.
 */
export async function imageToRgb565(image: Buffer, options: ConvertOptions): Promise<Buffer> {
  const rgb = await decodeToRgb(image, options)
  return packRgb565(rgb, { littleEndian: options.format === 'rgb565-le', invert: options.invert })
}

/**
 * Decodes an encoded picture into `width` x `height` 8-bit RGB (3 bytes a pixel, row-major), flattened onto
 * black and resized with Lanczos-3 as `fit` says: the input of every pixel format's packing.
 *
 * @throws AppError E_BAD_IMAGE as {@link imageToRgb565} does.
 */
export async function decodeToRgb(
  image: Buffer,
  options: Pick<ConvertOptions, 'width' | 'height' | 'fit'>,
): Promise<Buffer> {
  if (image.length === 0) throw badImage('it is empty (0 bytes)')
  if (sniffFormat(image) === undefined) {
    const looks = /^\s*<(\?xml|svg)/i.test(Buffer.from(image.subarray(0, 64)).toString('latin1'))
      ? 'an svg'
      : 'no'
    throw badImage(`${looks} picture format a generator sends (png, jpeg, webp, gif, avif, tiff)`)
  }
  let result: { data: Buffer; info: OutputInfo }
  try {
    // failOn 'error' rather than the default 'warning': libpng warns about common harmless things (an
    // "incorrect" sRGB ICC profile), and a panel should show those pictures; truncated data still fails.
    const input = sharp(image, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' })
    result = await input
      .flatten({ background: BLACK })
      .resize(options.width, options.height, {
        fit: options.fit,
        position: 'centre',
        kernel: 'lanczos3',
        background: BLACK,
      })
      .removeAlpha()
      // Greyscale and 16-bit inputs come out as 3 channels of 8 bits like any other.
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
  } catch (err) {
    if (err instanceof AppError) throw err
    throw badImage(describeSharpError(err), err)
  } finally {
    // The threads that did this work exist now: they yield to the event loop from here on.
    lowerBackgroundThreads()
  }
  assertRgbShape(result, options)
  return result.data
}

function assertRgbShape(
  result: { data: Buffer; info: OutputInfo },
  options: Pick<ConvertOptions, 'width' | 'height'>,
): void {
  const { info, data } = result
  const expected = options.width * options.height * 3
  if (info.channels !== 3 || data.length !== expected) {
    throw badImage(
      `it decoded to ${info.channels} channels and ${data.length} bytes, expected 3 and ${expected}`,
    )
  }
}

function describeSharpError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  if (/pixel limit/i.test(message)) {
    return `it is larger than ${MAX_INPUT_PIXELS} pixels (${message})`
  }
  return message
}

function badImage(reason: string, cause?: unknown): AppError {
  return new AppError('E_BAD_IMAGE', `the picture could not be decoded: ${reason}`, { cause })
}

/**
 * Encodes an RGB565 frame as PNG, for the dashboard's frame.png and the simulated device: what the panel shows,
 * with the 5/6-bit levels expanded back to 8 bits.
 *
 * @throws RangeError when `pixels` does not hold `width * height` pixels (a bug in the caller).
 */
export async function rgb565ToPng(
  pixels: Uint8Array,
  width: number,
  height: number,
  littleEndian: boolean,
): Promise<Buffer> {
  if (pixels.length !== width * height * 2) {
    throw new RangeError(
      `a ${width}x${height} RGB565 frame is ${width * height * 2} bytes, got ${pixels.length}`,
    )
  }
  const rgb = unpackRgb565(pixels, littleEndian)
  return sharp(rgb, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer()
}

/**
 * Encodes a frame packed in any format as PNG, as the panel shows it: RGB565 expanded to 8 bits, indexed
 * formats in their palette's inks (the panel's own when given). For frame.png and the simulated device.
 *
 * @throws RangeError when `pixels` is not the packed size of the frame (a bug in the caller).
 */
export async function panelPixelsToPng(
  pixels: Uint8Array,
  panel: { width: number; height: number; format: PixelFormat; palette?: Palette | undefined },
): Promise<Buffer> {
  const rgb = unpackToRgb(pixels, panel.width, panel.height, panel.format, panel.palette)
  return sharp(rgb, { raw: { width: panel.width, height: panel.height, channels: 3 } })
    .png()
    .toBuffer()
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

/** The picture as PNG: returned as it is when it already is one (A1111's default), re-encoded otherwise. */
export async function asPng(image: Buffer): Promise<Buffer> {
  if (image.subarray(0, 8).equals(PNG_SIGNATURE)) return image
  try {
    return await sharp(image, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' }).png().toBuffer()
  } catch (err) {
    throw badImage((err as Error).message, err)
  }
}
