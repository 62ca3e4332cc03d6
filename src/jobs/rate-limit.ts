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
