import { get, type IncomingMessage } from 'node:http'
import { connect as connectMqtt } from 'mqtt'
import { describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { httpCall } from '../support/http.ts'
import { startMosquitto } from '../support/mosquitto.ts'

/*
 * Who gets frames and who is online, as the embedded broker's subscription index keeps them (issue 14): a
 * persistent session that comes back gets frames on the subscriptions Aedes restored without a SUBSCRIBE,
 * an UNSUBSCRIBE stops them, and the device list follows both. The dashboard's event stream hears a display
 * come and go from the broker's presence notices, not from its 15 s look at the list, and so does the
 * display's availability in Home Assistant (no longer its 10 s poll).
 */

interface DeviceBody {
  id: string
  connected: boolean
}

async function connectedIds(bridge: TestBridge): Promise<string[]> {
  const res = await httpCall(bridge.httpPort!, '/api/v1/devices')
  const { devices } = res.json<{ devices: DeviceBody[] }>()
  return devices.filter((d) => d.connected).map((d) => d.id)
}

interface StreamEvent {
  event: string
  data: unknown
}

/** The dashboard's event stream, read as it comes; `next` resolves with the first event past `from` that matches. */
async function openEvents(port: number) {
  const res = await new Promise<IncomingMessage>((resolve, reject) =>
    get(
      { host: '127.0.0.1', port, path: '/api/v1/events', headers: { accept: 'text/event-stream' } },
      resolve,
    ).on('error', reject),
  )
  res.setEncoding('utf8')
  const events: StreamEvent[] = []
  const waiters = new Set<() => void>()
  let text = ''
  res.on('data', (data: string) => {
    text += data
    let end = text.indexOf('\n\n')
    while (end >= 0) {
      const block = text.slice(0, end)
      text = text.slice(end + 2)
      const event = /^event: (.*)$/m.exec(block)?.[1]
      const data = /^data: (.*)$/m.exec(block)?.[1]
      if (event && data) events.push({ event, data: JSON.parse(data) })
      end = text.indexOf('\n\n')
    }
    for (const w of [...waiters]) w()
  })
  return {
    events,
    next(match: (e: StreamEvent) => boolean, from: number): Promise<StreamEvent> {
      return new Promise((resolve) => {
        const look = () => {
          const found = events.slice(from).find(match)
          if (!found) return
          waiters.delete(look)
          resolve(found)
        }
        waiters.add(look)
        look()
      })
    },
    close: () => res.destroy(),
  }
}

/** Whether a `devices` (or snapshot) list shows the display connected. */
function shows(data: unknown, id: string): boolean | undefined {
  const list = (Array.isArray(data) ? data : (data as { devices: DeviceBody[] }).devices) as DeviceBody[]
  return list.find((d) => d.id === id)?.connected
}

/** Resolves once the broker logs `msg` for the client, counting only lines from now on. */
function brokerSays(bridge: TestBridge, msg: string, clientId: string): Promise<unknown> {
  const from = bridge.logs.length
  return bridge.line((l) => l.msg === msg && l.clientId === clientId && bridge.logs.indexOf(l) >= from)
}

describe('who gets frames and who is online', () => {
  it('delivers to a restored persistent session, stops on unsubscribe, and lists the display accordingly', async () => {
    const bridge = await startBridge({ HTTP_PORT: 0 })
    try {
      const clientId = 'den-persistent'
      const persistent = { clientId, mqtt: { clean: false } }
      const den = await connectDevice(bridge.mqttUrl, 'den', persistent)
      await den.prompt('a first tree')
      await den.waitForFrames(1)
      expect(await connectedIds(bridge)).toEqual(['den'])
      const left = brokerSays(bridge, 'client disconnected', clientId)
      await den.close()
      await left
      expect(await connectedIds(bridge)).toEqual([])

      // Back with its session: no SUBSCRIBE, yet its frame topic is held again.
      const back = brokerSays(bridge, 'client connected', clientId)
      const again = await connectDevice(bridge.mqttUrl, 'den', { ...persistent, subscribe: false })
      await back
      expect(await connectedIds(bridge)).toEqual(['den'])
      const prompter = await connectDevice(bridge.mqttUrl, 'den', { subscribe: false })
      await prompter.prompt('a second tree')
      const [second] = await again.waitForFrames(1)
      expect(second!.frameId).toBeGreaterThan(0)

      // Unsubscribed, it gets no more frames, and a watcher shows that one was sent.
      await again.client.unsubscribeAsync(['pico/den/frame', 'pico/den/status'])
      expect(await connectedIds(bridge)).toEqual([])
      const watcher = await connectDevice(bridge.mqttUrl, 'den', { subscribe: false })
      await watcher.client.subscribeAsync('pico/+/frame', { qos: 1 })
      const chunksBefore = again.chunks.length
      await prompter.prompt('a third tree')
      await watcher.waitForFrames(1)
      // Whatever was queued for `again` would have been written before this PUBACK on its own socket.
      await again.client.publishAsync('pico/den/note', 'sync', { qos: 1 })
      expect(again.chunks.length).toBe(chunksBefore)
      // A `pico/+/frame` watcher names no display.
      expect(await connectedIds(bridge)).toEqual([])
      await Promise.all([again.close(), prompter.close(), watcher.close()])
    } finally {
      await bridge.stop()
    }
  })

  // Under the stream's 15 s heartbeat, at which the list used to be looked at: a notice must bring it.
  it('shows a display coming and going on the dashboard stream as it happens', {
    timeout: 10_000,
  }, async () => {
    const bridge = await startBridge({ HTTP_PORT: 0 })
    const stream = await openEvents(bridge.httpPort!)
    try {
      const hall = await connectDevice(bridge.mqttUrl, 'hall')
      // A subscription alone does not list a display; one message does.
      await hall.publish('get')
      const snapshot = await stream.next((e) => e.event === 'snapshot', 0)
      let from = stream.events.length
      if (shows(snapshot.data, 'hall') !== true)
        await stream.next((e) => e.event === 'devices' && shows(e.data, 'hall') === true, 0)
      from = stream.events.length

      await hall.close()
      await stream.next((e) => e.event === 'devices' && shows(e.data, 'hall') === false, from)
      from = stream.events.length

      const back = await connectDevice(bridge.mqttUrl, 'hall')
      await stream.next((e) => e.event === 'devices' && shows(e.data, 'hall') === true, from)
      await back.close()
    } finally {
      stream.close()
      await bridge.stop()
    }
  })

  // Under the Home Assistant link's 10 s poll of who is connected: the notice must bring it.
  it('turns the display available and unavailable in Home Assistant as it comes and goes', {
    timeout: 8_000,
  }, async () => {
    const mosquitto = await startMosquitto('allow_anonymous true')
    const ha = connectMqtt(mosquitto.url, { protocolVersion: 5, clientId: 'fake-ha', reconnectPeriod: 0 })
    const said: string[] = []
    const waiters = new Set<() => void>()
    ha.on('message', (_topic, payload) => {
      said.push(payload.toString())
      for (const w of [...waiters]) w()
    })
    const says = (value: string, from: number) =>
      new Promise<void>((resolve) => {
        const look = () => {
          if (!said.slice(from).includes(value)) return
          waiters.delete(look)
          resolve()
        }
        waiters.add(look)
        look()
      })
    await new Promise((resolve) => ha.once('connect', resolve))
    const bridge = await startBridge({ HA_MQTT_URL: mosquitto.url })
    try {
      await ha.subscribeAsync('pico/hall/ha/availability', { qos: 1 })
      const hall = await connectDevice(bridge.mqttUrl, 'hall')
      await hall.publish('get')
      await says('online', 0)

      let from = said.length
      await hall.close()
      await says('offline', from)

      from = said.length
      const back = await connectDevice(bridge.mqttUrl, 'hall')
      await says('online', from)
      await back.close()
    } finally {
      await bridge.stop()
      await ha.endAsync()
      await mosquitto.stop()
    }
  })
})
