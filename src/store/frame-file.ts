import type { FileHandle } from 'node:fs/promises'
import { z } from 'zod'
import { packedRowBytes } from '../image/pack.ts'
import { PIXEL_FORMAT_NAMES } from '../image/pixel-format.ts'
import { isDeviceId } from '../protocol/device-id.ts'

/*
 * The file that keeps one device's last frame (frame-store.ts): `PFS1`, the header's length (4 bytes, big
 * endian), a JSON header, then the packed pixels. A file is input like any other (issue 13): a header that does
 * not describe its pixels (a width of 115200) is refused as it is read, and a frame is checked the same way
 * before it is written, so the store never writes what it would refuse.
 */

const MAGIC = Buffer.from('PFS1')
/** The same bounds as TARGET_WIDTH and TARGET_HEIGHT. */
const MAX_SIDE = 2048
const MAX_HEADER_BYTES = 64 * 1024

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

export type FrameMeta = z.infer<typeof metaSchema>

export interface StoredFrame extends FrameMeta {
  pixels: Buffer
}

/** Bytes of a frame's packed pixels, as the header's format, width and height say. */
function pixelBytes(meta: Pick<FrameMeta, 'format' | 'width' | 'height'>): number {
  return packedRowBytes(meta.format, meta.width) * meta.height
}

/**
 * Reads and checks a frame file's header; the file's size must be exactly header plus pixels.
 *
 * @throws Error that says what is wrong with the file.
 */
export async function readFrameHeader(
  handle: FileHandle,
  deviceId: string,
): Promise<{ meta: FrameMeta; offset: number }> {
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
  const parsed = metaSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new Error(`header field ${issue?.path.join('.') || '?'}: ${issue?.message ?? 'not valid'}`)
  }
  const meta = parsed.data
  if (meta.deviceId !== deviceId) throw new Error('header names another device')
  if (size !== 8 + metaLength + pixelBytes(meta))
    throw new Error(`${size - 8 - metaLength} bytes of pixels where the header says ${pixelBytes(meta)}`)
  return { meta, offset: 8 + metaLength }
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
  return { ...meta, pixels }
}

/**
 * A frame as the bytes of its file, checked as it would be when read: above all, the device id becomes a file
 * name, so it must be a device id and nothing else.
 *
 * @throws ZodError for a header field that is not valid, RangeError when the pixels do not fit the header.
 */
export function encodeFrameFile(frame: StoredFrame): { meta: FrameMeta; body: Buffer } {
  const { pixels, ...rest } = frame
  const meta = metaSchema.parse(rest)
  if (pixels.length !== pixelBytes(meta))
    throw new RangeError(
      `${pixels.length} bytes of pixels for a ${meta.width}x${meta.height} ${meta.format} frame`,
    )
  const header = Buffer.from(JSON.stringify(meta), 'utf8')
  const length = Buffer.alloc(4)
  length.writeUInt32BE(header.length)
  return { meta, body: Buffer.concat([MAGIC, length, header, pixels]) }
}
