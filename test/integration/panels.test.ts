import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_PALETTES } from '../../src/image/dither.ts'
import { packedBandBytes } from '../../src/image/pack.ts'
import { type PanelProfile, renderPixels } from '../../src/image/panel.ts'
import { PIXEL_FORMATS } from '../../src/image/pixel-format.ts'
import type { AssembledFrame } from '../../src/protocol/frame.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { fetchPicture } from '../support/expected.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { httpCall } from '../support/http.ts'

/*
 * Every display its own panel (issue 15; docs/protocol.md, "Display info"): three displays of three kinds get
 * three different frames of one picture, a bad info changes nothing, a change of panel renders the kept
 * picture anew, and what a display reports about itself shows in the device list and /metrics.
 */

const DEVICES = { eink: { width: 800, height: 480, format: 'palette7' } }
const TAG_INFO = {
  panel: { width: 296, height: 128, format: 'mono', band_rows: 16 },
  fw: 'picoframe 1.4',
  rssi: -61,
  heap_free: 123456,
  battery_v: 3.9,
}
const PROMPT = { prompt: 'a red fox', seed: 1234 }

const base = (over: Partial<PanelProfile>): PanelProfile => ({
  ...{ width: 240, height: 240, format: 'rgb565-be', fit: 'cover', invert: false },
  ...{ bandRows: 20, compress: false, dither: 'none' },
  ...over,
})

interface DeviceBody {
  id: string
  panel: { width: number; height: number; format: string; band_rows: number; dither: string }
  telemetry: {
    fw: string | null
    rssi: number | null
    heap_free: number | null
    battery_v: number | null
  } | null
}

let fake: FakeA1111
let bridge: TestBridge
let picture: Buffer
const devices: TestDevice[] = []

async function device(id: string): Promise<TestDevice> {
  const d = await connectDevice(bridge.mqttUrl, id)
  devices.push(d)
  return d
}

async function publishInfo(d: TestDevice, body: unknown): Promise<void> {
  const payload = typeof body === 'string' ? body : JSON.stringify(body)
  await d.client.publishAsync(`pico/${d.id}/info`, payload, { qos: 1, retain: true })
}

async function listed(id: string): Promise<DeviceBody> {
  const res = await httpCall(bridge.httpPort!, '/api/v1/devices')
  const found = res.json<{ devices: DeviceBody[] }>().devices.find((d) => d.id === id)
  expect(found).toBeDefined()
  return found!
}

/** The frame's chunks: every header names the format's code, every band is the packed size of its rows. */
function expectBands(d: TestDevice, frame: AssembledFrame, bandRows: number): void {
  const chunks = d.chunks.filter((c) => c.readUInt16BE(4) === frame.frameId)
  expect(chunks.length).toBe(Math.ceil(frame.height / bandRows))
  for (const c of chunks) {
    expect(c.readUInt16BE(18)).toBe(PIXEL_FORMATS[frame.format].code)
    const rows = c.readUInt16BE(16)
    expect(c.length - 24).toBe(packedBandBytes(frame.format, frame.width, rows))
  }
}

beforeAll(async () => {
  fake = await startFakeA1111()
  bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0, DEVICES: JSON.stringify(DEVICES) })
  picture = await fetchPicture(fake.url, { ...PROMPT, width: 512, height: 512 })
})

afterAll(async () => {
  await Promise.all(devices.map((d) => d.close()))
  await bridge?.stop()
  await fake?.close()
})

