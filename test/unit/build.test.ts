import { describe, expect, it } from 'vitest'
import { buildFile } from '../../scripts/build.ts'

describe('the dist build', () => {
  it('strips types in place and rewrites relative .ts imports to .js', () => {
    const source = [
      "import type { Logger } from 'pino'",
      "import { a, type B } from './a.ts'",
      "export { c } from '../c.ts'",
      "import { readFile } from 'node:fs/promises'",
      'const n: number = 1',
      "const lazy = await import('./lazy.ts')",
      "const text = 'see ./not-an-import.ts'",
    ].join('\n')
    const out = buildFile(source).split('\n')
    expect(out).toHaveLength(7)
    expect(out[0]!.trim()).toBe('')
    expect(out[1]).toMatch(/^import \{ a,\s+\} from '\.\/a\.js'$/)
    expect(out[2]).toBe("export { c } from '../c.js'")
    expect(out[3]).toBe("import { readFile } from 'node:fs/promises'")
    // Types become spaces: columns and lines stay those of the .ts source, for stack traces.
    expect(out[4]).toBe('const n         = 1')
    expect(out[5]).toBe("const lazy = await import('./lazy.js')")
    expect(out[6]).toBe("const text = 'see ./not-an-import.ts'")
  })
})
