import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { StatusMessage } from '../../src/protocol/status.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * A bridge that stops while another shares its Mosquitto (README, "Scaling out"): it leaves the shared
 * subscriptions first, so prompts sent from then on go to the other bridge, and it finishes the job it holds.
 * Started again with the same client id (the broker kept its session), it takes prompts again.
 */

const isDone = (id: string) => (s: StatusMessage) => s.request_id === id && s.state === 'done'
const isEnd = (id: string) => (s: StatusMessage) =>
  s.request_id === id && (s.state === 'done' || s.state === 'error' || s.state === 'cancelled')
const queued = (b: TestBridge, deviceId?: string) =>
  b.logs.filter((l) => l.msg === 'prompt queued' && (deviceId === undefined || l.deviceId === deviceId))

describe('a bridge stopping next to another on one Mosquitto', () => {
  let mosquitto: RunningMosquitto
  let fake: FakeA1111
  const bridges = new Map<string, TestBridge>()

  const start = async (id: string) => {
    const bridge = await startBridge({
      MQTT_URL: mosquitto.url,
      MQTT_CLIENT_ID: id,
      A1111_BASE_URL: fake.url,
      A1111_PROGRESS_INTERVAL: 0.02,
      // Time enough for the held job on a busy machine: interrupted, it would end 'cancelled' instead.
      SHUTDOWN_TIMEOUT: 60,
    })
    bridges.set(id, bridge)
    return bridge
  }

  beforeAll(async () => {
    mosquitto = await startMosquitto('allow_anonymous true')
    fake = await startFakeA1111({ stepMs: 25 })
    await Promise.all(['bridge-a', 'bridge-b'].map(start))
  })
  afterAll(async () => {
    await Promise.all([...bridges.values()].map((b) => b.stop()))
    await fake?.close()
    await mosquitto?.stop()
  })

  it('hands every prompt sent after the stop to the other bridge, and finishes the job it holds', async () => {
    const held = await connectDevice(mosquitto.url, 'held')
    await held.prompt({ prompt: 'a long one', request_id: 'long', steps: 40 })
    const started = await held.waitForStatus((s) => s.state === 'generating' || isEnd('long')(s))
    expect(started).toMatchObject({ request_id: 'long', state: 'generating' })
    const holder = [...bridges.values()].find((b) => queued(b, 'held').length === 1)!
    const other = [...bridges.values()].find((b) => b !== holder)!
    const holderTook = queued(holder).length

    const stopped = holder.stop()
    await holder.line((l) => String(l.msg).startsWith('left the shared subscriptions'))
    expect(held.statuses.some(isDone('long'))).toBe(false)

    const devices = await Promise.all(
      Array.from({ length: 10 }, (_, i) => connectDevice(mosquitto.url, `n${i}`)),
    )
    await Promise.all(devices.map((d) => d.prompt({ prompt: `after ${d.id}`, request_id: d.id, steps: 2 })))
    const ends = await Promise.all(devices.map((d) => d.waitForStatus(isEnd(d.id))))
    expect(ends.map((s) => s.state)).toEqual(devices.map(() => 'done'))
    await Promise.all(devices.map((d) => d.waitForFrames(1)))

    // The stopping bridge took none of them; it finished its own and then stopped.
    expect(queued(holder)).toHaveLength(holderTook)
    for (const d of devices) expect(queued(other, d.id)).toHaveLength(1)
    expect(await held.waitForStatus(isEnd('long'))).toMatchObject({ state: 'done' })
    await stopped
    bridges.delete([...bridges].find(([, b]) => b === holder)![0])
    for (const d of [...devices, held]) {
      expect(d.statuses.some((s) => s.state === 'error')).toBe(false)
      expect(d.frames).toHaveLength(1)
    }
    await Promise.all([...devices, held].map((d) => d.close()))
  })

  it('takes prompts again when started with the same client id', async () => {
    const [gone] = ['bridge-a', 'bridge-b'].filter((id) => !bridges.has(id))
    const back = await start(gone!)
    const devices = await Promise.all(
      Array.from({ length: 4 }, (_, i) => connectDevice(mosquitto.url, `r${i}`)),
    )
    for (const d of devices) {
      await d.prompt({ prompt: `again ${d.id}`, request_id: d.id, steps: 2 })
      await d.waitForStatus(isDone(d.id))
    }
    // Mosquitto hands a shared group's messages out in turn: the bridge that came back gets some.
    expect(queued(back).length).toBeGreaterThan(0)
    await Promise.all(devices.map((d) => d.close()))
  })
})
