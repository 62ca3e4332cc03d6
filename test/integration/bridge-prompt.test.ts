import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { expectedFrame, fetchPicture } from '../support/expected.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'

describe('a prompt over MQTT becomes a frame', () => {
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    fake = await startFakeA1111()
    bridge = await startBridge({ A1111_BASE_URL: fake.url })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  it('turns a text prompt into 12 bands whose pixels match the picture A1111 drew', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'kitchen')
    await device.prompt('a red fox')
    const done = await device.waitForStatus((s) => s.state === 'done')
    const [frame] = await device.waitForFrames(1)

    expect(device.chunks).toHaveLength(12)
    expect(device.chunks.every((c) => c.length === 24 + 9600)).toBe(true)
    expect(frame!.width).toBe(240)
    expect(frame!.height).toBe(240)
    expect(done.frame_id).toBe(frame!.frameId)

    const txt2img = fake.requests.find((r) => r.path === '/sdapi/v1/txt2img')!
    expect(txt2img.headers['content-type']).toMatch(/^application\/json/)
    expect(txt2img.body).toMatchObject({
      prompt: 'a red fox',
      steps: 20,
      width: 512,
      height: 512,
      cfg_scale: 7,
    })
    // The seed A1111 chose is reported back, and drawing that seed again gives the same picture.
    expect(typeof done.seed).toBe('number')
    expect(done.seed).not.toBe(-1)
    const png = await fetchPicture(fake.url, {
      prompt: 'a red fox',
      seed: done.seed,
      width: 512,
      height: 512,
    })
    expect(frame!.pixels.equals(await expectedFrame(png, { width: 240, height: 240, fit: 'cover' }))).toBe(
      true,
    )

    const states = device.statuses.map((s) => s.state)
    expect(states.indexOf('generating')).toBeLessThan(states.indexOf('sending'))
    expect(states.indexOf('sending')).toBeLessThan(states.indexOf('done'))
    for (const s of device.statuses) {
      expect(s.job).toBe(done.job)
      expect(Number.isNaN(Date.parse(s.ts))).toBe(false)
    }
    await device.close()
  })

  it('takes the JSON form, echoes request_id and honours fit and the generation size', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'hall')
    await device.prompt({
      prompt: 'a lighthouse',
      seed: 1234,
      width: 768,
      height: 512,
      fit: 'contain',
      request_id: 'r-42',
    })
    const done = await device.waitForStatus((s) => s.state === 'done')
    const [frame] = await device.waitForFrames(1)
    expect(done.request_id).toBe('r-42')
    expect(done.seed).toBe(1234)
    const png = await fetchPicture(fake.url, { prompt: 'a lighthouse', seed: 1234, width: 768, height: 512 })
    const expected = await expectedFrame(png, { width: 240, height: 240, fit: 'contain' })
    expect(frame!.pixels.equals(expected)).toBe(true)
    // contain letterboxes a wide picture: the top rows are black.
    expect(frame!.pixels.subarray(0, 240 * 2 * 10).every((b) => b === 0)).toBe(true)
    await device.close()
  })

  let badCases = 0
  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['{"prompt": ""}', /prompt: must not be empty/],
    ['{"prompt": "x", "steps": 500}', /steps: must be at most 150/],
    ['{"prompt": "x", "colour": "red"}', /unknown field "colour"/],
    ['{not json', /not valid JSON/],
  ])('answers the bad prompt %j with an E_BAD_PROMPT status', async (payload, message) => {
    // A device of its own per case: status is retained, so a shared one would see the previous case's error.
    const device = await connectDevice(bridge.mqttUrl, `bad-${++badCases}`)
    await device.prompt(payload)
    const status = await device.waitForStatus((s) => s.state === 'error')
    expect(status.error).toMatchObject({ code: 'E_BAD_PROMPT' })
    expect((status.error as { message: string }).message).toMatch(message)
    await device.close()
  })

  it('rejects a payload that is not UTF-8', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'binary')
    await device.client.publishAsync('pico/binary/prompt', Buffer.from([0xff, 0xfe, 0x00, 0x80]), { qos: 1 })
    const status = await device.waitForStatus((s) => s.state === 'error')
    expect(status.error).toMatchObject({ code: 'E_BAD_PROMPT', message: 'payload is not UTF-8 text' })
    await device.close()
  })
})

describe('the demo generator', () => {
  it('draws frames with no A1111 at all', async () => {
    const bridge = await startBridge()
    try {
      expect(bridge.logs.some((l) => l.level === 40 && String(l.msg).includes('demo generator'))).toBe(true)
      const device = await connectDevice(bridge.mqttUrl, 'demo')
      await device.prompt('a red fox')
      const [frame] = await device.waitForFrames(1)
      expect(frame!.pixels).toHaveLength(240 * 240 * 2)
      // A gradient with text, not a blank frame.
      expect(new Set(frame!.pixels).size).toBeGreaterThan(20)
      await device.close()
    } finally {
      await bridge.stop()
    }
  })
})
