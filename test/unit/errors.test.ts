import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { ERROR_CODES, ERROR_TRAITS } from '../../src/errors.ts'

describe('the error catalogue', () => {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
  const documented = [...doc.matchAll(/^\| `(E_[A-Z0-9_]+)`/gm)].map((m) => m[1])

  it('documents exactly the codes the code knows, each once', () => {
    expect([...documented].sort()).toEqual([...ERROR_CODES].sort())
  })

  it('gives every code a client or server status, and Retry-After only to busy answers', () => {
    for (const code of ERROR_CODES) {
      const traits = ERROR_TRAITS[code]
      expect(traits.status, code).toBeGreaterThanOrEqual(400)
      expect(traits.status, code).toBeLessThan(600)
      if ('retryAfterS' in traits) expect([429, 503]).toContain(traits.status)
    }
  })

  it('moves a job only for failures that also mark the server down', () => {
    for (const code of ERROR_CODES) {
      const traits = ERROR_TRAITS[code]
      if (traits.movesJob) expect(traits.marksDown, code).toBe(true)
    }
  })
})
