import type { Logger } from 'pino'
import { AppError, toAppError, traitsOf } from '../errors.ts'
import type { GenerateProgress, GenerateResult, Generator, Txt2ImgPayload } from '../generator/types.ts'
import type { CancelReason, StatusEvent } from '../protocol/status.ts'
import { createLanes } from './lanes.ts'

/*
 * The job queue. Each generator runs one generation at a time (A1111 serialises requests anyway, and a
 * second request would only wait inside A1111 where it can be neither seen nor cancelled). Owners (devices,
 * HTTP clients) are served round-robin. A device has at most one waiting job: a newer prompt takes its place
 * in line, and with SUPERSEDE_RUNNING it also interrupts the device's running job. A job whose server
 * refused it or timed out is tried again on another server, a few times at most.
 */

export interface Job {
  readonly id: string
  /** Jobs with a device id are limited to one waiting job per device. */
  readonly deviceId: string | undefined
  /** Whose turn it is in the round-robin: the device id, or the HTTP client. */
  readonly owner: string
  /** Kept on disk until finished, so it runs again after a crash or a restart. */
  readonly durable: boolean
  readonly payload: Txt2ImgPayload
  readonly requestId: string | number | undefined
  /** Receives every status change of the job, in order. */
  report(event: StatusEvent): void
  /** Progress of the generation, with a preview picture when the server has one. */
  onProgress?(p: GenerateProgress): void
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
  attempts: number
  failedOn: Set<Generator>
  /** The job's result is being delivered: it can no longer be cancelled (state stays 'finishing'). */
  claimed: boolean
}

interface Slot {
  generator: Generator
  busy: boolean
  /** When it last finished, so the one idle longest gets the next job and load spreads. */
  freeSince: number
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
  /** Queues a job, or throws AppError E_QUEUE_FULL / E_SHUTTING_DOWN. `force` skips QUEUE_MAX (replays). */
  submit(job: Job, options?: { force?: boolean }): void
  /** Cancels a waiting or running job; false when there is nothing left to cancel. */
  cancel(jobId: string, reason: CancelReason): boolean
  /** Cancels the device's waiting and running jobs. Returns how many were cancelled. */
  cancelDevice(deviceId: string, reason: CancelReason): number
  view(jobId: string): JobView | undefined
  waiting(): number
  running(): number
  /** Looks again for jobs that can start (a server that was down is back). */
  resume(): void
  /**
   * Takes no new jobs and waits for running ones until `signal` aborts them. Waiting durable jobs stay on
   * disk for the next start; the others are cancelled.
   */
  stop(signal: AbortSignal): Promise<void>
}

export interface JobQueueDeps {
  generators: Generator[]
  maxWaiting: number
  /** Further tries on other servers after a refused connection or a timeout. */
  retries: number
  /** A newer prompt interrupts the device's running job. */
  supersedeRunning: boolean
  log: Logger
  /** 'down' generators get jobs only when no other can take them. */
  stateOf(generator: Generator): 'up' | 'down' | 'unknown'
  /** Told about every generation that ran, for health and metrics; `error` is undefined on success. */
  onGeneration?(generator: Generator, ms: number, error: unknown): void
  /** Told when a job has ended for good (not when a stop interrupts a durable job). */
  onSettled?(job: Job, state: 'done' | 'cancelled' | 'error'): void
}

/** Finished jobs stay visible (for GET /api/v1/jobs/{id}) until this many newer ones have finished. */
const FINISHED_KEPT = 500

