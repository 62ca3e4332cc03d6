import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'

const run = (...args: string[]) =>
  spawnSync(process.execPath, ['scripts/fake-a1111.ts', ...args], { encoding: 'utf8', timeout: 20_000 })

describe('npm run fake-a1111', () => {
  it('prints its options with --help and exits 0', () => {
    const res = run('--help')
    expect(res.status).toBe(0)
    expect(res.stdout).toContain('--fault NAME')
    expect(res.stdout).toContain('no-progress')
    expect(res.stderr).not.toContain('at ')
  })

  it('refuses an unknown --fault, naming the ones it knows, with exit 64', () => {
    const res = run('--fault', 'nope')
    expect(res.status).toBe(64)
    expect(res.stderr).toContain('unknown --fault nope; one of: no-api, hang')
  })

  it('refuses an unknown option with usage instead of a stack trace', () => {
    const res = run('--bogus')
    expect(res.status).toBe(64)
    expect(res.stderr).toContain("Unknown option '--bogus'")
    expect(res.stderr).toContain('Usage: npm run fake-a1111')
  })
})
