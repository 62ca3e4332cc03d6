import { once } from 'node:events'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { connect, type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * Home Assistant's broker that is there but does not answer (a host that hangs, a network that drops packets
 * without a reset): the link's socket stays open and nothing it sends is read. The displays must not notice
 * (issue 12, "never holds up the displays"). A TCP relay in front of a real Mosquitto plays the hung broker:
 * while stalled it reads what either side sends and passes none of it on.
 */

interface Relay {
  url: string
  /** Stops passing bytes on; what arrives is counted and held. */
  stall(): void
  /** Bytes the bridge sent while the relay was stalled. */
  heldFromBridge(): number
  close(): Promise<void>
}

async function startRelay(targetPort: number, stalled: boolean): Promise<Relay> {
  let stopped = stalled
  let held = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((inbound) => {
    const outbound = netConnect(targetPort, '127.0.0.1')
    for (const s of [inbound, outbound]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => {
        inbound.destroy()
        outbound.destroy()
      })
    }
    inbound.on('data', (data: Buffer) => {
      if (stopped) held += data.length
      else outbound.write(data)
    })
    outbound.on('data', (data: Buffer) => {
      if (!stopped) inbound.write(data)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (typeof address !== 'object' || address === null) throw new Error('no port')
  return {
    url: `mqtt://127.0.0.1:${address.port}`,
    stall() {
      stopped = true
    },
    heldFromBridge: () => held,
    async close() {
      for (const s of sockets) s.destroy()
      server.close()
      await once(server, 'close')
    },
  }
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const clean of cleanups.splice(0).reverse()) await clean()
})

async function setUp(stalled: boolean): Promise<{ mosquitto: RunningMosquitto; relay: Relay }> {
  const mosquitto = await startMosquitto('allow_anonymous true')
  cleanups.push(() => mosquitto.stop())
  const relay = await startRelay(mosquitto.port, stalled)
  cleanups.push(() => relay.close())
  return { mosquitto, relay }
}

async function display(bridge: TestBridge, id: string): Promise<TestDevice> {
  const device = await connectDevice(bridge.mqttUrl, id)
  cleanups.push(() => device.close())
  return device
}

/** Two pictures in a row, each drawn and announced done on the display. */
async function twoPictures(device: TestDevice): Promise<void> {
  for (const prompt of ['a first picture', 'a second picture']) {
    const from = device.statuses.length
    const frames = device.frames.length
    await device.prompt(prompt)
    await device.waitForFrames(frames + 1)
    await device.waitForStatus((s) => s.state === 'done', from)
  }
}

describe('Home Assistant’s broker hangs', () => {
  it('does not hold up the start: a bridge whose link never gets its CONNACK serves the displays', async () => {
    const { relay } = await setUp(true)
    const bridge = await startBridge({ HA_MQTT_URL: relay.url, DEMO_STEP_MS: 5 })
    cleanups.push(() => bridge.stop())
    const kitchen = await display(bridge, 'kitchen')
    await twoPictures(kitchen)
    // The link did knock: its CONNECT is what the relay held.
    expect(relay.heldFromBridge()).toBeGreaterThan(0)
    expect(bridge.logs.some((l) => l.msg === 'Home Assistant link connected')).toBe(false)
  })

  it('does not hold up the displays when it stops answering while connected', async () => {
    const { mosquitto, relay } = await setUp(false)
    const ha: MqttClient = connect(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0 })
    cleanups.push(() => ha.endAsync(true))
    const configs: string[] = []
    ha.on('message', (topic) => configs.push(topic))
    await new Promise((resolve) => ha.once('connect', resolve))
    await ha.subscribeAsync('homeassistant/device/+/config', { qos: 1 })
    const bridge = await startBridge({ HA_MQTT_URL: relay.url, DEMO_STEP_MS: 5 })
    cleanups.push(() => bridge.stop())
    const kitchen = await display(bridge, 'kitchen')
    await kitchen.publish('get')
    await bridge.line((l) => l.msg === 'Home Assistant link connected')
    await new Promise<void>((resolve) => {
      const look = () => configs.includes('homeassistant/device/pico_kitchen/config') && resolve()
      ha.on('message', look)
      look()
    })

    relay.stall()
    await twoPictures(kitchen)
    // The link went on sending (statuses, the pictures as PNG) into a broker that read none of it.
    expect(relay.heldFromBridge()).toBeGreaterThan(10_000)
  })
})
