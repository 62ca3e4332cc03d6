import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { InboundMessage } from '../broker/port.ts'
import type { Clock } from '../clock.ts'
import { AppError, toAppError } from '../errors.ts'
import { parseDeviceId } from '../protocol/device-id.ts'
import { type PromptRequest, parsePromptPayload } from '../protocol/prompt.ts'
import type { JobJournal, JournalJob } from '../store/job-journal.ts'
import { createDeviceJob, type DeviceJobDeps } from './device-job.ts'
import type { Job, JobQueue } from './job.ts'
import type { LastFrame } from './last-frame.ts'
import type { DeviceOutput } from './output.ts'
import { createRateLimit, createTokenBuckets, type RateLimit } from './rate-limit.ts'

/*
 * What devices send to the bridge: `prompt`, `get` and `cancel`. Runs before the broker acknowledges the
 * message, so it only validates, records and queues; the slow work happens in the queue. A prompt is written
 * to the journal before it is queued: a newer prompt that supersedes an older one is on disk before the
 * older one's end is, so a crash between the two never loses both.
 */

export interface Intake {
  /** Handles one message; the promise settles once what must be on disk is (never rejects). */
  handle(msg: InboundMessage): Promise<void>
  /**
   * Records a prompt for a device (MQTT or HTTP) in the journal, then queues it. Resolves once it is on
   * disk and in line, and only then may the caller acknowledge it. Rejects with an AppError when it is
   * refused (rate limit, queue full, stopping) or cannot be recorded (E_STORAGE).
   */
  submitPrompt(deviceId: string, prompt: PromptRequest, from?: PromptSender): Promise<Job>
  /** Queues again the jobs the journal had open at start (same ids, no limits), in their order. */
  replay(jobs: readonly JournalJob[]): number
}

/** Where a prompt came from: its MQTT connection and address (or the HTTP client's address). */
export interface PromptSender {
  clientId?: string | undefined
  remote?: string | undefined
}

export function newJobId(): string {
  return randomBytes(6).toString('hex')
}

