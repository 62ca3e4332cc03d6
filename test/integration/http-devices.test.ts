import { execFileSync } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { expectedFrame, fetchPicture } from '../support/expected.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { type HttpAnswer, hostPort, httpCall } from '../support/http.ts'

/*
 * The HTTP door to the devices (Home Assistant rest_command, cron jobs): a prompt queued over HTTP reaches the
 * MQTT device as a frame, and the job can be followed, cancelled and its picture fetched as PNG.
 */

interface ErrorBody {
  error: { code: string; message: string }
}

interface JobBody {
  job: string
  device: string | null
  state: string
  frame_id?: number
  seed?: number
  reason?: string
}

interface DeviceBody {
  id: string
  connected: boolean
  last_seen: string | null
  last_frame_at: string | null
  frame_id: number | null
}

const JSON_HEADERS = { 'Content-Type': 'application/json' }

function expectError(res: HttpAnswer, status: number, code?: string): ErrorBody['error'] {
  expect({ status: res.status, body: res.text() }).toMatchObject({ status })
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  const body = res.json<ErrorBody>()
  expect(body).toEqual({ error: { code: code ?? expect.stringMatching(/^E_/), message: expect.any(String) } })
  expect(res.text()).not.toMatch(/\bat .*:\d+:\d+|\.ts:\d+/)
  return body.error
}

/** RGB565 big-endian frame bytes expanded to 8-bit RGB by rounding, independently of the bridge's code. */
function rgb565ToRgb(pixels: Buffer): Buffer {
  const out = Buffer.alloc((pixels.length / 2) * 3)
  for (let p = 0; p < pixels.length / 2; p++) {
    const word = pixels.readUInt16BE(p * 2)
    out[p * 3] = Math.round(((word >>> 11) * 255) / 31)
    out[p * 3 + 1] = Math.round((((word >>> 5) & 0x3f) * 255) / 63)
    out[p * 3 + 2] = Math.round(((word & 0x1f) * 255) / 31)
  }
  return out
}

