import { crc32, deflateSync } from 'node:zlib'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { packedRowBytes, packPixels } from '../../src/image/pack.ts'
import { type IndexedFormat, PIXEL_FORMATS, type PixelFormat } from '../../src/image/pixel-format.ts'
import { encodeFrame, encodeHeader, FLAG_ZLIB, type FrameSpec } from '../../src/protocol/frame.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { gradientPixels, noisePixels } from '../support/pixels.ts'
import { type Board, bootMicroPython } from './micropython.ts'

/*
 * firmware-examples/micropython/picoframe.py under real MicroPython: bands from the daemon's own encoder and
 * bands captured from a running bridge go in; the pixels that come out must be the ones that went in.
 */

function frame(overrides: Partial<FrameSpec> = {}): FrameSpec {
  return {
    frameId: 7,
    width: 240,
    height: 240,
    pixels: noisePixels(240, 240, overrides.frameId ?? 7),
    format: 'rgb565-be',
    bandRows: 20,
    compress: false,
    preview: false,
    ...overrides,
  }
}

interface Decoded {
  results: string[]
  events: [string, number, boolean][]
  bands: [number, number, number, number][]
  /** The fake panel's 240x240 framebuffer after all bands. */
  pixels: Buffer
  frameId: number | null
}

let board: Board
beforeEach(async () => {
  board = await bootMicroPython()
})

/** Feeds messages to one picoframe.Decoder in order; `options` are extra keyword arguments in Python. */
function decode(messages: Uint8Array[], options = ''): Decoded {
  messages.forEach((m, i) => {
    board.put(`/data/m${i}.bin`, m)
  })
  const [results, events, bands, frameId] = board.values(`
from fakes import *
import picoframe
d = Display()
dec = picoframe.Decoder(d.band, on_start=d.frame_start, on_done=d.frame_done${options ? `, ${options}` : ''})
out([dec.feed(read('/data/m%d.bin' % i)) for i in range(${messages.length})])
out(d.events)
out(d.bands)
out(dec.frame_id)
write('/data/fb.bin', d.fb)
`)
  return {
    results: results as string[],
    events: events as Decoded['events'],
    bands: bands as Decoded['bands'],
    frameId: frameId as number | null,
    pixels: board.get('/data/fb.bin'),
  }
}

const ok = (n: number) => Array.from({ length: n }, () => 'ok')

