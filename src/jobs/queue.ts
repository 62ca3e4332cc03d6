import type { Logger } from 'pino'
import { AppError, toAppError } from '../errors.ts'
import type { GenerateProgress, GenerateResult, Generator, Txt2ImgPayload } from '../generator/types.ts'
import type { CancelReason, StatusEvent } from '../protocol/status.ts'

/*
 * The job queue. Each generator runs one generation at a time (A1111 serialises requests anyway, and a
 * second request would only wait inside A1111 where it can be neither seen nor cancelled). A device has at
 * most one waiting job: a newer prompt takes the waiting job's place in line and the older one is reported
 * cancelled/superseded. All waiting jobs together are bounded by QUEUE_MAX.
 */

export interface Job {
  readonly id: string
  /** Jobs with a device id are limited to one waiting job per device. */
  readonly deviceId: string | undefined
  readonly payload: Txt2ImgPayload
  readonly requestId: string | number | undefined
  /** Receives every status change of the job, in order. */
  report(event: StatusEvent): void
  /**
   * Turns the picture into what the job's owner wants (frames for a device, bytes for an HTTP client).
   * Runs after the generator is free again.
   */
  complete(result: GenerateResult, ctx: CompleteContext): Promise<void>
}

export interface CompleteContext {
  /** False if the job was cancelled meanwhile; once it returns true the job can no longer be cancelled. */
  claim(): boolean
  /** Reports a status change (sending, done) through the queue, which records it. */
  report(event: StatusEvent): void
}

export type JobState = 'queued' | 'running' | 'finishing' | 'done' | 'cancelled' | 'error'

export interface JobView {
  id: string
  deviceId: string | undefined
  state: JobState
  position: number | undefined
  last: StatusEvent | undefined
}

interface Entry {
  job: Job
  state: JobState
  controller: AbortController
  last: StatusEvent | undefined
  position: number | undefined
}

interface Slot {
  generator: Generator
  busy: boolean
}

/** The reason an aborted job carries, so the runner can tell a cancel from a failure. */
export class JobCancelled extends Error {
  readonly reason: CancelReason
  constructor(reason: CancelReason) {
    super(`job cancelled: ${reason}`)
    this.name = 'JobCancelled'
    this.reason = reason
  }
}

export interface JobQueue {
  /** Queues a job, or throws AppError E_QUEUE_FULL / E_SHUTTING_DOWN. */
  submit(job: Job): void
  /** Cancels a waiting or running job; false when there is nothing left to cancel. */
  cancel(jobId: string, reason: CancelReason): boolean
  /** Cancels the device's waiting and running jobs. Returns how many were cancelled. */
  cancelDevice(deviceId: string, reason: CancelReason): number
  view(jobId: string): JobView | undefined
  waiting(): number
  running(): number
  /** Takes no new jobs, cancels waiting ones and waits for running ones until `signal` aborts them. */
  stop(signal: AbortSignal): Promise<void>
}

/** Finished jobs stay visible (for GET /api/v1/jobs/{id}) until this many newer ones have finished. */
const FINISHED_KEPT = 500

export interface JobQueueDeps {
  generators: Generator[]
  maxWaiting: number
  log: Logger
  /** Told about every generation that ran, for health and metrics; `error` is undefined on success. */
  onGeneration?(generator: Generator, ms: number, error: unknown): void
}

