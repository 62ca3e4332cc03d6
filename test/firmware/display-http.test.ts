import { once } from 'node:events'
import { connect } from 'node:net'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { encodeFrame } from '../../src/protocol/frame.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { type Board, bootMicroPython } from './micropython.ts'

/*
 * display.py (the status strip and the no-panel BMP writer) and http_client.py (the passthrough answer read
 * band by band) under real MicroPython.
 */

let board: Board
beforeEach(async () => {
  board = await bootMicroPython()
})

function pixels(seed: number): Buffer {
  const buf = Buffer.alloc(240 * 240 * 2)
  for (let i = 0; i < buf.length; i++) buf[i] = (i * seed + (i >> 9)) & 0xff
  return buf
}

/** The 16-bit word at pixel (x, y) of a big-endian RGB565 buffer `width` pixels wide. */
const wordAt = (buf: Buffer, width: number, x: number, y: number) => buf.readUInt16BE((y * width + x) * 2)

describe('display.py Panel: the status strip', () => {
  it('draws text and a progress bar into a 240x20 strip at the bottom, in panel byte order', () => {
    const [blits] = board.values(`
from fakes import *
import display
drv = Driver()
panel = display.Panel(drv)
panel.status("generating 50%", 0.5)
write("/data/strip.bin", drv.blits[0][4])
out([b[:4] for b in drv.blits])
`)
    expect(blits).toEqual([[0, 220, 240, 20]])
    const strip = board.get('/data/strip.bin')
    expect(strip.length).toBe(240 * 20 * 2)
    // Progress bar in the last two rows: green (0x07E0) for the first half, grey (0x8410) after it.
    for (const y of [18, 19]) {
      expect(wordAt(strip, 240, 0, y)).toBe(0x07e0)
      expect(wordAt(strip, 240, 119, y)).toBe(0x07e0)
      expect(wordAt(strip, 240, 120, y)).toBe(0x8410)
      expect(wordAt(strip, 240, 239, y)).toBe(0x8410)
    }
    // One line of 14 characters, centred: white pixels only between x = 64 and x = 176, rows 1-8.
    const white: [number, number][] = []
    for (let y = 0; y < 18; y++) {
      for (let x = 0; x < 240; x++) if (wordAt(strip, 240, x, y) === 0xffff) white.push([x, y])
    }
    expect(white.length).toBeGreaterThan(50)
    expect(white.every(([x, y]) => x >= 64 && x < 176 && y >= 1 && y <= 8)).toBe(true)
  })

  it('wraps a long error over two lines and puts the strip mid-panel when asked (round GC9A01)', () => {
    const [lines, blits] = board.values(`
from fakes import *
import display
drv = Driver()
text = "error E_GEN_TIMEOUT: A1111 took longer than 300 s to answer"
out(display.split_text(text))
display.Panel(drv, status_y=110).status(text)
write("/data/strip.bin", drv.blits[0][4])
out([b[:4] for b in drv.blits])
`)
    expect(lines).toEqual(['error E_GEN_TIMEOUT: A1111', 'took longer than 300 s to'])
    expect(blits).toEqual([[0, 110, 240, 20]])
    const strip = board.get('/data/strip.bin')
    const rowsWithText = new Set<number>()
    for (let y = 0; y < 20; y++) {
      for (let x = 0; x < 240; x++) if (wordAt(strip, 240, x, y) === 0xffff) rowsWithText.add(y)
    }
    expect([...rowsWithText].some((y) => y < 9)).toBe(true)
    expect([...rowsWithText].some((y) => y >= 10 && y < 18)).toBe(true)
  })

  it('passes bands to the driver untouched', () => {
    board.put('/data/band.bin', pixels(3).subarray(0, 9600))
    const [geometry] = board.values(`
from fakes import *
import display
drv = Driver()
display.Panel(drv).band(0, 40, 240, 20, memoryview(read("/data/band.bin")))
write("/data/out.bin", drv.blits[0][4])
out(drv.blits[0][:4])
`)
    expect(geometry).toEqual([0, 40, 240, 20])
    expect(board.get('/data/out.bin').equals(pixels(3).subarray(0, 9600))).toBe(true)
  })
})