describe('picoframe.py decodes what the daemon encodes', () => {
  it('draws raw 20-row bands into exactly the source pixels', () => {
    const spec = frame()
    const out = decode(encodeFrame(spec))
    expect(out.results).toEqual(ok(12))
    expect(out.pixels.equals(spec.pixels)).toBe(true)
    expect(out.bands).toEqual(Array.from({ length: 12 }, (_, i) => [0, i * 20, 240, 20]))
    expect(out.events).toEqual([
      ['start', 7, false],
      ['done', 7, false],
    ])
  })

  it('inflates zlib bands into one 9,600-byte buffer', () => {
    const spec = frame({ compress: true, pixels: gradientPixels(240, 240) })
    const chunks = encodeFrame(spec)
    expect(chunks[0]!.length).toBeLessThan(24 + 9600 / 2)
    const out = decode(chunks, 'max_band_bytes=9600')
    expect(out.results).toEqual(ok(12))
    expect(out.pixels.equals(spec.pixels)).toBe(true)
    expect(board.values('out(len(dec.band))')).toEqual([9600])
  })

  it('handles zlib noise (bands that do not shrink) and 10-row bands for a Pico W', () => {
    const spec = frame({ compress: true, bandRows: 10 })
    const out = decode(encodeFrame(spec), 'max_band_bytes=4800')
    expect(out.results).toEqual(ok(24))
    expect(out.pixels.equals(spec.pixels)).toBe(true)
  })

  it('draws a shorter last band when the height is not a multiple of the band', () => {
    const spec = frame({ bandRows: 7 })
    const out = decode(encodeFrame(spec), 'max_band_bytes=240*7*2')
    expect(out.results).toEqual(ok(35))
    expect(out.bands.at(-1)).toEqual([0, 238, 240, 2])
    expect(out.pixels.equals(spec.pixels)).toBe(true)
    expect(out.events.at(-1)).toEqual(['done', 7, false])
  })

  it('takes little-endian bands only when told the panel wants them', () => {
    const spec = frame({ format: 'rgb565-le' })
    expect(decode(encodeFrame(spec)).results).toEqual(Array.from({ length: 12 }, () => 'format'))
    const out = decode(encodeFrame(spec), 'pixel_format=picoframe.FORMAT_LE')
    expect(out.results).toEqual(ok(12))
    expect(out.pixels.equals(spec.pixels)).toBe(true)
  })

  it('draws previews with the preview flag, or skips them when previews are off', () => {
    // Like the bridge: every preview takes a frame id of its own, and the final frame the next one.
    const preview = encodeFrame(frame({ preview: true, frameId: 3 }))
    const final = encodeFrame(frame({ frameId: 4, compress: true }))
    const shown = decode([...preview, ...final])
    expect(shown.results).toEqual(ok(24))
    expect(shown.events).toEqual([
      ['start', 3, true],
      ['done', 3, true],
      ['start', 4, false],
      ['done', 4, false],
    ])
    expect(shown.pixels.equals(frame({ frameId: 4 }).pixels)).toBe(true)
    const skipped = decode([...preview, ...final], 'previews=False')
    expect(skipped.results).toEqual([...Array.from({ length: 12 }, () => 'preview'), ...ok(12)])
    expect(skipped.events).toEqual([
      ['start', 4, false],
      ['done', 4, false],
    ])
  })
})

describe('picoframe.py refuses broken bands and draws nothing of them', () => {
  const band = () => Buffer.from(encodeFrame(frame())[2]!)

  it('rejects short payloads, bad magic, an unknown version and a bad index', () => {
    const truncated = band().subarray(0, 24 + 9000)
    const magic = band()
    magic.write('RF', 0, 'latin1')
    const version = band()
    version[2] = 2
    const index = band()
    index.writeUInt16BE(12, 6)
    const out = decode([Buffer.alloc(0), band().subarray(0, 23), truncated, magic, version, index])
    expect(out.results).toEqual(['short', 'short', 'size', 'magic', 'version', 'index'])
    expect(out.bands).toEqual([])
    expect(out.pixels.equals(Buffer.alloc(240 * 240 * 2))).toBe(true)
  })

  it('rejects a bad CRC, in raw and in zlib bands', () => {
    const raw = band()
    raw[24 + 100] = raw[24 + 100]! ^ 0x01
    const crc = band()
    crc.writeUInt32BE((crc.readUInt32BE(20) + 1) >>> 0, 20)
    const zlib = Buffer.from(encodeFrame(frame({ compress: true }))[2]!)
    zlib.writeUInt32BE(zlib.readUInt32BE(20) ^ 0x80000000, 20)
    expect(decode([raw, crc, zlib]).results).toEqual(['crc', 'crc', 'crc'])
  })

  it('rejects corrupt zlib data, and a zlib band larger than its buffer', () => {
    const good = encodeFrame(frame({ compress: true }))[0]!
    const corrupt = Buffer.from(good)
    corrupt.fill(0xff, 30, 60)
    const header = encodeHeader({
      version: 1,
      flags: FLAG_ZLIB,
      frameId: 7,
      chunkIndex: 0,
      chunkCount: 6,
      x: 0,
      y: 0,
      w: 240,
      h: 40,
      format: 0,
      crc32: crc32(Buffer.alloc(240 * 40 * 2)),
    })
    const tooBig = Buffer.concat([header, deflateSync(Buffer.alloc(240 * 40 * 2), { windowBits: 10 })])
    expect(decode([corrupt, tooBig], 'max_band_bytes=9600').results).toEqual(['zlib', 'size'])
  })

  it('rejects a band that does not fit the panel', () => {
    const tall = encodeFrame(frame({ height: 260, pixels: noisePixels(240, 260, 1) }))
    const wide = encodeFrame(frame({ width: 250, pixels: noisePixels(250, 240, 1) }))
    const out = decode([...tall, wide[0]!])
    expect(out.results).toEqual([...ok(12), 'geometry', 'geometry'])
    expect(out.bands.every(([, y, , h]) => y + h <= 240)).toBe(true)
  })
})