export function createJobQueue(deps: JobQueueDeps): JobQueue {
  const log = deps.log
  const slots: Slot[] = deps.generators.map((generator) => ({ generator, busy: false }))
  const line: Entry[] = []
  const entries = new Map<string, Entry>()
  const finished: string[] = []
  const active = new Set<Promise<void>>()
  let stopping = false

  function emit(entry: Entry, event: StatusEvent): void {
    entry.last = event
    try {
      entry.job.report(event)
    } catch (err) {
      log.error({ err, jobId: entry.job.id }, 'status report failed')
    }
  }

  function settle(entry: Entry, state: 'done' | 'cancelled' | 'error'): void {
    entry.state = state
    entry.position = undefined
    finished.push(entry.job.id)
    while (finished.length > FINISHED_KEPT) entries.delete(finished.shift()!)
  }

  function announcePositions(): void {
    line.forEach((entry, index) => {
      const position = index + 1
      if (entry.position === position) return
      entry.position = position
      emit(entry, { state: 'queued', position })
    })
  }

  function dispatch(): void {
    for (const slot of slots) {
      if (slot.busy || line.length === 0 || stopping) continue
      const entry = line.shift()!
      slot.busy = true
      const run = execute(entry, slot).finally(() => active.delete(run))
      active.add(run)
    }
    announcePositions()
  }

  async function execute(entry: Entry, slot: Slot): Promise<void> {
    const { job, controller } = entry
    const jobLog = log.child({ jobId: job.id, deviceId: job.deviceId, generator: slot.generator.name })
    entry.state = 'running'
    entry.position = undefined
    emit(entry, { state: 'generating', progress: 0 })
    const started = performance.now()
    let result: GenerateResult
    try {
      result = await slot.generator.generate(job.payload, {
        signal: controller.signal,
        onProgress: (p) => reportProgress(entry, p),
      })
    } catch (err) {
      slot.busy = false
      dispatch()
      if (!(err instanceof JobCancelled))
        deps.onGeneration?.(slot.generator, performance.now() - started, err)
      finishWithError(entry, err, jobLog)
      return
    }
    slot.busy = false
    dispatch()
    const genMs = Math.round(performance.now() - started)
    deps.onGeneration?.(slot.generator, genMs, undefined)
    if (controller.signal.aborted) return
    entry.state = 'finishing'
    try {
      await job.complete(result, {
        claim: () => {
          if (controller.signal.aborted || entry.state !== 'finishing') return false
          entry.state = 'done'
          return true
        },
        report: (event) => emit(entry, event),
      })
      // complete() may have claimed the job (state 'done') or been cancelled meanwhile; read it afresh.
      const state = entry.state as JobState
      if (state === 'done' || state === 'finishing') {
        settle(entry, 'done')
        jobLog.info({ genMs, seed: result.seed, ms: Math.round(performance.now() - started) }, 'job done')
      }
    } catch (err) {
      finishWithError(entry, err, jobLog)
    }
  }

  function reportProgress(entry: Entry, p: GenerateProgress): void {
    if (entry.state !== 'running') return
    const event: StatusEvent = { state: 'generating', progress: Math.round(p.progress * 1000) / 1000 }
    if (p.etaS !== undefined) event.eta_s = Math.round(p.etaS * 10) / 10
    emit(entry, event)
  }

  function finishWithError(entry: Entry, err: unknown, jobLog: Logger): void {
    if (entry.controller.signal.aborted || entry.state === 'cancelled') return
    const appErr = toAppError(err)
    if (appErr.code === 'E_INTERNAL') jobLog.error({ err }, 'job failed')
    else jobLog.warn({ code: appErr.code, err: appErr.message, details: appErr.details }, 'job failed')
    settle(entry, 'error')
    emit(entry, { state: 'error', error: appErr.toJSON() })
  }

  function cancelEntry(entry: Entry, reason: CancelReason): boolean {
    if (entry.state === 'queued') {
      line.splice(line.indexOf(entry), 1)
    } else if (entry.state !== 'running' && entry.state !== 'finishing') {
      return false
    }
    entry.controller.abort(new JobCancelled(reason))
    settle(entry, 'cancelled')
    emit(entry, { state: 'cancelled', reason })
    return true
  }

  return {
    submit(job) {
      if (stopping)
        throw new AppError('E_SHUTTING_DOWN', 'the bridge is stopping; send the prompt again later')
      const entry: Entry = {
        job,
        state: 'queued',
        controller: new AbortController(),
        last: undefined,
        position: undefined,
      }
      const older = job.deviceId === undefined ? undefined : line.find((e) => e.job.deviceId === job.deviceId)
      if (older) {
        // The newer prompt takes the older one's place in line: the device already waited for that turn.
        line[line.indexOf(older)] = entry
        older.state = 'cancelled'
        older.controller.abort(new JobCancelled('superseded'))
        settle(older, 'cancelled')
        emit(older, { state: 'cancelled', reason: 'superseded' })
      } else if (line.length >= deps.maxWaiting) {
        throw new AppError(
          'E_QUEUE_FULL',
          `the queue is full (${deps.maxWaiting} jobs waiting, QUEUE_MAX); try again when some have finished`,
        )
      } else {
        line.push(entry)
      }
      entries.set(job.id, entry)
      dispatch()
    },

    cancel(jobId, reason) {
      const entry = entries.get(jobId)
      return entry ? cancelEntry(entry, reason) : false
    },

    cancelDevice(deviceId, reason) {
      let count = 0
      for (const entry of [...entries.values()]) {
        if (entry.job.deviceId === deviceId && cancelEntry(entry, reason)) count++
      }
      if (count > 0) announcePositions()
      return count
    },

    view(jobId) {
      const entry = entries.get(jobId)
      if (!entry) return undefined
      const { job, state, position, last } = entry
      return { id: job.id, deviceId: job.deviceId, state, position, last }
    },

    waiting: () => line.length,
    running: () => slots.filter((s) => s.busy).length,

    async stop(signal) {
      stopping = true
      for (const entry of [...line]) cancelEntry(entry, 'shutdown')
      const abortRunning = () => {
        for (const entry of entries.values()) cancelEntry(entry, 'shutdown')
      }
      if (signal.aborted) abortRunning()
      else signal.addEventListener('abort', abortRunning, { once: true })
      while (active.size > 0) await Promise.allSettled([...active])
      signal.removeEventListener('abort', abortRunning)
    },
  }
}
