import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_PALETTES } from '../../src/image/dither.ts'
import type { StatusMessage } from '../../src/protocol/status.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type Daemon, spawnDaemon } from '../support/spawn.ts'

/*
 * `pico-a1111-bridge device` as a user runs it, against the daemon as a user runs it (demo generator). What it
 * writes is checked against the bands an independent mqtt.js subscriber received, decoded here by hand.
 */

const BIN = fileURLToPath(new URL('../../bin/pico-a1111-bridge.ts', import.meta.url))

interface Cli {
  exit: Promise<number | null>
  stdout(): string
  stderr(): string
  /** Resolves once stdout has a line matching `pattern`. */
  line(pattern: RegExp): Promise<string>
  kill(signal: NodeJS.Signals): void
}

function runCli(args: string[], env: Record<string, string> = {}): Cli {
  const child = spawn(process.execPath, [BIN, 'device', ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  const waiters = new Set<() => void>()
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (d: string) => {
    out += d
    for (const w of [...waiters]) w()
  })
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (d: string) => {
    err += d
  })
  const exit = once(child, 'exit').then(([code]) => code as number | null)
  return {
    exit,
    stdout: () => out,
    stderr: () => err,
    line(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = out.split('\n').find((l) => pattern.test(l))
          if (found === undefined) return
          waiters.delete(check)
          resolve(found)
        }
        waiters.add(check)
        check()
        exit.then(() => {
          if (waiters.delete(check)) reject(new Error(`exited before ${pattern}:\n${out}\n${err}`))
        }, reject)
      })
    },
    kill: (signal) => child.kill(signal),
  }
}

/** The frame of `frameId` put together from raw bands by reading the 24-byte headers here, not with src/. */
function framePixels(chunks: Buffer[], frameId: number): Buffer {
  const pixels = Buffer.alloc(240 * 240 * 2)
  let rows = 0
  for (const c of chunks) {
    if (c.readUInt16BE(4) !== frameId) continue
    expect(c.subarray(0, 2).toString('latin1')).toBe('PF')
    expect(c[3]! & 0b11).toBe(0) // raw, not a preview
    expect(c.readUInt16BE(18)).toBe(0) // big-endian
    const [y, w, h] = [c.readUInt16BE(12), c.readUInt16BE(14), c.readUInt16BE(16)]
    c.copy(pixels, y * w * 2, 24, 24 + w * h * 2)
    rows += h
  }
  expect(rows).toBe(240)
  return pixels
}

/** RGB565 big-endian to RGB888 the way the docs describe a PNG of a frame: bits repeated into the low end. */
function toRgb(rgb565: Buffer): Buffer {
  const rgb = Buffer.alloc((rgb565.length / 2) * 3)
  for (let i = 0; i < rgb565.length / 2; i++) {
    const v = rgb565.readUInt16BE(i * 2)
    const [r, g, b] = [v >> 11, (v >> 5) & 0x3f, v & 0x1f]
    rgb[i * 3] = (r << 3) | (r >> 2)
    rgb[i * 3 + 1] = (g << 2) | (g >> 4)
    rgb[i * 3 + 2] = (b << 3) | (b >> 2)
  }
  return rgb
}

async function pngPixels(path: string): Promise<Buffer> {
  const { data, info } = await sharp(path).raw().toBuffer({ resolveWithObject: true })
  expect([info.width, info.height, info.channels]).toEqual([240, 240, 3])
  return data
}

async function waitForDone(device: TestDevice, from: number): Promise<StatusMessage> {
  return device.waitForStatus((s) => s.state === 'done', from)
}

