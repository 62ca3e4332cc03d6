import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'

/*
 * What loading the daemon pulls in that it may never use (issue 14: every full collection marks all of it).
 * An ES import of node:http reads every export, the lazy WebSocket among them, which loads Node's own copy
 * of undici with web streams (3 MB of heap, 745 KB of source): src/broker/listeners.ts takes node:http
 * through require(). mqtt.js (2 MB of heap, some 80 modules) is loaded by the first link to another broker
 * (MQTT_URL, HA_MQTT_URL), which a bridge with its embedded broker alone never opens.
 */

describe("the daemon's modules", () => {
  it("load without Node's internal undici and without mqtt.js", () => {
    const app = new URL('../../src/app.ts', import.meta.url).href
    const script = `
      import { registerHooks } from 'node:module'
      const mqtt = []
      registerHooks({
        load(url, context, next) {
          if (url.includes('/node_modules/mqtt/')) mqtt.push(url)
          return next(url, context)
        },
      })
      await import(${JSON.stringify(app)})
      const undici = process.moduleLoadList.filter((m) => m.includes('deps/undici'))
      console.log(JSON.stringify({ undici, mqtt }))`
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    expect(run.status, run.stderr).toBe(0)
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1)!)).toEqual({ undici: [], mqtt: [] })
  })
})