describe('the HTTP device routes', () => {
  let fake: FakeA1111
  let bridge: TestBridge
  const devices: TestDevice[] = []
  const call = (path: string, options: Parameters<typeof httpCall>[2] = {}) =>
    httpCall(bridge.httpPort!, path, options)
  const prompt = (id: string, body: unknown) =>
    call(`/api/v1/devices/${id}/prompt`, { headers: JSON_HEADERS, body: JSON.stringify(body) })
  const job = async (id: string) => (await call(`/api/v1/jobs/${id}`)).json<JobBody>()
  const device = async (id: string) => {
    const d = await connectDevice(bridge.mqttUrl, id)
    devices.push(d)
    return d
  }

  beforeAll(async () => {
    fake = await startFakeA1111({ stepMs: 10 })
    bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0 })
  })
  afterAll(async () => {
    await Promise.all(devices.map((d) => d.close()))
    await bridge?.stop()
    await fake?.close()
  })

  it('queues a prompt (202), the MQTT device gets its frame and the job ends done with frame_id and seed', async () => {
    const kitchen = await device('kitchen')
    const res = await prompt('kitchen', { prompt: 'a red fox', seed: 1234, steps: 4 })
    expect(res.status).toBe(202)
    const accepted = res.json<{ job: string; device: string; status_url: string }>()
    expect(accepted).toEqual({
      job: expect.stringMatching(/^\w+$/),
      device: 'kitchen',
      status_url: `/api/v1/jobs/${accepted.job}`,
    })

    const [frame] = await kitchen.waitForFrames(1)
    expect(frame!.width).toBe(240)
    expect(frame!.height).toBe(240)
    const png = await fetchPicture(fake.url, { prompt: 'a red fox', seed: 1234, width: 512, height: 512 })
    const expected = await expectedFrame(png, { width: 240, height: 240, fit: 'cover' })
    expect(frame!.pixels.equals(expected)).toBe(true)

    const done = await kitchen.waitForStatus((s) => s.state === 'done')
    expect(done).toMatchObject({ job: accepted.job, frame_id: frame!.frameId, seed: 1234 })
    const status = await call(accepted.status_url)
    expect(status.status).toBe(200)
    expect(status.json<JobBody>()).toMatchObject({
      job: accepted.job,
      device: 'kitchen',
      state: 'done',
      frame_id: frame!.frameId,
      seed: 1234,
    })
  })

  it('answers 422 E_BAD_PROMPT naming the field, and queues nothing', async () => {
    const before = fake.requests.length
    const steps = expectError(
      await prompt('kitchen', { prompt: 'a fox', steps: 'many' }),
      422,
      'E_BAD_PROMPT',
    )
    expect(steps.message).toMatch(/steps/)
    const width = expectError(await prompt('kitchen', { prompt: 'a fox', width: 100 }), 422, 'E_BAD_PROMPT')
    expect(width.message).toMatch(/width.*multiple of 8/)
    const unknown = expectError(
      await prompt('kitchen', { prompt: 'a fox', colour: 'red' }),
      422,
      'E_BAD_PROMPT',
    )
    expect(unknown.message).toMatch(/colour/)
    const missing = expectError(await prompt('kitchen', { steps: 4 }), 422, 'E_BAD_PROMPT')
    expect(missing.message).toMatch(/prompt/)
    expect(fake.requests.slice(before).filter((r) => r.path === '/sdapi/v1/txt2img')).toEqual([])
  })

  it('answers 400 for a device id that is not allowed', async () => {
    for (const id of ['bad.id', 'bridge', 'x'.repeat(65), 'with%20space']) {
      expectError(await prompt(id, { prompt: 'a fox' }), 400, 'E_BAD_REQUEST')
    }
    expectError(await call('/api/v1/devices/bad.id/frame.png'), 400, 'E_BAD_REQUEST')
  })

  it('answers 404 for an unknown job', async () => {
    expectError(await call('/api/v1/jobs/unknown'), 404, 'E_NOT_FOUND')
    expectError(await call('/api/v1/jobs/unknown', { method: 'DELETE' }), 404, 'E_NOT_FOUND')
  })

  it('cancels a waiting job with DELETE (the device sees cancelled), then a running one; finished ones are 409', async () => {
    const desk = await device('desk')
    const porch = await device('porch')
    const first = (await prompt('desk', { prompt: 'a long desk picture', steps: 150 })).json<JobBody>()
    await desk.waitForStatus((s) => s.job === first.job && s.state === 'generating')
    const second = (await prompt('porch', { prompt: 'a porch picture', steps: 4 })).json<JobBody>()
    expect(await job(second.job)).toMatchObject({ state: 'queued', position: 1 })

    const deleted = await call(`/api/v1/jobs/${second.job}`, { method: 'DELETE' })
    expect(deleted.status).toBe(200)
    expect(deleted.json<JobBody>()).toMatchObject({ job: second.job, device: 'porch', state: 'cancelled' })
    const cancelled = await porch.waitForStatus((s) => s.job === second.job && s.state === 'cancelled')
    expect(cancelled.reason).toBe('requested')
    expect(await job(second.job)).toMatchObject({ state: 'cancelled' })

    // The running job: A1111 is asked to stop.
    const interrupts = fake.interrupts
    const stopped = await call(`/api/v1/jobs/${first.job}`, { method: 'DELETE' })
    expect(stopped.status).toBe(200)
    expect(stopped.json<JobBody>()).toMatchObject({ job: first.job, state: 'cancelled' })
    await desk.waitForStatus((s) => s.job === first.job && s.state === 'cancelled')
    await expect.poll(() => fake.interrupts).toBe(interrupts + 1)

    expectError(await call(`/api/v1/jobs/${second.job}`, { method: 'DELETE' }), 409)
    expect(await job(second.job)).toMatchObject({ state: 'cancelled' })
    // The porch prompt never reached A1111.
    const prompts = fake.requests.filter((r) => r.path === '/sdapi/v1/txt2img').map((r) => r.body)
    expect(prompts).not.toContainEqual(expect.objectContaining({ prompt: 'a porch picture' }))
    expect(porch.frames).toEqual([])

    // A job that ended done cannot be cancelled either.
    const quick = (await prompt('porch', { prompt: 'a quick porch picture', steps: 2 })).json<JobBody>()
    await porch.waitForStatus((s) => s.job === quick.job && s.state === 'done')
    expectError(await call(`/api/v1/jobs/${quick.job}`, { method: 'DELETE' }), 409)
    expect(await job(quick.job)).toMatchObject({ state: 'done' })
  })

  it('lists a device with its last frame, connected while its MQTT client is subscribed', async () => {
    const hall = await device('hall')
    const accepted = (await prompt('hall', { prompt: 'a hallway', steps: 2 })).json<JobBody>()
    const [frame] = await hall.waitForFrames(1)
    await hall.waitForStatus((s) => s.job === accepted.job && s.state === 'done')

    const res = await call('/api/v1/devices')
    expect(res.status).toBe(200)
    const listed = res.json<{ devices: DeviceBody[] }>().devices.find((d) => d.id === 'hall')
    expect(listed).toMatchObject({ id: 'hall', connected: true, frame_id: frame!.frameId })
    expect(Number.isNaN(Date.parse(listed!.last_frame_at!))).toBe(false)
    expect(res.text()).not.toContain(hostPort(fake.url))

    await hall.close()
    await expect
      .poll(async () => {
        const all = (await call('/api/v1/devices')).json<{ devices: DeviceBody[] }>().devices
        return all.find((d) => d.id === 'hall')?.connected
      })
      .toBe(false)
  })

  it("serves a device's last frame as a 240x240 PNG whose pixels are the frame's", async () => {
    const lamp = await device('lamp')
    const accepted = (await prompt('lamp', { prompt: 'a lamp', seed: 77, steps: 2 })).json<JobBody>()
    const [frame] = await lamp.waitForFrames(1)
    await lamp.waitForStatus((s) => s.job === accepted.job && s.state === 'done')

    const res = await call('/api/v1/devices/lamp/frame.png')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toBe('image/png')
    expect(res.headers['x-frame-id']).toBe(String(frame!.frameId))
    const { data, info } = await sharp(res.body).removeAlpha().raw().toBuffer({ resolveWithObject: true })
    expect({ width: info.width, height: info.height, channels: info.channels }).toEqual({
      width: 240,
      height: 240,
      channels: 3,
    })
    const expected = rgb565ToRgb(frame!.pixels)
    let worst = 0
    for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(data[i]! - expected[i]!))
    expect(worst).toBeLessThanOrEqual(2)
    // Not a blank picture that would match anything flat.
    expect(new Set(data).size).toBeGreaterThan(16)
  })

  // BUG: the queue's claim() marks the job 'done' before the frame is stored and before the `done` status
  // (src/jobs/queue.ts, claim; src/jobs/device-job.ts, deliver). A client that polls GET /api/v1/jobs/{id}
  // until done and then fetches frame.png gets 404 (or the previous picture), and the job shows no seed.
  // A FIFO in place of the store's temporary file holds the store's write, so the window stays open.
  it('says a job is done only once its frame is stored and its done status is out', async () => {
    const garage = await device('garage')
    const fifo = join(bridge.dataDir, 'frames', 'garage.frame.tmp')
    execFileSync('mkfifo', [fifo])
    let storing = false
    try {
      const accepted = (await prompt('garage', { prompt: 'a garage', seed: 5, steps: 2 })).json<JobBody>()
      // `sending` is reported right before the frame goes out and the store opens its file.
      await garage.waitForStatus((s) => s.job === accepted.job && s.state === 'sending')
      storing = true
      const view = await job(accepted.job)
      const png = await call('/api/v1/devices/garage/frame.png')
      expect(garage.statuses.some((s) => s.job === accepted.job && s.state === 'done')).toBe(false)
      expect({ state: view.state, png: png.status }).toEqual({
        state: expect.not.stringMatching(/^done$/),
        png: 404,
      })
    } finally {
      // Let the store's write through (its fsync then fails on the FIFO, so the frame is not kept).
      if (storing) {
        await new Promise<void>((resolve, reject) => {
          createReadStream(fifo).on('error', reject).on('close', resolve).resume()
        })
      }
      await rm(fifo, { force: true })
    }
  })

  it('answers 404 JSON for the frame of a device without one', async () => {
    const error = expectError(await call('/api/v1/devices/attic/frame.png'), 404, 'E_NOT_FOUND')
    expect(error.message).toMatch(/attic/)
  })
})