describe('pico-a1111-bridge device', () => {
  let dir: string
  let daemon: Daemon
  let url: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pab-device-cli-'))
    daemon = spawnDaemon({
      MQTT_HOST: '127.0.0.1',
      MQTT_PORT: '0',
      HTTP_PORT: 'off',
      DATA_DIR: join(dir, 'data'),
      DEMO_STEP_MS: '5',
    })
    url = `mqtt://127.0.0.1:${(await daemon.listening).mqttPort}`
  })
  afterAll(async () => {
    daemon.child.kill('SIGTERM')
    await daemon.exit
    await rm(dir, { recursive: true, force: true })
  })

  it('sends its prompt, shows progress, writes the frame as PNG and exits 0', async () => {
    const watcher = await connectDevice(url, 'kitchen')
    const out = join(dir, 'fox.png')
    const cli = runCli([
      '--id',
      'kitchen',
      '--url',
      url,
      '--prompt',
      'a red fox',
      '--out',
      out,
      '--timeout',
      '60',
    ])
    expect(await cli.exit).toBe(0)
    const done = await waitForDone(watcher, 0)
    await watcher.waitForFrames(1)
    await watcher.close()

    expect(cli.stdout()).toMatch(/^\[[#.]{10}\] \d+% generating/m)
    expect(cli.stdout()).toMatch(/^\[##########\] 100% generating/m)
    expect(cli.stdout()).toContain(`wrote ${out} (frame ${done.frame_id as number}, 240x240)`)
    expect(done.request_id).toMatch(/^device-[0-9a-f]{8}$/)
    const expected = toRgb(framePixels(watcher.chunks, done.frame_id as number))
    expect((await pngPixels(out)).equals(expected)).toBe(true)
  })

  it('without --prompt writes the last frame, which the bridge sends on subscribe', async () => {
    const earlier = await connectDevice(url, 'attic')
    await earlier.prompt('a lamp in the attic')
    const done = await waitForDone(earlier, 0)
    await earlier.waitForFrames(1)
    await earlier.close()

    const out = join(dir, 'last.png')
    const cli = runCli(['--id', 'attic', '--url', url, '--out', out])
    expect(await cli.exit).toBe(0)
    expect(cli.stdout()).toContain(
      `last status: done: frame ${done.frame_id as number}, seed ${done.seed as number}`,
    )
    const expected = toRgb(framePixels(earlier.chunks, done.frame_id as number))
    expect((await pngPixels(out)).equals(expected)).toBe(true)
  })

  it('without --url finds the bridge at MQTT_PORT, as the bridge itself reads it', async () => {
    const out = join(dir, 'by-port.png')
    const port = new URL(url).port
    const cli = runCli(['--id', 'attic', '--out', out], { MQTT_PORT: port })
    expect(await cli.exit).toBe(0)
    expect(cli.stdout()).toContain(`connected to mqtt://127.0.0.1:${port} as attic`)
  })

  it('with --watch writes every frame, numbered, until SIGINT', async () => {
    const watcher = await connectDevice(url, 'hallway')
    const cli = runCli([
      '--id',
      'hallway',
      '--url',
      url,
      '--watch',
      '--prompt',
      'first',
      '--out',
      join(dir, 'frame-{n}.png'),
    ])
    await cli.line(/^wrote .*frame-1\.png/)
    const first = await waitForDone(watcher, 0)

    const other = await connectDevice(url, 'hallway', { subscribe: false })
    await other.prompt('a second picture from somebody else')
    await other.close()
    const second = await waitForDone(watcher, watcher.statuses.indexOf(first) + 1)
    await cli.line(/^wrote .*frame-2\.png/)
    await watcher.waitForFrames(2)

    cli.kill('SIGINT')
    expect(await cli.exit).toBe(0)
    await watcher.close()
    expect(cli.stdout()).toContain('stopped after 2 frames')
    const [png1, png2] = [
      await pngPixels(join(dir, 'frame-1.png')),
      await pngPixels(join(dir, 'frame-2.png')),
    ]
    expect(png1.equals(toRgb(framePixels(watcher.chunks, first.frame_id as number)))).toBe(true)
    expect(png2.equals(toRgb(framePixels(watcher.chunks, second.frame_id as number)))).toBe(true)
    expect(png1.equals(png2)).toBe(false)
  })

  it('exits 1 with the bridge error when the prompt is refused', async () => {
    const out = join(dir, 'refused.png')
    const cli = runCli([
      '--id',
      'porch',
      '--url',
      url,
      '--prompt',
      '{"prompt": "a fox", "steps": 999}',
      '--out',
      out,
    ])
    expect(await cli.exit).toBe(1)
    expect(cli.stderr()).toContain(
      'the bridge refused the job: error E_BAD_PROMPT: steps: must be at most 150',
    )
    expect(existsSync(out)).toBe(false)
  })

  it('exits 1 with a clear message when the broker cannot be reached', async () => {
    const server = createServer()
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as { port: number }
    server.close()
    await once(server, 'close')

    const out = join(dir, 'never.png')
    const cli = runCli(['--id', 'kitchen', '--url', `mqtt://127.0.0.1:${port}`, '--out', out])
    expect(await cli.exit).toBe(1)
    expect(cli.stderr()).toContain(`cannot connect to mqtt://127.0.0.1:${port}: connection refused`)
    expect(existsSync(out)).toBe(false)
  })

  it("with --panel publishes its panel first and writes the PNG in that panel's inks", async () => {
    const watcher = await connectDevice(url, 'eink')
    const out = join(dir, 'eink.png')
    const args = ['--id', 'eink', '--url', url, '--prompt', 'a red fox', '--out', out, '--timeout', '60']
    const cli = runCli([...args, '--panel', '800x480:palette7'])
    expect(await cli.exit).toBe(0)
    expect(cli.stdout()).toContain('panel 800x480 palette7 published')
    const done = await waitForDone(watcher, 0)
    await watcher.waitForFrames(1)
    await watcher.close()
    expect(cli.stdout()).toContain(`wrote ${out} (frame ${done.frame_id as number}, 800x480)`)

    // Decoded by hand: 4 bits a pixel, the leftmost in the high nibble, 400 bytes a row (docs/protocol.md).
    const inks = DEFAULT_PALETTES.palette7
    const expected = Buffer.alloc(800 * 480 * 3)
    let rows = 0
    for (const c of watcher.chunks) {
      if (c.readUInt16BE(4) !== done.frame_id) continue
      expect(c.readUInt16BE(18)).toBe(4)
      const [y, h] = [c.readUInt16BE(12), c.readUInt16BE(16)]
      expect(c.length).toBe(24 + 400 * h)
      for (let i = 0; i < 400 * h; i++) {
        const byte = c[24 + i]!
        for (const [k, index] of [byte >> 4, byte & 0x0f].entries()) {
          const ink = inks[index]!
          expected.set(ink, ((y + Math.floor(i / 400)) * 800 + (i % 400) * 2 + k) * 3)
        }
      }
      rows += h
    }
    expect(rows).toBe(480)
    const { data, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true })
    expect([info.width, info.height]).toEqual([800, 480])
    expect(data.equals(expected)).toBe(true)
  })

  it('with --panel 320x240:rgb565-be gets a 320x240 frame, and refuses a panel it cannot read', async () => {
    const out = join(dir, 'wide.png')
    const args = ['--id', 'wide', '--url', url, '--prompt', 'a red fox', '--out', out, '--timeout', '60']
    const cli = runCli([...args, '--panel', '320x240:rgb565-be'])
    expect(await cli.exit).toBe(0)
    expect(cli.stdout()).toMatch(/wrote .*wide\.png \(frame \d+, 320x240\)/)
    const bad = runCli(['--id', 'wide', '--url', url, '--panel', '320x240:rgb888'])
    expect(await bad.exit).toBe(64)
    expect(bad.stderr()).toContain('--panel "320x240:rgb888" is not WIDTHxHEIGHT:FORMAT')
  })

  it('explains its usage: --help exits 0, a missing --id exits 64', async () => {
    const help = runCli(['--help'])
    expect(await help.exit).toBe(0)
    expect(help.stdout()).toMatch(/^Usage: pico-a1111-bridge device --id ID/)
    expect(help.stdout()).toContain('{n}')
    const bad = runCli(['--url', url])
    expect(await bad.exit).toBe(64)
    expect(bad.stderr()).toContain('--id is required')
  })
})
