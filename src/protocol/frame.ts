import { crc32, deflateSync, inflateSync } from 'node:zlib'
import { packedBandBytes, packedRowBytes } from '../image/pack.ts'
import { PIXEL_FORMATS, type PixelFormat, pixelFormatFromCode } from '../image/pixel-format.ts'

/*
 * Frame chunks (docs/protocol.md, "Frames"). A frame travels as row bands, one MQTT message each: a 24-byte big-endian
 * header (MicroPython struct format "!2sBB8HI") and the band's pixels. A device draws each band as it arrives
 * with blit_buffer and never holds a whole frame.
 */

export const FRAME_MAGIC = 'PF'
export const FRAME_VERSION = 1
export const HEADER_BYTES = 24
/** Flag bit 0: the pixels are one zlib stream (window <= 1 KiB). */
export const FLAG_ZLIB = 0b01
/** Flag bit 1: an intermediate picture; a final frame follows. */
export const FLAG_PREVIEW = 0b10
/** zlib window of 2^10 = 1 KiB, so a microcontroller's inflater needs only a small dictionary. */
export const ZLIB_WINDOW_BITS = 10

export interface ChunkHeader {
  version: number
  flags: number
  frameId: number
  chunkIndex: number
  chunkCount: number
  x: number
  y: number
  w: number
  h: number
  format: number
  crc32: number
}

/** A chunk that must be dropped, with the reason. */
export class FrameDecodeError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'FrameDecodeError'
  }
}

export function encodeHeader(h: ChunkHeader): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES)
  buf.write(FRAME_MAGIC, 0, 'latin1')
  buf.writeUInt8(h.version, 2)
  buf.writeUInt8(h.flags, 3)
  buf.writeUInt16BE(h.frameId, 4)
  buf.writeUInt16BE(h.chunkIndex, 6)
  buf.writeUInt16BE(h.chunkCount, 8)
  buf.writeUInt16BE(h.x, 10)
  buf.writeUInt16BE(h.y, 12)
  buf.writeUInt16BE(h.w, 14)
  buf.writeUInt16BE(h.h, 16)
  buf.writeUInt16BE(h.format, 18)
  buf.writeUInt32BE(h.crc32, 20)
  return buf
}

export function decodeHeader(buf: Uint8Array): ChunkHeader {
  if (buf.length < HEADER_BYTES) {
    throw new FrameDecodeError(`chunk of ${buf.length} bytes is shorter than the ${HEADER_BYTES}-byte header`)
  }
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length)
  if (b[0] !== 0x50 || b[1] !== 0x46) throw new FrameDecodeError('bad magic: not a PF frame chunk')
  const h: ChunkHeader = {
    version: b.readUInt8(2),
    flags: b.readUInt8(3),
    frameId: b.readUInt16BE(4),
    chunkIndex: b.readUInt16BE(6),
    chunkCount: b.readUInt16BE(8),
    x: b.readUInt16BE(10),
    y: b.readUInt16BE(12),
    w: b.readUInt16BE(14),
    h: b.readUInt16BE(16),
    format: b.readUInt16BE(18),
    crc32: b.readUInt32BE(20),
  }
  if (h.version !== FRAME_VERSION) throw new FrameDecodeError(`unsupported frame version ${h.version}`)
  if (h.chunkCount === 0 || h.chunkIndex >= h.chunkCount) {
    throw new FrameDecodeError(`chunk index ${h.chunkIndex} out of range for ${h.chunkCount} chunks`)
  }
  return h
}

export interface FrameSpec {
  frameId: number
  width: number
  height: number
  /** The frame's pixels packed in `format` (image/pack.ts): rows of packedRowBytes(format, width) bytes. */
  pixels: Uint8Array
  /** The format's name; its header code is written here and nowhere else. */
  format: PixelFormat
  bandRows: number
  compress: boolean
  preview: boolean
}

