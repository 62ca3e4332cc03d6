import { crc32, deflateSync, inflateSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import {
  type ChunkHeader,
  createFrameAssembler,
  decodeChunk,
  decodeHeader,
  encodeFrame,
  encodeHeader,
  FLAG_PREVIEW,
  FLAG_ZLIB,
  FrameDecodeError,
  type FrameSpec,
  HEADER_BYTES,
} from '../../src/protocol/frame.ts'
import { gradientPixels, noisePixels } from '../support/pixels.ts'

function spec(overrides: Partial<FrameSpec> = {}): FrameSpec {
  const width = overrides.width ?? 240
  const height = overrides.height ?? 240
  return {
    frameId: 7,
    width,
    height,
    pixels: noisePixels(width, height),
    format: 'rgb565-be',
    bandRows: 20,
    compress: false,
    preview: false,
    ...overrides,
  }
}

function expectDecodeError(chunk: Uint8Array, message: RegExp): void {
  let caught: unknown
  try {
    decodeChunk(chunk)
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(FrameDecodeError)
  expect((caught as Error).message).toMatch(message)
}

// Orange (255,128,0) is 0xFC00 in RGB565; a 240x20 band of it has CRC-32 0xB480FDC5. This is the worked
// example of docs/protocol.md: chunk 3 of frame 7 of a 240x240 frame in 20-row bands, raw.
const ORANGE_BAND_CRC = 0xb480fdc5
const DOC_EXAMPLE: ChunkHeader = {
  version: 1,
  flags: 0,
  frameId: 7,
  chunkIndex: 3,
  chunkCount: 12,
  x: 0,
  y: 60,
  w: 240,
  h: 20,
  format: 0,
  crc32: ORANGE_BAND_CRC,
}
// python3: struct.pack("!2sBB8HI", b"PF", 1, 0, 7, 3, 12, 0, 60, 240, 20, 0, 0xB480FDC5).hex()
const DOC_EXAMPLE_BYTES = '5046010000070003000c0000003c00f000140000b480fdc5'
// python3: struct.pack("!2sBB8HI", b"PF", 1, 3, 0x1234, 5, 12, 0, 100, 240, 20, 1, 0xDEADBEEF).hex()
const FLAGS_EXAMPLE_BYTES = '5046010312340005000c0000006400f000140001deadbeef'

describe('encodeHeader / decodeHeader', () => {
  it('writes the documented example header byte for byte', () => {
    const bytes = encodeHeader(DOC_EXAMPLE)
    expect(bytes.length).toBe(HEADER_BYTES)
    expect(bytes.toString('hex')).toBe(DOC_EXAMPLE_BYTES)
  })

  it('writes flags, format and a 32-bit CRC in network byte order', () => {
    const header: ChunkHeader = {
      version: 1,
      flags: FLAG_ZLIB | FLAG_PREVIEW,
      frameId: 0x1234,
      chunkIndex: 5,
      chunkCount: 12,
      x: 0,
      y: 100,
      w: 240,
      h: 20,
      format: 1,
      crc32: 0xdeadbeef,
    }
    expect(encodeHeader(header).toString('hex')).toBe(FLAGS_EXAMPLE_BYTES)
    expect(decodeHeader(Buffer.from(FLAGS_EXAMPLE_BYTES, 'hex'))).toEqual(header)
  })

  it('round-trips every field at its largest value', () => {
    const header: ChunkHeader = {
      version: 1,
      flags: 0xff,
      frameId: 0xffff,
      chunkIndex: 0xfffe,
      chunkCount: 0xffff,
      x: 0xffff,
      y: 0xfffe,
      w: 0xfffd,
      h: 0xfffc,
      format: 0xfffb,
      crc32: 0xffffffff,
    }
    expect(decodeHeader(encodeHeader(header))).toEqual(header)
  })

  it('reads a header that sits at an offset inside a larger buffer', () => {
    const backing = Buffer.concat([Buffer.from('junk!'), Buffer.from(DOC_EXAMPLE_BYTES, 'hex')])
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 5, HEADER_BYTES)
    expect(decodeHeader(view)).toEqual(DOC_EXAMPLE)
  })
})

describe('encodeFrame', () => {
  it('cuts 240x240 into 12 bands of 20 rows, each 24 + 9600 bytes with its own CRC-32', () => {
    const s = spec()
    const chunks = encodeFrame(s)
    expect(chunks).toHaveLength(12)
    chunks.forEach((chunk, i) => {
      const band = Buffer.from(s.pixels).subarray(i * 20 * 480, (i + 1) * 20 * 480)
      expect(chunk.length).toBe(24 + 9600)
      expect(decodeHeader(chunk)).toEqual({
        version: 1,
        flags: 0,
        frameId: 7,
        chunkIndex: i,
        chunkCount: 12,
        x: 0,
        y: 20 * i,
        w: 240,
        h: 20,
        format: 0,
        crc32: crc32(band),
      })
      expect(chunk.subarray(HEADER_BYTES).equals(band)).toBe(true)
    })
  })

  it('produces the documented example as chunk 3 of an all-orange frame', () => {
    const orange = Buffer.alloc(240 * 240 * 2)
    for (let i = 0; i < orange.length; i += 2) orange.writeUInt16BE(0xfc00, i)
    const chunk = encodeFrame(spec({ pixels: orange }))[3]!
    expect(chunk.subarray(0, HEADER_BYTES).toString('hex')).toBe(DOC_EXAMPLE_BYTES)
    expect(chunk.subarray(HEADER_BYTES, HEADER_BYTES + 4).toString('hex')).toBe('fc00fc00')
  })

  it('gives a short last band when the height is not a multiple of the band rows', () => {
    const s = spec({ width: 30, height: 50 })
    const chunks = encodeFrame(s)
    expect(chunks.map((c) => decodeHeader(c).h)).toEqual([20, 20, 10])
    expect(chunks.map((c) => decodeHeader(c).y)).toEqual([0, 20, 40])
    expect(chunks.map((c) => decodeHeader(c).chunkCount)).toEqual([3, 3, 3])
    expect(chunks[2]!.length).toBe(24 + 30 * 10 * 2)
    expect(chunks[2]!.subarray(HEADER_BYTES).equals(Buffer.from(s.pixels).subarray(40 * 60))).toBe(true)
  })

  it('compresses each band into its own zlib stream with a window of at most 1 KiB', () => {
    const pixels = gradientPixels(240, 240)
    const chunks = encodeFrame(spec({ pixels, compress: true }))
    expect(chunks).toHaveLength(12)
    chunks.forEach((chunk, i) => {
      const header = decodeHeader(chunk)
      const band = pixels.subarray(i * 9600, (i + 1) * 9600)
      expect(header.flags).toBe(FLAG_ZLIB)
      const body = chunk.subarray(HEADER_BYTES)
      expect(body.length).toBeLessThan(9600)
      // RFC 1950 section 2.2: CMF low nibble 8 = deflate, high nibble CINFO = log2(window) - 8; 2 means 1 KiB.
      const cmf = body[0]!
      expect(cmf & 0x0f).toBe(8)
      expect(cmf >> 4).toBeLessThanOrEqual(2)
      expect((cmf * 256 + body[1]!) % 31).toBe(0)
      expect(inflateSync(body).equals(band)).toBe(true)
      // The CRC covers the uncompressed pixels, so the device checks what it draws.
      expect(header.crc32).toBe(crc32(band))
    })
  })

  it('sets flag bit 1 for a preview, alone or with compression', () => {
    expect(decodeHeader(encodeFrame(spec({ preview: true }))[0]!).flags).toBe(0b10)
    expect(decodeHeader(encodeFrame(spec({ preview: true, compress: true }))[0]!).flags).toBe(0b11)
    expect(decodeHeader(encodeFrame(spec())[0]!).flags).toBe(0)
  })

  it('keeps frame ids in 16 bits: 65535 stays, 65536 wraps to 0', () => {
    const id = (frameId: number) => decodeHeader(encodeFrame(spec({ frameId }))[0]!).frameId
    expect(id(65535)).toBe(65535)
    expect(id(65536)).toBe(0)
    expect(id(65537)).toBe(1)
  })

  it('writes the pixel format into every header', () => {
    const chunks = encodeFrame(spec({ format: 'rgb565-le' }))
    expect(chunks.every((c) => decodeHeader(c).format === 1)).toBe(true)
  })

  it('refuses pixels that do not fill width x height', () => {
    expect(() => encodeFrame(spec({ pixels: Buffer.alloc(240 * 240 * 2 - 1) }))).toThrow(RangeError)
  })
})

describe('decodeChunk', () => {
  const raw = () => Buffer.from(encodeFrame(spec())[4]!)
  const zipped = () =>
    Buffer.from(encodeFrame(spec({ pixels: gradientPixels(240, 240), compress: true }))[4]!)

  it('unpacks a raw band and a compressed band to the same pixels that went in', () => {
    const s = spec()
    const band = Buffer.from(s.pixels).subarray(4 * 9600, 5 * 9600)
    const fromRaw = decodeChunk(raw())
    expect(fromRaw.header.chunkIndex).toBe(4)
    expect(fromRaw.pixels.equals(band)).toBe(true)
    const fromZip = decodeChunk(zipped())
    expect(fromZip.pixels.equals(gradientPixels(240, 240).subarray(4 * 9600, 5 * 9600))).toBe(true)
  })

  it('rejects a chunk without the PF magic', () => {
    const chunk = raw()
    chunk[1] = 0x47
    expectDecodeError(chunk, /bad magic/)
  })

  it('rejects a chunk shorter than the header', () => {
    expectDecodeError(raw().subarray(0, 23), /23 bytes is shorter than the 24-byte header/)
    expectDecodeError(new Uint8Array(0), /0 bytes is shorter/)
  })

  it('rejects another protocol version', () => {
    const chunk = raw()
    chunk[2] = 2
    expectDecodeError(chunk, /unsupported frame version 2/)
  })

  it('rejects a chunk index outside the chunk count', () => {
    const chunk = raw()
    chunk.writeUInt16BE(12, 6)
    expectDecodeError(chunk, /chunk index 12 out of range for 12 chunks/)
    chunk.writeUInt16BE(0, 6)
    chunk.writeUInt16BE(0, 8)
    expectDecodeError(chunk, /out of range for 0 chunks/)
  })

  it('rejects a band whose pixel bytes do not match w x h', () => {
    const chunk = raw()
    expectDecodeError(chunk.subarray(0, chunk.length - 1), /9599 pixel bytes, expected 9600 \(240x20\)/)
    expectDecodeError(Buffer.concat([chunk, Buffer.from([0])]), /9601 pixel bytes, expected 9600/)
  })

  it('rejects a compressed band that inflates to fewer bytes than w x h', () => {
    const chunk = zipped()
    const short = Buffer.concat([
      chunk.subarray(0, HEADER_BYTES),
      deflateSync(Buffer.alloc(9000), { windowBits: 10 }),
    ])
    expectDecodeError(short, /9000 pixel bytes, expected 9600/)
  })

  it('rejects a band whose CRC-32 does not match, raw or compressed', () => {
    const chunk = raw()
    chunk[HEADER_BYTES + 100]! ^= 0x01
    expectDecodeError(chunk, /band 4: CRC-32 mismatch/)
    const zip = zipped()
    zip.writeUInt32BE((zip.readUInt32BE(20) ^ 1) >>> 0, 20)
    expectDecodeError(zip, /CRC-32 mismatch/)
  })

  it('rejects corrupt zlib data', () => {
    const chunk = zipped()
    expectDecodeError(
      Buffer.concat([chunk.subarray(0, HEADER_BYTES), Buffer.from('not zlib at all')]),
      /zlib/,
    )
    expectDecodeError(chunk.subarray(0, chunk.length - 8), /band 4: zlib data is corrupt/)
    const flagged = raw()
    flagged[3] = FLAG_ZLIB
    expectDecodeError(flagged, /zlib data is corrupt/)
  })
})

describe('createFrameAssembler', () => {
  it('returns the whole frame once the last band arrives in order', () => {
    const s = spec({ frameId: 41 })
    const assembler = createFrameAssembler()
    const chunks = encodeFrame(s)
    for (const chunk of chunks.slice(0, -1)) expect(assembler.push(chunk)).toBeNull()
    const frame = assembler.push(chunks.at(-1)!)
    expect(frame).not.toBeNull()
    expect(frame!.frameId).toBe(41)
    expect(frame!.preview).toBe(false)
    expect(frame!.format).toBe('rgb565-be')
    expect(frame!.width).toBe(240)
    expect(frame!.height).toBe(240)
    expect(frame!.pixels.equals(Buffer.from(s.pixels))).toBe(true)
  })

  it('puts bands fed out of order back in row order, compressed and with a short last band', () => {
    const s = spec({ width: 64, height: 70, bandRows: 16, compress: true, preview: true })
    const chunks = encodeFrame(s)
    const order = [3, 0, 4, 2, 1]
    expect(chunks).toHaveLength(order.length)
    const assembler = createFrameAssembler()
    const results = order.map((i) => assembler.push(chunks[i]!))
    expect(results.slice(0, -1)).toEqual([null, null, null, null])
    const frame = results.at(-1)!
    expect(frame).not.toBeNull()
    expect(frame.preview).toBe(true)
    expect([frame.width, frame.height]).toEqual([64, 70])
    expect(frame.pixels.equals(Buffer.from(s.pixels))).toBe(true)
  })

  it('starts over when a band of a newer frame_id arrives mid-frame', () => {
    const older = spec({ frameId: 1, pixels: noisePixels(240, 240, 1) })
    const newer = spec({ frameId: 2, pixels: noisePixels(240, 240, 2) })
    const a = encodeFrame(older)
    const b = encodeFrame(newer)
    const assembler = createFrameAssembler()
    // Six bands of frame 1, then the other six of frame 2: twelve bands seen, but no frame is complete.
    for (const chunk of a.slice(0, 6)) expect(assembler.push(chunk)).toBeNull()
    for (const chunk of b.slice(6)) expect(assembler.push(chunk)).toBeNull()
    for (const chunk of b.slice(0, 5)) expect(assembler.push(chunk)).toBeNull()
    const frame = assembler.push(b[5]!)
    expect(frame?.frameId).toBe(2)
    expect(frame?.pixels.equals(Buffer.from(newer.pixels))).toBe(true)
  })

  it('throws FrameDecodeError for a damaged band instead of assembling it', () => {
    const chunk = Buffer.from(encodeFrame(spec())[0]!)
    chunk[HEADER_BYTES]! ^= 0xff
    expect(() => createFrameAssembler().push(chunk)).toThrow(FrameDecodeError)
  })
})
