import type { FileHandle } from 'node:fs/promises'
import { z } from 'zod'
import { packedRowBytes } from '../image/pack.ts'
import { PIXEL_FORMAT_NAMES } from '../image/pixel-format.ts'
import { isDeviceId } from '../protocol/device-id.ts'

/*
 * The file that keeps one device's last frame (frame-store.ts): `PFS1`, the header's length (4 bytes, big
 * endian), a JSON header, the packed pixels, then the picture the frame was made from when the header's
 * `sourceBytes` says so (frames written before it was kept there have it in a `.source` file beside). A file
 * is input like any other (issue 13): a header that does not describe its pixels (a width of 115200) is
 * refused as it is read, and a frame is checked the same way before it is written, so the store never writes
 * what it would refuse.
 */

const MAGIC = Buffer.from('PFS1')
/** The same bounds as TARGET_WIDTH and TARGET_HEIGHT. */
const MAX_SIDE = 2048
const MAX_HEADER_BYTES = 64 * 1024
/** A source picture larger than this is not kept (A1111's 512x512 PNGs are about 0.5 MB; hires fix a few MB). */
const MAX_SOURCE_BYTES = 32 * 1024 * 1024

/** Whether a frame's file keeps this picture: not an empty one, nor one over MAX_SOURCE_BYTES. */
export function keepsSource(source: Buffer): boolean {
  return source.length > 0 && source.length <= MAX_SOURCE_BYTES
}

const side = z.number().int().min(1).max(MAX_SIDE)
const metaSchema = z.object({
  deviceId: z.string().refine(isDeviceId, { error: 'not a device id' }),
  frameId: z.number().int().min(0).max(0xffff),
  width: side,
  height: side,
  format: z.enum(PIXEL_FORMAT_NAMES),
  seed: z.number(),
  jobId: z.string().max(64),
  prompt: z.string(),
  finishedAt: z.string(),
  /** panelLook() of the panel it was made for; frames from before it was kept have none. */
  look: z
    .string()
    .max(16 * 1024)
    .optional(),
  /** The prompt's own fit and dither, kept for a render anew of the same picture. */
  fit: z.enum(['cover', 'contain', 'fill']).optional(),
  dither: z.enum(['floyd-steinberg', 'atkinson', 'ordered', 'none']).optional(),
})

/** The header as the file has it: the frame's meta, and where its source picture is. */
const headerSchema = metaSchema.extend({
  /** Bytes of the source picture after the pixels; none in files from before it was kept there. */
  sourceBytes: z.number().int().min(1).max(MAX_SOURCE_BYTES).optional(),
})

export type FrameMeta = z.infer<typeof metaSchema>

export interface StoredFrame extends FrameMeta {
  pixels: Buffer
}

/** Bytes of a frame's packed pixels, as the header's format, width and height say. */
function pixelBytes(meta: Pick<FrameMeta, 'format' | 'width' | 'height'>): number {
  return packedRowBytes(meta.format, meta.width) * meta.height
}

/**
 * Reads and checks a frame file's header; the file's size must be exactly header, pixels and source.
 * `offset` is where the pixels begin, `sourceOffset` where the source does, and `sourceBytes` its length
 * (undefined when the file has none).
 *
 * @throws Error that says what is wrong with the file.
 */
export async function readFrameHeader(
  handle: FileHandle,
  deviceId: string,
): Promise<{ meta: FrameMeta; offset: number; sourceOffset: number; sourceBytes: number | undefined }> {
  const { size } = await handle.stat()
  const head = Buffer.alloc(8)
  if (size < 8 || (await handle.read(head, 0, 8, 0)).bytesRead < 8 || !head.subarray(0, 4).equals(MAGIC))
    throw new Error('not a frame file')
  const metaLength = head.readUInt32BE(4)
  if (metaLength > MAX_HEADER_BYTES || 8 + metaLength > size) throw new Error('truncated header')
  const json = Buffer.alloc(metaLength)
  await handle.read(json, 0, metaLength, 8)
  let raw: unknown
  try {
    raw = JSON.parse(json.toString('utf8'))
  } catch {
    throw new Error('header is not JSON')
  }
  const parsed = headerSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new Error(`header field ${issue?.path.join('.') || '?'}: ${issue?.message ?? 'not valid'}`)
  }
  const { sourceBytes, ...meta } = parsed.data
  if (meta.deviceId !== deviceId) throw new Error('header names another device')
  const expected = pixelBytes(meta) + (sourceBytes ?? 0)
  if (size !== 8 + metaLength + expected)
    throw new Error(
      `${size - 8 - metaLength} bytes after the header where it says ${pixelBytes(meta)} of pixels` +
        (sourceBytes === undefined ? '' : ` and ${sourceBytes} of source picture`),
    )
  return { meta, offset: 8 + metaLength, sourceOffset: 8 + metaLength + pixelBytes(meta), sourceBytes }
}

/**
 * Reads a whole frame file: its header, checked, and its pixels.
 *
 * @throws Error that says what is wrong with the file.
 */
export async function readFrameFile(handle: FileHandle, deviceId: string): Promise<StoredFrame> {
  const { meta, offset } = await readFrameHeader(handle, deviceId)
  const pixels = Buffer.alloc(pixelBytes(meta))
  const { bytesRead } = await handle.read(pixels, 0, pixels.length, offset)
  if (bytesRead !== pixels.length) throw new Error('truncated pixels')
  // The source after the pixels is read on its own (readFrameSource).
  return { ...meta, pixels }
}

/**
 * A frame, and the picture it was made from when there is one, as the parts of its file (written one after
 * the other), checked as they would be when read: above all, the device id becomes a file name, so it must be
 * a device id and nothing else.
 *
 * @throws ZodError for a header field that is not valid, RangeError when the pixels do not fit the header or
 *   the source is empty or larger than MAX_SOURCE_BYTES.
 */
export function encodeFrameFile(
  frame: StoredFrame,
  source?: Buffer,
): { meta: FrameMeta; parts: Buffer[]; bytes: number } {
  const { pixels, ...rest } = frame
  if (source !== undefined && !keepsSource(source))
    throw new RangeError(`a source picture of ${source.length} bytes is not kept`)
  const meta = metaSchema.parse(rest)
  if (pixels.length !== pixelBytes(meta))
    throw new RangeError(
      `${pixels.length} bytes of pixels for a ${meta.width}x${meta.height} ${meta.format} frame`,
    )
  const header = Buffer.from(
    JSON.stringify(source === undefined ? meta : { ...meta, sourceBytes: source.length }),
    'utf8',
  )
  const length = Buffer.alloc(4)
  length.writeUInt32BE(header.length)
  const parts = [MAGIC, length, header, pixels]
  if (source !== undefined) parts.push(source)
  return { meta, parts, bytes: parts.reduce((sum, part) => sum + part.length, 0) }
}

/**
 * Reads the source picture kept in a frame file.
 *
 * @throws Error that says what is wrong with the file.
 */
export async function readFrameSource(handle: FileHandle, deviceId: string): Promise<Buffer | undefined> {
  const { sourceOffset, sourceBytes } = await readFrameHeader(handle, deviceId)
  if (sourceBytes === undefined) return undefined
  const source = Buffer.alloc(sourceBytes)
  const { bytesRead } = await handle.read(source, 0, source.length, sourceOffset)
  if (bytesRead !== source.length) throw new Error('truncated source picture')
  return source
}
