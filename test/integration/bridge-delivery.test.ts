import { once } from 'node:events'
import { connect as connectTcp } from 'node:net'
import { describe, expect, it } from 'vitest'
import { startBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { connectPacket, frozenSubscriber, oversizedPublishHeader } from '../support/raw-mqtt.ts'

describe('frame delivery', () => {
  it('sends the last frame again on get and when a device subscribes, also after a restart', async () => {
    const bridge = await startBridge({ FRAME_COMPRESS: true })
    const device = await connectDevice(bridge.mqttUrl, 'den')
    await device.prompt('a tree')
    const [first] = await device.waitForFrames(1)

    await device.publish('get')
    const [, again] = await device.waitForFrames(2)
    expect(again!.frameId).toBe(first!.frameId)
    expect(again!.pixels.equals(first!.pixels)).toBe(true)

    const rebooted = await connectDevice(bridge.mqttUrl, 'den')
    const [onSubscribe] = await rebooted.waitForFrames(1)
    expect(onSubscribe!.pixels.equals(first!.pixels)).toBe(true)

    // A watcher of every device sees live frames but is not sent every stored frame on subscribe.
    const watcher = await connectDevice(bridge.mqttUrl, 'den', { subscribe: false })
    await watcher.client.subscribeAsync('pico/#', { qos: 1 })
    await device.prompt('another tree')
    await watcher.waitForFrames(1)
    expect(watcher.frames[0]!.frameId).toBe(first!.frameId + 1)

    await Promise.all([device.close(), rebooted.close(), watcher.close()])
    const dataDir = bridge.dataDir
    await bridge.app.stop('restart')

    const restarted = await startBridge({}, dataDir)
    try {
      const back = await connectDevice(restarted.mqttUrl, 'den')
      const [kept] = await back.waitForFrames(1)
      expect(kept!.frameId).toBe(first!.frameId + 1)
      await back.prompt('a third tree')
      const done = await back.waitForStatus((s) => s.state === 'done')
      expect(done.frame_id).toBe(first!.frameId + 2)
      await back.close()
    } finally {
      await restarted.stop()
    }
  })

  it('keeps sending to a healthy device while another one has stopped reading', async () => {
    const bridge = await startBridge()
    try {
      // The frozen client watches every device, so every frame is also queued for it.
      const frozen = await frozenSubscriber(bridge.mqttPort, 'pico/#')
      const healthy = await connectDevice(bridge.mqttUrl, 'healthy')
      const frames = 40
      for (let i = 0; i < frames; i++) {
        const from = healthy.statuses.length
        await healthy.prompt({ prompt: `picture ${i}`, seed: i })
        await healthy.waitForStatus((s) => s.state === 'done', from)
      }
      // 40 frames of 115 KB are far more than the frozen socket's buffers hold, yet all arrived here.
      await healthy.waitForFrames(frames)
      expect(frozen.bytesRead).toBeLessThan(frames * 115_200)
      await healthy.close()
      frozen.destroy()
    } finally {
      await bridge.stop()
    }
  })

  it('closes a connection that announces a packet over MQTT_MAX_PACKET and keeps serving', async () => {
    const bridge = await startBridge({ MQTT_MAX_PACKET: 65_536 })
    try {
      const socket = connectTcp({ host: '127.0.0.1', port: bridge.mqttPort })
      await once(socket, 'connect')
      socket.write(connectPacket('big-sender'))
      socket.write(oversizedPublishHeader(10_000_000))
      socket.resume()
      await once(socket, 'close')
      expect(bridge.logs.some((l) => l.msg === 'MQTT packet too large' && l.size === 10_000_000)).toBe(true)

      const device = await connectDevice(bridge.mqttUrl, 'after-big')
      await device.prompt('still here')
      await device.waitForStatus((s) => s.state === 'done')
      await device.close()
    } finally {
      await bridge.stop()
    }
  })

  it('shows a pico/# watcher every status, even those racing the prompt that caused them', async () => {
    const bridge = await startBridge()
    try {
      const watcher = await connectDevice(bridge.mqttUrl, 'raced', { subscribe: false })
      await watcher.client.subscribeAsync('pico/#', { qos: 0 })
      const sender = await connectDevice(bridge.mqttUrl, 'raced', { subscribe: false })
      for (let i = 0; i < 5; i++) {
        const from = watcher.statuses.length
        await sender.prompt(`race ${i}`, 0)
        await watcher.waitForStatus((s) => s.state === 'done', from)
        const states = watcher.statuses.slice(from).map((s) => s.state)
        expect(states).toEqual(['generating', 'sending', 'done'])
      }
      await Promise.all([watcher.close(), sender.close()])
    } finally {
      await bridge.stop()
    }
  })

  it('publishes bridge/state online (retained) and offline on stop', async () => {
    const bridge = await startBridge()
    const watcher = await connectDevice(bridge.mqttUrl, 'state', { subscribe: false })
    const states: string[] = []
    watcher.client.on('message', (topic, payload) => {
      if (topic === 'pico/bridge/state')
        states.push((JSON.parse(payload.toString()) as { state: string }).state)
    })
    await watcher.client.subscribeAsync('pico/bridge/state', { qos: 1 })
    await expect.poll(() => states).toEqual(['online'])
    await bridge.stop()
    await expect.poll(() => states).toEqual(['online', 'offline'])
    await watcher.close()
  })
})
