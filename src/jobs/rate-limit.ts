/*
 * Prompts per device per minute, counted over a sliding minute. A Pico with a stuck button or an automation
 * in a loop should not fill the queue for everyone else.
 */

export interface RateLimit {
  /** Counts one prompt for `key` and says whether it is within the limit. */
  take(key: string): boolean
}

const WINDOW_MS = 60_000

export function createRateLimit(perMinute: number, now: () => number): RateLimit {
  const recent = new Map<string, number[]>()
  return {
    take(key) {
      if (perMinute <= 0) return true
      const t = now()
      const times = (recent.get(key) ?? []).filter((at) => t - at < WINDOW_MS)
      if (times.length >= perMinute) {
        recent.set(key, times)
        return false
      }
      times.push(t)
      recent.set(key, times)
      // Forget devices that went quiet, so the map does not grow with every id ever seen.
      if (recent.size > 10_000) {
        for (const [k, v] of recent) if (v.every((at) => t - at >= WINDOW_MS)) recent.delete(k)
      }
      return true
    },
  }
}

/**
 * A token bucket per key: `burst` at once, then one every `intervalMs`. For `get`, where a display asking
 * again after a reconnect is normal and a loop asking thousands of times a second is not (issue 10).
 */
export function createTokenBuckets(burst: number, intervalMs: number, now: () => number): RateLimit {
  const buckets = new Map<string, { tokens: number; at: number }>()
  return {
    take(key) {
      const t = now()
      const old = buckets.get(key)
      const tokens = old ? Math.min(burst, old.tokens + (t - old.at) / intervalMs) : burst
      buckets.delete(key)
      if (tokens < 1) {
        buckets.set(key, { tokens, at: t })
        return false
      }
      buckets.set(key, { tokens: tokens - 1, at: t })
      // Least recently used first: a full bucket forgotten is the same as a new one.
      if (buckets.size > 10_000) buckets.delete(buckets.keys().next().value!)
      return true
    },
  }
}
