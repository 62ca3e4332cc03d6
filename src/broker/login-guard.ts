/*
 * Failed logins slowed per address (issue 10, "Connection attempts with bad passwords are slowed per
 * address"). An address that gets MQTT_LOGIN_FAILURES wrong passwords within a minute is refused outright
 * for MQTT_LOGIN_LOCKOUT, its password no longer checked (each check is a PBKDF2 of 210,000 rounds), and each
 * lockout that follows soon after doubles, up to 64 times. Other addresses are not affected. IPv6 addresses
 * count by their /64, which one host usually holds whole.
 */

/** Failures are counted over this sliding window. */
const FAILURE_WINDOW_MS = 60_000
/** Lockouts double up to 2^6 = 64 times the first. */
const MAX_DOUBLINGS = 6
/** Addresses remembered; past it the one heard from least recently is forgotten. */
const ADDRESSES_KEPT = 10_000

export interface LoginGuard {
  /** Milliseconds the address stays refused, or 0 when its login may be checked. */
  lockedFor(remote: string | undefined): number
  /** A wrong password from the address; returns the lockout it starts in ms, or 0. */
  failed(remote: string | undefined): number
  /** Addresses remembered now (bounded). */
  size(): number
}

interface AddressState {
  failures: number[]
  lockedUntil: number
  lockouts: number
}

export function createLoginGuard(
  options: { failures: number; lockoutMs: number },
  monotonic: () => number,
): LoginGuard {
  const states = new Map<string, AddressState>()

  function stateOf(key: string): AddressState {
    const state = states.get(key) ?? { failures: [], lockedUntil: 0, lockouts: 0 }
    states.delete(key)
    states.set(key, state)
    if (states.size > ADDRESSES_KEPT) states.delete(states.keys().next().value!)
    return state
  }

  return {
    lockedFor(remote) {
      if (options.failures === 0) return 0
      const state = states.get(addressKey(remote))
      return state ? Math.max(0, state.lockedUntil - monotonic()) : 0
    },
    failed(remote) {
      if (options.failures === 0) return 0
      const now = monotonic()
      const state = stateOf(addressKey(remote))
      // A quiet spell as long as the longest lockout forgives the earlier ones.
      if (state.lockouts > 0 && now - state.lockedUntil > options.lockoutMs * 2 ** MAX_DOUBLINGS)
        state.lockouts = 0
      state.failures = state.failures.filter((t) => now - t < FAILURE_WINDOW_MS)
      state.failures.push(now)
      if (state.failures.length < options.failures) return 0
      const lockoutMs = options.lockoutMs * 2 ** Math.min(state.lockouts, MAX_DOUBLINGS)
      state.lockouts++
      state.failures = []
      state.lockedUntil = now + lockoutMs
      return lockoutMs
    },
    size: () => states.size,
  }
}

/** The address as counted: IPv4 (also IPv4-mapped IPv6) whole, other IPv6 by its first four groups. */
export function addressKey(remote: string | undefined): string {
  if (remote === undefined) return ''
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remote)
  if (mapped) return mapped[1]!
  if (!remote.includes(':')) return remote
  return expandIpv6(remote).slice(0, 4).join(':')
}

function expandIpv6(address: string): string[] {
  const [head = '', tail] = address.split('%')[0]!.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const fill = tail === undefined ? [] : Array(Math.max(0, 8 - left.length - right.length)).fill('0')
  return [...left, ...fill, ...right].map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
}
