import { type ErrorCode, traitsOf } from '../errors.ts'

/*
 * Which server takes a job, and whether a failed job tries another: policy as plain values, apart from the
 * queue's mechanics, so it can be tested without generators or clocks.
 */

export interface ServerSlot<G> {
  readonly generator: G
  readonly busy: boolean
  /** The health monitor says it does not answer. */
  readonly down: boolean
  /** When it last finished (any monotonic unit): the one idle longest gets the next job, so load spreads. */
  readonly freeSince: number
}

/** A server as the queue tracks it: busy while it runs a job; `down` is read from health when asked. */
export interface Slot<G> extends ServerSlot<G> {
  busy: boolean
  freeSince: number
}

export function createSlots<G>(generators: readonly G[], isDown: (generator: G) => boolean): Slot<G>[] {
  return generators.map((generator) => ({
    generator,
    busy: false,
    freeSince: 0,
    get down() {
      return isDown(generator)
    },
  }))
}

/**
 * The server for a job: an idle one, preferring servers that are up and that have not failed this job, the
 * longest idle first. When a better server is busy the job waits for it rather than taking a worse idle one.
 * A down server still gets a job when nothing else could ever take it, which doubles as a check whether it
 * is back.
 */
export function pickServer<G, S extends ServerSlot<G>>(
  slots: readonly S[],
  failedOn: ReadonlySet<G>,
): S | undefined {
  const rank = (s: S) => (s.down ? 2 : 0) + (failedOn.has(s.generator) ? 1 : 0)
  let best: S | undefined
  for (const s of slots) {
    if (s.busy) continue
    if (!best || rank(s) < rank(best) || (rank(s) === rank(best) && s.freeSince < best.freeSince)) best = s
  }
  if (!best) return undefined
  const bestRank = rank(best)
  return slots.some((s) => s.busy && rank(s) < bestRank) ? undefined : best
}

/**
 * Whether a job that failed with `code` on one server tries again on another: only for failures that say the
 * server is gone or hung (not the prompt), within the retry budget, and when a server that has not failed it
 * is left.
 */
export function shouldMoveJob<G>(options: {
  code: ErrorCode
  attempts: number
  retries: number
  failedOn: ReadonlySet<G>
  generators: readonly G[]
}): boolean {
  if (!traitsOf(options.code).movesJob || options.attempts > options.retries) return false
  return options.generators.some((g) => !options.failedOn.has(g))
}
