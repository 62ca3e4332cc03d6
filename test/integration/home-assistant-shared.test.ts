import { connect, type MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { startBridgeFor } from '../support/ha.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * Home Assistant with two bridges on one Mosquitto (MQTT_URL; README "Scaling out" and "Home Assistant"):
 * a prompt typed in Home Assistant is one job, not one per bridge, and each bridge keeps a link of its own.
 */

describe('Home Assistant with two bridges on one broker', () => {
  let mosquitto: RunningMosquitto
  let ha: MqttClient
  const seen: { topic: string; body: Record<string, unknown> }[] = []
  const waiters = new Set<() => void>()
  /** What was said on the bridges' availability topic, in order. */
  const said: string[] = []
  const bridges: TestBridge[] = []
  let kitchen: TestDevice

  const status = (match: (b: Record<string, unknown>) => boolean, from: number) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const look = () => {
        const hit = seen.slice(from).find((m) => m.topic === 'pico/kitchen/status' && match(m.body))
        if (!hit) return
        waiters.delete(look)
        resolve(hit.body)
      }
      waiters.add(look)
      look()
    })

  beforeAll(async () => {
    mosquitto = await startMosquitto('allow_anonymous true')
    ha = connect(mosquitto.url, { protocolVersion: 5, clientId: 'fake-home-assistant', reconnectPeriod: 0 })
    ha.on('message', (topic, payload) => {
      if (topic === 'pico/bridge/ha/availability') said.push(payload.toString())
      if (payload.length === 0 || payload[0] !== 0x7b) return
      seen.push({ topic, body: JSON.parse(payload.toString()) as Record<string, unknown> })
      for (const w of [...waiters]) w()
    })
    await ha.subscribeAsync(
      ['homeassistant/device/+/config', 'pico/kitchen/status', 'pico/bridge/ha/availability'],
      { qos: 1 },
    )
    for (const id of ['bridge-a', 'bridge-b'])
      bridges.push(await startBridge({ MQTT_URL: mosquitto.url, MQTT_CLIENT_ID: id, DEMO_STEP_MS: 10 }))
    kitchen = await connectDevice(mosquitto.url, 'kitchen')
    await kitchen.client.publishAsync('pico/kitchen/info', JSON.stringify({ fw: '1.4.0' }), { qos: 1 })
  })

  afterAll(async () => {
    await kitchen?.close()
    for (const b of bridges) await b.stop()
    await ha?.endAsync()
    await mosquitto?.stop()
  })

  it('runs a prompt from Home Assistant once, on one of the bridges', async () => {
    await new Promise<void>((resolve) => {
      const look = () => {
        if (!seen.some((m) => m.topic === 'homeassistant/device/pico_kitchen/config')) return
        waiters.delete(look)
        resolve()
      }
      waiters.add(look)
      look()
    })
    const jobs = new Set<unknown>()
    for (const prompt of ['a lighthouse at dusk', 'a boat at dawn']) {
      const from = seen.length
      await ha.publishAsync('pico/kitchen/ha/set/prompt', prompt, { qos: 1 })
      const done = await status((b) => b.state === 'done', from)
      jobs.add(done.job)
    }
    // Each prompt went to one bridge (a shared subscription): no other job ever spoke on the display's status.
    const spoke = new Set(seen.filter((m) => m.topic === 'pico/kitchen/status').map((m) => m.body.job))
    spoke.delete(undefined)
    expect(jobs.size).toBe(2)
    expect(spoke).toEqual(jobs)
    // Two links, one per bridge: neither took the other's over.
    for (const b of bridges)
      expect(b.logs.filter((l) => l.msg === 'Home Assistant link connected')).toHaveLength(1)
  })

  it('keeps the displays available in Home Assistant while one of the two bridges stops', async () => {
    const from = said.length
    await bridges[0]!.stop()
    // The stopping bridge said offline on the topic both share; the one still running says online again.
    await new Promise<void>((resolve) => {
      const look = () => {
        const after = said.slice(from)
        if (after.includes('offline') && after.at(-1) === 'online') resolve()
      }
      ha.on('message', look)
      look()
    })
    // What a Home Assistant starting now reads: the retained value.
    const late = connect(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0 })
    const retained = new Promise<string>((resolve) =>
      late.on('message', (_topic, payload, packet) => packet.retain && resolve(payload.toString())),
    )
    await late.subscribeAsync('pico/bridge/ha/availability', { qos: 1 })
    expect(await retained).toBe('online')
    await late.endAsync()
    // And the one left takes Home Assistant's prompts.
    const start = seen.length
    await ha.publishAsync('pico/kitchen/ha/set/prompt', 'a harbour at night', { qos: 1 })
    await status((b) => b.state === 'done', start)
  })
})

