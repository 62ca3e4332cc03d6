import type { StatusMessage } from '../src/protocol/status.ts'
import { connectDevice, type TestDevice } from '../test/support/device.ts'

/*
 * The simulated display of test/support/device.ts (mqtt.js, QoS 1, CRC-checked reassembly) with clocks on
 * it: when the last band of each frame arrived, and how long after it the `done` status came.
 */

export interface FrameTiming {
  /** From just before the prompt was published to the arrival of the frame's last band. */
  frameMs: number
  /** performance.now() just before the prompt was published. */
  startedAt: number
}

export interface TimedDevice {
  id: string
  /** Publishes a prompt (QoS 1) and resolves when its frame is complete; rejects on an error status. */
  prompt(text: string, timeoutMs: number): Promise<FrameTiming>
  /** Resolves once the status `done` for the last frame arrived (or after `timeoutMs`, false). */
  waitDone(timeoutMs: number): Promise<boolean>
  /** Milliseconds from each frame's last band to its `done` status. */
  doneLagsMs: number[]
  /** `done` statuses that arrived before their frame's last band. */
  doneBeforeFrame: number
  /** How many status messages of each state arrived. */
  statusCounts: Map<string, number>
  /** error and cancelled statuses, as `state code`. */
  failures: string[]
  close(): Promise<void>
}

export async function connectTimedDevice(url: string, id: string): Promise<TimedDevice> {
  const device: TestDevice = await connectDevice(url, id)
  const frameTopic = `pico/${id}/frame`
  const statusTopic = `pico/${id}/status`
  const lastBandAt = new Map<number, number>()
  const doneAt = new Map<number, number>()
  const doneLagsMs: number[] = []
  const failures: string[] = []
  const statusCounts = new Map<string, number>()
  let doneBeforeFrame = 0
  let lastFrameId = -1
  let pending: { resolve: (at: number) => void; reject: (err: Error) => void } | undefined
  let doneWaiter: (() => void) | undefined

  device.client.on('error', (err) => failures.push(`client error ${err.message}`))
  // Registered after the device's own listener, so a complete frame is already assembled (and CRC-checked).
  device.client.on('message', (topic) => {
    const at = performance.now()
    if (topic === frameTopic) {
      if (device.frames.length === 0) return
      const frame = device.frames.at(-1)!
      // Keep memory flat over thousands of frames.
      device.frames.length = 0
      device.chunks.length = 0
      // A preview (flag bit 1) is not the frame the prompt asked for; the final one follows.
      if (frame.preview) return
      lastFrameId = frame.frameId
      if (doneAt.delete(frame.frameId)) doneBeforeFrame++
      else lastBandAt.set(frame.frameId, at)
      pending?.resolve(at)
      pending = undefined
    } else if (topic === statusTopic) {
      const status = device.statuses.at(-1)
      device.statuses.length = 0
      if (status) onStatus(status, at)
    }
  })

  function onStatus(status: StatusMessage, at: number): void {
    statusCounts.set(status.state, (statusCounts.get(status.state) ?? 0) + 1)
    if (status.state === 'done') {
      const frameId = status.frame_id as number
      const band = lastBandAt.get(frameId)
      if (band === undefined) doneAt.set(frameId, at)
      else doneLagsMs.push(at - band)
      lastBandAt.delete(frameId)
      if (frameId === lastFrameId) doneWaiter?.()
    } else if (status.state === 'error' || status.state === 'cancelled') {
      const error = status.error as { code?: string } | undefined
      const why = `${status.state} ${error?.code ?? String(status.reason ?? '')}`
      failures.push(why)
      pending?.reject(new Error(`device ${id}: ${why}`))
      pending = undefined
    }
  }

  return {
    id,
    doneLagsMs,
    failures,
    statusCounts,
    get doneBeforeFrame() {
      return doneBeforeFrame
    },
    async prompt(text, timeoutMs) {
      let timer: NodeJS.Timeout | undefined
      const arrived = new Promise<number>((resolve, reject) => {
        pending = { resolve, reject }
        timer = setTimeout(
          () => reject(new Error(`device ${id}: no frame within ${timeoutMs} ms`)),
          timeoutMs,
        )
      })
      const started = performance.now()
      device.client.publish(`pico/${id}/prompt`, text, { qos: 1 })
      try {
        return { frameMs: (await arrived) - started, startedAt: started }
      } finally {
        clearTimeout(timer)
        pending = undefined
      }
    },
    waitDone(timeoutMs) {
      if (!lastBandAt.has(lastFrameId)) return Promise.resolve(true)
      return new Promise((resolve) => {
        const timer = setTimeout(() => finish(false), timeoutMs)
        function finish(ok: boolean) {
          clearTimeout(timer)
          doneWaiter = undefined
          resolve(ok)
        }
        doneWaiter = () => finish(true)
      })
    },
    close: () => device.close(),
  }
}
