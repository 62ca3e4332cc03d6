import type { Logger } from 'pino'
import type { BrokerPort, FrameTarget } from '../broker/port.ts'
import type { Clock } from '../clock.ts'
import type { EventBus } from '../events.ts'
import { type StatusEvent, statusMessage } from '../protocol/status.ts'

/*
 * What the jobs send to the devices: status messages (retained) and frames, through the broker port, with
 * a notice on the event bus for metrics and the dashboard. Publishing never throws into a job: a broker that
 * is gone costs a warning, and the job goes on.
 */

export interface DeviceOutput {
  status(
    deviceId: string,
    job: { id: string; requestId: string | number | undefined },
    event: StatusEvent,
  ): void
  /** Hands a frame to the device's subscribers; returns how many clients get it. */
  frame(deviceId: string, chunks: readonly Buffer[], options: FrameTarget & { preview: boolean }): number
}

export function createDeviceOutput(deps: {
  broker: BrokerPort
  clock: Clock
  events: EventBus
  log: Logger
}): DeviceOutput {
  const { broker, events, log } = deps
  return {
    status(deviceId, job, event) {
      const body = statusMessage(event, job, deps.clock.now())
      broker.publishStatus(deviceId, JSON.stringify(body)).then(
        () => events.emit('status.published', { deviceId, body }),
        (err: unknown) => log.warn({ deviceId, reason: (err as Error).message }, 'status not published'),
      )
    },
    frame(deviceId, chunks, options) {
      const clients = broker.sendFrame(deviceId, chunks, options)
      events.emit('frame.sent', { deviceId, preview: options.preview, clients, chunks })
      log.debug({ deviceId, chunks: chunks.length, clients, preview: options.preview }, 'frame queued')
      return clients
    },
  }
}
