import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { AppError, toAppError } from '../errors.ts'
import { type PromptRequest, parsePromptPayload } from '../protocol/prompt.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { Topics } from '../protocol/topics.ts'
import type { JobJournal, JournalJob } from '../store/job-journal.ts'
import { createDeviceJob, type DeviceJobDeps } from './device-job.ts'
import type { Job, JobQueue } from './queue.ts'
import type { RateLimit } from './rate-limit.ts'

/*
 * What devices send to the bridge: `prompt`, `get` and `cancel` on `<base>/<id>/...`. Runs inside the
 * broker's publish authorisation (before the QoS 1 acknowledgement), so it only validates and queues; the
 * slow work happens in the queue.
 */

export interface Intake {
  /** Handles one message; the promise settles once what must be on disk is (never rejects). */
  handle(topic: string, payload: Buffer, clientId: string): Promise<void>
  /**
   * Queues a prompt for a device (MQTT or HTTP) and records it on disk: `recorded` resolves once it is
   * fsync'd, and only then may the caller acknowledge it. Throws an AppError when the prompt is refused.
   */
  submitPrompt(deviceId: string, prompt: PromptRequest): { job: Job; recorded: Promise<void> }
  /** Queues again the jobs the journal had open at start (same ids, no limits), in their order. */
  replay(jobs: JournalJob[]): number
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
  journal: JobJournal
  rateLimit: RateLimit
  rateLimitPerMinute: number
  now(): Date
  log: Logger
}): Intake {
  const log = deps.log

  function reject(deviceId: string, err: AppError, requestId?: string | number): void {
    const event: StatusEvent = { state: 'error', error: err.toJSON() }
    deps.jobDeps.publishStatus(deviceId, { id: newJobId(), requestId }, event)
  }

  /** A rejected prompt is the sender's fault (warn), unless it is a bug in the bridge (error, with stack). */
  function logRejection(err: unknown, deviceId: string, clientId: string): AppError {
    const appErr = toAppError(err)
    if (appErr.code === 'E_INTERNAL')
      log.error({ err, deviceId, clientId }, 'prompt failed inside the bridge')
    else log.warn({ deviceId, clientId, code: appErr.code, err: appErr.message }, 'prompt rejected')
    return appErr
  }

  function submitPrompt(deviceId: string, prompt: PromptRequest): { job: Job; recorded: Promise<void> } {
    deps.seen(deviceId)
    if (!deps.rateLimit.take(deviceId)) {
      throw new AppError(
        'E_RATE_LIMITED',
        `more than ${deps.rateLimitPerMinute} prompts from ${deviceId} in the last minute (RATE_LIMIT); wait a little`,
      )
    }
    const job = createDeviceJob(deps.jobDeps, newJobId(), deviceId, prompt)
    deps.queue.submit(job)
    const recorded = deps.journal
      .add({ id: job.id, deviceId, prompt: { ...prompt }, createdAt: deps.now().toISOString() })
      .catch((err: unknown) => {
        // The job runs; only its survival of a crash is lost. Say so loudly: DATA_DIR is full or read-only.
        log.error(
          { err, deviceId, jobId: job.id },
          'could not record the job in DATA_DIR; it will not survive a crash',
        )
      })
    log.info({ deviceId, jobId: job.id, prompt: prompt.prompt.slice(0, 200) }, 'prompt queued')
    return { job, recorded }
  }

  function replay(jobs: JournalJob[]): number {
    for (const saved of jobs) {
      const job = createDeviceJob(
        deps.jobDeps,
        saved.id,
        saved.deviceId,
        saved.prompt as unknown as PromptRequest,
      )
      deps.queue.submit(job, { force: true })
    }
    if (jobs.length > 0)
      log.info({ jobs: jobs.length }, 'unfinished jobs from before the restart queued again')
    return jobs.length
  }

  return {
    submitPrompt,
    replay,
    async handle(topic, payload, clientId) {
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
          let prompt: PromptRequest
          try {
            prompt = parsePromptPayload(payload)
          } catch (err) {
            reject(deviceId, logRejection(err, deviceId, clientId))
            return
          }
          let recorded: Promise<void>
          try {
            recorded = submitPrompt(deviceId, prompt).recorded
          } catch (err) {
            reject(deviceId, logRejection(err, deviceId, clientId), prompt.requestId)
            return
          }
          await recorded
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