describe('picoframe.py keeps to the frame being drawn', () => {
  it('ignores a late band of an older frame once a newer one has started', () => {
    const old = encodeFrame(frame({ frameId: 7 }))
    const next = encodeFrame(frame({ frameId: 8 }))
    const out = decode([...old.slice(0, 6), ...next.slice(0, 4), old[6]!, ...next.slice(4)])
    expect(out.results).toEqual([...ok(10), 'stale', ...ok(8)])
    expect(out.pixels.equals(frame({ frameId: 8 }).pixels)).toBe(true)
    expect(out.events).toEqual([
      ['start', 7, false],
      ['start', 8, false],
      ['done', 8, false],
    ])
  })

  it('compares ids modulo 65536: 0 follows 65535, and 65535 is then old', () => {
    const last = encodeFrame(frame({ frameId: 65535 }))
    const wrapped = encodeFrame(frame({ frameId: 0 }))
    const out = decode([last[0]!, wrapped[0]!, last[1]!, ...wrapped.slice(1)])
    expect(out.results).toEqual(['ok', 'ok', 'stale', ...ok(11)])
    expect(out.frameId).toBe(0)
    expect(out.pixels.equals(frame({ frameId: 0 }).pixels)).toBe(true)
  })

  it('starts over when band 0 of the same frame comes again (a resend after get)', () => {
    const chunks = encodeFrame(frame())
    const out = decode([...chunks.slice(0, 5), ...chunks])
    expect(out.results).toEqual(ok(17))
    expect(out.events).toEqual([
      ['start', 7, false],
      ['start', 7, false],
      ['done', 7, false],
    ])
  })

  it('does not let a broken band of a newer frame take over', () => {
    const current = encodeFrame(frame({ frameId: 7 }))
    const broken = Buffer.from(encodeFrame(frame({ frameId: 9 }))[0]!)
    broken[30] = broken[30]! ^ 0xff
    const out = decode([...current.slice(0, 3), broken, ...current.slice(3)])
    expect(out.results).toEqual([...ok(3), 'crc', ...ok(9)])
    expect(out.frameId).toBe(7)
    expect(out.pixels.equals(frame({ frameId: 7 }).pixels)).toBe(true)
  })

  it('forgets the frame on reset(), so an older id is drawn after a reconnect', () => {
    board.put('/data/new.bin', encodeFrame(frame({ frameId: 500 }))[0]!)
    board.put('/data/old.bin', encodeFrame(frame({ frameId: 2 }))[0]!)
    const results = board.values(`
from fakes import *
import picoframe
d = Display()
dec = picoframe.Decoder(d.band)
out([dec.feed(read('/data/new.bin')), dec.feed(read('/data/old.bin'))])
dec.reset()
out([dec.feed(read('/data/old.bin')), dec.frame_id])
`)
    expect(results).toEqual([
      ['ok', 'stale'],
      ['ok', 2],
    ])
  })
})

describe('picoframe.py with bands captured from a running bridge', () => {
  let bridge: TestBridge
  afterAll(async () => {
    await bridge?.stop()
  })
  beforeAll(async () => {
    bridge = await startBridge({ FRAME_COMPRESS: true, BAND_ROWS: 10 })
  })

  it('decodes zlib 10-row bands (the Pico W setting) into the frame the bridge sent', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'firmware-zlib')
    await device.prompt('a red fox in the snow')
    const [sent] = await device.waitForFrames(1)
    await device.close()
    expect(device.chunks).toHaveLength(24)
    expect(device.chunks.every((c) => (c[3]! & FLAG_ZLIB) !== 0)).toBe(true)
    const out = decode(device.chunks, 'max_band_bytes=240*10*2')
    expect(out.results).toEqual(ok(24))
    expect(out.pixels.equals(sent!.pixels)).toBe(true)
    expect(out.events).toEqual([
      ['start', sent!.frameId, false],
      ['done', sent!.frameId, false],
    ])
  })
})

