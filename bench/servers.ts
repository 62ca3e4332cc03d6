import { execFileSync } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { parsePromptJson } from '../src/protocol/prompt.ts'
import { createJobJournal, type JournalJob } from '../src/store/job-journal.ts'
import { type FakeA1111, startFakeA1111 } from '../test/support/fake-a1111.ts'
import {
  type Bench,
  type Bridge,
  type BusyLog,
  cpuTimeMs,
  daemonNote,
  httpUrlOf,
  ms,
  NO_RATE_LIMIT,
  percentile,
  SUMMARY_HEADERS,
  type Summary,
  sleep,
  startBridge,
  summarize,
  summaryRow,
  table,
  tally,
  trackBusy,
  waitGeneratorsUp,
  within,
} from './lib.ts'
import { connectTimedDevice, type TimedDevice } from './timed-device.ts'
import { promptLoop } from './workloads.ts'

/*
 * Several A1111 servers (A1111_BASE_URL as a comma list): (a) jobs per second with two servers against one,
 * each taking a fixed time per picture; (b) failover: a server closed in the middle of a job, timed until that
 * job's `done` arrives from the other server; (c) the durable write behind every accepted prompt (the job
 * journal's write + fsync), timed in this process on the disk of DATA_DIR and read from the daemon's /metrics.
 */

const JOB_LATENCY_MS = 200
const DEVICES = 8
const FRAME_TIMEOUT_MS = 30_000
/** The fakes answer every prompt with one cached ~500 KB PNG (`cachedAnswer`), so each job takes the fixed time. */
const CACHED_PROMPT = JSON.stringify({ prompt: 'a lighthouse at dusk', seed: 42 })

const FAILOVER_LATENCY_MS = 1_000
const FAILOVER_DEVICES = 4
/** How far into its job the server is closed. */
const CLOSE_AFTER_MS = 500

// ---------------------------------------------------------------------------------------------------------
// (a) jobs per second

interface RateRun {
  servers: number
  windowMs: number
  frames: number
  /** Prompts that got no frame (an error status, or none within the timeout). */
  errors: string[]
  /** error and cancelled statuses, and client errors, as the devices saw them. */
  statusFailures: string[]
  perDevice: number[]
  perServer: number[]
  busyShare: number[]
  frameMs: Summary
  /** A server's end of one job to its begin of the next (answer, parse, dispatch, request), in the window. */
  gapMs: Summary
  daemonCpuMs: number
  journal: JournalMetrics | undefined
  note: string
}

