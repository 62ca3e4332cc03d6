/*
 * Time as a dependency: one clock for the whole daemon, so tests can run it on their own time and no part
 * mixes `Date.now()` with `performance.now()` on its own.
 */

export interface Clock {
  /** Wall-clock time, for timestamps that people and other machines read (`ts`, `last_seen`). */
  now(): Date
  /** Milliseconds on a clock that never jumps, for durations and rate limits. */
  monotonic(): number
}

export const systemClock: Clock = {
  now: () => new Date(),
  monotonic: () => performance.now(),
}