/** Splits a frame into header-prefixed row bands, ready to publish in order. */
export function encodeFrame(spec: FrameSpec): Buffer[] {
  const rowBytes = packedRowBytes(spec.format, spec.width)
  if (spec.pixels.length !== rowBytes * spec.height) {
    throw new RangeError(`expected ${rowBytes * spec.height} pixel bytes, got ${spec.pixels.length}`)
  }
  const chunkCount = Math.ceil(spec.height / spec.bandRows)
  const flags = (spec.compress ? FLAG_ZLIB : 0) | (spec.preview ? FLAG_PREVIEW : 0)
  const pixels = Buffer.from(spec.pixels.buffer, spec.pixels.byteOffset, spec.pixels.length)
  const chunks: Buffer[] = []
  for (let i = 0; i < chunkCount; i++) {
    const y = i * spec.bandRows
    const h = Math.min(spec.bandRows, spec.height - y)
    const band = pixels.subarray(y * rowBytes, (y + h) * rowBytes)
    const body = spec.compress ? deflateSync(band, { windowBits: ZLIB_WINDOW_BITS }) : band
    const header = encodeHeader({
      version: FRAME_VERSION,
      flags,
      frameId: spec.frameId & 0xffff,
      chunkIndex: i,
      chunkCount,
      x: 0,
      y,
      w: spec.width,
      h,
      format: PIXEL_FORMATS[spec.format].code,
      crc32: crc32(band),
    })
    chunks.push(Buffer.concat([header, body]))
  }
  return chunks
}

export interface DecodedChunk {
  header: ChunkHeader
  /** The band's uncompressed pixels, packed in the header's format. */
  pixels: Buffer
}

/** Checks and unpacks one chunk: header, length, zlib and CRC-32. */
export function decodeChunk(buf: Uint8Array): DecodedChunk {
  const header = decodeHeader(buf)
  const body = Buffer.from(buf.buffer, buf.byteOffset + HEADER_BYTES, buf.length - HEADER_BYTES)
  const format = pixelFormatFromCode(header.format)
  if (format === undefined) {
    throw new FrameDecodeError(`band ${header.chunkIndex}: unknown pixel format code ${header.format}`)
  }
  const expected = packedBandBytes(format, header.w, header.h)
  let pixels: Buffer
  if (header.flags & FLAG_ZLIB) {
    try {
      pixels = inflateSync(body, { maxOutputLength: expected })
    } catch (err) {
      throw new FrameDecodeError(
        `band ${header.chunkIndex}: zlib data is corrupt (${(err as Error).message})`,
      )
    }
  } else {
    pixels = body
  }
  if (pixels.length !== expected) {
    throw new FrameDecodeError(
      `band ${header.chunkIndex}: ${pixels.length} pixel bytes, expected ${expected} (${header.w}x${header.h})`,
    )
  }
  if (crc32(pixels) !== header.crc32) throw new FrameDecodeError(`band ${header.chunkIndex}: CRC-32 mismatch`)
  return { header, pixels }
}

export interface AssembledFrame {
  frameId: number
  preview: boolean
  format: PixelFormat
  width: number
  height: number
  pixels: Buffer
}

/**
 * Puts bands back together, the way a device would: a band of another frame (or of a preview when a final
 * frame was in progress) starts that frame over; the frame is returned once every band is there. Used by the tests and the simulated device.
 */
export function createFrameAssembler(): { push(chunk: Uint8Array): AssembledFrame | null } {
  let current: { frameId: number; header: ChunkHeader; bands: Map<number, DecodedChunk> } | null = null
  return {
    push(chunk) {
      const decoded = decodeChunk(chunk)
      const { header } = decoded
      if (current === null || current.frameId !== header.frameId || current.header.flags !== header.flags) {
        current = { frameId: header.frameId, header, bands: new Map() }
      }
      current.bands.set(header.chunkIndex, decoded)
      if (current.bands.size < header.chunkCount) return null
      const bands = [...current.bands.values()].sort((a, b) => a.header.y - b.header.y)
      const width = header.w
      const height = bands.reduce((rows, b) => rows + b.header.h, 0)
      const frame: AssembledFrame = {
        frameId: header.frameId,
        preview: (header.flags & FLAG_PREVIEW) !== 0,
        format: pixelFormatFromCode(header.format)!,
        width,
        height,
        pixels: Buffer.concat(bands.map((b) => b.pixels)),
      }
      current = null
      return frame
    },
  }
}
