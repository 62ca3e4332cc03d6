import type { Generator } from '../generator/types.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { Job, JobState, JobView } from './job.ts'

/* A job as the queue holds it while it waits or runs, and the view of it that others may see. */

export interface Entry {
  job: Job
  state: JobState
  controller: AbortController
  last: StatusEvent | undefined
  position: number | undefined
  attempts: number
  failedOn: Set<Generator>
  /** The job's result is being delivered: it can no longer be cancelled. */
  claimed: boolean
}

export function newEntry(job: Job): Entry {
  return {
    job,
    state: 'queued',
    controller: new AbortController(),
    last: undefined,
    position: undefined,
    attempts: 0,
    failedOn: new Set(),
    claimed: false,
  }
}

export function viewOf(entry: Entry): JobView {
  const { job, state, position, last } = entry
  return { id: job.id, deviceId: job.deviceId, requestId: job.requestId, state, position, last }
}