export function createIntake(deps: {
  queue: JobQueue
  jobDeps: DeviceJobDeps
  output: DeviceOutput
  lastFrame: LastFrame
  journal: JobJournal
  rateLimit: RateLimit
  rateLimitPerMinute: number
  /**
   * Prompts a connection or an address may send per minute over all the ids it uses (RATE_LIMIT_SENDER):
   * room for an automation acting for a few displays, none for a client that rotates ids to escape the
   * per-device limit. 0 = no limit.
   */
  senderLimitPerMinute: number
  /** `get` per display (GET_BURST, GET_INTERVAL): a flood made 2.3 GB of frames from 1.3 MB (issue 10). */
  getLimit: { burst: number; intervalMs: number }
  /** Told about every valid device id that sends something, for the device list. */
  seen(deviceId: string): void
  /** A display's `info` message (panel and telemetry), as it came. */
  onInfo?(deviceId: string, payload: Buffer): void
  clock: Clock
  log: Logger
}): Intake {
  const { log, clock } = deps
  const taken = createTakenPrompts()
  const monotonic = () => clock.monotonic()
  const senderLimit = createRateLimit(deps.senderLimitPerMinute, monotonic)
  const getLimit = createTokenBuckets(deps.getLimit.burst, deps.getLimit.intervalMs, monotonic)
  /** Refusals by RATE_LIMIT_SENDER, which get no status; and one warn line per connection a minute. */
  const senderRefusals = new WeakSet<AppError>()
  const senderWarned = createRateLimit(1, monotonic)

  function reject(deviceId: string, err: AppError, requestId?: string | number): void {
    deps.output.status(deviceId, { id: newJobId(), requestId }, { state: 'error', error: err.toJSON() })
  }

  /** A refused prompt is the sender's fault (warn), unless it is a bug in the bridge (error, with stack). */
  function logRefusal(err: unknown, deviceId: string, clientId: string): AppError {
    const appErr = toAppError(err)
    if (appErr.code === 'E_INTERNAL')
      log.error({ err, deviceId, clientId }, 'prompt failed inside the bridge')
    else log.warn({ deviceId, clientId, code: appErr.code, reason: appErr.message }, 'prompt refused')
    return appErr
  }

  /**
   * Counts one prompt (a malformed one too) against its connection's and its address's budget
   * (RATE_LIMIT_SENDER) and says which one is spent, if either is.
   */
  function senderSpent(from: PromptSender): string | undefined {
    if (from.clientId !== undefined && !senderLimit.take(`client\0${from.clientId}`)) return 'this connection'
    if (from.remote !== undefined && !senderLimit.take(`remote\0${from.remote}`)) return 'this address'
    return undefined
  }

  function senderRefusal(sender: string): AppError {
    const err = new AppError(
      'E_RATE_LIMITED',
      `more than ${deps.senderLimitPerMinute} prompts from ${sender} in the last minute (RATE_LIMIT_SENDER, over all its devices); wait a little`,
    )
    senderRefusals.add(err)
    return err
  }

  async function submitPrompt(
    deviceId: string,
    prompt: PromptRequest,
    from: PromptSender = {},
  ): Promise<Job> {
    // The sender first: a client rotating invented ids must not leave a per-device entry for each.
    const sender = senderSpent(from)
    if (sender) throw senderRefusal(sender)
    deps.seen(deviceId)
    if (!deps.rateLimit.take(deviceId)) {
      throw new AppError(
        'E_RATE_LIMITED',
        `more than ${deps.rateLimitPerMinute} prompts from ${deviceId} in the last minute (RATE_LIMIT); wait a little`,
      )
    }
    deps.queue.admit(deviceId)
    const id = newJobId()
    const recorded = deps.journal.add({
      id,
      deviceId,
      prompt: { ...prompt },
      createdAt: clock.now().toISOString(),
    })
    // A device with nothing waiting or running has its job queued while the journal writes it: the
    // generator looks at its server meanwhile but sends nothing, and no status goes out, before it is on
    // disk (issue 14). A prompt that would supersede another waits for the disk first, so one that fails
    // with E_STORAGE never cancels the job before it.
    const early = !deps.queue.holds(deviceId)
    const job = createDeviceJob(deps.jobDeps, id, deviceId, prompt, early ? recorded : undefined)
    if (!early) await recorded
    try {
      // Past QUEUE_MAX only by the prompts that were being written at the same moment.
      deps.queue.submit(job, { force: true })
    } catch (err) {
      recorded.then(
        () => deps.journal.end(id),
        () => undefined,
      )
      throw err
    }
    // The acknowledgement waits for the disk either way; a job queued early is taken back if it fails.
    await recorded
    taken.add(deviceId, prompt, job.id)
    log.info({ deviceId, jobId: job.id, prompt: prompt.prompt.slice(0, 200) }, 'prompt queued')
    return job
  }

  async function handlePrompt(
    deviceId: string,
    payload: Buffer,
    clientId: string,
    redelivered: boolean,
    remote?: string,
  ): Promise<void> {
    const from = { clientId, remote }
    let prompt: PromptRequest
    try {
      prompt = parsePromptPayload(payload)
    } catch (err) {
      // A malformed prompt counts against its sender too, and past the limit gets no status: one status
      // per invented id would be the flood's answer, retained.
      const sender = senderSpent(from)
      if (sender) return senderRefused(deviceId, clientId, senderRefusal(sender))
      reject(deviceId, logRefusal(err, deviceId, clientId))
      return
    }
    // A broker sends a prompt again when its PUBACK did not arrive (MQTT 5 section 4.4), for instance after
    // the bridge died between the journal's fsync and the ack: the job is in the journal already.
    const jobId = redelivered ? taken.find(deviceId, prompt) : undefined
    if (jobId !== undefined) {
      log.info({ deviceId, clientId, jobId }, 'prompt sent again by the broker; taken already')
      return
    }
    try {
      await submitPrompt(deviceId, prompt, from)
    } catch (err) {
      if (senderRefusals.has(err as AppError)) return senderRefused(deviceId, clientId, err as AppError)
      reject(deviceId, logRefusal(err, deviceId, clientId), prompt.requestId)
    }
  }

  /**
   * A prompt past its sender's limit: no status goes back (the sender may be inventing a new id for each),
   * and one warn line per sender and minute says so.
   */
  function senderRefused(deviceId: string, clientId: string, err: AppError): void {
    const fields = { deviceId, clientId, code: err.code, reason: err.message }
    if (senderWarned.take(clientId)) log.warn(fields, 'prompt refused')
    else log.debug(fields, 'prompt refused')
  }

  return {
    submitPrompt,
    replay(jobs) {
      for (const saved of jobs) taken.add(saved.deviceId, saved.prompt, saved.id)
      deps.queue.submitAll(
        jobs.map((saved) => createDeviceJob(deps.jobDeps, saved.id, saved.deviceId, saved.prompt)),
      )
      if (jobs.length > 0)
        log.info({ jobs: jobs.length }, 'unfinished jobs from before the restart queued again')
      return jobs.length
    },
    async handle(msg) {
      const { kind, deviceId, clientId } = msg
      if (deviceId === null) {
        // No status goes back: its topic would name the invalid id, and a retained status per invented id
        // would stay in the broker for good. The log says what was wrong.
        const parsed = parseDeviceId(msg.rawId)
        log.warn(
          { kind, clientId, reason: parsed.ok ? 'reserved' : parsed.message },
          'message for an invalid device id ignored',
        )
        return
      }
      deps.seen(deviceId)
      switch (kind) {
        case 'prompt':
          return handlePrompt(deviceId, msg.payload, clientId, msg.redelivered === true, msg.remote)
        case 'cancel': {
          const n = deps.queue.cancelDevice(deviceId, 'requested')
          log.info({ deviceId, clientId, cancelled: n }, 'cancel requested')
          return
        }
        case 'info':
          // The panel and telemetry a display reports; read by whoever subscribed to it (issue 15).
          deps.onInfo?.(deviceId, msg.payload)
          return
        case 'get':
          if (!getLimit.take(deviceId)) {
            log.debug({ deviceId, clientId }, 'get ignored: asked too often')
            return
          }
          deps.lastFrame.resend(deviceId, clientId).then(
            (clients) => log.debug({ deviceId, clientId, clients }, 'last frame requested'),
            (err: unknown) => log.error({ err, deviceId }, 'resending the last frame failed'),
          )
          return
      }
    },
  }
}

/** Prompts remembered over all devices, to know one the broker sends again. */
const TAKEN_KEPT = 1024

/** The prompts taken lately (by request id, else by their whole content), newest last, bounded. */
function createTakenPrompts() {
  const byKey = new Map<string, string>()
  const keyOf = (deviceId: string, prompt: PromptRequest) =>
    prompt.requestId !== undefined
      ? `${deviceId}\0id\0${String(prompt.requestId)}`
      : `${deviceId}\0${JSON.stringify(prompt)}`
  return {
    add(deviceId: string, prompt: PromptRequest, jobId: string): void {
      const key = keyOf(deviceId, prompt)
      byKey.delete(key)
      byKey.set(key, jobId)
      for (const oldest of byKey.keys()) {
        if (byKey.size <= TAKEN_KEPT) break
        byKey.delete(oldest)
      }
    },
    find: (deviceId: string, prompt: PromptRequest) => byKey.get(keyOf(deviceId, prompt)),
  }
}
