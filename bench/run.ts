import { mkdir, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { attackMemory } from './attack-memory.ts'
import { brokerScale } from './broker-scale.ts'
import { fanout } from './fanout.ts'
import { http } from './http.ts'
import { idleRss } from './idle-rss.ts'
import { latency } from './latency.ts'
import { type Bench, type BenchResult, machineInfo } from './lib.ts'
import { servers } from './servers.ts'
import { answer, auth, dither } from './standalone.ts'
import { throughput } from './throughput.ts'

/*
 * `npm run bench [-- --quick] [-- --only latency,http,...]` (names below): runs the benches one after another and
 * prints a Markdown report, also written to bench/results/latest.md.
 */

const BENCHES: Record<string, Bench> = {
  latency,
  throughput,
  'idle-rss': idleRss,
  http,
  servers,
  answer,
  dither,
  auth,
  fanout,
  broker: brokerScale,
  'attack-memory': attackMemory,
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { quick: { type: 'boolean', default: false }, only: { type: 'string' } },
  strict: true,
})
const quick = values.quick ?? false
const names = values.only ? values.only.split(',').map((n) => n.trim()) : Object.keys(BENCHES)
const unknown = names.filter((n) => !(n in BENCHES))
if (unknown.length > 0) {
  process.stderr.write(`unknown bench: ${unknown.join(', ')} (known: ${Object.keys(BENCHES).join(', ')})\n`)
  process.exit(64)
}

const machine = await machineInfo()
const results: { name: string; result?: BenchResult; error?: unknown }[] = []
for (const name of names) {
  process.stderr.write(`running ${name}${quick ? ' (quick)' : ''}...\n`)
  const started = performance.now()
  try {
    results.push({ name, result: await BENCHES[name]!({ quick }) })
  } catch (err) {
    results.push({ name, error: err })
  }
  process.stderr.write(`${name} took ${((performance.now() - started) / 1000).toFixed(1)} s\n`)
}

const report = [
  `# pico-a1111-bridge benchmarks${quick ? ' (quick)' : ''}`,
  '',
  machine,
  '',
  '## Methods',
  '',
  ...results.map((r) => `- **${r.name}**: ${r.result?.method ?? 'failed, see below'}`),
  '',
  ...results.flatMap((r) =>
    r.result
      ? [`## ${r.result.title}`, '', r.result.body, '']
      : [`## ${r.name}: FAILED`, '', '```', String((r.error as Error)?.stack ?? r.error), '```', ''],
  ),
].join('\n')

const dir = new URL('./results/', import.meta.url)
await mkdir(dir, { recursive: true })
await writeFile(new URL('latest.md', dir), report)
process.stdout.write(report)
process.exitCode = results.some((r) => r.error !== undefined) ? 1 : 0
