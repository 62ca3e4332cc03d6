import { once } from 'node:events'
import { createServer } from 'node:net'
import { Aedes } from 'aedes'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { StatusMessage } from '../../src/protocol/status.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { mosquittoPasswd, type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * The bridge as a client of a real Mosquitto (MQTT_URL; README, "Scaling out"), with displays speaking
 * MQTT 3.1.1 as umqtt does.
 */

const ANONYMOUS = 'allow_anonymous true'
const BAND_CHUNKS = 12

const isDone = (id: string | number) => (s: StatusMessage) => s.request_id === id && s.state === 'done'

/** Resolves with the first log line at or after `from` that matches, as soon as the bridge logs it. */
function logLine(
  bridge: TestBridge,
  match: (l: Record<string, unknown>) => boolean,
  from = 0,
): Promise<Record<string, unknown>> {
  const found = bridge.logs.slice(from).find(match)
  if (found) return Promise.resolve(found)
  return new Promise((resolve) => {
    const logs = bridge.logs
    const push = logs.push.bind(logs)
    logs.push = (...lines) => {
      const n = push(...lines)
      const hit = lines.find(match)
      if (hit) {
        logs.push = push
        resolve(hit)
      }
      return n
    }
  })
}

describe('a bridge on Mosquitto', () => {
  let mosquitto: RunningMosquitto
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    mosquitto = await startMosquitto(ANONYMOUS)
    fake = await startFakeA1111({ stepMs: 20 })
    bridge = await startBridge({
      MQTT_URL: mosquitto.url,
      MQTT_CLIENT_ID: 'bridge-one',
      A1111_BASE_URL: fake.url,
      A1111_PROGRESS_INTERVAL: 0.02,
    })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
    await mosquitto?.stop()
  })

  it('says which broker it uses, and is online on its own state topic', async () => {
    const listening = bridge.logs.find((l) => l.msg === 'listening')
    expect(listening).toMatchObject({ broker: 'external', mqttUrl: mosquitto.url, mqttPort: mosquitto.port })
    expect(bridge.mqttPort).toBe(mosquitto.port)
    const watcher = await connectDevice(mosquitto.url, 'watcher', { subscribe: false })
    const state = new Promise<string>((resolve) =>
      watcher.client.on('message', (_t, payload) => resolve(payload.toString())),
    )
    await watcher.client.subscribeAsync('pico/bridge/bridge-one/state', { qos: 1 })
    expect(JSON.parse(await state)).toEqual({ state: 'online' })
    await watcher.close()
  })

  it('turns text and JSON prompts into whole frames, with progress, and answers get', async () => {
    const device = await connectDevice(mosquitto.url, 'kitchen')
    await device.prompt('a red fox')
    await device.waitForStatus((s) => s.state === 'done')
    const [first] = await device.waitForFrames(1)
    expect(first!.pixels.length).toBe(240 * 240 * 2)
    expect(device.statuses.some((s) => s.state === 'generating' && typeof s.progress === 'number')).toBe(true)

    await device.prompt({ prompt: 'a blue whale', request_id: 'j1', seed: 7 })
    const done = await device.waitForStatus(isDone('j1'))
    const [, second] = await device.waitForFrames(2)
    expect(second!.frameId).toBe(done.frame_id)
    expect(fake.requests.filter((r) => r.path === '/sdapi/v1/txt2img').at(-1)?.body).toMatchObject({
      prompt: 'a blue whale',
      seed: 7,
    })

    await device.publish('get')
    const [, , again] = await device.waitForFrames(3)
    expect(again!.frameId).toBe(second!.frameId)
    expect(Buffer.compare(again!.pixels, second!.pixels)).toBe(0)
    await device.close()
  })

  it('cancels a running job, and a cancel for nothing says nothing', async () => {
    const device = await connectDevice(mosquitto.url, 'hall')
    await device.publish('cancel')
    await logLine(bridge, (l) => l.msg === 'cancel requested' && l.deviceId === 'hall')
    await device.prompt({ prompt: 'slow', request_id: 'c1', steps: 150 })
    await device.waitForStatus((s) => s.request_id === 'c1' && s.state === 'generating')
    await device.publish('cancel')
    const cancelled = await device.waitForStatus((s) => s.request_id === 'c1' && s.state === 'cancelled')
    expect(cancelled.reason).toBe('requested')
    expect(device.statuses.some((s) => s.state === 'error')).toBe(false)
    await device.close()
  })
})

