import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { configSchema } from '../../src/config/schema.ts'
import { panelFromConfig } from '../../src/image/panel.ts'
import { createLastFrame } from '../../src/jobs/last-frame.ts'
import { createFrameStore, type FrameStoreLimits, type StoredFrame } from '../../src/store/frame-store.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pab-frames-'))
  dirs.push(dir)
  return dir
}

function capture() {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) })
  return { log, lines }
}

const DAY = 24 * 3600 * 1000
const day = (n: number) => new Date(Date.UTC(2026, 0, 1) + n * DAY)

function frame(deviceId: string, over: Partial<StoredFrame> = {}): StoredFrame {
  const width = over.width ?? 8
  const height = over.height ?? 8
  return {
    deviceId,
    frameId: 1,
    width,
    height,
    format: 'rgb565-be',
    seed: 7,
    jobId: 'abcdef012345',
    prompt: 'a fox',
    finishedAt: day(0).toISOString(),
    pixels: Buffer.alloc(width * height * 2, 0x5a),
    ...over,
  }
}

/** A frame file as the store writes it, with whatever header a hostile or damaged disk holds. */
function craft(dir: string, name: string, meta: Record<string, unknown>, pixelBytes: number): void {
  const header = Buffer.from(JSON.stringify(meta))
  const length = Buffer.alloc(4)
  length.writeUInt32BE(header.length)
  mkdirSync(join(dir, 'frames'), { recursive: true })
  writeFileSync(
    join(dir, 'frames', name),
    Buffer.concat([Buffer.from('PFS1'), length, header, Buffer.alloc(pixelBytes)]),
  )
}