describe('per-display panels', () => {
  it('gives an LCD, a mono tag (by its info) and a 7-colour panel (by DEVICES) their own frames of one picture', async () => {
    const [lcd, tag, eink] = await Promise.all([device('lcd'), device('tag'), device('eink')])
    await publishInfo(tag, TAG_INFO)
    await Promise.all([lcd, tag, eink].map((d) => d.prompt(PROMPT)))
    const [a, b, c] = (await Promise.all([lcd, tag, eink].map((d) => d.waitForFrames(1)))).map((f) => f[0])

    expect(a).toMatchObject({ width: 240, height: 240, format: 'rgb565-be' })
    expect(a!.pixels.equals(await renderPixels(picture, base({})))).toBe(true)
    expectBands(lcd, a!, 20)

    expect(b).toMatchObject({ width: 296, height: 128, format: 'mono' })
    const mono = base({ width: 296, height: 128, format: 'mono', bandRows: 16, dither: 'floyd-steinberg' })
    expect(b!.pixels.equals(await renderPixels(picture, mono))).toBe(true)
    expectBands(tag, b!, 16)

    expect(c).toMatchObject({ width: 800, height: 480, format: 'palette7' })
    const seven = base({ width: 800, height: 480, format: 'palette7', dither: 'floyd-steinberg' })
    expect(c!.pixels.equals(await renderPixels(picture, seven))).toBe(true)
    expectBands(eink, c!, 20)
  })

  it('shows frame.png of an indexed panel in its inks', async () => {
    const res = await httpCall(bridge.httpPort!, '/api/v1/devices/eink/frame.png')
    expect(res.status).toBe(200)
    const { data, info } = await sharp(res.body).raw().toBuffer({ resolveWithObject: true })
    expect([info.width, info.height, info.channels]).toEqual([800, 480, 3])
    const inks = new Set(DEFAULT_PALETTES.palette7.map((c) => c.join(',')))
    const seen = new Set<string>()
    for (let i = 0; i < data.length; i += 3) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`)
    expect([...seen].every((c) => inks.has(c))).toBe(true)
    expect(seen.size).toBeGreaterThan(2)
  })

  it('refuses bad info with E_BAD_INFO naming the field, and the display keeps its panel', async () => {
    const tag = devices.find((d) => d.id === 'tag')!
    const cases: [unknown, RegExp][] = [
      [{ panel: { width: 10000, height: 10000 } }, /panel\.width: must be at most 2048/],
      [{ panel: { format: 'rgb888' } }, /panel\.format: must be one of rgb565-be, .*palette7/],
      [{ rssi: 'strong' }, /rssi: must be a number/],
      ['not json', /not JSON/],
    ]
    for (const [body, message] of cases) {
      const from = tag.statuses.length
      await publishInfo(tag, body)
      const status = await tag.waitForStatus((s) => s.state === 'error', from)
      expect(status.error).toEqual({ code: 'E_BAD_INFO', message: expect.stringMatching(message) })
    }
    const { panel, telemetry } = await listed('tag')
    expect(panel).toMatchObject({ width: 296, height: 128, format: 'mono', band_rows: 16 })
    expect(telemetry).toMatchObject({ rssi: -61, battery_v: 3.9 })
    expect(tag.frames.length).toBe(1)
  })

  it('lists the panel and telemetry of each display, and exports the telemetry to /metrics', async () => {
    const tag = await listed('tag')
    expect(tag.telemetry).toMatchObject({ fw: 'picoframe 1.4', rssi: -61, heap_free: 123456, battery_v: 3.9 })
    const lcd = await listed('lcd')
    expect(lcd).toMatchObject({ panel: { width: 240, height: 240, format: 'rgb565-be' }, telemetry: null })
    const eink = await listed('eink')
    expect(eink.panel).toMatchObject({
      width: 800,
      height: 480,
      format: 'palette7',
      dither: 'floyd-steinberg',
    })

    const metrics = (await httpCall(bridge.httpPort!, '/metrics')).text()
    expect(metrics).toContain('pab_display_rssi_dbm{device="tag"} -61')
    expect(metrics).toContain('pab_display_heap_free_bytes{device="tag"} 123456')
    expect(metrics).toContain('pab_display_battery_volts{device="tag"} 3.9')
    expect(metrics).not.toMatch(/pab_display_rssi_dbm\{device="lcd"\}/)
  })

  it('renders the kept picture anew, not the old frame, when a display reports another panel', async () => {
    const tag = devices.find((d) => d.id === 'tag')!
    await publishInfo(tag, { ...TAG_INFO, panel: { width: 128, height: 64, format: 'gray4' } })
    const frames = await tag.waitForFrames(2)
    const again = frames[1]!
    expect(again).toMatchObject({ width: 128, height: 64, format: 'gray4', preview: false })
    expect(again.frameId).not.toBe(frames[0]!.frameId)
    const gray = base({ width: 128, height: 64, format: 'gray4', dither: 'floyd-steinberg' })
    expect(again.pixels.equals(await renderPixels(picture, gray))).toBe(true)
    expectBands(tag, again, 20)
  })

  it('dithers as a prompt says, over the panel’s own method', async () => {
    const eink = devices.find((d) => d.id === 'eink')!
    await eink.prompt({ ...PROMPT, dither: 'ordered' })
    const [, frame] = await eink.waitForFrames(2)
    const seven = base({ width: 800, height: 480, format: 'palette7' })
    const ordered = await renderPixels(picture, { ...seven, dither: 'ordered' })
    expect(frame!.pixels.equals(ordered)).toBe(true)
    expect(ordered.equals(await renderPixels(picture, { ...seven, dither: 'floyd-steinberg' }))).toBe(false)
  })

  it('keeps a display’s panel across a restart, and resends its last picture for it', async () => {
    const dataDir = bridge.dataDir
    await Promise.all(devices.splice(0).map((d) => d.close()))
    await bridge.app.stop('restart')
    bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0 }, dataDir)
    const tag = await device('tag')
    const [frame] = await tag.waitForFrames(1)
    expect(frame).toMatchObject({ width: 128, height: 64, format: 'gray4' })
    expect((await listed('tag')).telemetry).toMatchObject({ rssi: -61 })
  })
  it('renders the kept picture anew for a new palette after a restart, keeping the dither its prompt chose', async () => {
    // The panel's measured inks, set in DEVICES: muted, as 7-colour e-paper shows them.
    const inks: [number, number, number][] = [
      [20, 20, 30],
      [230, 230, 220],
      [60, 120, 70],
      [50, 60, 130],
      [170, 60, 50],
      [210, 200, 70],
      [200, 120, 60],
    ]
    const restartWith = async (eink: Record<string, unknown>) => {
      const dataDir = bridge.dataDir
      await Promise.all(devices.splice(0).map((d) => d.close()))
      await bridge.app.stop('restart')
      const settings = { A1111_BASE_URL: fake.url, HTTP_PORT: 0, DEVICES: JSON.stringify({ eink }) }
      bridge = await startBridge(settings, dataDir)
      const [frame] = await (await device('eink')).waitForFrames(1)
      return frame!
    }
    const seven = base({ width: 800, height: 480, format: 'palette7' })
    // Its last picture came from a prompt that asked for ordered dithering.
    const frame = await restartWith({ ...DEVICES.eink, palette: inks })
    const expected = await renderPixels(picture, { ...seven, palette: inks, dither: 'ordered' })
    expect(frame.pixels.equals(expected)).toBe(true)
    expect(expected.equals(await renderPixels(picture, { ...seven, dither: 'ordered' }))).toBe(false)
    // A change that alters only how the same pixels are sent sends them again as they are.
    const resent = await restartWith({ ...DEVICES.eink, palette: inks, band_rows: 40 })
    expect(resent.frameId).toBe(frame.frameId)
    expect(resent.pixels.equals(expected)).toBe(true)
    expectBands(devices[0]!, resent, 40)
  })
})
