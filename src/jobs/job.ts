import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { EventBus } from '../events.ts'
import type { GenerateProgress, GenerateResult, Generator, Txt2ImgPayload } from '../generator/types.ts'
import type { CancelReason, StatusEvent } from '../protocol/status.ts'

/*
 * What the queue runs and what it tells about it. A job is created by its owner (a device job in
 * device-job.ts, an HTTP request in awaited-job.ts), which decides what the picture becomes.
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
  /**
   * Settles once a durable job is on disk. The queue may start it before (the generator looks at its server
   * meanwhile, generator/types.ts), but nothing is generated, and no status goes out, until it resolves; if
   * it rejects, the queue takes the job back without a status.
   */
  recorded?: Promise<void> | undefined
  /** Receives every status change of the job, in order. */
  report(event: StatusEvent): void
  /** Progress of the generation (raw values: the owner rounds), with a preview picture when there is one. */
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

/** The states of a job, in the words status messages use (docs/protocol.md, "Status messages"). */
export type JobState = 'queued' | 'generating' | 'sending' | 'done' | 'cancelled' | 'error'

export interface JobView {
  id: string
  deviceId: string | undefined
  requestId: string | number | undefined
  state: JobState
  position: number | undefined
  last: StatusEvent | undefined
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
  /**
   * Throws the AppError a new job would get now (E_SHUTTING_DOWN, E_QUEUE_FULL), so a prompt can be refused
   * before it is written to the journal. A job that replaces the device's waiting one always fits.
   */
  admit(deviceId: string | undefined): void
  /** Queues a job, or throws AppError E_QUEUE_FULL / E_SHUTTING_DOWN. `force` skips QUEUE_MAX (replays). */
  submit(job: Job, options?: { force?: boolean }): void
  /** Queues jobs from before a restart, in their order, past QUEUE_MAX, announcing positions once. */
  submitAll(jobs: readonly Job[]): void
  /** The device has a job waiting or generating (one a new prompt would supersede). */
  holds(deviceId: string): boolean
  /** Cancels a waiting or running job; false when there is nothing left to cancel. */
  cancel(jobId: string, reason: CancelReason): boolean
  /** Cancels the device's waiting and running jobs. Returns how many were cancelled. */
  cancelDevice(deviceId: string, reason: CancelReason): number
  view(jobId: string): JobView | undefined
  /** The waiting jobs in the order they would start. */
  waitingJobs(): JobView[]
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
  /** Further tries on other servers after a refused connection or a hung server. */
  retries: number
  /** A newer prompt interrupts the device's running job. */
  supersedeRunning: boolean
  log: Logger
  clock: Clock
  events: EventBus
  /** 'down' generators get jobs only when no other can take them. */
  stateOf(generator: Generator): 'up' | 'down' | 'unknown'
  /** The generator's public id, for events. */
  idOf(generator: Generator): string
}

/**
 * The queue's records: jobs waiting or running, and what is left of finished ones. Only a finished job's view
 * is kept, never the job, which may hold its picture (an HTTP job's answer is over a megabyte; 500 of them
 * kept whole cost the daemon 700 MB).
 */
export function createJobRecords<E extends { job: Job }>(kept: number, viewOf: (entry: E) => JobView) {
  const live = new Map<string, E>()
  const finished = new Map<string, JobView>()
  return {
    live,
    finish(entry: E): void {
      live.delete(entry.job.id)
      finished.set(entry.job.id, viewOf(entry))
      while (finished.size > kept) finished.delete(finished.keys().next().value!)
    },
    view(jobId: string): JobView | undefined {
      const entry = live.get(jobId)
      return entry ? viewOf(entry) : finished.get(jobId)
    },
  }
}