describe('the frame store', () => {
  it('keeps frames across a restart, in every pixel format', async () => {
    const dir = tempDir()
    const store = createFrameStore(dir, capture())
    await store.load()
    const colour = frame('kitchen', { width: 240, height: 240 })
    // gray4: 2 bits a pixel, each row on whole bytes: 10 pixels take 3 bytes.
    const grey = frame('hall', {
      width: 10,
      height: 3,
      format: 'gray4',
      pixels: Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]),
    })
    await store.save(colour)
    await store.save(grey)
    const again = createFrameStore(dir, capture())
    await again.load()
    expect(await again.read('kitchen')).toEqual(colour)
    expect(await again.read('hall')).toEqual(grey)
    expect(again.nextFrameId('kitchen')).toBe(2)
    expect(again.bytes()).toBe(store.bytes())
  })

  it('skips and reports files whose header does not describe their pixels, and never sends them', async () => {
    const dir = tempDir()
    const meta = { ...frame('x'), pixels: undefined }
    // Consistent with itself, but wider than any panel: encodeHeader would throw a RangeError on it.
    craft(dir, 'wide.frame', { ...meta, deviceId: 'wide', width: 115200, height: 1 }, 115200 * 2)
    craft(dir, 'short.frame', { ...meta, deviceId: 'short' }, 8 * 8 * 2 - 1)
    craft(dir, 'odd.frame', { ...meta, deviceId: 'odd', format: 'rgb888' }, 8 * 8 * 3)
    craft(dir, 'other.frame', { ...meta, deviceId: 'kitchen' }, 8 * 8 * 2)
    craft(dir, 'bridge.frame', { ...meta, deviceId: 'bridge' }, 8 * 8 * 2)
    craft(dir, 'ok.frame', { ...meta, deviceId: 'ok' }, 8 * 8 * 2)
    const { log, lines } = capture()
    const store = createFrameStore(dir, { log })
    await store.load()
    expect(store.all().map((m) => m.deviceId)).toEqual(['ok'])
    const warned = lines.filter((l) => l.msg === 'stored frame unreadable; ignoring it').map((l) => l.file)
    expect(warned.sort()).toEqual(
      ['bridge', 'odd', 'other', 'short', 'wide'].map((n) => join(dir, 'frames', `${n}.frame`)),
    )
    expect(await store.read('wide')).toBeUndefined()
    expect((await store.read('ok'))?.pixels.length).toBe(128)
  })

  it('writes only under DATA_DIR, for device ids only', async () => {
    const parent = tempDir()
    const dir = join(parent, 'data')
    const store = createFrameStore(dir, capture())
    await store.load()
    for (const id of ['../../../x', '../x', 'bridge', 'a/b', '', 'x'.repeat(65)])
      await expect(store.save(frame(id))).rejects.toThrow()
    await expect(store.save(frame('ok', { pixels: Buffer.alloc(3) }))).rejects.toThrow(RangeError)
    expect(readdirSync(parent)).toEqual(['data'])
    expect(readdirSync(join(dir, 'frames'))).toEqual([])
  })

  it('keeps the source picture beside the frame, counts it in the bytes, and drops it with the frame', async () => {
    const dir = tempDir()
    const store = createFrameStore(dir, capture(), { keepDays: 30, maxBytes: 1024 * 1024 })
    await store.load()
    const source = Buffer.from('a png, as far as the store cares')
    await store.save(frame('kitchen'), source)
    const frameOnly = store.bytes() - source.length
    // A frame saved without a source (a re-render) keeps the one it has.
    await store.save(frame('kitchen', { frameId: 2 }))
    expect(await store.readSource('kitchen')).toEqual(source)
    const again = createFrameStore(dir, capture())
    await again.load()
    expect(await again.readSource('kitchen')).toEqual(source)
    expect(again.bytes()).toBe(frameOnly + source.length)
    // A source without its frame is removed at load: nothing could use it, and it would not be counted.
    writeFileSync(join(dir, 'frames', 'orphan.source'), 'x')
    await again.forget('kitchen')
    expect(await again.readSource('kitchen')).toBeUndefined()
    await createFrameStore(dir, capture()).load()
    expect(readdirSync(join(dir, 'frames'))).toEqual([])
  })

  it("keeps the source picture in the frame's own file: one file a frame, and read back after a restart", async () => {
    const dir = tempDir()
    const store = createFrameStore(dir, capture())
    await store.load()
    const source = Buffer.alloc(3000, 0x89)
    await store.save(frame('kitchen'), source)
    expect(readdirSync(join(dir, 'frames'))).toEqual(['kitchen.frame'])
    const size = statSync(join(dir, 'frames', 'kitchen.frame')).size
    expect(store.bytes()).toBe(size)
    const again = createFrameStore(dir, capture())
    await again.load()
    expect(await again.readSource('kitchen')).toEqual(source)
    // The pixels are read as they were, the source after them left out, and the header keeps no trace of it.
    expect(await again.read('kitchen')).toEqual(frame('kitchen'))
    expect(again.meta('kitchen')).not.toHaveProperty('sourceBytes')
    expect(again.bytes()).toBe(size)
    // A frame saved without a picture of its own, when none was kept, has none.
    await again.save(frame('hall'))
    expect(await again.readSource('hall')).toBeUndefined()
  })

  it("reads a source kept beside its frame by an older bridge, and moves it into the next frame's file", async () => {
    const dir = tempDir()
    const meta = { ...frame('kitchen'), pixels: undefined }
    craft(dir, 'kitchen.frame', meta, 8 * 8 * 2)
    const source = Buffer.from('a png kept the old way')
    writeFileSync(join(dir, 'frames', 'kitchen.source'), source)
    const store = createFrameStore(dir, capture())
    await store.load()
    expect(await store.readSource('kitchen')).toEqual(source)
    const frameFile = join(dir, 'frames', 'kitchen.frame')
    expect(store.bytes()).toBe(statSync(frameFile).size + source.length)
    // A render anew for another panel saves the frame alone: its picture goes along, into the frame's file.
    await store.save(frame('kitchen', { frameId: 2 }))
    expect(readdirSync(join(dir, 'frames'))).toEqual(['kitchen.frame'])
    expect(await store.readSource('kitchen')).toEqual(source)
    expect(store.bytes()).toBe(statSync(frameFile).size)
    const again = createFrameStore(dir, capture())
    await again.load()
    expect(await again.readSource('kitchen')).toEqual(source)
  })

  it('drops a source file left beside a frame that has its own (a crash between the two)', async () => {
    const dir = tempDir()
    const store = createFrameStore(dir, capture())
    await store.load()
    await store.save(frame('kitchen'), Buffer.from('the new picture'))
    writeFileSync(join(dir, 'frames', 'kitchen.source'), 'the picture before')
    const again = createFrameStore(dir, capture())
    await again.load()
    expect(readdirSync(join(dir, 'frames'))).toEqual(['kitchen.frame'])
    expect(await again.readSource('kitchen')).toEqual(Buffer.from('the new picture'))
    expect(again.bytes()).toBe(statSync(join(dir, 'frames', 'kitchen.frame')).size)
  })

  it('refuses a frame file whose source is cut short or longer than its header says', async () => {
    const dir = tempDir()
    const meta = { ...frame('x'), pixels: undefined }
    craft(dir, 'short.frame', { ...meta, deviceId: 'short', sourceBytes: 100 }, 8 * 8 * 2 + 99)
    craft(dir, 'long.frame', { ...meta, deviceId: 'long', sourceBytes: 100 }, 8 * 8 * 2 + 101)
    craft(dir, 'empty.frame', { ...meta, deviceId: 'empty', sourceBytes: 0 }, 8 * 8 * 2)
    craft(dir, 'ok.frame', { ...meta, deviceId: 'ok', sourceBytes: 100 }, 8 * 8 * 2 + 100)
    const { log, lines } = capture()
    const store = createFrameStore(dir, { log })
    await store.load()
    expect(store.all().map((m) => m.deviceId)).toEqual(['ok'])
    expect(await store.readSource('ok')).toEqual(Buffer.alloc(100))
    const warned = lines.filter((l) => l.msg === 'stored frame unreadable; ignoring it').map((l) => l.file)
    expect(warned.sort()).toEqual(['empty', 'long', 'short'].map((n) => join(dir, 'frames', `${n}.frame`)))
  })

  it('forgets a display: its file, its frame and its frame ids', async () => {
    const dir = tempDir()
    const store = createFrameStore(dir, capture())
    await store.load()
    await store.save(frame('kitchen', { frameId: 9 }))
    expect(await store.forget('kitchen')).toBe(true)
    expect(existsSync(join(dir, 'frames', 'kitchen.frame'))).toBe(false)
    expect(store.meta('kitchen')).toBeUndefined()
    expect(store.bytes()).toBe(0)
    expect(await store.forget('kitchen')).toBe(false)
    expect(await store.forget('../x')).toBe(false)
  })

  it('makes its directory again when it was removed while running', async () => {
    const dir = tempDir()
    const store = createFrameStore(dir, capture())
    await store.load()
    rmSync(join(dir, 'frames'), { recursive: true, force: true })
    await store.save(frame('phoenix'), Buffer.from('a picture'))
    expect(readdirSync(join(dir, 'frames'))).toEqual(['phoenix.frame'])
    expect(await store.readSource('phoenix')).toEqual(Buffer.from('a picture'))
    expect((await store.read('phoenix'))?.frameId).toBe(frame('phoenix').frameId)
  })

  it('forgets displays whose frame was neither made nor sent for keepDays, also after a restart', async () => {
    const dir = tempDir()
    let now = day(0)
    const limits: FrameStoreLimits = { keepDays: 30, maxBytes: 1 << 30 }
    const store = createFrameStore(dir, { ...capture(), now: () => now }, limits)
    await store.load()
    await store.save(frame('early'))
    now = day(20)
    await store.save(frame('later'))
    now = day(25)
    // Sent again to a display that came back: that counts as use.
    expect(await store.read('early')).toBeDefined()
    expect((await store.sweep(day(49))).forgotten).toEqual([])

    const restarted = createFrameStore(dir, capture(), limits)
    await restarted.load()
    // The file's time keeps the last use across the restart.
    expect((await restarted.sweep(day(52))).forgotten).toEqual(['later'])
    expect(restarted.all().map((m) => m.deviceId)).toEqual(['early'])
    expect(existsSync(join(dir, 'frames', 'later.frame'))).toBe(false)
  })

  it('counts a frame sent from the in-memory copy as used, across a restart too', async () => {
    const dir = tempDir()
    let now = day(0)
    const limits: FrameStoreLimits = { keepDays: 30, maxBytes: 1 << 30 }
    const { log } = capture()
    const store = createFrameStore(dir, { log, now: () => now }, limits)
    await store.load()
    const panel = { ...panelFromConfig(configSchema.parse({})), width: 8, height: 8 }
    const sent: number[] = []
    const lastFrame = createLastFrame({
      store,
      output: { status: () => undefined, frame: (_id, chunks) => sent.push(chunks.length) },
      panelOf: () => panel,
      clock: { now: () => now, monotonic: () => now.getTime() },
      log,
    })
    await store.save(frame('daily'))
    await store.save(frame('gone'))
    lastFrame.remember('daily', 1, [Buffer.from('chunk')])
    now = day(25)
    // Resent from memory, no read of the file: it must count as use all the same.
    expect(await lastFrame.resend('daily')).toBe(1)
    expect(sent).toEqual([1])
    expect((await store.sweep(day(49))).forgotten).toEqual(['gone'])
    const restarted = createFrameStore(dir, capture(), limits)
    await restarted.load()
    expect((await restarted.sweep(day(50))).forgotten).toEqual([])
    expect(restarted.all().map((m) => m.deviceId)).toEqual(['daily'])
  })

  it('keeps within maxBytes, forgetting the least recently used first', async () => {
    const sizing = createFrameStore(tempDir(), capture())
    await sizing.load()
    await sizing.save(frame('aaaa'))
    const one = sizing.bytes()
    const store = createFrameStore(tempDir(), capture(), { keepDays: 30, maxBytes: Math.floor(one * 2.5) })
    await store.load()
    await store.save(frame('aaaa'))
    await store.save(frame('bbbb'))
    await store.read('aaaa')
    await store.save(frame('cccc'))
    expect(
      store
        .all()
        .map((m) => m.deviceId)
        .sort(),
    ).toEqual(['aaaa', 'cccc'])
    expect(store.bytes()).toBeLessThanOrEqual(one * 2.5)
  })
})
