import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'

describe('the first queue', () => {
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    // 20 steps of 40 ms: a generation runs long enough to act on it while it runs.
    fake = await startFakeA1111({ stepMs: 40 })
    // Newest-prompt-wins is off here: these tests are about the waiting line; it has tests of its own.
    bridge = await startBridge({ A1111_BASE_URL: fake.url, QUEUE_MAX: 2, SUPERSEDE_RUNNING: false })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  it('runs one generation at a time and lets a newer prompt replace the waiting one', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'super')
    await device.prompt({ prompt: 'first', request_id: 1 })
    await device.waitForStatus((s) => s.request_id === 1 && s.state === 'generating')
    await device.prompt({ prompt: 'second', request_id: 2 })
    await device.waitForStatus((s) => s.request_id === 2 && s.state === 'queued')
    await device.prompt({ prompt: 'third', request_id: 3 })

    const superseded = await device.waitForStatus((s) => s.request_id === 2 && s.state === 'cancelled')
    expect(superseded.reason).toBe('superseded')
    const third = await device.waitForStatus((s) => s.request_id === 3 && s.state === 'done')
    const first = await device.waitForStatus((s) => s.request_id === 1 && s.state === 'done')
    expect(third.frame_id).toBe((first.frame_id as number) + 1)
    expect(device.statuses.some((s) => s.request_id === 2 && s.state === 'generating')).toBe(false)
    const prompts = fake.requests
      .filter((r) => r.path === '/sdapi/v1/txt2img')
      .map((r) => (r.body as { prompt: string }).prompt)
    expect(prompts).toEqual(expect.arrayContaining(['first', 'third']))
    expect(prompts).not.toContain('second')
    await device.close()
  })

  it('answers E_QUEUE_FULL past QUEUE_MAX waiting jobs', async () => {
    const devices = await Promise.all(['q1', 'q2', 'q3', 'q4'].map((id) => connectDevice(bridge.mqttUrl, id)))
    const [d1, d2, d3, d4] = devices as [
      (typeof devices)[0],
      (typeof devices)[0],
      (typeof devices)[0],
      (typeof devices)[0],
    ]
    await d1.prompt('one')
    await d1.waitForStatus((s) => s.state === 'generating')
    await d2.prompt('two')
    await d2.waitForStatus((s) => s.state === 'queued')
    await d3.prompt('three')
    const queued3 = await d3.waitForStatus((s) => s.state === 'queued')
    expect(queued3.position).toBe(2)
    await d4.prompt('four')
    const full = await d4.waitForStatus((s) => s.state === 'error')
    expect(full.error).toMatchObject({ code: 'E_QUEUE_FULL' })
    // The queue moves on: the third device's job reaches position 1, then finishes.
    await d3.waitForStatus((s) => s.state === 'queued' && s.position === 1)
    await d3.waitForStatus((s) => s.state === 'done')
    await Promise.all(devices.map((d) => d.close()))
  })

  it('cancels a waiting job and interrupts a running one, sending no frame', async () => {
    const device = await connectDevice(bridge.mqttUrl, 'cancel')
    await device.prompt({ prompt: 'running', request_id: 'a' })
    await device.waitForStatus((s) => s.request_id === 'a' && s.state === 'generating')
    // Wait until A1111 really runs it: an interrupt sent before that would be lost (research section 3).
    await new Promise<void>((resolve) => fake.events.once('step', () => resolve()))
    await device.prompt({ prompt: 'waiting', request_id: 'b' })
    await device.waitForStatus((s) => s.request_id === 'b' && s.state === 'queued')
    const interrupts = fake.interrupts

    await device.publish('cancel')
    const a = await device.waitForStatus((s) => s.request_id === 'a' && s.state === 'cancelled')
    const b = await device.waitForStatus((s) => s.request_id === 'b' && s.state === 'cancelled')
    expect(a.reason).toBe('requested')
    expect(b.reason).toBe('requested')
    await expect.poll(() => fake.interrupts).toBe(interrupts + 1)

    // The partial picture A1111 still returns is not sent; the next prompt works normally.
    await device.prompt({ prompt: 'after', request_id: 'c' })
    await device.waitForStatus((s) => s.request_id === 'c' && s.state === 'done')
    expect(device.frames).toHaveLength(1)
    expect(device.statuses.some((s) => s.request_id === 'a' && s.state === 'sending')).toBe(false)
    await device.close()
  })
})
