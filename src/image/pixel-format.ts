/*
 * The pixel formats a panel can ask for (docs/protocol.md, "Pixel formats"): one name each in settings, `info`
 * and code, and the wire number only in the frame header (byte 18). Pure.
 */

/** Every format, with its header code and its bits per pixel. */
export const PIXEL_FORMATS = {
  'rgb565-be': { code: 0, bitsPerPixel: 16 },
  'rgb565-le': { code: 1, bitsPerPixel: 16 },
  gray4: { code: 2, bitsPerPixel: 2 },
  mono: { code: 3, bitsPerPixel: 1 },
  palette7: { code: 4, bitsPerPixel: 4 },
} as const satisfies Record<string, { code: number; bitsPerPixel: number }>

export type PixelFormat = keyof typeof PIXEL_FORMATS

/** The formats whose pixels are palette indices or grey levels, packed below a byte. */
export type IndexedFormat = 'gray4' | 'mono' | 'palette7'

/** The names in header-code order, for schemas (`z.enum(PIXEL_FORMAT_NAMES)`) and messages. */
export const PIXEL_FORMAT_NAMES = Object.keys(PIXEL_FORMATS) as [PixelFormat, ...PixelFormat[]]

/** How many colours an indexed format's pixels can name: 4 grey levels, 2 for mono, 7 inks. */
export const INDEXED_COLOURS = { gray4: 4, mono: 2, palette7: 7 } as const satisfies Record<
  IndexedFormat,
  number
>

export function isIndexedFormat(format: PixelFormat): format is IndexedFormat {
  return format in INDEXED_COLOURS
}

/** The format a header's code names, or undefined for a code this bridge does not know. */
export function pixelFormatFromCode(code: number): PixelFormat | undefined {
  return PIXEL_FORMAT_NAMES.find((name) => PIXEL_FORMATS[name].code === code)
}
