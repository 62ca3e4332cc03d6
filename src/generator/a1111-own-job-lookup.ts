import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { A1111Answer } from './a1111-errors.ts'
import { type AskTask, createOwnJobTracker, createTaskTracker, type OwnJobTracker } from './a1111-own-job.ts'
import { parseProgressAnswer, parseTaskAnswer } from './a1111-progress.ts'

/*
 * How the A1111 client tells its own job from someone else's on one server (a1111-own-job.ts has the rules;
 * README, "An A1111 shared with people"). Every job carries a task id (`force_task_id`). A server that
 * follows jobs by that id (A1111 with its web UI, at /internal/progress) says itself when ours runs, so the
 * job goes out with nothing before it. Elsewhere (`--nowebui`, other servers) a snapshot of what runs is taken
 * first, side by side with the prompt's journal write. Which of the two a server is, is learnt after a job
 * that went well, and asked again after a while on a server that did not follow task ids.
 */

/** The own-job snapshot needs only the state: without the preview, A1111 does not decode and encode one. */
const PROGRESS_STATE = '/sdapi/v1/progress?skip_current_image=true'
/** One task's state, by its id: A1111 with its web UI only. */
const TASK_PROGRESS = '/internal/progress'
/**
 * A server found not to follow jobs by task id is asked again after this long: it may have been restarted
 * with its web UI, or updated, meanwhile.
 */
const RELEARN_TASKS_MS = 10 * 60_000

/** One HTTP exchange with the server (a1111.ts). */
export type A1111Call = (
  method: 'GET' | 'POST',
  path: string,
  body: string | undefined,
  signal: AbortSignal,
) => Promise<A1111Answer>

export interface OwnJobLookup {
  /**
   * Before a job goes out: its task id, how to tell it as ours, whether the server has progress to poll at
   * all (stable-diffusion.cpp has none), and when the server last answered. Waits for `recorded` too, and
   * rejects with its error.
   */
  prepare(recorded: Promise<void> | undefined): Promise<{
    taskId: string
    own: OwnJobTracker
    hasProgress: boolean
    answeredAt: number
  }>
  /** After a job that went well: learns, when it is time, whether the server follows task ids. */
  succeeded(taskId: string): void
}

export function createOwnJobLookup(deps: {
  call: A1111Call
  clock: Clock
  log: Logger
  /** The deadline of each request made here. */
  sideTimeoutMs: number
}): OwnJobLookup {
  const { call, clock, log, sideTimeoutMs } = deps
  /** Whether the server follows jobs by task id: undefined until a finished job has shown it. */
  let followsTasks: boolean | undefined
  /** When followsTasks was last asked about (clock.monotonic()). */
  let learnedAt = Number.NEGATIVE_INFINITY

  /**
   * What A1111 runs right now and when it last answered; `snapshot` is undefined if it cannot say, null if
   * it has no /progress at all, which also means nothing to poll.
   */
  async function snapshot() {
    const asked = clock.monotonic()
    try {
      const answer = await call('GET', PROGRESS_STATE, undefined, AbortSignal.timeout(sideTimeoutMs))
      const answeredAt = clock.monotonic()
      if (answer.status === 404) return { snapshot: null, answeredAt }
      const parsed = answer.status === 200 ? parseProgressAnswer(answer.text) : undefined
      return { snapshot: parsed?.snapshot, answeredAt }
    } catch {
      return { snapshot: undefined, answeredAt: asked }
    }
  }

  /** What /internal/progress says of one task; never rejects. */
  function askTask(taskId: string): AskTask {
    return async (signal) => {
      try {
        const body = JSON.stringify({ id_task: taskId, id_live_preview: -1, live_preview: false })
        const signals = AbortSignal.any([signal, AbortSignal.timeout(sideTimeoutMs)])
        const answer = await call('POST', TASK_PROGRESS, body, signals)
        // 404 without the web UI; 401 or 403 where the UI has a login of its own: either way it cannot say.
        if (answer.status >= 400 && answer.status < 500) return 'gone'
        return answer.status === 200 ? parseTaskAnswer(answer.text) : undefined
      } catch {
        return undefined
      }
    }
  }

  async function learn(taskId: string): Promise<void> {
    const answer = await askTask(taskId)(AbortSignal.timeout(sideTimeoutMs))
    if (answer === undefined) return
    followsTasks = answer !== 'gone' && answer.completed
    log.debug({ followsTasks }, 'whether A1111 follows jobs by their task id')
  }

  return {
    async prepare(recorded) {
      const taskId = `task(bridge-${randomUUID()})`
      if (followsTasks === true) {
        const answeredAt = clock.monotonic()
        await recorded
        const own = createTaskTracker(askTask(taskId), (why) => {
          followsTasks = undefined
          log.info({ why }, 'A1111 no longer follows jobs by task id; the next ones look at it first')
        })
        return { taskId, own, hasProgress: true, answeredAt }
      }
      // Only a look, so it is taken while the journal write is still on its way to disk.
      const [before] = await Promise.all([snapshot(), recorded])
      const own = createOwnJobTracker(before.snapshot ?? undefined)
      return { taskId, own, hasProgress: before.snapshot !== null, answeredAt: before.answeredAt }
    },
    succeeded(taskId) {
      const stale = followsTasks === false && clock.monotonic() - learnedAt >= RELEARN_TASKS_MS
      if (followsTasks !== undefined && !stale) return
      learnedAt = clock.monotonic()
      void learn(taskId)
    },
  }
}