describe('Home Assistant on a broker of its own while the displays use MQTT_URL', () => {
  it('talks to Home Assistant only on HA_MQTT_URL, and carries its prompts to the displays on MQTT_URL', async () => {
    const displays = await startMosquitto('allow_anonymous true')
    const home = await startMosquitto('allow_anonymous true')
    const onDisplays: string[] = []
    const watcher = connect(displays.url, { protocolVersion: 5, reconnectPeriod: 0 })
    watcher.on('message', (topic) => onDisplays.push(topic))
    await new Promise((resolve) => watcher.once('connect', resolve))
    await watcher.subscribeAsync(['homeassistant/#', 'pico/+/ha/#', 'pico/bridge/ha/#'], { qos: 1 })
    const homeHa = connect(home.url, { protocolVersion: 5, reconnectPeriod: 0 })
    const configs: string[] = []
    homeHa.on('message', (topic) => configs.push(topic))
    await new Promise((resolve) => homeHa.once('connect', resolve))
    await homeHa.subscribeAsync('homeassistant/device/+/config', { qos: 1 })
    const bridge = await startBridge({ MQTT_URL: displays.url, HA_MQTT_URL: home.url, DEMO_STEP_MS: 5 })
    const hall = await connectDevice(displays.url, 'hall')
    try {
      await hall.publish('get')
      await new Promise<void>((resolve) => {
        const look = () => configs.includes('homeassistant/device/pico_hall/config') && resolve()
        homeHa.on('message', look)
        look()
      })
      const frames = hall.frames.length
      await homeHa.publishAsync('pico/hall/ha/set/prompt', 'a kite', { qos: 1 })
      await hall.waitForFrames(frames + 1)
      // A message on the displays' broker after the Home Assistant traffic above: nothing of it came here.
      await watcher.publishAsync('homeassistant/sync', 'x', { qos: 1 })
      await new Promise<void>((resolve) => {
        const look = () => onDisplays.includes('homeassistant/sync') && resolve()
        watcher.on('message', look)
        look()
      })
      expect(onDisplays).toEqual(['homeassistant/sync'])
      // Home Assistant's broker heard the link at MQTT 5 (Mosquitto logs the protocol as p5).
      expect(home.output()).toMatch(/as \S+-ha-pico_bridge \(p5,/)
    } finally {
      await hall.close()
      await bridge.stop()
      await watcher.endAsync()
      await homeHa.endAsync()
      await displays.stop()
      await home.stop()
    }
  })
})

describe('Home Assistant on an external broker, which shows the bridge no connections', () => {
  it('keeps a quiet display available across a bridge restart, so Home Assistant still sends it prompts', async () => {
    const mosquitto = await startMosquitto('allow_anonymous true')
    const ha = connect(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0 })
    const said: string[] = []
    ha.on('message', (_topic, payload) => said.push(payload.toString()))
    await new Promise((resolve) => ha.once('connect', resolve))
    await ha.subscribeAsync('pico/porch/ha/availability', { qos: 1 })
    const until = (match: () => boolean) =>
      new Promise<void>((resolve) => {
        const look = () => match() && resolve()
        ha.on('message', look)
        look()
      })
    const bridge = await startBridgeFor({ MQTT_URL: mosquitto.url, DEMO_STEP_MS: 5 })
    // Connected all along, and it speaks only once, as the firmware does after it connects.
    const porch = await connectDevice(mosquitto.url, 'porch')
    try {
      await porch.client.publishAsync('pico/porch/info', JSON.stringify({ fw: '1.4.0' }), { qos: 1 })
      await until(() => said.includes('online'))
      const from = said.length
      await bridge.restart()
      // The new bridge has heard nothing from it, yet it says the display is available.
      await until(() => said.length > from)
      expect(said.slice(from)).not.toContain('offline')
      expect(said.at(-1)).toBe('online')
      const frames = porch.frames.length
      await ha.publishAsync('pico/porch/ha/set/prompt', 'a porch at noon', { qos: 1 })
      await porch.waitForFrames(frames + 1)
    } finally {
      await porch.close()
      await bridge.stop()
      await ha.endAsync()
      await mosquitto.stop()
    }
  })
})