describe('picoframe.py with raw bands captured from a running bridge', () => {
  let bridge: TestBridge
  afterAll(async () => {
    await bridge?.stop()
  })
  beforeAll(async () => {
    bridge = await startBridge()
  })

  it('decodes two frames in a row, the second one replacing the first', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'firmware-raw')
    await device.prompt('a lighthouse at dusk')
    await device.waitForFrames(1)
    await device.prompt('a bowl of ramen')
    const [first, second] = await device.waitForFrames(2)
    await device.close()
    expect(device.chunks).toHaveLength(24)
    expect(first!.pixels.equals(second!.pixels)).toBe(false)
    const out = decode(device.chunks)
    expect(out.results).toEqual(ok(24))
    expect(out.frameId).toBe(second!.frameId)
    expect(out.pixels.equals(second!.pixels)).toBe(true)
  })
})

/** Bands of a packed frame (format 2, 3 or 4), built like the bridge does: header, then the rows' bytes. */
function packedChunks(
  format: PixelFormat,
  width: number,
  height: number,
  packed: Uint8Array,
  options: { bandRows: number; compress?: boolean; frameId?: number; preview?: boolean },
): Buffer[] {
  const rowBytes = packedRowBytes(format, width)
  expect(packed.length).toBe(rowBytes * height)
  const count = Math.ceil(height / options.bandRows)
  return Array.from({ length: count }, (_, i) => {
    const y = i * options.bandRows
    const h = Math.min(options.bandRows, height - y)
    const band = Buffer.from(packed.subarray(y * rowBytes, (y + h) * rowBytes))
    const header = encodeHeader({
      version: 1,
      flags: (options.compress ? FLAG_ZLIB : 0) | (options.preview ? 2 : 0),
      frameId: options.frameId ?? 7,
      chunkIndex: i,
      chunkCount: count,
      x: 0,
      y,
      w: width,
      h,
      format: PIXEL_FORMATS[format].code,
      crc32: crc32(band),
    })
    return Buffer.concat([header, options.compress ? deflateSync(band, { windowBits: 10 }) : band])
  })
}

/** A picture dithered and packed by the bridge's own code (src/image/pack.ts). */
function packedPicture(format: IndexedFormat, width: number, height: number): Buffer {
  const rgb = new Uint8Array(width * height * 3)
  for (let i = 0; i < width * height; i++) {
    rgb.set([(i * 7) & 0xff, (i * 3) & 0xff, ((i >> 2) * 5) & 0xff], i * 3)
  }
  return packPixels(rgb, width, height, 3, format, { dither: 'floyd-steinberg' })
}

