import type { Logger } from 'pino'
import { z } from 'zod'
import type { OwnJobTracker, ProgressSnapshot } from './a1111-own-job.ts'
import { decodeBase64 } from './answer-scan.ts'
import type { GenerateProgress } from './types.ts'

/*
 * Polling A1111's /sdapi/v1/progress while a job runs: each answer is parsed once, into what tells jobs apart
 * (a1111-own-job.ts) and what the device is told. A real A1111 answers these polls while it generates, so a
 * server that stops answering them is hung, not slow: after `hungAfterMs` without an answer the poller says
 * so and the job can move to a server that answers.
 */

const progressAnswer = z.object({
  progress: z.number().optional(),
  eta_relative: z.number().optional(),
  state: z
    .object({
      job_count: z.number().optional(),
      job_timestamp: z.union([z.string(), z.number()]).optional(),
    })
    .optional(),
  current_image: z.string().nullable().optional(),
})

export interface ProgressAnswer {
  snapshot: ProgressSnapshot
  /** What a running job reports; undefined while A1111 is idle (our job has not started or has ended). */
  progress: GenerateProgress | undefined
}

/**
 * What A1111 in UI mode says of one task at `POST /internal/progress`: running, waiting in the queue, or done.
 * A request sent with `force_task_id` is that task, so the answer is exact where a snapshot of the one global
 * job can only be read against what ran before.
 */
export interface TaskAnswer {
  active: boolean
  queued: boolean
  completed: boolean
}

const taskAnswer = z.object({ active: z.boolean(), queued: z.boolean(), completed: z.boolean() })

/** The JSON in an answer's text; undefined when it is not JSON. */
function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** Reads an /internal/progress answer; undefined if it is not one. */
export function parseTaskAnswer(text: string): TaskAnswer | undefined {
  const parsed = taskAnswer.safeParse(jsonOf(text))
  return parsed.success ? parsed.data : undefined
}

/** Reads one progress answer; undefined when it is not one. */
export function parseProgressAnswer(text: string): ProgressAnswer | undefined {
  const parsed = progressAnswer.safeParse(jsonOf(text))
  if (!parsed.success || parsed.data.state === undefined) return undefined
  const body = parsed.data
  const state = body.state!
  const rawProgress = body.progress ?? 0
  const snapshot: ProgressSnapshot = {
    active: state.job_count !== 0,
    timestamp: String(state.job_timestamp ?? ''),
    progress: rawProgress,
  }
  if (!snapshot.active || body.progress === undefined) return { snapshot, progress: undefined }
  const progress = Math.min(1, Math.max(0, rawProgress))
  const eta = body.eta_relative
  // After the last step job_no has moved on, progress is 1.01 (shown as 1) and the eta goes negative.
  const etaS = progress > 0 && eta !== undefined && Number.isFinite(eta) ? Math.max(0, eta) : undefined
  const preview = typeof body.current_image === 'string' ? decodeBase64(body.current_image) : undefined
  return { snapshot, progress: { progress, etaS, preview } }
}

export interface ProgressPolling {
  stop(): void
}

export interface PollOptions {
  intervalMs: number
  /** No answer to any poll for this long: the server is hung. */
  hungAfterMs: number
  /** One progress request; resolves with the status and body, rejects on a network failure or timeout. */
  fetch(signal: AbortSignal): Promise<{ status: number; text: string }>
  own: OwnJobTracker
  /** When the last answer before polling started came (the snapshot before the request). */
  lastAnswerAt: number
  monotonic(): number
  onProgress(update: GenerateProgress | undefined): void
  onHung(silentMs: number): void
  log: Logger
}

/** Polls until stopped; a 404 (servers without progress, e.g. sd.cpp) ends the polling and the hang watch. */
export function startProgressPolling(options: PollOptions): ProgressPolling {
  const stopping = new AbortController()
  let lastAnswerAt = options.lastAnswerAt
  let timer: NodeJS.Timeout | undefined
  const watchdog = setInterval(
    () => {
      const silent = options.monotonic() - lastAnswerAt
      if (silent >= options.hungAfterMs && !stopping.signal.aborted) {
        stop()
        options.onHung(silent)
      }
    },
    Math.min(1000, options.hungAfterMs / 4),
  )
  watchdog.unref()

  function stop(): void {
    stopping.abort()
    clearTimeout(timer)
    clearInterval(watchdog)
  }

  const schedule = () => {
    if (!stopping.signal.aborted) timer = setTimeout(poll, options.intervalMs)
  }

  async function poll(): Promise<void> {
    let update: GenerateProgress | undefined
    try {
      // Where A1111 can say which job is ours, it is asked until it has said so.
      if (!options.own.started) await options.own.check?.(stopping.signal)
      const answer = await options.fetch(stopping.signal)
      lastAnswerAt = options.monotonic()
      if (answer.status === 404) {
        options.log.debug('A1111 has no /sdapi/v1/progress: no progress reports and no hang watch')
        stop()
        return
      }
      const parsed = answer.status === 200 ? parseProgressAnswer(answer.text) : undefined
      if (parsed) {
        options.own.observe(parsed.snapshot)
        update = parsed.progress
      }
    } catch (err) {
      if (!stopping.signal.aborted)
        options.log.debug({ reason: (err as Error).message }, 'progress poll failed')
    }
    if (stopping.signal.aborted) return
    try {
      options.onProgress(update)
    } catch (err) {
      // A bug in the listener must not stop the polling, nor the job.
      options.log.error({ err }, 'progress listener threw')
    }
    schedule()
  }

  schedule()
  return { stop }
}