export function createJobQueue(deps: JobQueueDeps): JobQueue {
  const log = deps.log
  const slots: Slot[] = deps.generators.map((generator) => ({ generator, busy: false, freeSince: 0 }))
  const line = createLanes<Entry>()
  /** Jobs waiting or running. */
  const entries = new Map<string, Entry>()
  /**
   * What is left of finished jobs: only their view, never the job itself, which may hold its picture (an
   * HTTP job's answer is over a megabyte; 500 of them kept whole cost the daemon 700 MB).
   */
  const finished = new Map<string, JobView>()
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

  /** Ends a job: reports `event` (its last status), keeps its view and lets go of the job. */
  function settle(
    entry: Entry,
    state: 'done' | 'cancelled' | 'error',
    event?: StatusEvent,
    quiet = false,
  ): void {
    entry.state = state
    entry.position = undefined
    if (event) emit(entry, event)
    const { job } = entry
    entries.delete(job.id)
    finished.set(job.id, { id: job.id, deviceId: job.deviceId, state, position: undefined, last: entry.last })
    while (finished.size > FINISHED_KEPT) finished.delete(finished.keys().next().value!)
    if (!quiet) deps.onSettled?.(job, state)
  }

  function announcePositions(): void {
    line.ordered().forEach((entry, index) => {
      const position = index + 1
      if (entry.position === position) return
      entry.position = position
      emit(entry, { state: 'queued', position })
    })
  }

  /**
   * The generator for `entry`: an idle one, preferring servers that are not down and that have not failed
   * this job, the longest idle first. Down servers still get a job when nothing else could ever take it,
   * which doubles as a check whether they are back.
   */
  function pickSlot(entry: Entry): Slot | undefined {
    const rank = (s: Slot) =>
      (deps.stateOf(s.generator) === 'down' ? 2 : 0) + (entry.failedOn.has(s.generator) ? 1 : 0)
    const idle = slots.filter((s) => !s.busy).sort((a, b) => rank(a) - rank(b) || a.freeSince - b.freeSince)
    const best = idle[0]
    if (!best) return undefined
    const bestRank = rank(best)
    const betterBusy = slots.some((s) => s.busy && rank(s) < bestRank)
    return betterBusy ? undefined : best
  }

  function dispatch(): void {
    while (!stopping) {
      let slot: Slot | undefined
      const entry = line.shift((e) => {
        slot = pickSlot(e)
        return slot !== undefined
      })
      if (!entry || !slot) break
      slot.busy = true
      const run = execute(entry, slot).finally(() => active.delete(run))
      active.add(run)
    }
    announcePositions()
  }

  function release(slot: Slot): void {
    slot.busy = false
    slot.freeSince = performance.now()
    dispatch()
  }

  async function execute(entry: Entry, slot: Slot): Promise<void> {
    const { job, controller } = entry
    const jobLog = log.child({ jobId: job.id, deviceId: job.deviceId, generator: slot.generator.name })
    entry.state = 'running'
    entry.position = undefined
    entry.attempts++
    emit(entry, { state: 'generating', progress: 0 })
    const started = performance.now()
    let result: GenerateResult
    try {
      result = await slot.generator.generate(job.payload, {
        signal: controller.signal,
        onProgress: (p) => reportProgress(entry, p),
      })
    } catch (err) {
      if (!(err instanceof JobCancelled))
        deps.onGeneration?.(slot.generator, performance.now() - started, err)
      if (!controller.signal.aborted && shouldRetry(entry, slot.generator, err)) {
        entry.failedOn.add(slot.generator)
        entry.state = 'queued'
        line.pushFront(job.owner, entry)
        jobLog.warn(
          { code: toAppError(err).code, attempt: entry.attempts },
          'generation failed; trying again',
        )
      } else {
        finishWithError(entry, err, jobLog)
      }
      release(slot)
      return
    }
    const genMs = Math.round(performance.now() - started)
    deps.onGeneration?.(slot.generator, genMs, undefined)
    release(slot)
    if (controller.signal.aborted) return
    entry.state = 'finishing'
    try {
      await job.complete(result, {
        claim: () => {
          if (controller.signal.aborted || entry.state !== 'finishing') return false
          entry.claimed = true
          return true
        },
        report: (event) => emit(entry, event),
      })
      // complete() may have been cancelled meanwhile; read the state afresh.
      if ((entry.state as JobState) === 'finishing') {
        settle(entry, 'done')
        jobLog.info({ genMs, seed: result.seed, ms: Math.round(performance.now() - started) }, 'job done')
      }
    } catch (err) {
      finishWithError(entry, err, jobLog)
    }
  }

  /** Another try, on a server that has not failed this job yet, if there is one and tries are left. */
  function shouldRetry(entry: Entry, failedOn: Generator, err: unknown): boolean {
    if (!traitsOf(toAppError(err).code).movesJob || entry.attempts > deps.retries || stopping) return false
    return slots.some((s) => s.generator !== failedOn && !entry.failedOn.has(s.generator))
  }

  function reportProgress(entry: Entry, p: GenerateProgress): void {
    if (entry.state !== 'running') return
    const event: StatusEvent = { state: 'generating', progress: Math.round(p.progress * 1000) / 1000 }
    if (p.etaS !== undefined) event.eta_s = Math.round(p.etaS * 10) / 10
    emit(entry, event)
    try {
      entry.job.onProgress?.(p)
    } catch (err) {
      log.error({ err, jobId: entry.job.id }, 'progress handler failed')
    }
  }

  function finishWithError(entry: Entry, err: unknown, jobLog: Logger): void {
    if (entry.controller.signal.aborted || entry.state === 'cancelled') return
    const appErr = toAppError(err)
    if (appErr.code === 'E_INTERNAL') jobLog.error({ err }, 'job failed')
    else jobLog.warn({ code: appErr.code, err: appErr.message, details: appErr.details }, 'job failed')
    settle(entry, 'error', { state: 'error', error: appErr.toJSON() })
  }

  function cancelEntry(entry: Entry, reason: CancelReason): boolean {
    if (entry.state === 'queued') line.remove(entry)
    else if (entry.state !== 'running' && (entry.state !== 'finishing' || entry.claimed)) return false
    entry.controller.abort(new JobCancelled(reason))
    if (reason === 'shutdown' && entry.job.durable) {
      // Not the job's end: it is still on disk and runs again at the next start.
      settle(entry, 'cancelled', undefined, true)
      return true
    }
    settle(entry, 'cancelled', { state: 'cancelled', reason })
    return true
  }

  function newEntry(job: Job): Entry {
    const entry: Entry = {
      job,
      state: 'queued',
      controller: new AbortController(),
      last: undefined,
      position: undefined,
      attempts: 0,
      failedOn: new Set(),
      claimed: false,
    }
    return entry
  }

  return {
    submit(job, options = {}) {
      if (stopping)
        throw new AppError('E_SHUTTING_DOWN', 'the bridge is stopping; send the prompt again later')
      const entry = newEntry(job)
      const sameDevice = (e: Entry) => job.deviceId !== undefined && e.job.deviceId === job.deviceId
      const older = line.find(sameDevice)
      if (older) {
        // The newer prompt takes the older one's place in line: the device already waited for that turn.
        line.replace(older, entry)
        cancelSuperseded(older)
      } else if (line.size >= deps.maxWaiting && !options.force) {
        throw new AppError(
          'E_QUEUE_FULL',
          `the queue is full (${deps.maxWaiting} jobs waiting, QUEUE_MAX); try again when some have finished`,
        )
      } else {
        line.push(job.owner, entry)
      }
      if (deps.supersedeRunning) {
        for (const e of entries.values())
          if (sameDevice(e) && e.state === 'running') cancelEntry(e, 'superseded')
      }
      entries.set(job.id, entry)
      dispatch()
    },

    cancel(jobId, reason) {
      const entry = entries.get(jobId)
      const cancelled = entry ? cancelEntry(entry, reason) : false
      if (cancelled) announcePositions()
      return cancelled
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
      if (!entry) return finished.get(jobId)
      const { job, state, position, last } = entry
      return { id: job.id, deviceId: job.deviceId, state, position, last }
    },

    waiting: () => line.size,
    resume: () => dispatch(),
    running: () => slots.filter((s) => s.busy).length,

    async stop(signal) {
      stopping = true
      for (const entry of line.ordered()) {
        if (entry.job.durable) line.remove(entry)
        else cancelEntry(entry, 'shutdown')
      }
      const abortRunning = () => {
        for (const entry of entries.values()) cancelEntry(entry, 'shutdown')
      }
      if (signal.aborted) abortRunning()
      else signal.addEventListener('abort', abortRunning, { once: true })
      while (active.size > 0) await Promise.allSettled([...active])
      signal.removeEventListener('abort', abortRunning)
    },
  }

  function cancelSuperseded(older: Entry): void {
    older.controller.abort(new JobCancelled('superseded'))
    settle(older, 'cancelled', { state: 'cancelled', reason: 'superseded' })
  }
}
