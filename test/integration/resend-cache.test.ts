import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { startBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'

/*
 * A resend of the last frame (on `get`, and to a display that subscribes) comes from the encoded chunks the
 * bridge keeps in memory (jobs/last-frame.ts, issue 14): with the frame's files gone from DATA_DIR, it is
 * still sent, byte for byte as the first time. A disk read would find nothing, and without the pixels there
 * is nothing to encode again. After a restart the cache is empty: the first resend reads the file, and the
 * ones after it need the file no more.
 */

const FRAME_TIMEOUT_MS = 10_000

async function removeFrameFiles(dataDir: string, deviceId: string): Promise<void> {
  for (const ext of ['frame', 'source'])
    await rm(join(dataDir, 'frames', `${deviceId}.${ext}`), { force: true })
}

describe('resending the last frame', () => {
  it('sends the kept chunks again with the frame file gone from disk', {
    timeout: FRAME_TIMEOUT_MS * 2,
  }, async () => {
    const bridge = await startBridge()
    const dataDir = bridge.dataDir
    try {
      const den = await connectDevice(bridge.mqttUrl, 'den')
      await den.prompt('a tree')
      await den.waitForStatus((s) => s.state === 'done')
      await den.waitForFrames(1)
      const first = den.chunks.slice()
      await removeFrameFiles(dataDir, 'den')

      await den.publish('get')
      await den.waitForFrames(2)
      expect(den.chunks.slice(first.length)).toEqual(first)

      const rebooted = await connectDevice(bridge.mqttUrl, 'den')
      await rebooted.waitForFrames(1)
      expect(rebooted.chunks).toEqual(first)
      // Nor was the file even looked for: the store logs a frame it cannot read.
      expect(bridge.logs.filter((l) => l.msg === 'stored frame unreadable')).toEqual([])

      // A new frame for the next run, written to disk as usual.
      const from = den.statuses.length
      await den.prompt('another tree')
      await den.waitForStatus((s) => s.state === 'done', from)
      await Promise.all([den.close(), rebooted.close()])
    } finally {
      await bridge.app.stop('restart')
    }

    // A new run: nothing in memory yet, so the frame comes from disk once and is kept from then on.
    const restarted = await startBridge({}, dataDir)
    try {
      const den = await connectDevice(restarted.mqttUrl, 'den', { subscribe: false })
      await den.client.subscribeAsync(['pico/den/status', 'pico/den/frame'], { qos: 1 })
      await den.waitForFrames(1)
      const fromDisk = den.chunks.slice()
      await removeFrameFiles(dataDir, 'den')
      await den.publish('get')
      await den.waitForFrames(2)
      expect(den.chunks.slice(fromDisk.length)).toEqual(fromDisk)
      expect(restarted.logs.filter((l) => l.msg === 'stored frame unreadable')).toEqual([])
      await den.close()
    } finally {
      await restarted.stop()
    }
  })
})