describe('display.py FileSink: no panel', () => {
  it('writes each finished frame to flash as a BMP any viewer opens', () => {
    const px = pixels(5)
    const chunks = encodeFrame({
      frameId: 11,
      width: 240,
      height: 240,
      pixels: px,
      format: 'rgb565-be',
      bandRows: 20,
      compress: true,
      preview: false,
    })
    chunks.forEach((c, i) => {
      board.put(`/data/c${i}.bin`, c)
    })
    const [results, files, logged] = board.values(`
from fakes import *
import display, os, picoframe
logs = []
sink = display.FileSink("/data/frame.bmp", log=logs.append)
dec = picoframe.Decoder(sink.band, on_start=sink.frame_start, on_done=sink.frame_done)
out([dec.feed(read("/data/c%d.bin" % i)) for i in range(${chunks.length})])
out(sorted(os.listdir("/data")))
out(logs)
`)
    expect((results as string[]).every((r) => r === 'ok')).toBe(true)
    expect(files).toContain('frame.bmp')
    expect(files).not.toContain('frame.bmp.part')
    expect(logged).toEqual(['frame 11 written to /data/frame.bmp'])

    const bmp = board.get('/data/frame.bmp')
    expect(bmp.subarray(0, 2).toString('latin1')).toBe('BM')
    expect(bmp.readUInt32LE(2)).toBe(bmp.length)
    expect(bmp.length).toBe(66 + 240 * 240 * 2)
    expect(bmp.readUInt32LE(10)).toBe(66) // pixel data offset
    expect(bmp.readUInt32LE(14)).toBe(40) // BITMAPINFOHEADER
    expect(bmp.readInt32LE(18)).toBe(240)
    expect(bmp.readInt32LE(22)).toBe(-240) // top-down
    expect(bmp.readUInt16LE(28)).toBe(16)
    expect(bmp.readUInt32LE(30)).toBe(3) // BI_BITFIELDS
    expect([bmp.readUInt32LE(54), bmp.readUInt32LE(58), bmp.readUInt32LE(62)]).toEqual([
      0xf800, 0x07e0, 0x001f,
    ])
    const body = bmp.subarray(66)
    for (let i = 0; i < px.length; i += 2) {
      if (body.readUInt16LE(i) !== px.readUInt16BE(i)) throw new Error(`pixel ${i / 2} differs`)
    }
  })
})

describe('http_client.py', () => {
  it('reads URLs and writes an HTTP/1.0 request with the API key', () => {
    const [urls, request] = board.values(`
from fakes import *
import http_client as h
out([h.parse_url("http://192.168.1.10:8080"), h.parse_url("http://pi.local/bridge/"), h.parse_url("http://h:1")])
out(h.request_bytes("pi.local", 8080, "/sdapi/v1/txt2img", b'{"prompt": "x"}', "k3y").decode())
`)
    expect(urls).toEqual([
      ['192.168.1.10', 8080, ''],
      ['pi.local', 80, '/bridge'],
      ['h', 1, ''],
    ])
    expect(request).toBe(
      'POST /sdapi/v1/txt2img HTTP/1.0\r\nHost: pi.local:8080\r\nContent-Type: application/json\r\n' +
        'Accept: application/octet-stream\r\nContent-Length: 15\r\nX-API-Key: k3y\r\n\r\n{"prompt": "x"}',
    )
  })

  describe('against the bridge passthrough', () => {
    let bridge: TestBridge
    beforeAll(async () => {
      bridge = await startBridge({ HTTP_PORT: 0, SERVICE_API_KEY: 'k3y' })
    })
    afterAll(async () => {
      await bridge?.stop()
    })

    /** Sends the request MicroPython built and returns the bridge's whole answer, headers and all. */
    async function exchange(apiKey: string): Promise<Buffer> {
      board.run(`
import http_client as h, json
from fakes import write
write("/data/req.bin", h.request_bytes("127.0.0.1", ${bridge.httpPort}, "/sdapi/v1/txt2img",
      json.dumps({"prompt": "a red fox", "steps": 4}).encode(), ${apiKey ? `"${apiKey}"` : 'None'}))
`)
      const socket = connect(bridge.httpPort!, '127.0.0.1')
      const parts: Buffer[] = []
      socket.on('data', (d: Buffer) => parts.push(d))
      socket.write(board.get('/data/req.bin'))
      await once(socket, 'end')
      socket.destroy()
      return Buffer.concat(parts)
    }

    it('streams the 115,200-byte answer into the panel band by band', async () => {
      const answer = await exchange('k3y')
      const body = answer.subarray(answer.indexOf('\r\n\r\n') + 4)
      expect(body.length).toBe(115_200)
      board.put('/data/answer.bin', answer)
      const [size, bands, events] = board.values(`
from fakes import *
import http_client as h
d = Display()
band = bytearray(240 * 20 * 2)
with open("/data/answer.bin", "rb") as f:
    out(h.receive_frame(f, band, d))
out(d.bands)
out(d.events)
write("/data/fb.bin", d.fb)
`)
      expect(size).toEqual([240, 240])
      expect(bands).toEqual(Array.from({ length: 12 }, (_, i) => [0, i * 20, 240, 20]))
      expect(events).toEqual([
        ['start', 0, false],
        ['done', 0, false],
      ])
      expect(board.get('/data/fb.bin').equals(body)).toBe(true)
    })

    it('raises HttpError with the bridge error code when the key is missing', async () => {
      board.put('/data/answer.bin', await exchange(''))
      const [error] = board.values(`
from fakes import *
import http_client as h
try:
    with open("/data/answer.bin", "rb") as f:
        h.receive_frame(f, bytearray(9600), Display())
except h.HttpError as e:
    out([e.status, e.code])
`)
      expect(error).toEqual([401, 'E_UNAUTHORIZED'])
    })

    it('fails cleanly when the answer stops early', async () => {
      const answer = await exchange('k3y')
      board.put('/data/answer.bin', answer.subarray(0, answer.length - 1000))
      const [error] = board.values(`
from fakes import *
import http_client as h
try:
    with open("/data/answer.bin", "rb") as f:
        h.receive_frame(f, bytearray(9600), Display())
except OSError as e:
    out(str(e))
`)
      expect(error).toBe('connection closed 1000 bytes early')
    })
  })
})
