import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'

/*
 * What loading the daemon pulls in from Node itself. An ES import of node:http reads every export, the lazy
 * WebSocket among them, which loads Node's own copy of undici (with web streams: 3 MB of heap, 745 KB of
 * source) that the daemon never uses and every full collection marks (issue 14). src/broker/listeners.ts
 * takes node:http through require() for that reason; this keeps any other module from bringing it back.
 */

describe("the daemon's modules", () => {
  it("load without Node's internal undici", () => {
    const app = new URL('../../src/app.ts', import.meta.url).href
    const script = `
      await import(${JSON.stringify(app)})
      console.log(JSON.stringify(process.moduleLoadList.filter((m) => m.includes('deps/undici'))))`
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    expect(run.status, run.stderr).toBe(0)
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1)!)).toEqual([])
  })
})