async function rate(serverCount: number, durationMs: number): Promise<RateRun> {
  const fakes: FakeA1111[] = []
  const busy: BusyLog[] = []
  let bridge: Bridge | undefined
  const devices: TimedDevice[] = []
  const doneAt: number[][] = []
  const frameMs: number[] = []
  const errors: string[] = []
  let exitCode: number | null = null
  let window = { startAt: 0, endAt: 0, cpuMs: 0 }
  let journal: JournalMetrics | undefined
  try {
    for (let i = 0; i < serverCount; i++) {
      const fake = await startFakeA1111({ cachedAnswer: true, latencyMs: JOB_LATENCY_MS })
      fakes.push(fake)
      busy.push(trackBusy(fake))
    }
    bridge = await startBridge({
      A1111_BASE_URL: fakes.map((f) => f.url).join(','),
      HTTP_PORT: '0',
      ...NO_RATE_LIMIT,
    })
    const httpUrl = await httpUrlOf(bridge)
    await waitGeneratorsUp(httpUrl)
    const ids = Array.from({ length: DEVICES }, (_, i) => `srv${serverCount}-${i}`)
    devices.push(
      ...(await within(
        Promise.all(ids.map((id) => connectTimedDevice(bridge!.url, id))),
        10_000,
        'connecting',
      )),
    )
    // One job per device first, so the fakes have their PNG cached and the daemon is warm.
    await within(
      Promise.all(devices.map((d) => d.prompt(CACHED_PROMPT, FRAME_TIMEOUT_MS))),
      30_000,
      'warm-up',
    )
    const cpuBefore = await cpuTimeMs(bridge.pid)
    const startAt = performance.now()
    const loops = devices.map((d, i) => {
      doneAt[i] = []
      return promptLoop(
        d,
        { deadline: startAt + durationMs, frameTimeoutMs: FRAME_TIMEOUT_MS, prompt: () => CACHED_PROMPT },
        { done: doneAt[i]!, frameMs, errors },
      )
    })
    await sleep(durationMs)
    const endAt = performance.now()
    window = { startAt, endAt, cpuMs: (await cpuTimeMs(bridge.pid)) - cpuBefore }
    await within(Promise.all(loops), FRAME_TIMEOUT_MS + 5_000, 'draining the devices')
    await Promise.all(devices.map((d) => d.waitDone(5_000)))
    journal = await journalMetrics(httpUrl)
  } finally {
    await Promise.allSettled(devices.map((d) => d.close()))
    exitCode = (await bridge?.stop()) ?? null
    await Promise.all(fakes.map((f) => f.close()))
  }
  const { startAt, endAt } = window
  const windowMs = endAt - startAt
  const perDevice = doneAt.map((times) => times.filter((t) => t <= endAt).length)
  return {
    servers: serverCount,
    windowMs,
    frames: perDevice.reduce((a, b) => a + b, 0),
    errors,
    statusFailures: devices.flatMap((d) => d.failures),
    perDevice,
    perServer: busy.map((b) => b.endedIn(startAt, endAt)),
    busyShare: busy.map((b) => b.busyMs(startAt, endAt) / windowMs),
    frameMs: summarize(frameMs),
    gapMs: summarize(
      busy.flatMap((b) =>
        b.spans
          .slice(1)
          .map((span, i) => ({ gap: span.begin - b.spans[i]!.end, at: span.begin }))
          .filter(({ at }) => at >= startAt && at <= endAt)
          .map(({ gap }) => gap),
      ),
    ),
    daemonCpuMs: window.cpuMs,
    journal,
    note: daemonNote(bridge, exitCode),
  }
}

// ---------------------------------------------------------------------------------------------------------
// (b) failover

interface FailoverRound {
  /** From fake.close() to the interrupted job's `done` status. */
  toDoneMs: number
  /** From fake.close() to the daemon's `generation failed; trying again` line (log time, 1 ms resolution). */
  detectMs: number
  /** From fake.close() to the end of the job the other server was running. */
  otherFreeMs: number
  /** From that end to the other server beginning the interrupted job. */
  handoverMs: number
  /** From that begin to the interrupted job's `done`: its generation, then answer, conversion and frames. */
  movedJobMs: number
  /** Every device got its frame and `done`, none an error. */
  allDone: boolean
  failures: string[]
  note: string
}

