import { describe, expect, it } from 'vitest'
import { addressKey, createLoginGuard } from '../../src/broker/login-guard.ts'

/* Failed logins slowed per address (issue 10): a plain clock, so the lockout's end is a value, not a wait. */

function guard(failures = 3, lockoutMs = 1000) {
  let now = 0
  const g = createLoginGuard({ failures, lockoutMs }, () => now)
  return { g, advance: (ms: number) => (now += ms) }
}

describe('login guard', () => {
  it('refuses an address for the lockout once it reached the failures, and lets it in after', () => {
    const { g, advance } = guard(3, 1000)
    expect(g.failed('10.0.0.5')).toBe(0)
    expect(g.failed('10.0.0.5')).toBe(0)
    expect(g.lockedFor('10.0.0.5')).toBe(0)
    expect(g.failed('10.0.0.5')).toBe(1000)
    expect(g.lockedFor('10.0.0.5')).toBe(1000)
    advance(999)
    expect(g.lockedFor('10.0.0.5')).toBe(1)
    advance(1)
    expect(g.lockedFor('10.0.0.5')).toBe(0)
  })

  it('leaves other addresses alone', () => {
    const { g } = guard(2)
    g.failed('10.0.0.5')
    g.failed('10.0.0.5')
    expect(g.lockedFor('10.0.0.5')).toBeGreaterThan(0)
    expect(g.lockedFor('10.0.0.6')).toBe(0)
    expect(g.lockedFor(undefined)).toBe(0)
  })

  it('counts failures over a sliding minute only', () => {
    const { g, advance } = guard(3)
    g.failed('a')
    g.failed('a')
    advance(60_000)
    expect(g.failed('a')).toBe(0)
    expect(g.lockedFor('a')).toBe(0)
  })

  it('doubles each lockout that follows soon, up to 64 times, and forgives after a long quiet spell', () => {
    const { g, advance } = guard(1, 1000)
    const lockouts: number[] = []
    for (let i = 0; i < 9; i++) {
      lockouts.push(g.failed('a'))
      advance(g.lockedFor('a'))
    }
    expect(lockouts).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 64_000, 64_000])
    advance(64_001)
    expect(g.failed('a')).toBe(1000)
  })

  it('is off with 0 failures', () => {
    const { g } = guard(0)
    for (let i = 0; i < 100; i++) expect(g.failed('a')).toBe(0)
    expect(g.lockedFor('a')).toBe(0)
    expect(g.size()).toBe(0)
  })

  it('remembers a bounded number of addresses', () => {
    const { g } = guard(5)
    for (let i = 0; i < 12_000; i++) g.failed(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)
    expect(g.size()).toBe(10_000)
  })

  it('counts IPv6 by its /64 and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('::ffff:192.168.1.9')).toBe('192.168.1.9')
    expect(addressKey('2001:db8:0:1::5')).toBe(addressKey('2001:db8:0:1:ffff:1:2:3'))
    expect(addressKey('2001:db8:0:1::5')).not.toBe(addressKey('2001:db8:0:2::5'))
    expect(addressKey('::1')).toBe('0:0:0:0')
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0')
    const { g } = guard(2)
    g.failed('2001:db8:0:1::5')
    g.failed('2001:db8:0:1::6')
    expect(g.lockedFor('2001:db8:0:1::7')).toBeGreaterThan(0)
  })
})
