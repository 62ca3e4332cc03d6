import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
// @ts-expect-error plain JavaScript on purpose (it must load on an old Node), so it has no types
import { nodeVersionProblem } from '../../scripts/check-node.mjs'

describe('the Node version check that runs before the build', () => {
  it('names the version it needs and how to get it on Node 20', () => {
    const problem = nodeVersionProblem('20.20.2') as string
    expect(problem).toContain('needs Node.js 22.19 or newer')
    expect(problem).toContain('this is Node 20.20.2')
    expect(problem).toContain('node@24')
  })

  it('refuses 22.18 and accepts 22.19, 24 and later', () => {
    expect(nodeVersionProblem('22.18.0')).not.toBeNull()
    expect(nodeVersionProblem('22.19.0')).toBeNull()
    expect(nodeVersionProblem('24.21.0')).toBeNull()
    expect(nodeVersionProblem('25.0.0')).toBeNull()
  })

  it('runs first in every npm script that runs .ts files for people (the README sends them to these)', () => {
    const { scripts } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      scripts: Record<string, string>
    }
    for (const name of ['build', 'prestart', 'bench', 'fake-a1111'])
      expect(scripts[name], name).toMatch(/^node scripts\/check-node\.mjs && /)
  })
})