async function failoverRound(round: number): Promise<FailoverRound> {
  const fakes = [
    await startFakeA1111({ cachedAnswer: true, latencyMs: FAILOVER_LATENCY_MS }),
    await startFakeA1111({ cachedAnswer: true, latencyMs: FAILOVER_LATENCY_MS }),
  ]
  let bridge: Bridge | undefined
  const devices: TimedDevice[] = []
  let exitCode: number | null = null
  let result: Omit<FailoverRound, 'note'> | undefined
  try {
    bridge = await startBridge({
      A1111_BASE_URL: fakes.map((f) => f.url).join(','),
      HTTP_PORT: '0',
      ...NO_RATE_LIMIT,
    })
    await waitGeneratorsUp(await httpUrlOf(bridge))
    const ids = Array.from({ length: FAILOVER_DEVICES }, (_, i) => `fo${round}-${i}`)
    devices.push(
      ...(await within(
        Promise.all(ids.map((id) => connectTimedDevice(bridge!.url, id))),
        10_000,
        'connecting',
      )),
    )
    const text = (id: string) => `a lighthouse at dusk for ${id}`
    // Which device's job each fake is generating, and when it began.
    const current = fakes.map(() => ({ prompt: '', begunAt: 0 }))
    const begins: { fake: number; prompt: string; at: number }[] = []
    const ends: { fake: number; at: number }[] = []
    const victim = 0
    const firstBegin = new Promise<number>((resolve) =>
      fakes[victim]!.events.once('begin', () => resolve(performance.now())),
    )
    fakes.forEach((fake, f) => {
      let lastPrompt = ''
      fake.events.on('request', (r: { path: string; body: unknown }) => {
        if (r.path === '/sdapi/v1/txt2img') lastPrompt = String((r.body as { prompt?: unknown }).prompt)
      })
      fake.events.on('begin', () => {
        const at = performance.now()
        current[f] = { prompt: lastPrompt, begunAt: at }
        begins.push({ fake: f, prompt: lastPrompt, at })
      })
      fake.events.on('end', () => ends.push({ fake: f, at: performance.now() }))
    })
    const sentAt: number[] = []
    const frames = devices.map((d, i) => {
      sentAt[i] = performance.now()
      return d.prompt(JSON.stringify({ prompt: text(d.id), seed: 42 }), FRAME_TIMEOUT_MS)
    })
    for (const frame of frames) frame.catch(() => {})
    // Close server 0 in the middle of its first job.
    const begunAt = await within(firstBegin, 10_000, 'first job on the server to close')
    await sleep(Math.max(0, begunAt + CLOSE_AFTER_MS - performance.now()))
    const interruptedPrompt = current[victim]!.prompt
    const closedWall = Date.now()
    const closedAt = performance.now()
    await fakes[victim]!.close()
    const index = devices.findIndex((d) => text(d.id) === interruptedPrompt)
    if (index < 0) throw new Error(`round ${round}: the closed server was running no device's job`)
    const settled = await within(
      Promise.allSettled(frames),
      FRAME_TIMEOUT_MS + 5_000,
      'frames after failover',
    )
    const timing = settled[index]!
    if (timing.status === 'rejected')
      throw new Error(`round ${round}: the interrupted job failed: ${timing.reason}`)
    const doneOk = await Promise.all(devices.map((d) => d.waitDone(5_000)))
    // The device's `done` came this long after its last band, which came frameMs after the prompt was sent.
    const lag = devices[index]!.doneLagsMs.at(-1) ?? Number.NaN
    const doneAt = sentAt[index]! + timing.value.frameMs + lag
    const restartAt =
      begins.find((b) => b.fake !== victim && b.prompt === interruptedPrompt && b.at > closedAt)?.at ??
      Number.NaN
    const otherFreeAt = ends.find((e) => e.fake !== victim && e.at > closedAt)?.at ?? Number.NaN
    const failed = bridge.daemon.lines.find((l) => l.msg === 'generation failed; trying again')
    result = {
      toDoneMs: doneAt - closedAt,
      detectMs: failed ? Number(failed.time) - closedWall : Number.NaN,
      otherFreeMs: otherFreeAt - closedAt,
      handoverMs: restartAt - otherFreeAt,
      movedJobMs: doneAt - restartAt,
      allDone: settled.every((s) => s.status === 'fulfilled') && doneOk.every(Boolean),
      failures: devices.flatMap((d) => d.failures),
    }
  } finally {
    await Promise.allSettled(devices.map((d) => d.close()))
    exitCode = (await bridge?.stop()) ?? null
    await Promise.all(fakes.map((f) => f.close()))
  }
  return { ...result!, note: daemonNote(bridge, exitCode) }
}

// ---------------------------------------------------------------------------------------------------------
// (c) durable writes