describe('picoframe.py decodes the packed formats (gray4, mono, palette7)', () => {
  /** Feeds messages to a decoder for `format` and returns the results and the bands' bytes, joined. */
  function decodePacked(format: PixelFormat, messages: Uint8Array[], options: string) {
    messages.forEach((m, i) => {
      board.put(`/data/m${i}.bin`, m)
    })
    const [results, rows] = board.values(`
from fakes import *
import picoframe
got = []
rows = []
def band(x, y, w, h, px):
    got.append(bytes(px))
    rows.append([y, h, len(px)])
dec = picoframe.Decoder(band, pixel_format=${PIXEL_FORMATS[format].code}, ${options})
out([dec.feed(read('/data/m%d.bin' % i)) for i in range(${messages.length})])
out(rows)
write('/data/out.bin', b"".join(got))
`)
    return { results: results as string[], rows: rows as number[][], bytes: board.get('/data/out.bin') }
  }

  for (const format of ['gray4', 'mono', 'palette7'] as const) {
    for (const compress of [false, true]) {
      it(`${format}${compress ? ', zlib' : ''}: a 37x23 picture in 5-row bands, rows padded to whole bytes`, () => {
        const packed = packedPicture(format, 37, 23)
        const rowBytes = packedRowBytes(format, 37)
        const out = decodePacked(
          format,
          packedChunks(format, 37, 23, packed, { bandRows: 5, compress }),
          `width=37, height=23, max_band_bytes=${rowBytes * 5}`,
        )
        expect(out.results).toEqual(ok(5))
        expect(out.rows).toEqual(
          [0, 5, 10, 15, 20].map((y) => [y, Math.min(5, 23 - y), rowBytes * Math.min(5, 23 - y)]),
        )
        expect(out.bytes.equals(packed)).toBe(true)
      })
    }
  }

  it('refuses a band in another format, and a band of RGB565 size', () => {
    const packed = packedPicture('mono', 16, 4)
    const mono = packedChunks('mono', 16, 4, packed, { bandRows: 4 })
    const asRgb = Buffer.from(mono[0]!.subarray(0, 24))
    const wrongSize = Buffer.concat([asRgb, Buffer.alloc(16 * 4 * 2)])
    wrongSize.writeUInt32BE(crc32(Buffer.alloc(16 * 4 * 2)), 20)
    expect(decodePacked('gray4', mono, 'width=16, height=4').results).toEqual(['format'])
    expect(decodePacked('mono', [wrongSize, mono[0]!], 'width=16, height=4').results).toEqual(['size', 'ok'])
    expect(
      board.values(
        'import picoframe\nfrom fakes import out\nout([picoframe.row_bytes(f, 37) for f in range(5)])',
      ),
    ).toEqual([[74, 74, 10, 5, 19]])
  })
})

describe('epaper_example.py: one refresh per whole frame, and no sooner than the panel allows', () => {
  it('buffers mono bands into the 128x296 framebuffer and refreshes after the last band only', () => {
    const first = packedPicture('mono', 128, 296)
    const second = Buffer.from(first.map((b) => b ^ 0xff))
    const preview = packedChunks('mono', 128, 296, second, { bandRows: 20, frameId: 8, preview: true })
    const messages = [
      ...packedChunks('mono', 128, 296, first, { bandRows: 20, frameId: 7 }),
      ...preview,
      ...packedChunks('mono', 128, 296, second, { bandRows: 20, frameId: 9, compress: true }),
    ]
    messages.forEach((m, i) => {
      board.put(`/data/m${i}.bin`, m)
    })
    const [beforeDone, results, refreshes] = board.values(`
from fakes import *
import epaper_example as ep
clock = Clock(1000)
class Panel:
    def __init__(self):
        self.shown = []
    def show(self, buf):
        self.shown.append(bytes(buf))
panel = Panel()
sink = ep.EPaperSink(panel, ticks_ms=clock.ticks_ms, ticks_diff=clock.ticks_diff)
dec = ep.decoder(sink)
res = []
early = []
for i in range(15):
    res.append(dec.feed(read('/data/m%d.bin' % i)))
    if i < 14:
        early.append(sink.poll())
out(early)
first_refresh = sink.poll()
for i in range(15, ${messages.length}):
    res.append(dec.feed(read('/data/m%d.bin' % i)))
clock.advance(10_000)
too_soon = sink.poll()
clock.advance(170_000)
on_time = sink.poll()
again = sink.poll()
out(res)
out([first_refresh, too_soon, on_time, again, sink.refreshes])
write('/data/shown0.bin', panel.shown[0])
write('/data/shown1.bin', panel.shown[1])
`)
    expect(beforeDone).toEqual(Array.from({ length: 14 }, () => false))
    expect(results).toEqual([...ok(15), ...Array.from({ length: 15 }, () => 'preview'), ...ok(15)])
    expect(refreshes).toEqual([true, false, true, false, 2])
    expect(board.get('/data/shown0.bin').equals(first)).toBe(true)
    expect(board.get('/data/shown1.bin').equals(second)).toBe(true)
  })
})