describe('two bridges sharing one Mosquitto', () => {
  let mosquitto: RunningMosquitto
  let bridges: TestBridge[] = []

  beforeAll(async () => {
    mosquitto = await startMosquitto(ANONYMOUS)
    bridges = await Promise.all(
      ['bridge-a', 'bridge-b'].map((id) => startBridge({ MQTT_URL: mosquitto.url, MQTT_CLIENT_ID: id })),
    )
  })
  afterAll(async () => {
    await Promise.all(bridges.map((b) => b.stop()))
    await mosquitto?.stop()
  })

  it('gives each of 60 prompts from 20 displays one done and one whole frame, and both take work', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `d${i}`)
    const devices = await Promise.all(ids.map((id) => connectDevice(mosquitto.url, id)))
    const run = async (device: TestDevice) => {
      for (let k = 0; k < 3; k++) {
        const requestId = `${device.id}-${k}`
        await device.prompt({ prompt: `picture ${requestId}`, request_id: requestId })
        await device.waitForStatus(isDone(requestId))
        await device.waitForFrames(k + 1)
      }
      // A cancel with nothing running reaches both bridges; neither says anything to the display.
      await device.publish('cancel')
    }
    await Promise.all(devices.map(run))
    await Promise.all(
      bridges.map((b) =>
        logLine(b, () => b.logs.filter((l) => l.msg === 'cancel requested').length === ids.length),
      ),
    )
    for (const device of devices) {
      expect(device.frames).toHaveLength(3)
      expect(device.chunks).toHaveLength(3 * BAND_CHUNKS)
      for (let k = 0; k < 3; k++) expect(device.statuses.filter(isDone(`${device.id}-${k}`))).toHaveLength(1)
      expect(device.statuses.some((s) => s.state === 'error')).toBe(false)
    }
    const taken = bridges.map((b) => b.logs.filter((l) => l.msg === 'prompt queued').length)
    expect(taken[0]! + taken[1]!).toBe(60)
    expect(Math.min(...taken)).toBeGreaterThan(0)
    await Promise.all(devices.map((d) => d.close()))
  })
})

describe('broker faults', () => {
  it('goes on after Mosquitto restarts on the same port, without a restart of the bridge', async () => {
    let mosquitto = await startMosquitto(ANONYMOUS)
    const { port } = mosquitto
    const bridge = await startBridge({ MQTT_URL: mosquitto.url, MQTT_CLIENT_ID: 'bridge-restart' })
    try {
      await mosquitto.stop()
      await logLine(bridge, (l) => l.msg === 'lost the MQTT broker; reconnecting')
      const lostAt = bridge.logs.length
      mosquitto = await startMosquitto(ANONYMOUS, { port })
      // Mosquitto kept no session (persistence false): the bridge subscribes again once it is back.
      await logLine(bridge, (l) => l.msg === 'subscribed', lostAt)
      const device = await connectDevice(mosquitto.url, 'after')
      await device.prompt({ prompt: 'back again', request_id: 'r' })
      await device.waitForStatus(isDone('r'))
      await device.waitForFrames(1)
      await device.close()
    } finally {
      await bridge.stop()
      await mosquitto.stop()
    }
  })

  it('refuses to start when the broker refuses the login, without logging the password', async () => {
    const mosquitto = await startMosquitto(async (dir) => {
      mosquittoPasswd(`${dir}/passwd`, 'bridge', 'right-secret')
      return `allow_anonymous false\npassword_file ${dir}/passwd`
    })
    const url = `mqtt://bridge:wrong-secret@127.0.0.1:${mosquitto.port}`
    try {
      const failed = await startBridge({ MQTT_URL: url, MQTT_CLIENT_ID: 'bridge-login' }).then(
        () => null,
        (err: unknown) => err as Error,
      )
      expect(failed?.name).toBe('BrokerLoginRefused')
      expect(failed?.message).toContain('refused the login of bridge')
      expect(failed?.message).not.toContain('wrong-secret')
      expect(failed?.message).toContain(`mqtt://bridge@127.0.0.1:${mosquitto.port}`)
    } finally {
      await mosquitto.stop()
    }
  })

  it('falls back to MQTT 3.1.1 on a broker without MQTT 5, and says so once', async () => {
    const aedes = await Aedes.createBroker()
    const server = createServer((socket) => aedes.handle(socket))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const address = server.address()
    const url = `mqtt://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
    const bridge = await startBridge({ MQTT_URL: url, MQTT_CLIENT_ID: 'bridge-v4' })
    try {
      const device = await connectDevice(url, 'old')
      await device.prompt({ prompt: 'on 3.1.1', request_id: 'o' })
      await device.waitForStatus(isDone('o'))
      await device.waitForFrames(1)
      const warnings = bridge.logs.filter((l) => String(l.msg).includes('does not take MQTT 5'))
      expect(warnings).toHaveLength(1)
      await device.close()
    } finally {
      await bridge.stop()
      await new Promise<void>((resolve) => aedes.close(() => resolve()))
      server.close()
    }
  })
})