interface JournalMetrics {
  count: number
  sumS: number
  /** Cumulative counts by upper bound in seconds. */
  buckets: [number, number][]
}

async function journalMetrics(httpUrl: string): Promise<JournalMetrics> {
  const res = await fetch(`${httpUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })
  const text = await res.text()
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN)
  const buckets: [number, number][] = []
  for (const m of text.matchAll(/^pab_journal_write_seconds_bucket\{le="([^"]+)"\} (\d+)/gm)) {
    buckets.push([m[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[1]), Number(m[2])])
  }
  return {
    count: value(/^pab_journal_write_seconds_count (\d+)/m),
    sumS: value(/^pab_journal_write_seconds_sum ([\d.e+-]+)/m),
    buckets,
  }
}

/** The bucket bound (ms) at or under which a share `q` of the writes fell: a bound, not a measurement. */
function bucketBound(m: JournalMetrics, q: number): string {
  const hit = m.buckets.find(([, count]) => count >= q * m.count)
  if (!hit) return 'n/a'
  return Number.isFinite(hit[0]) ? `<= ${hit[0] * 1000} ms` : `> ${(m.buckets.at(-2)?.[0] ?? 0) * 1000} ms`
}

function filesystemOf(path: string): string {
  try {
    // findmnt names the filesystem type, the device and the mount options (barriers, discard...).
    const out = execFileSync('findmnt', ['-n', '-o', 'FSTYPE,SOURCE,TARGET,OPTIONS', '-T', path], {
      encoding: 'utf8',
    }).trim()
    const [type, source, target, options] = out.split(/\s+/)
    return `${type} on ${source} (mounted at ${target}; ${options})`
  } catch {
    try {
      const out = execFileSync('df', ['-PT', path], { encoding: 'utf8' }).trim().split('\n').at(-1) ?? ''
      const [source, type] = out.split(/\s+/)
      return `${type} on ${source}`
    } catch {
      return 'unknown'
    }
  }
}

interface JournalRun {
  where: string
  filesystem: string
  samples: number[]
}

/** Times `count` add() calls (write + fsync each) of the daemon's own journal in a fresh directory under `parent`. */
async function timeJournal(parent: string, count: number): Promise<number[]> {
  const dir = await mkdtemp(join(parent, '.pab-bench-journal-'))
  const journal = createJobJournal(dir, { log: pino({ level: 'silent' }) })
  const samples: number[] = []
  try {
    await journal.open()
    for (let i = 0; i < count; i++) {
      const job: JournalJob = {
        id: `job-${i}-${Math.random().toString(36).slice(2, 10)}`,
        deviceId: `kitchen-${i % 8}`,
        prompt: parsePromptJson({
          prompt: 'a lighthouse at dusk, oil painting, warm light',
          seed: 42 + i,
          steps: 20,
        }),
        createdAt: new Date().toISOString(),
      }
      const started = performance.now()
      await journal.add(job)
      samples.push(performance.now() - started)
      // As in the daemon: jobs end, and every 1,000 ends the file is compacted (not timed here).
      journal.end(job.id)
    }
  } finally {
    await journal.close()
    await rm(dir, { recursive: true, force: true })
  }
  return samples
}

async function journalRuns(count: number): Promise<JournalRun[]> {
  const repoDir = fileURLToPath(new URL('../', import.meta.url))
  const places = [
    { where: `${tmpdir()} (where the benches put DATA_DIR)`, path: tmpdir() },
    { where: `${repoDir} (the repository; DATA_DIR=./data by default)`, path: repoDir },
  ]
  const runs: JournalRun[] = []
  const seen = new Map<number, string>()
  for (const place of places) {
    const dev = (await stat(place.path)).dev
    if (seen.has(dev)) {
      runs.push({
        where: `${place.where}: same filesystem as ${seen.get(dev)}, not measured again`,
        filesystem: filesystemOf(place.path),
        samples: [],
      })
      continue
    }
    seen.set(dev, place.path)
    runs.push({
      where: place.where,
      filesystem: filesystemOf(place.path),
      samples: await timeJournal(place.path, count),
    })
  }
  return runs
}

// ---------------------------------------------------------------------------------------------------------

export const servers: Bench = async ({ quick }) => {
  const durationMs = quick ? 5_000 : 15_000
  const rounds = quick ? 2 : 6
  const writes = quick ? 500 : 2_000

  const one = await rate(1, durationMs)
  const two = await rate(2, durationMs)
  const failover: FailoverRound[] = []
  for (let r = 0; r < rounds; r++) failover.push(await failoverRound(r))
  const journal = await journalRuns(writes)

  const jobsPerS = (r: RateRun) => (r.frames * 1000) / r.windowMs
  const speedup = jobsPerS(two) / jobsPerS(one)
  const ideal = (n: number) => (n * 1000) / JOB_LATENCY_MS
  const toDone = summarize(failover.map((f) => f.toDoneMs))
  const otherFree = summarize(failover.map((f) => f.otherFreeMs))
  const failoverFailures = failover.flatMap((f) => f.failures)
  const measured = journal.filter((j) => j.samples.length > 0)
  const pct = (share: number) => `${(share * 100).toFixed(0)} %`

  return {
    title: 'Several A1111 servers: throughput, failover, durable writes',
    method:
      `fakes A1111 in the bench process (\`cachedAnswer\`: one noisy 512x512 PNG in 660 KB of JSON made at start, after a fixed ` +
      `\`latencyMs\` per generation), daemon spawned with A1111_BASE_URL as a comma list, RATE_LIMIT=0. (a) ` +
      `${DEVICES} mqtt.js devices each prompt again when their last frame is complete, for ${durationMs / 1000} s, ` +
      `fakes of ${JOB_LATENCY_MS} ms, one server then two; (b) ${rounds} rounds: two fakes of ` +
      `${FAILOVER_LATENCY_MS} ms, ${FAILOVER_DEVICES} devices prompt at once, one fake is closed (fake.close()) ` +
      `${CLOSE_AFTER_MS} ms into its job, timed to the interrupted job's \`done\`; (c) ${writes} ` +
      '`createJobJournal().add()` calls (write + fsync) timed with performance.now() in the bench process, plus ' +
      "the daemon's `pab_journal_write_seconds` from /metrics after (a).",
    body: [
      `### (a) Jobs per second, ${JOB_LATENCY_MS} ms per picture`,
      '',
      table(
        [
          'servers',
          'jobs/s',
          'ideal',
          'frames',
          'failed',
          'per server',
          'server busy',
          'frames per device (min-max)',
          'daemon CPU',
        ],
        [one, two].map((r) => [
          r.servers,
          jobsPerS(r).toFixed(2),
          ideal(r.servers).toFixed(1),
          r.frames,
          r.errors.length,
          r.perServer.join(' / '),
          r.busyShare.map(pct).join(' / '),
          `${Math.min(...r.perDevice)}-${Math.max(...r.perDevice)}`,
          `${pct(r.daemonCpuMs / r.windowMs)} of one core`,
        ]),
      ),
      '',
      table(
        ['under load (ms)', ...SUMMARY_HEADERS],
        [one, two].flatMap((r) => {
          const name = `${r.servers} server${r.servers > 1 ? 's' : ''}`
          return [
            summaryRow(`${name}: prompt -> last band`, r.frameMs),
            summaryRow(`${name}: a server's job end -> its next job's begin`, r.gapMs),
          ]
        }),
      ),
      '',
      `- **Two servers / one = ${speedup.toFixed(2)}x** (target close to 2x: ${speedup >= 1.8 ? 'met' : 'NOT met'}). ` +
        "The gap between a server's jobs is the A1111 answer (660 KB of JSON, sent by the fake in the bench " +
        "process), its reading in the daemon's answer workers, and the next request (the fake follows jobs by " +
        'task id, as A1111 with its web UI does, so no own-job snapshot goes before it); the daemon holds the ' +
        'slot for all of it.',
      ...[one, two].map(
        (r) =>
          `- ${r.servers} server(s): prompts without a frame ${r.errors.length}` +
          `${r.errors.length ? ` (${tally(r.errors)})` : ''}; error/cancelled statuses ${r.statusFailures.length}` +
          `${r.statusFailures.length ? ` (${tally(r.statusFailures)})` : ''}. ${r.note}`,
      ),
      '',
      `### (b) Failover, ${FAILOVER_LATENCY_MS} ms per picture, server closed ${CLOSE_AFTER_MS} ms into a job`,
      '',
      table(
        ['failover (ms)', ...SUMMARY_HEADERS],
        [
          summaryRow("close -> interrupted job's `done`", toDone),
          summaryRow(
            'close -> daemon logs the failure and requeues (log time)',
            summarize(failover.map((f) => f.detectMs)),
          ),
          summaryRow("close -> the other server's own job ends", otherFree),
          summaryRow(
            'that end -> interrupted job begins on the other server',
            summarize(failover.map((f) => f.handoverMs)),
          ),
          summaryRow(
            'begin there -> `done` (generation, answer, conversion, frames)',
            summarize(failover.map((f) => f.movedJobMs)),
          ),
        ],
      ),
      '',
      `- p50 ${ms(toDone.p50)} ms, max ${ms(toDone.max)} ms. The bridge runs one job per server, so the moved ` +
        `job waits for the other server's current job, then takes its ${FAILOVER_LATENCY_MS} ms: about ` +
        `${ms(otherFree.p50 + FAILOVER_LATENCY_MS)} ms of the p50 is that wait and that generation.`,
      `- Rounds where every device got its frame and \`done\`: ${failover.filter((f) => f.allDone).length} of ` +
        `${failover.length}; error/cancelled statuses: ${failoverFailures.length}` +
        `${failoverFailures.length ? ` (${tally(failoverFailures)})` : ''}.`,
      `- Daemon, ${new Set(failover.map((f) => f.note)).size === 1 ? 'every round' : 'by round'}: ` +
        [...new Set(failover.map((f) => f.note))].join(' / '),
      '',
      '### (c) Durable write per accepted prompt (journal add: write + fsync)',
      '',
      table(
        ['where', 'filesystem', 'n', 'p50', 'p95', 'p99', 'min', 'max'],
        journal.map((j) => {
          if (j.samples.length === 0) return [j.where, j.filesystem, 0, '', '', '', '', '']
          const sorted = [...j.samples].sort((a, b) => a - b)
          const s = summarize(sorted)
          return [
            j.where,
            j.filesystem,
            s.n,
            ms3(s.p50),
            ms3(s.p95),
            ms3(percentile(sorted, 99)),
            ms3(s.min),
            ms3(s.max),
          ]
        }),
      ),
      '',
      ...[one, two].map((r) => {
        const m = r.journal
        if (!m || !(m.count > 0))
          return `- Daemon /metrics after (a) with ${r.servers} server(s): no journal writes recorded.`
        return (
          `- Daemon /metrics after (a) with ${r.servers} server(s): ${m.count} writes, mean ` +
          `${ms3((m.sumS / m.count) * 1000)} ms, p50 ${bucketBound(m, 0.5)}, p99 ${bucketBound(m, 0.99)} (histogram buckets).`
        )
      }),
      `- Times in ms. ${measured.length === 1 ? 'The repository and /tmp are on the same filesystem, so it was measured once.' : ''} ` +
        "A virtual disk may acknowledge fsync from the host's cache; a Jetson's eMMC or an SD card is slower.",
    ].join('\n'),
  }
}

function ms3(value: number): string {
  return Number.isFinite(value) ? value.toFixed(3) : 'n/a'
}
