import { parseProgressAnswer, type TaskAnswer } from './a1111-progress.ts'

/*
 * Which job A1111 is running. Its /sdapi/v1/progress describes the server's one current job, whoever sent it
 * (a person in the web UI, another program), and /sdapi/v1/interrupt stops that job (A1111's
 * `modules/api/api.py` and `modules/shared_state.py`). So before the bridge reports progress or interrupts, it must know that the job
 * running is the one it sent. A1111 runs requests one at a time in arrival order, so the bridge notes what
 * ran when it sent its request: if the server was idle, no other job is ahead of ours (an interrupt before
 * ours begins is simply lost); if another job was running, ours is clear once that one is
 * seen to end (idle, a new job timestamp, or progress starting over).
 */

export interface ProgressSnapshot {
  /** A job is running (state.job_count is not 0). */
  active: boolean
  /** state.job_timestamp: set when a job begins (one-second resolution). */
  timestamp: string
  progress: number
}

/** Reads the parts of a /sdapi/v1/progress answer that tell jobs apart; undefined if it is not one. */
export function parseSnapshot(text: string): ProgressSnapshot | undefined {
  return parseProgressAnswer(text)?.snapshot
}

export interface OwnJobTracker {
  /** Feeds one progress answer, taken after the request was sent. */
  observe(snapshot: ProgressSnapshot): void
  /** No other job is ahead of ours: what A1111 runs from now on, and what it reports, is ours. */
  readonly started: boolean
  /** Asks A1111 about our own task, where it can say (createTaskTracker); never rejects. */
  check?(signal: AbortSignal): Promise<void>
}

/**
 * `before` is the progress answer taken just before the request went out; undefined when the server has no
 * progress to ask (then the job is taken to be ours, which is all that can be done).
 */
export function createOwnJobTracker(before: ProgressSnapshot | undefined): OwnJobTracker {
  let started = before === undefined || !before.active
  let lastProgress = before?.progress ?? 0
  return {
    observe(s) {
      if (started) return
      // Idle: the job that was running has ended. Active with a new timestamp, or progress that started
      // over: a new job, which can only be ours since A1111 keeps arrival order.
      if (!s.active || s.timestamp !== before?.timestamp || s.progress < lastProgress) started = true
      lastProgress = s.progress
    },
    get started() {
      return started
    },
  }
}

/**
 * One look at our task: its answer, `gone` when the server will not say (no /internal/progress, or a login in
 * front of it), undefined on a failure that may pass.
 */
export type AskTask = (signal: AbortSignal) => Promise<TaskAnswer | 'gone' | undefined>

/**
 * Follows our own task by its id, with no snapshot before the request: the job is ours once A1111 says the
 * task is running or done. A server that has lost /internal/progress (restarted with `--nowebui`), or that
 * twice does not know the task (a version that ignores `force_task_id`), can say no more: the job is then
 * taken to be ours, as on a server with no progress at all, and `onLost` says why, so the next jobs go back
 * to the snapshot.
 */
export function createTaskTracker(ask: AskTask, onLost: (why: string) => void): OwnJobTracker {
  let started = false
  let unknown = 0
  let checking: Promise<void> | undefined
  async function look(signal: AbortSignal): Promise<void> {
    const answer = await ask(signal)
    if (started || answer === undefined) return
    if (answer === 'gone') {
      started = true
      onLost('it does not answer /internal/progress')
    } else if (answer.active || answer.completed) started = true
    else if (!answer.queued && ++unknown >= 2) {
      started = true
      onLost('it does not know the task it was sent')
    }
  }
  return {
    observe() {},
    check(signal) {
      if (started) return Promise.resolve()
      checking ??= look(signal).finally(() => {
        checking = undefined
      })
      return checking
    },
    get started() {
      return started
    },
  }
}
