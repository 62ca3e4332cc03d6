import { describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { httpCall } from '../support/http.ts'

/*
 * Who gets frames and who is online, as the embedded broker's subscription index keeps them (issue 14): a
 * persistent session that comes back gets frames on the subscriptions Aedes restored without a SUBSCRIBE,
 * an UNSUBSCRIBE stops them, and the device list follows both.
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

/** Resolves once the broker logs `msg` for the client, counting only lines from now on. */
function brokerSays(bridge: TestBridge, msg: string, clientId: string): Promise<unknown> {
  const from = bridge.logs.length
  return bridge.line((l) => l.msg === msg && l.clientId === clientId && bridge.logs.indexOf(l) >= from)
}

describe('the subscription index behind frame delivery', () => {
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
})
