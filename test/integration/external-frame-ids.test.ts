import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { StatusMessage } from '../../src/protocol/status.ts'
import { createFrameStore } from '../../src/store/frame-store.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * Frame ids when two bridges on one Mosquitto make a display's pictures (README, "Scaling out"). A display
 * draws a frame whose id is the same or newer than the one it shows and drops an older one (docs/protocol.md,
 * "Previews and frame ids"), so the bridge that takes a display's next prompt must number its picture after
 * the last one any bridge sent, not after the last one it made itself.
 */

const isDone = (id: string) => (s: StatusMessage) => s.request_id === id && s.state === 'done'
/** The firmware's test: `(next - current) & 0xFFFF` below 0x8000 is not older. */
const notOlder = (current: number, next: number) => ((next - current) & 0xffff) < 0x8000

describe('frame ids across two bridges', () => {
  let mosquitto: RunningMosquitto
  let bridges: TestBridge[] = []

  beforeAll(async () => {
    mosquitto = await startMosquitto('allow_anonymous true', { logTypes: 'error warning notice' })
    bridges = await Promise.all(
      ['ids-a', 'ids-b'].map((id) => startBridge({ MQTT_URL: mosquitto.url, MQTT_CLIENT_ID: id })),
    )
  })
  afterAll(async () => {
    await Promise.all(bridges.map((b) => b.stop()))
    await mosquitto?.stop()
  })

  it("numbers each picture after the display's last one, whichever bridge made that", async () => {
    const [wall, other] = await Promise.all([
      connectDevice(mosquitto.url, 'wall'),
      connectDevice(mosquitto.url, 'other'),
    ])
    const run = async (device: TestDevice, requestId: string) => {
      await device.prompt({ prompt: requestId, request_id: requestId })
      return device.waitForStatus(isDone(requestId))
    }
    // Prompts of another display in between: the bridges take the wall's prompts unevenly.
    const order = [wall, other, wall, other, wall, wall, wall, other, wall]
    const done: StatusMessage[] = []
    for (const [k, device] of order.entries()) {
      const status = await run(device, `${device.id}-${k}`)
      if (device === wall) done.push(status)
    }
    const ids = done.map((s) => s.frame_id as number)
    for (let k = 1; k < ids.length; k++)
      expect(notOlder(ids[k - 1]!, ids[k]!), `ids ${ids.join(', ')}`).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
    const makers = bridges.map((b) =>
      b.logs.filter((l) => l.msg === 'prompt queued' && l.deviceId === 'wall'),
    )
    expect(Math.min(...makers.map((m) => m.length))).toBeGreaterThan(0)
    await wall.waitForFrames(ids.length)
    expect(wall.frames.map((f) => f.frameId)).toEqual(ids)
    await Promise.all([wall, other].map((d) => d.close()))
  })
})

describe("a bridge's frame ids after ones it heard of", () => {
  it('goes on after a newer id, across the wrap at 65535, and ignores an older one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pab-ids-'))
    try {
      const store = createFrameStore(dir, { log: pino({ level: 'silent' }) })
      store.seenFrameId('wall', 65534)
      expect(store.nextFrameId('wall')).toBe(65535)
      store.seenFrameId('wall', 2)
      expect(store.nextFrameId('wall')).toBe(3)
      store.seenFrameId('wall', 1)
      expect(store.nextFrameId('wall')).toBe(4)
      store.seenFrameId('hall', 9)
      expect(store.nextFrameId('hall')).toBe(10)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
