import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { AppError, toAppError } from '../errors.ts'
import { parsePromptPayload } from '../protocol/prompt.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { Topics } from '../protocol/topics.ts'
import { createDeviceJob, type DeviceJobDeps } from './device-job.ts'
import type { Job, JobQueue } from './queue.ts'

/*
 * What devices send to the bridge: `prompt`, `get` and `cancel` on `<base>/<id>/...`. Runs inside the
 * broker's publish authorisation (before the QoS 1 acknowledgement), so it only validates and queues; the
 * slow work happens in the queue.
 */

export interface Intake {
  handle(topic: string, payload: Buffer, clientId: string): void
  /** Queues a prompt for a device (MQTT or HTTP); returns the job, or throws an AppError. */
  submitPrompt(deviceId: string, prompt: ReturnType<typeof parsePromptPayload>): Job
}

export function newJobId(): string {
  return randomBytes(6).toString('hex')
}

export function createIntake(deps: {
  topics: Topics
  queue: JobQueue
  jobDeps: DeviceJobDeps
  /** Sends the device's last frame again to its subscribers. */
  resend(deviceId: string): Promise<boolean>
  /** Told about every valid device id that sends something, for the device list. */
  seen(deviceId: string): void
  log: Logger
}): Intake {
  const log = deps.log

  function reject(deviceId: string, err: AppError, requestId?: string | number): void {
    const job: Pick<Job, 'id' | 'requestId'> = { id: newJobId(), requestId }
    const event: StatusEvent = { state: 'error', error: err.toJSON() }
    deps.jobDeps.publishStatus(deviceId, job as Job, event)
  }

  function submitPrompt(deviceId: string, prompt: ReturnType<typeof parsePromptPayload>): Job {
    deps.seen(deviceId)
    const job = createDeviceJob(deps.jobDeps, newJobId(), deviceId, prompt)
    deps.queue.submit(job)
    log.info({ deviceId, jobId: job.id, prompt: prompt.prompt.slice(0, 200) }, 'prompt queued')
    return job
  }

  return {
    submitPrompt,
    handle(topic, payload, clientId) {
      const parsed = deps.topics.parseInbound(topic)
      if (!parsed) return
      if (parsed.deviceId === null) {
        log.warn({ topic, clientId }, 'message for an invalid device id ignored')
        if (parsed.kind === 'prompt' && parsed.rawId.length <= 128) {
          reject(
            parsed.rawId,
            new AppError(
              'E_BAD_PROMPT',
              `device id "${parsed.rawId}" is not allowed: use 1-64 letters, digits, _ or - (not "bridge")`,
            ),
          )
        }
        return
      }
      const deviceId = parsed.deviceId
      deps.seen(deviceId)
      switch (parsed.kind) {
        case 'prompt': {
          let prompt: ReturnType<typeof parsePromptPayload>
          try {
            prompt = parsePromptPayload(payload)
          } catch (err) {
            const appErr = toAppError(err)
            log.warn({ deviceId, clientId, code: appErr.code, err: appErr.message }, 'prompt rejected')
            reject(deviceId, appErr)
            return
          }
          try {
            submitPrompt(deviceId, prompt)
          } catch (err) {
            const appErr = toAppError(err)
            log.warn({ deviceId, clientId, code: appErr.code, err: appErr.message }, 'prompt rejected')
            reject(deviceId, appErr, prompt.requestId)
          }
          return
        }
        case 'cancel': {
          const n = deps.queue.cancelDevice(deviceId, 'requested')
          log.info({ deviceId, clientId, cancelled: n }, 'cancel requested')
          return
        }
        case 'get':
          deps.resend(deviceId).then(
            (sent) => log.debug({ deviceId, clientId, sent }, 'last frame requested'),
            (err: unknown) => log.error({ err, deviceId }, 'resending the last frame failed'),
          )
          return
      }
    },
  }
}
