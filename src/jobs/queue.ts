import type { Logger } from 'pino'
import { AppError, toAppError } from '../errors.ts'
import type { GenerateProgress, GenerateResult, Generator } from '../generator/types.ts'
import type { CancelReason, StatusEvent } from '../protocol/status.ts'
import {
  createJobRecords,
  type Job,
  JobCancelled,
  type JobQueue,
  type JobQueueDeps,
  type JobState,
} from './job.ts'
import { type Entry, newEntry, viewOf } from './queue-entry.ts'
import { createSlots, pickServer, type Slot, shouldMoveJob } from './server-choice.ts'
import { createWaitingLine } from './waiting-line.ts'

/*
 * The job queue. Each generator runs one generation at a time (A1111 serialises requests anyway; a second
 * would only wait inside A1111 where it can be neither seen nor cancelled). Owners (devices, HTTP clients)
 * are served round-robin. A device has at most one waiting job: a newer prompt takes its place in line, and
 * with SUPERSEDE_RUNNING also interrupts its running job. server-choice.ts says where a job runs and when
 * a failed one moves to another server.
 */

/** Finished jobs stay visible (for GET /api/v1/jobs/{id}) until this many newer ones have finished. */
const FINISHED_KEPT = 500

export function createJobQueue(deps: JobQueueDeps): JobQueue {
  const { log, clock, events } = deps
  const slots = createSlots(deps.generators, (g) => deps.stateOf(g) === 'down')
  const line = createWaitingLine<Entry>({ owner: (e) => e.job.owner, deviceId: (e) => e.job.deviceId })
  const records = createJobRecords<Entry>(FINISHED_KEPT, viewOf)
  /** Jobs waiting or running. */
  const entries = records.live
  const active = new Set<Promise<void>>()
  /** Entries generating now: at most one per server, so a supersede looks at a handful, not the queue. */
  const generating = new Set<Entry>()
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
    records.finish(entry)
    if (!quiet) events.emit('job.settled', { jobId: job.id, deviceId: job.deviceId, state })
  }

  function announcePositions(): void {
    line.ordered().forEach((entry, index) => {
      const position = index + 1
      if (entry.position === position) return
      entry.position = position
      emit(entry, { state: 'queued', position })
    })
  }

  function dispatch(): void {
    while (!stopping && slots.some((s) => !s.busy)) {
      let slot: Slot<Generator> | undefined
      const entry = line.shift((e) => {
        slot = pickServer(slots, e.failedOn)
        return slot !== undefined
      })
      if (!entry || !slot) break
      slot.busy = true
      const run = execute(entry, slot).finally(() => active.delete(run))
      active.add(run)
    }
    announcePositions()
  }

  function release(slot: Slot<Generator>): void {
    slot.busy = false
    slot.freeSince = clock.monotonic()
    dispatch()
  }

  /** Tells health and metrics how long a generation took; returns the milliseconds. */
  function measured(generator: Generator, started: number, error: unknown): number {
    const ms = clock.monotonic() - started
    events.emit('generation.measured', { generatorId: deps.idOf(generator), ms, error })
    return ms
  }

  async function execute(entry: Entry, slot: Slot<Generator>): Promise<void> {
    const { job, controller } = entry
    const jobLog = log.child({ jobId: job.id, deviceId: job.deviceId, generator: deps.idOf(slot.generator) })
    entry.state = 'generating'
    generating.add(entry)
    entry.position = undefined
    entry.attempts++
    emit(entry, { state: 'generating', progress: 0 })
    const started = clock.monotonic()
    let result: GenerateResult
    try {
      result = await slot.generator.generate(job.payload, {
        signal: controller.signal,
        onProgress: (p) => reportProgress(entry, p),
        recorded: job.recorded,
      })
    } catch (err) {
      generating.delete(entry)
      // A cancelled job (or one taken back, its prompt never written) says nothing about the server.
      if (!(err instanceof JobCancelled) && !controller.signal.aborted) measured(slot.generator, started, err)
      if (!controller.signal.aborted && moveToAnother(entry, slot.generator, err)) {
        entry.state = 'queued'
        line.pushFront(entry)
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
    generating.delete(entry)
    const genMs = Math.round(measured(slot.generator, started, undefined))
    release(slot)
    if (controller.signal.aborted) return
    entry.state = 'sending'
    try {
      await job.complete(result, {
        claim: () => {
          if (controller.signal.aborted || entry.state !== 'sending') return false
          entry.claimed = true
          return true
        },
        report: (event) => emit(entry, event),
      })
      // complete() may have been cancelled meanwhile; read the state afresh.
      if ((entry.state as JobState) === 'sending') {
        settle(entry, 'done')
        jobLog.info({ genMs, seed: result.seed, ms: Math.round(clock.monotonic() - started) }, 'job done')
      }
    } catch (err) {
      finishWithError(entry, err, jobLog)
    }
  }

  function moveToAnother(entry: Entry, failedOn: Generator, err: unknown): boolean {
    entry.failedOn.add(failedOn)
    if (stopping) return false
    return shouldMoveJob({
      code: toAppError(err).code,
      attempts: entry.attempts,
      retries: deps.retries,
      failedOn: entry.failedOn,
      generators: deps.generators,
    })
  }

  function reportProgress(entry: Entry, p: GenerateProgress): void {
    if (entry.state !== 'generating') return
    emit(entry, {
      state: 'generating',
      progress: p.progress,
      ...(p.etaS === undefined ? {} : { eta_s: p.etaS }),
    })
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
    else jobLog.warn({ code: appErr.code, reason: appErr.message, details: appErr.details }, 'job failed')
    settle(entry, 'error', { state: 'error', error: appErr.toJSON() })
  }

  function cancelEntry(entry: Entry, reason: CancelReason): boolean {
    if (entry.state === 'queued') line.remove(entry)
    else if (entry.state !== 'generating' && (entry.state !== 'sending' || entry.claimed)) return false
    entry.controller.abort(new JobCancelled(reason))
    if (reason === 'shutdown' && entry.job.durable) {
      // Not the job's end: it is still on disk and runs again at the next start.
      settle(entry, 'cancelled', undefined, true)
      return true
    }
    settle(entry, 'cancelled', { state: 'cancelled', reason })
    return true
  }

  function admit(deviceId: string | undefined): void {
    if (stopping) throw new AppError('E_SHUTTING_DOWN', 'the bridge is stopping; send the prompt again later')
    if (deviceId !== undefined && line.hasDevice(deviceId)) return
    if (line.size >= deps.maxWaiting) {
      throw new AppError(
        'E_QUEUE_FULL',
        `the queue is full (${deps.maxWaiting} jobs waiting, QUEUE_MAX); try again when some have finished`,
      )
    }
  }

  /** A job whose prompt could not be written to disk: it was never accepted, so it ends without a status. */
  function takeBack(entry: Entry): void {
    if (entries.get(entry.job.id) !== entry) return
    if (entry.state === 'queued') line.remove(entry)
    entry.controller.abort(new JobCancelled('requested'))
    settle(entry, 'cancelled', undefined, true)
    announcePositions()
  }

  /** Puts a job in line without looking for a server yet. */
  function enqueue(job: Job, force: boolean): void {
    if (stopping || !force) admit(job.deviceId)
    const entry = newEntry(job)
    // Registered before the generator waits on the same promise, so the job is taken back first: no status
    // (the intake refuses the prompt with E_STORAGE) and no measure against the server.
    job.recorded?.catch(() => takeBack(entry))
    const older = line.add(entry)
    if (older) {
      // The newer prompt took the older one's place in line: the device already waited for that turn.
      older.controller.abort(new JobCancelled('superseded'))
      settle(older, 'cancelled', { state: 'cancelled', reason: 'superseded' })
    }
    if (job.deviceId !== undefined && deps.supersedeRunning) {
      for (const e of [...generating]) if (e.job.deviceId === job.deviceId) cancelEntry(e, 'superseded')
    }
    entries.set(job.id, entry)
  }

  return {
    admit,
    submit(job, options = {}) {
      enqueue(job, options.force === true)
      dispatch()
    },
    submitAll(jobs) {
      for (const job of jobs) enqueue(job, true)
      dispatch()
    },

    holds(deviceId) {
      if (line.hasDevice(deviceId)) return true
      for (const e of generating) if (e.job.deviceId === deviceId) return true
      return false
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

    view: (jobId) => records.view(jobId),
    waitingJobs: () => line.ordered().map(viewOf),
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
}
