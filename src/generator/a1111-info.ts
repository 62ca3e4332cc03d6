/*
 * What A1111's txt2img answer says in its `info` field (a JSON string written by Python). Pure.
 */

/** `info` is a JSON string written by Python; read it tolerantly, -1 when it has no seed. */
export function seedFromInfo(info: unknown): number {
  let parsed: unknown = info
  if (typeof info === 'string') {
    try {
      parsed = JSON.parse(info)
    } catch {
      // Python may write NaN or Infinity, which JSON.parse refuses; the seed is still there.
      const match = /"seed":\s*(\d+)/.exec(info)
      return match ? Number(match[1]) : -1
    }
  }
  if (typeof parsed !== 'object' || parsed === null) return -1
  const { seed, all_seeds } = parsed as { seed?: unknown; all_seeds?: unknown }
  if (Number.isSafeInteger(seed)) return seed as number
  const first = Array.isArray(all_seeds) ? all_seeds[0] : undefined
  return Number.isSafeInteger(first) ? (first as number) : -1
}
