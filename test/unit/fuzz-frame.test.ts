import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { PIXEL_FORMATS, type PixelFormat } from '../../src/image/pixel-format.ts'
import {
  createFrameAssembler,
  decodeChunk,
  encodeFrame,
  encodeHeader,
  FRAME_VERSION,
  FrameDecodeError,
} from '../../src/protocol/frame.ts'

/*
 * The frame decoder against any bytes on a frame topic (issue 10, "Fuzzing"): it returns a band or throws
 * FrameDecodeError, never anything else; a frame encoded and cut in bands comes back whole; a damaged band is
 * refused (its CRC-32 covers the pixels).
 */

const SEED = 20_241_012
const formats = Object.keys(PIXEL_FORMATS) as PixelFormat[]

function decodeOrRefuse(bytes: Uint8Array): boolean {
  try {
    decodeChunk(bytes)
    return true
  } catch (err) {
    expect(err).toBeInstanceOf(FrameDecodeError)
    return false
  }
}

/** A header with every field chosen at random (within its width), then a random body. */
const randomChunk = fc
  .record({
    flags: fc.integer({ min: 0, max: 255 }),
    frameId: fc.integer({ min: 0, max: 0xffff }),
    chunkIndex: fc.integer({ min: 0, max: 20 }),
    chunkCount: fc.integer({ min: 0, max: 20 }),
    x: fc.integer({ min: 0, max: 0xffff }),
    y: fc.integer({ min: 0, max: 0xffff }),
    w: fc.integer({ min: 0, max: 0xffff }),
    h: fc.integer({ min: 0, max: 0xffff }),
    format: fc.integer({ min: 0, max: 10 }),
    crc32: fc.integer({ min: 0, max: 0xffffffff }),
  })
  .chain((h) =>
    fc.uint8Array({ maxLength: 300 }).map((body) => {
      const header = encodeHeader({ version: FRAME_VERSION, ...h })
      return Buffer.concat([header, body])
    }),
  )

const frame = fc
  .record({
    width: fc.integer({ min: 1, max: 40 }),
    height: fc.integer({ min: 1, max: 30 }),
    bandRows: fc.integer({ min: 1, max: 12 }),
    format: fc.constantFrom(...formats),
    compress: fc.boolean(),
    preview: fc.boolean(),
    frameId: fc.integer({ min: 0, max: 0xffff }),
  })
  .chain((spec) => {
    const bits = PIXEL_FORMATS[spec.format].bitsPerPixel
    const rowBytes = Math.ceil((spec.width * bits) / 8)
    return fc
      .uint8Array({ minLength: rowBytes * spec.height, maxLength: rowBytes * spec.height })
      .map((pixels) => ({
        ...spec,
        pixels,
      }))
  })

describe('the frame decoder, fuzzed', () => {
  it('takes any bytes and either decodes a band or throws FrameDecodeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        decodeOrRefuse(bytes)
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('takes well-formed headers with random fields and bodies the same way', () => {
    fc.assert(
      fc.property(randomChunk, (bytes) => {
        decodeOrRefuse(bytes)
      }),
      { seed: SEED, numRuns: 4000 },
    )
  })

  it('puts an encoded frame back together, band by band, in any order', () => {
    fc.assert(
      fc.property(frame, fc.integer(), (spec, shuffleSeed) => {
        const chunks = encodeFrame(spec)
        const order = chunks
          .map((c, i) => ({ c, k: (i * 7919 + shuffleSeed) % 1009 }))
          .sort((a, b) => a.k - b.k)
        const assembler = createFrameAssembler()
        const results = order.map(({ c }) => assembler.push(c))
        const done = results.filter((r) => r !== null)
        expect(done).toHaveLength(1)
        expect(results.at(-1)).not.toBeNull()
        const out = done[0]!
        expect([out.width, out.height, out.format, out.frameId, out.preview]).toEqual([
          spec.width,
          spec.height,
          spec.format,
          spec.frameId,
          spec.preview,
        ])
        expect(Buffer.compare(out.pixels, Buffer.from(spec.pixels))).toBe(0)
      }),
      { seed: SEED, numRuns: 2000 },
    )
  })

  it('never passes off a damaged band as other pixels: one byte changed after the header, or cut short', () => {
    fc.assert(
      fc.property(frame, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean(), (spec, at, xor, cut) => {
        const chunk = Buffer.from(encodeFrame(spec)[0]!)
        const original = decodeChunk(chunk).pixels
        if (chunk.length <= 24) return
        const i = 24 + (at % (chunk.length - 24))
        const damaged = cut ? chunk.subarray(0, i) : Buffer.from(chunk)
        if (!cut) damaged[i] = damaged[i]! ^ xor
        // A change in zlib's own framing that leaves the pixels as they were may decode; other pixels never.
        if (decodeOrRefuse(damaged)) expect(Buffer.compare(decodeChunk(damaged).pixels, original)).toBe(0)
        if (!spec.compress) expect(decodeOrRefuse(damaged)).toBe(false)
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })
})
